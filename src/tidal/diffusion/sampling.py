r"""Sampling from a score s(x, t) ≈ ∇ log p_t(x) of a forward process.

- `reverse_sde`: the reverse-time SDE (Anderson 1982; Song et al. 2021)

  $$ dx = [f(t) x - g(t)^2 s(x, t)]\, dt + g(t)\, d\bar W, \qquad t: T \to t_{min}, $$

  written in the reversed time τ = T - t (so it runs forwards) and solved by `tidal.sdeint`
  with Euler-Maruyama on a uniform grid. With `corrector_steps` > 0 it is Song's
  predictor-corrector sampler: after each predictor step, Langevin MCMC steps
  x ← x + ε s + √(2ε) z at the new time, with ε set by the signal-to-noise ratio `snr`.
- `probability_flow`: the probability-flow ODE dx/dt = f(t) x - g(t)^2 s(x, t)/2, which has
  the same marginals, solved from T to t_min by `tidal.solve` (adaptive, Tsit5 by default).
- `heun`: EDM's deterministic second-order sampler (Karras et al. 2022, Algorithm 1): Heun's
  method on the same ODE over EDM's grid of noise levels (`ForwardProcess.sampling_times`:
  ρ-th power spacing of σ/m, ρ = 7, mapped to times), then one Euler step to zero noise, which
  is Tweedie's denoiser x_0 = (x + σ^2 s)/m.

Every sampler returns a `Samples` with the number of score evaluations (NFE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers import PIDController
from tidal.controllers.base import StepSizeController
from tidal.controllers.constant import StepTo
from tidal.diffusion.processes import ForwardProcess
from tidal.integrate import solve
from tidal.integrate_sde import sdeint
from tidal.solvers.base import StepMethod
from tidal.solvers.fixed_step import Heun2
from tidal.solvers.tsit5 import Tsit5

GRIDS = ("uniform", "edm")
#: a score function s(x [B, d], t [B]) -> [B, d]
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Samples(NamedTuple):
    """Samples [n, d] and `nfe`, the number of score evaluations that made them (each on the
    whole batch)."""

    x: torch.Tensor
    nfe: int


class CountedScore:
    """s(x, t) with t broadcast to [B], counting its evaluations in `nfe`."""

    def __init__(self, score: Score) -> None:
        self.score, self.nfe = score, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        self.nfe += 1
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return self.score(x, t.expand(x.shape[0]) if t.dim() == 0 else t)


def probability_flow_field(score: Score, process: ForwardProcess
                           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The probability-flow vector field v(t, x) = f(t) x - g(t)^2 s(x, t)/2 (t first, as
    `tidal.solve` calls it). Times are clamped to [t_min, T]: an adaptive solver's first-step
    guess may probe beyond the end, where some processes are undefined (t < 0)."""

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64).clamp(process.t_min, process.T)
        g2 = process.diffusion(t).square().to(x.dtype)
        return process.drift(x, t) - 0.5 * _col(g2) * score(x, t.to(x.dtype))

    return field


