"""Built-in dynamical systems with known equations, and `simulate()`, which turns one into
noisy, irregularly sampled trajectories."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers import PIDController
from tidal.data.trajectories import Trajectories
from tidal.integrate import solve
from tidal.solvers import Dopri8, Rodas5P

Equations = Callable[[torch.Tensor, torch.Tensor, Mapping[str, float]], torch.Tensor]
Hamiltonian = Callable[[torch.Tensor, Mapping[str, float]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class System:
    """An ODE dy/dt = f(t, y) with its parameters and the regions it is usually looked at in.

    Attributes:
        name: the name used on the command line, e.g. "toggle-switch".
        state_names: one name per state.
        params: the parameters (read-only); `dataclasses.replace(system, params={...})` makes
            a variant (`period` then no longer applies).
        equations: f(t, y, params) on tensors, y of shape [..., D].
        default_t_span: the time span `simulate` uses by default.
        initial_box: (low, high) per state: `sample_initial_states` draws uniformly in it.
        bounds: (low, high) per state: a box for plotting the vector field.
        period: the period of the oscillation every trajectory approaches, when there is one
            and it is known; else None.
        description: the equations in one line.
        hamiltonian: for a Hamiltonian system, H(y, params) on y [..., 2n] = (q, p), returning
            [...]; the equations are then (dH/dp, -dH/dq). None otherwise.
        first_obs: for a stiff system with a fast transient: `simulate` observes at t0 and at
            log-spaced times from t0 + first_obs (and integrates with `Rodas5P`); None:
            uniform times and `Dopri8`.
    """

    name: str
    state_names: tuple[str, ...]
    params: Mapping[str, float]
    equations: Equations
    default_t_span: tuple[float, float]
    initial_box: tuple[tuple[float, float], ...]
    bounds: tuple[tuple[float, float], ...]
    period: float | None
    description: str
    hamiltonian: Hamiltonian | None = None
    first_obs: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", types.MappingProxyType(dict(self.params)))

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def vector_field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f(t, y) for y of shape [..., D]; usable directly as `tidal.solve(system.vector_field,
        ...)`."""
        return self.equations(t, y, self.params)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        """The Hamiltonian H(q, p) of states y [..., D]; returns [...].

        Raises:
            InvalidArgumentError: the system is not Hamiltonian (`hamiltonian` is None).
        """
        if self.hamiltonian is None:
            raise InvalidArgumentError(
                f"System {self.name!r} has no Hamiltonian; the Hamiltonian built-in systems are "
                f"{', '.join(n for n, s in SYSTEMS.items() if s.hamiltonian is not None)}.")
        return self.hamiltonian(y, self.params)

    def sample_initial_states(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """n initial states [n, D] (float64), uniform in `initial_box`."""
        low, high = np.array(self.initial_box, dtype=np.float64).T
        return generator.uniform(low, high, size=(n, self.n_states))


def _toggle_switch(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    u, v = y[..., 0], y[..., 1]
    return torch.stack((p["a"] / (1 + v ** p["n"]) - u, p["a"] / (1 + u ** p["n"]) - v), -1)


def _lotka_volterra(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack((p["alpha"] * x - p["beta"] * x * z,
                        p["delta"] * x * z - p["gamma"] * z), -1)


def _damped_pendulum(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    theta, omega = y[..., 0], y[..., 1]
    return torch.stack((omega, -(p["g"] / p["L"]) * torch.sin(theta) - p["c"] * omega), -1)


def _van_der_pol(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack((v, p["mu"] * (1 - x * x) * v - x), -1)


def _lorenz(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack((p["sigma"] * (v - x), x * (p["rho"] - z) - v, x * v - p["beta"] * z), -1)


def _ideal_pendulum(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    q, mom = y[..., 0], y[..., 1]
    return torch.stack((mom, -(p["g"] / p["L"]) * torch.sin(q)), -1)


def _ideal_pendulum_energy(y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return 0.5 * y[..., 1] ** 2 - (p["g"] / p["L"]) * torch.cos(y[..., 0])


def _mass_spring(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    q, mom = y[..., 0], y[..., 1]
    return torch.stack((mom / p["m"], -p["k"] * q), -1)


def _mass_spring_energy(y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return 0.5 * y[..., 1] ** 2 / p["m"] + 0.5 * p["k"] * y[..., 0] ** 2


def _two_body(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    q, mom = y[..., :2], y[..., 2:]
    r3 = (q * q).sum(-1, keepdim=True) ** 1.5
    return torch.cat((mom, -p["mu"] * q / r3), -1)


def _rober(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    a, b, c = y.unbind(-1)
    return torch.stack([-p["k1"] * a + p["k3"] * b * c,
                        p["k1"] * a - p["k3"] * b * c - p["k2"] * b ** 2, p["k2"] * b ** 2], -1)


def _two_body_energy(y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    q, mom = y[..., :2], y[..., 2:]
    return 0.5 * (mom * mom).sum(-1) - p["mu"] / torch.linalg.vector_norm(q, dim=-1)


TOGGLE_SWITCH = System(
    "toggle-switch", ("u", "v"), {"a": 4.0, "n": 3.0}, _toggle_switch, (0.0, 10.0),
    ((0.0, 5.0), (0.0, 5.0)), ((0.0, 5.0), (0.0, 5.0)), None,
    "du/dt = a/(1+v^n) - u, dv/dt = a/(1+u^n) - v: two repressors, bistable "
    "(see toggle_switch_stable_states).")

# alpha, beta, gamma, delta as in the SciPy Cookbook; equilibrium (gamma/delta, alpha/beta) =
# (3, 1.5). Trajectories from the initial box circle it with x in about [0.7, 8].
LOTKA_VOLTERRA = System(
    "lotka-volterra", ("x", "y"), {"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0},
    _lotka_volterra, (0.0, 10.0), ((1.0, 2.0), (0.5, 1.5)), ((0.0, 8.0), (0.0, 6.0)), None,
    "dx/dt = alpha x - beta x y, dy/dt = delta x y - gamma y: predator-prey cycles whose "
    "period depends on their size; delta x - gamma ln x + beta y - alpha ln y is conserved.")

DAMPED_PENDULUM = System(
    "damped-pendulum", ("theta", "omega"), {"g": 9.81, "L": 1.0, "c": 0.3}, _damped_pendulum,
    (0.0, 10.0), ((-2.0, 2.0), (-2.0, 2.0)), ((-math.pi, math.pi), (-6.0, 6.0)), None,
    "dtheta/dt = omega, domega/dt = -(g/L) sin(theta) - c omega: a damped pendulum (not "
    "Hamiltonian: it loses energy; the undamped one is ideal-pendulum); the initial box stays "
    "below the energy of a full turn. Also called 'pendulum', its name in tidal 0.1.")

VAN_DER_POL = System(
    "van-der-pol", ("x", "v"), {"mu": 1.0}, _van_der_pol, (0.0, 20.0),
    ((-3.0, 3.0), (-3.0, 3.0)), ((-4.0, 4.0), (-4.0, 4.0)), 6.663286859323,
    "dx/dt = v, dv/dt = mu (1 - x^2) v - x: a limit cycle (period 6.6633 for mu = 1).")

LORENZ = System(
    "lorenz", ("x", "y", "z"), {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}, _lorenz,
    (0.0, 5.0), ((-15.0, 15.0), (-15.0, 15.0), (5.0, 40.0)),
    ((-25.0, 25.0), (-30.0, 30.0), (0.0, 55.0)), None,
    "dx/dt = sigma (y - x), dy/dt = x (rho - z) - y, dz/dt = x y - beta z: chaotic.")

# Hamiltonian systems: the state is (q, p), the equations are (dH/dp, -dH/dq).
IDEAL_PENDULUM = System(
    "ideal-pendulum", ("q", "p"), {"g": 1.0, "L": 1.0}, _ideal_pendulum, (0.0, 10.0),
    ((-1.5, 1.5), (-1.0, 1.0)), ((-math.pi, math.pi), (-2.5, 2.5)), None,
    "dq/dt = p, dp/dt = -(g/L) sin q: the undamped pendulum, H = p^2/2 - (g/L) cos q; the "
    "initial box stays below the separatrix (H < g/L), periods from 2 pi up to about 8.",
    hamiltonian=_ideal_pendulum_energy)

MASS_SPRING = System(
    "mass-spring", ("q", "p"), {"m": 1.0, "k": 1.0}, _mass_spring, (0.0, 10.0),
    ((-1.0, 1.0), (-1.0, 1.0)), ((-2.0, 2.0), (-2.0, 2.0)), 2 * math.pi,
    "dq/dt = p/m, dp/dt = -k q: the harmonic oscillator, H = p^2/(2m) + k q^2/2, period "
    "2 pi sqrt(m/k).",
    hamiltonian=_mass_spring_energy)

TWO_BODY = System(
    "two-body", ("q1", "q2", "p1", "p2"), {"mu": 1.0}, _two_body, (0.0, 20.0),
    ((0.9, 1.1), (-0.1, 0.1), (-0.1, 0.1), (0.9, 1.1)),
    ((-2.0, 2.0), (-2.0, 2.0), (-1.5, 1.5), (-1.5, 1.5)), None,
    "dq/dt = p, dp/dt = -mu q/|q|^3: a planar Kepler orbit (the two-body problem in relative "
    "coordinates), H = |p|^2/2 - mu/|q|; the initial box gives bound, nearly circular orbits "
    "of period about 2 pi.",
    hamiltonian=_two_body_energy)

# Robertson's chemical kinetics (1966): stiff (rates 0.04 to 3e7), B stays below 4e-5; the
# standard stiff benchmark, and the one of Kim et al., "Stiff neural ordinary differential
# equations" (Chaos 31, 2021), with log-spaced observation times.
ROBER = System(
    "rober", ("A", "B", "C"), {"k1": 0.04, "k2": 3e7, "k3": 1e4}, _rober, (0.0, 1e5),
    ((0.5, 1.5), (0.0, 0.0), (0.0, 0.0)), ((0.0, 1.5), (0.0, 4e-5), (0.0, 1.5)), None,
    "dA/dt = -k1 A + k3 B C, dB/dt = k1 A - k3 B C - k2 B^2, dC/dt = k2 B^2: stiff "
    "chemical kinetics (k = 0.04, 3e7, 1e4); A + B + C is conserved. Simulated with Rodas5P "
    "at log-spaced times from 1e-5.", first_obs=1e-5)

#: Older names still accepted, so that scripts and run directories that use them keep their
#: meaning: "pendulum" was the damped pendulum's name.
ALIASES: Mapping[str, str] = types.MappingProxyType({"pendulum": "damped-pendulum"})

_BUILT_IN = {s.name: s for s in (TOGGLE_SWITCH, LOTKA_VOLTERRA, DAMPED_PENDULUM, VAN_DER_POL,
                                  LORENZ, IDEAL_PENDULUM, MASS_SPRING, TWO_BODY, ROBER)}

#: The built-in systems by their command-line names, and by their `ALIASES`.
SYSTEMS: Mapping[str, System] = types.MappingProxyType(
    {**_BUILT_IN, **{alias: _BUILT_IN[name] for alias, name in ALIASES.items()}})


def toggle_switch_stable_states(a: float = 4.0, n: float = 3.0) -> np.ndarray:
    """The two stable fixed points of the toggle switch, [2, 2] as (u, v) rows, u ascending.

    Fixed points solve u = a/(1+v^n), v = a/(1+u^n); substituting v gives one equation in u on
    [0, a], whose roots are bracketed on a fine grid and bisected to machine precision. A
    point is stable when both Jacobian eigenvalues, -1 +- sqrt(p q) with
    p = a n v^(n-1)/(1+v^n)^2 and q = a n u^(n-1)/(1+u^n)^2, are negative: p q < 1.

    Raises:
        InvalidArgumentError: the parameters do not give two stable states (n too small).
    """
    def excess(u: np.ndarray) -> np.ndarray:
        return u - a / (1 + (a / (1 + u**n)) ** n)

    grid = np.linspace(0.0, a, 100_001)
    negative = excess(grid) < 0
    crossing = np.flatnonzero(negative[:-1] != negative[1:])
    low, high = grid[crossing], grid[crossing + 1]
    for _ in range(80):
        middle = 0.5 * (low + high)
        same = (excess(middle) < 0) == negative[crossing]
        low, high = np.where(same, middle, low), np.where(same, high, middle)
    u = 0.5 * (low + high)
    v = a / (1 + u**n)
    pq = (a * n * v ** (n - 1) / (1 + v**n) ** 2) * (a * n * u ** (n - 1) / (1 + u**n) ** 2)
    stable = np.stack((u, v), axis=1)[pq < 1]
    if stable.shape[0] != 2:
        raise InvalidArgumentError(
            f"`toggle_switch_stable_states(a={a}, n={n})`: the switch has {stable.shape[0]} "
            "stable state(s), not 2; bistability needs cooperative repression (n > 1) and a "
            "large enough a.")
    return stable


def simulate(system: System | str, n_trajectories: int, t_span: Sequence[float] | None = None,
             n_obs: int | tuple[int, int] = (20, 40), noise: float = 0.05,
             irregular: bool = True, missing: float = 0.0, seed: int = 0,
             noise_process: float = 0.0) -> Trajectories:
    """Noisy observations of a system's trajectories, deterministic for a seed.

    Initial states come from `system.sample_initial_states`. The true system is integrated in
    float64 with `Dopri8` at rtol 1e-8, atol 1e-10 for every trajectory (the error norm is
    the worst trajectory's), all trajectories at once on the union of their times.

    Args:
        system: a `System`, or the name of a built-in one (a key of `SYSTEMS`).
        n_trajectories: how many.
        t_span: (t0, t1); default `system.default_t_span`.
        n_obs: observations per trajectory: a count, or an inclusive range (low, high) from
            which each trajectory draws its own.
        noise: Gaussian noise, with standard deviation `noise` times each state's range (max
            - min) over the clean values of all trajectories.
        irregular: True: t0, then sorted uniform times in [t0, t1); False: an even grid from
            t0 to t1.
        missing: fraction of entries blanked (NaN), independently; a row that would lose every
            entry keeps one at random, so every observation time observes something (the
            expected fraction is missing - missing^D / D).
        seed: seed of every random draw.
        noise_process: process noise: with sigma > 0 the trajectories solve the SDE
            dy = f(t, y) dt + sigma dW (diagonal, additive; sigma in state units per square
            root of time) instead of the ODE, with `tidal.sdeint` (SRA1, strong order 1.5,
            1000 steps over the span plus every observation time; trajectory i's path is
            sample i of the ensemble `seed`).

    Returns:
        Trajectories with ids "0" .. "N-1" and the system's state names.
    """
    system = _lookup(system)
    t0, t1 = _t_span(system.default_t_span if t_span is None else t_span)
    low, high = _n_obs(n_obs)
    _check_scalars(n_trajectories, noise, missing)
    if isinstance(noise_process, bool) or not isinstance(noise_process, (int, float)) or not (
            0 <= noise_process < math.inf):
        raise InvalidArgumentError(f"`simulate(noise_process={noise_process!r})` must be a "
                                   f"finite number >= 0 (0: no process noise).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"`simulate(seed={seed!r})` must be an integer >= 0.")
    rng = np.random.default_rng(seed)
    y0 = system.sample_initial_states(n_trajectories, rng)
    counts = rng.integers(low, high + 1, size=n_trajectories)
    times = [_observation_times(system, t0, t1, c, irregular, rng) for c in counts]
    clean = (_integrate(system, y0, times) if noise_process == 0 else
             _integrate_sde(system, y0, times, float(noise_process), (t0, t1), seed))
    spread = np.ptp(np.concatenate(clean), axis=0)
    values = [_blank(c + rng.normal(0.0, noise * spread, c.shape), missing, rng)
              for c in clean]
    return Trajectories(times, values, state_names=system.state_names)


def _observation_times(system: System, t0: float, t1: float, count: int, irregular: bool,
                       rng: np.random.Generator) -> np.ndarray:
    """t0, then count - 1 times in (t0, t1]: uniform, or log-spaced from t0 + first_obs."""
    if system.first_obs is None:
        inside = (np.sort(rng.uniform(t0, t1, count - 1)) if irregular
                  else np.linspace(t0, t1, count)[1:])
    else:
        low, high = math.log10(system.first_obs), math.log10(t1 - t0)
        exponents = (np.sort(rng.uniform(low, high, count - 1)) if irregular
                     else np.linspace(low, high, count - 1))
        inside = t0 + 10.0 ** exponents
    return np.concatenate(([t0], inside))


def _integrate(system: System, y0: np.ndarray, times: list[np.ndarray]) -> list[np.ndarray]:
    grid = np.unique(np.concatenate(times))
    controller = PIDController(rtol=1e-8, atol=1e-10, norm=_worst_trajectory_rms)
    solver = Dopri8() if system.first_obs is None else Rodas5P()
    solution = solve(system.vector_field, torch.from_numpy(y0), torch.from_numpy(grid),
                     solver=solver, controller=controller, max_steps=1_000_000)
    ys = solution.ys.numpy()
    return [ys[np.searchsorted(grid, t), i] for i, t in enumerate(times)]


def _integrate_sde(system: System, y0: np.ndarray, times: list[np.ndarray], sigma: float,
                   t_span: tuple[float, float], seed: int) -> list[np.ndarray]:
    from tidal.integrate_sde import sdeint
    from tidal.solvers.sde import SRA1, Noise

    grid = np.unique(np.concatenate(times))
    solution = sdeint(system.vector_field, lambda t, y: torch.full_like(y, sigma),
                      torch.from_numpy(y0), torch.from_numpy(grid),
                      dt=(t_span[1] - t_span[0]) / 1000, noise=Noise("diagonal", additive=True),
                      solver=SRA1(), seed=seed, max_steps=1_000_000)
    ys = solution.ys.numpy()
    return [ys[np.searchsorted(grid, t), i] for i, t in enumerate(times)]


def _worst_trajectory_rms(scaled_error: torch.Tensor) -> torch.Tensor:
    """[N, D] -> the largest RMS over trajectories: each one is held to the tolerance."""
    return scaled_error.square().mean(dim=-1).sqrt().max()


def _blank(values: np.ndarray, missing: float, rng: np.random.Generator) -> np.ndarray:
    drop = rng.random(values.shape) < missing
    emptied = np.flatnonzero(drop.all(axis=1))
    drop[emptied, rng.integers(0, values.shape[1], emptied.size)] = False
    return np.where(drop, np.nan, values)


def _lookup(system: System | str) -> System:
    if isinstance(system, System):
        return system
    if system not in SYSTEMS:
        raise InvalidArgumentError(f"`simulate(system={system!r})`: unknown system; the "
                                   f"built-in ones are {', '.join(SYSTEMS)}.")
    return SYSTEMS[system]


def _t_span(t_span: Sequence[float]) -> tuple[float, float]:
    span = tuple(float(t) for t in t_span)
    if len(span) != 2 or not all(map(math.isfinite, span)) or span[0] >= span[1]:
        raise InvalidArgumentError(f"`simulate(t_span={tuple(t_span)})` must be (t0, t1), "
                                   "finite, with t0 < t1.")
    return span


def _n_obs(n_obs: int | tuple[int, int]) -> tuple[int, int]:
    low, high = (n_obs, n_obs) if isinstance(n_obs, (int, np.integer)) else tuple(n_obs)
    if not all(isinstance(k, (int, np.integer)) for k in (low, high)) or not 2 <= low <= high:
        raise InvalidArgumentError(f"`simulate(n_obs={n_obs!r})` must be a count >= 2 or an "
                                   "inclusive range (low, high) with 2 <= low <= high.")
    return int(low), int(high)


def _check_scalars(n_trajectories: int, noise: float, missing: float) -> None:
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, (int, np.integer)) \
            or n_trajectories < 1:
        raise InvalidArgumentError(f"`simulate(n_trajectories={n_trajectories!r})` must be an "
                                   "integer >= 1.")
    if not (math.isfinite(noise) and noise >= 0):
        raise InvalidArgumentError(f"`simulate(noise={noise!r})` must be >= 0 (a fraction of "
                                   "each state's range).")
    if not 0 <= missing < 1:
        raise InvalidArgumentError(f"`simulate(missing={missing!r})` must be in [0, 1) (the "
                                   "fraction of entries left unobserved).")
