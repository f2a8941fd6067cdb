"""`tidal.sdeint`: check the arguments and build the SDE problem, then let the adjoint run it
through the SDE loop (`tidal._loop_sde`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tidal import defaults
from tidal._loop_sde import run_sde_loop
from tidal._sde_problem import make_sde_problem
from tidal.adjoint.base import Adjoint
from tidal.brownian import BrownianTree
from tidal.controllers.base import StepSizeController
from tidal.solution import Solution
from tidal.solvers.sde import Calculus, Noise, SDEMethod


def sdeint(
    drift: Callable[..., torch.Tensor],
    diffusion: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    ts: torch.Tensor | Sequence[float],
    *,
    dt: float | None = None,
    noise: str | Noise = "diagonal",
    calculus: str | Calculus = "ito",
    solver: SDEMethod | None = None,
    controller: StepSizeController | None = None,
    adjoint: Adjoint | None = None,
    seed: int | None = None,
    brownian: BrownianTree | None = None,
    args: Any = None,
    max_steps: int = defaults.MAX_STEPS,
    throw: bool = True,
) -> Solution:
    r"""Solve dy = f(t, y) dt + g(t, y) dW from y(ts[0]) = y0 and return y at the times `ts`.

    Args:
        drift: f(t, y) (or f(t, y, args)), returning [B, d] like y.
        diffusion: g(t, y) (or g(t, y, args)): [B, d] for `noise="diagonal"` (g_i multiplies
            dW_i) or `"scalar"` (one Brownian motion for all components), [B, d, m] for
            `"general"` or `"additive"` (g independent of y; every method applies, SRA1 at
            order 1.5). t is a tensor of y's dtype: 0-d on a shared grid, [B] on per-sample
            grids.
        y0: initial states [B, d], float32 or float64, CPU or CUDA.
        ts: output times, increasing: [T] (one grid for the batch) or [T, B] (sample b on its
            own grid ts[:, b], with its own steps). Steps land on every output time.
        dt: the step size (fixed steps), or the first step with an adaptive controller.
            Required: no default fits every time scale.
        noise: "diagonal", "scalar", "general", "additive", or a `Noise`.
        calculus: "ito" (default) or "stratonovich": which integral the equation means.
        solver: an SDE method: `EulerMaruyama()` (Itô default, strong order 0.5), `Milstein()`
            (1.0; `Milstein(Calculus.STRATONOVICH)`), `Heun()` (Stratonovich default),
            `ReversibleHeun()` (Stratonovich; exact O(1)-memory gradients with
            `ReversibleAdjoint`), `SRA1()` (additive noise, 1.5, embedded error estimate).
        controller: None (fixed steps of dt) or `PIDController(rtol, atol)` for adaptive steps
            (methods with an error estimate: SRA1); a rejected step asks the Brownian tree for
            a shorter interval of the same path.
        adjoint: `BackpropAdjoint()` (default), `CheckpointAdjoint()` (replays segments with
            the same Brownian increments), `ReversibleAdjoint()` (with `ReversibleHeun`) or
            `BacksolveAdjoint()` (the stochastic adjoint SDE solved backwards on the same
            path: Stratonovich, shared grid, fixed steps; converges to Backprop's gradient
            as dt shrinks).
        seed: the ensemble's seed; sample b's path depends on (seed, b) only. None draws one
            from torch's global generator (so `torch.manual_seed` makes runs repeatable).
        brownian: a `tidal.brownian.BrownianTree` to use instead (to share one path between
            solves); it must cover the time span, with y0's batch, dtype and device.
        args: passed to drift and diffusion as their third argument.
        max_steps: most steps (accepted and rejected); default 10,000.
        throw: raise `SolveFailedError` if the solve cannot finish (else check `status`).

    Returns:
        A `Solution` with `ys` [T, B, d] and `stats` (`num_fevals` counts drift evaluations).

    Example:
        >>> import torch, tidal
        >>> sol = tidal.sdeint(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y),
        ...                    torch.ones(4, 2), torch.linspace(0, 1, 5), dt=0.01, seed=0)
        >>> sol.ys.shape
        torch.Size([5, 4, 2])
    """
    problem = make_sde_problem(drift, diffusion, y0, ts, noise=noise, calculus=calculus,
                               solver=solver, dt=dt, controller=controller, adjoint=adjoint,
                               seed=seed, brownian=brownian, args=args, max_steps=max_steps,
                               throw=throw)
    return problem.adjoint.run(problem, run_sde_loop)  # type: ignore[arg-type]