def reverse_sde(score: Score, process: ForwardProcess, n: int, dim: int, *, steps: int = 1000,
                grid: str = "uniform", corrector_steps: int = 0, snr: float = 0.16,
                denoise: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64
                ) -> Samples:
    """Sample by the reverse-time SDE with `steps` Euler-Maruyama steps from T to t_min.

    Args:
        score: s(x, t).
        process: the forward process the score belongs to.
        n, dim: how many samples, of what dimension.
        steps: predictor steps.
        grid: "uniform" in t (Song et al.) or "edm" (`process.sampling_times(steps + 1)`,
            the choice for `EDMProcess`, whose time is the noise level).
        corrector_steps: Langevin steps after each predictor step (0: no corrector).
        snr: the corrector's signal-to-noise ratio r: step ε = 2 (r ||z|| / ||s||)^2.
        denoise: end with Tweedie's denoiser x ← (x + σ^2 s)/m at t_min (one more NFE).
        seed: seeds the prior sample, the Brownian path and the corrector's noise.
    """
    _check_count("reverse_sde", n=n, dim=dim, steps=steps)
    if not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise InvalidArgumentError(
            f"`reverse_sde(corrector_steps={corrector_steps!r})` must be an integer >= 0.")
    counted = CountedScore(score)
    generator = torch.Generator().manual_seed(seed)
    x = process.prior_sample(n, dim, generator=generator, dtype=dtype)

    def drift(tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = process.T - tau.to(torch.float64)
        g2 = process.diffusion(t).square().to(y.dtype)
        return -process.drift(y, t) + _col(g2) * counted(y, t.to(y.dtype))

    def diffusion(tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = process.diffusion(process.T - tau.to(torch.float64)).to(y.dtype)
        return _col(g) * torch.ones_like(y)

    if grid not in GRIDS:
        raise InvalidArgumentError(
            f"`reverse_sde(grid={grid!r})` is not known; choose one of {list(GRIDS)}.")
    times = (process.sampling_times(steps + 1) if grid == "edm" else
             torch.linspace(process.T, process.t_min, steps + 1, dtype=torch.float64))
    taus = process.T - times
    taus[0] = 0.0
    dt = float(taus.diff().max())  # every step lands on the next grid time
    sde_seed = int(torch.randint(2**31, (), generator=generator))
    if corrector_steps == 0:
        x = sdeint(drift, diffusion, x, taus, dt=dt, seed=sde_seed).ys[-1]
    else:
        for i in range(steps):
            x = sdeint(drift, diffusion, x, taus[i:i + 2], dt=dt, seed=sde_seed + i).ys[-1]
            x = _langevin(counted, x, times[i + 1], corrector_steps, snr, generator)
    if denoise:
        x = _tweedie(counted, process, x)
    return Samples(x, counted.nfe)


def probability_flow(score: Score, process: ForwardProcess, n: int, dim: int, *,
                     solver: StepMethod | None = None,
                     controller: StepSizeController | None = None, denoise: bool = False,
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> Samples:
    """Sample by solving the probability-flow ODE from prior samples at T down to t_min.

    `solver` defaults to `Tsit5()`, `controller` to `PIDController(rtol=1e-5, atol=1e-5)`;
    `denoise` ends with Tweedie's denoiser (one more NFE).
    """
    _check_count("probability_flow", n=n, dim=dim)
    counted = CountedScore(score)
    generator = torch.Generator().manual_seed(seed)
    x = process.prior_sample(n, dim, generator=generator, dtype=dtype)
    ts = torch.tensor([process.T, process.t_min], dtype=torch.float64)
    with torch.no_grad():
        sol = solve(probability_flow_field(counted, process), x, ts,
                    solver=solver if solver is not None else Tsit5(),
                    controller=controller if controller is not None else PIDController(
                        rtol=1e-5, atol=1e-5))
    x = sol.ys[-1]
    if denoise:
        x = _tweedie(counted, process, x)
    return Samples(x, counted.nfe)


def heun(score: Score, process: ForwardProcess, n: int, dim: int, *, steps: int = 18,
         rho: float = 7.0, seed: int = 0, dtype: torch.dtype = torch.float64) -> Samples:
    """EDM's Heun sampler: `steps` - 1 Heun steps of the probability-flow ODE over
    `process.sampling_times(steps, rho)` (by `tidal.solve` with `Heun2` and `StepTo`), then
    the denoising Euler step. NFE = 2 steps - 1, as EDM counts it (35 for the paper's 18
    steps): `tidal.solve` does not evaluate the field at the end of its last step."""
    _check_count("heun", n=n, dim=dim)
    counted = CountedScore(score)
    generator = torch.Generator().manual_seed(seed)
    x = process.prior_sample(n, dim, generator=generator, dtype=dtype)
    times = process.sampling_times(steps, rho)
    with torch.no_grad():
        sol = solve(probability_flow_field(counted, process), x, times[[0, -1]],
                    solver=Heun2(), controller=StepTo(times))
    return Samples(_tweedie(counted, process, sol.ys[-1]), counted.nfe)


def _tweedie(score: CountedScore, process: ForwardProcess, x: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] = (x + σ^2 s(x, t))/m at t = t_min."""
    t = torch.tensor(process.t_min, dtype=torch.float64)
    m, sigma = process.mean_scale(t).item(), process.std(t).item()
    with torch.no_grad():
        return (x + sigma**2 * score(x, t.to(x.dtype))) / m


def _langevin(score: CountedScore, x: torch.Tensor, t: torch.Tensor, steps: int, snr: float,
              generator: torch.Generator) -> torch.Tensor:
    """Langevin corrector steps at time t with Song et al.'s step size from the SNR."""
    for _ in range(steps):
        grad = score(x, t.to(x.dtype))
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        ratio = noise.norm(dim=-1).mean() / grad.norm(dim=-1).mean()
        eps = 2 * (snr * ratio).square()
        x = x + eps * grad + (2 * eps).sqrt() * noise
    return x


def _col(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1) if values.dim() else values


def _check_count(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"`{owner}({name}={value!r})` must be a positive integer.")
