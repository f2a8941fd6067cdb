"""Built-in stochastic systems (Itô SDEs with diagonal noise) and `simulate_sde`, which samples
their paths with `tidal.sdeint`.

* ornstein-uhlenbeck: dX = theta (mu - X) dt + sigma dW. Gaussian at every t; stationary law
  N(mu, sigma^2 / (2 theta)).
* geometric-brownian-motion: dX = mu X dt + sigma X dW; X_t = X_0 exp((mu - sigma^2/2) t +
  sigma W_t).
* double-well: dX = (X - X^3) dt + sigma dW; stationary density proportional to
  exp(2 (X^2/2 - X^4/4) / sigma^2), two wells at +-1.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.integrate_sde import sdeint

if TYPE_CHECKING:
    from tidal.data.trajectories import Trajectories

Coefficient = Callable[[torch.Tensor, torch.Tensor, Mapping[str, float]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StochasticSystem:
    """An Itô SDE dy = drift dt + diffusion dW (diagonal noise) with its parameters.

    Attributes:
        name: the name used on the command line.
        state_names: one name per state.
        params: the parameters (read-only).
        drift, diffusion: f(t, y, params) and g(t, y, params) on tensors y [B, d].
        default_t_span: the time span `simulate_sde` uses by default.
        initial_box: (low, high) per state, where initial states are drawn.
        stationary_variance: the variance of the stationary law per state, when known.
        description: the equation in one line.
    """

    name: str
    state_names: tuple[str, ...]
    params: Mapping[str, float]
    drift: Coefficient
    diffusion: Coefficient
    default_t_span: tuple[float, float]
    initial_box: tuple[tuple[float, float], ...]
    stationary_variance: Callable[[Mapping[str, float]], float] | None
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", types.MappingProxyType(dict(self.params)))


ORNSTEIN_UHLENBECK = StochasticSystem(
    name="ornstein-uhlenbeck", state_names=("x",),
    params={"theta": 1.0, "mu": 0.0, "sigma": 0.5},
    drift=lambda t, y, p: p["theta"] * (p["mu"] - y),
    diffusion=lambda t, y, p: torch.full_like(y, p["sigma"]),
    default_t_span=(0.0, 10.0), initial_box=((-1.0, 1.0),),
    stationary_variance=lambda p: p["sigma"] ** 2 / (2 * p["theta"]),
    description="dX = theta (mu - X) dt + sigma dW")
GEOMETRIC_BROWNIAN_MOTION = StochasticSystem(
    name="geometric-brownian-motion", state_names=("x",),
    params={"mu": 0.5, "sigma": 0.8},
    drift=lambda t, y, p: p["mu"] * y,
    diffusion=lambda t, y, p: p["sigma"] * y,
    default_t_span=(0.0, 1.0), initial_box=((0.5, 1.5),), stationary_variance=None,
    description="dX = mu X dt + sigma X dW")
DOUBLE_WELL = StochasticSystem(
    name="double-well", state_names=("x",), params={"sigma": 0.7},
    drift=lambda t, y, p: y - y**3,
    diffusion=lambda t, y, p: torch.full_like(y, p["sigma"]),
    default_t_span=(0.0, 20.0), initial_box=((-1.5, 1.5),), stationary_variance=None,
    description="dX = (X - X^3) dt + sigma dW")

STOCHASTIC_SYSTEMS: Mapping[str, StochasticSystem] = types.MappingProxyType(
    {s.name: s for s in (ORNSTEIN_UHLENBECK, GEOMETRIC_BROWNIAN_MOTION, DOUBLE_WELL)})


def simulate_sde(system: StochasticSystem | str, n_paths: int, *, n_obs: int = 101,
                 t_span: Sequence[float] | None = None, dt: float | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ts [n_obs], paths [n_obs, n_paths, d]): paths from initial states drawn uniformly in
    the system's `initial_box`, observed at `n_obs` equally spaced times, sampled by
    Euler–Maruyama with step `dt` (default: a hundredth of the observation gap)."""
    if isinstance(system, str):
        if system not in STOCHASTIC_SYSTEMS:
            raise InvalidArgumentError(f"Unknown stochastic system {system!r}; choose one of "
                                       f"{sorted(STOCHASTIC_SYSTEMS)}.")
        system = STOCHASTIC_SYSTEMS[system]
    for name, value, least in (("n_paths", n_paths, 1), ("n_obs", n_obs, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgumentError(f"`simulate_sde({name}={value!r})` must be an int >= "
                                       f"{least}.")
    t0, t1 = system.default_t_span if t_span is None else (float(t_span[0]),
                                                            float(t_span[1]))
    ts = torch.linspace(t0, t1, n_obs, dtype=torch.float64)
    step = dt if dt is not None else (t1 - t0) / (n_obs - 1) / 100
    generator = torch.Generator().manual_seed(seed)
    low, high = (torch.tensor(x, dtype=dtype) for x in zip(*system.initial_box))
    y0 = low + (high - low) * torch.rand(n_paths, len(low), generator=generator, dtype=dtype)
    params = dict(system.params)
    paths = sdeint(system.drift, system.diffusion, y0, ts, dt=step, seed=seed, args=params)
    return ts, paths.ys



def observe_sde(system: StochasticSystem | str, n_trajectories: int, *,
                n_obs: int | tuple[int, int] = (20, 40), t_span: Sequence[float] | None = None,
                noise: float = 0.05, irregular: bool = True, missing: float = 0.0, seed: int = 0
                ) -> Trajectories:
    """Noisy observations of a stochastic system's paths, as `tidal.data.simulate` gives for
    the ODE systems. The paths are sampled on a grid 10x finer than the most observations
    (`simulate_sde`, 10 Euler–Maruyama steps per fine gap). Each trajectory is observed at t0
    and at `n_obs` - 1 fine times: `n_obs` is a count, or an inclusive range (low, high) from
    which each trajectory draws its own; sorted random times when `irregular`, else evenly
    spaced ones; Gaussian noise of sd `noise` x each state's range; a fraction `missing` of
    entries blanked."""
    from tidal.data.systems import _blank, _check_scalars
    from tidal.data.trajectories import Trajectories

    _check_scalars(n_trajectories, noise, missing)
    low, high = (n_obs, n_obs) if isinstance(n_obs, int) else n_obs
    if isinstance(low, bool) or not isinstance(low, int) or not 2 <= low <= high:
        raise InvalidArgumentError(f"`observe_sde(n_obs={n_obs!r})`: a count >= 2 or a range "
                                   f"(low, high) with 2 <= low <= high.")
    fine = 10 * (high - 1) + 1
    span = (STOCHASTIC_SYSTEMS[system] if isinstance(system, str) else system).default_t_span \
        if t_span is None else t_span
    ts, paths = simulate_sde(system, n_trajectories, n_obs=fine, t_span=t_span, seed=seed,
                             dt=(span[1] - span[0]) / (fine - 1) / 10)  # 10 steps per gap
    times_all, clean = ts.numpy(), paths.numpy()  # [F], [F, N, D]
    rng = np.random.default_rng(seed)
    spread = clean.max(axis=(0, 1)) - clean.min(axis=(0, 1))
    times, values = [], []
    for i in range(n_trajectories):
        count = int(rng.integers(low, high + 1))
        if irregular:
            later = rng.choice(np.arange(1, fine), count - 1, replace=False)
            rows = np.concatenate([[0], np.sort(later)])
        else:
            rows = np.round(np.linspace(0, fine - 1, count)).astype(int)
        noisy = clean[rows, i] + rng.normal(0.0, 1.0, (count, clean.shape[2])) * noise * spread
        times.append(times_all[rows])
        values.append(_blank(noisy, missing, rng))
    names = STOCHASTIC_SYSTEMS[system].state_names if isinstance(system, str) else (
        system.state_names)  # an unknown name was refused by simulate_sde
    return Trajectories(times, values, state_names=names)
