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

import torch

from tidal._errors import InvalidArgumentError
from tidal.integrate_sde import sdeint

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

