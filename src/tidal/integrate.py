"""`tidal.solve`: check the arguments and build the problem, then let the adjoint run it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tidal import defaults
from tidal._loop import SharedLoop
from tidal._loop_io import LoopResult, Recorder, prepare, raise_if_failed
from tidal._loop_per_sample import PerSampleLoop
from tidal._problem import Problem, make_problem
from tidal.adjoint.base import Adjoint
from tidal.compiled import compiled_loop
from tidal.controllers.base import StepSizeController
from tidal.events import Event
from tidal.solution import Solution
from tidal.solvers.base import StepMethod


def solve(
    f: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    ts: torch.Tensor | Sequence[float],
    *,
    solver: StepMethod | None = None,
    controller: StepSizeController | None = None,
    adjoint: Adjoint | None = None,
    args: Any = None,
    event: Event | Callable[..., torch.Tensor] | None = None,
    dense: bool = False,
    max_steps: int = defaults.MAX_STEPS,
    throw: bool = True,
    compile: bool | int = False,
) -> Solution:
    r"""Solve dy/dt = f(t, y) from y(ts[0]) = y0 and return the states at the times `ts`.

    Args:
        f: the vector field `f(t, y)` (or `f(t, y, args)` when `args` is given), returning a
            tensor of y's shape and dtype. t is a tensor of y's dtype: 0-d on a shared grid,
            [B] (one time per sample) on per-sample grids.
        y0: initial state, any shape; float32 or float64, CPU or CUDA. Outputs follow its
            dtype and device.
        ts: output times, strictly increasing or strictly decreasing (reverse time); ts[0] is
            the initial time. Shape [T]: one grid and one step size for the whole batch (the
            fastest). Shape [T, B]: sample b = y0[b] has its own grid ts[:, b], step size,
            accept/reject decisions and statistics. Held in float64 whatever y0's dtype.
        solver: the method, e.g. `tidal.Tsit5()`; default `tidal.Dopri5()`. For Hamiltonian
            systems: `tidal.Leapfrog()`, `tidal.Yoshida4()` (separable H, state (q, p)) or
            `tidal.ImplicitMidpoint()`, with a fixed step. For stiff problems (very different
            time scales: chemical kinetics, Van der Pol with large mu): `tidal.Rodas5P()`
            (adaptive; `Rodas4P()`, `Rosenbrock23()` for loose tolerances; float64
            recommended), or the fixed-step implicit methods of `tidal.solvers` (`RadauIIA5`,
            `GL4`, ...).
        controller: `PIDController(rtol, atol)` for adaptive methods (default rtol=1e-6,
            atol=1e-8), `ConstantStepSize(dt)` or `StepTo(ts)` for fixed steps.
        adjoint: how gradients pass through the solve: `BackpropAdjoint()` (default; autograd
            records every step), `CheckpointAdjoint(checkpoints)` (the same gradient with
            memory bounded by the checkpoints) or `BacksolveAdjoint()` (a second ODE backwards
            in time, constant memory; not with events), on shared and per-sample grids.
            Gradients reach y0, the tensors f uses and, when `ts` is a tensor that requires
            grad, the times.
        args: passed to f as its third argument.
        event: a terminal `Event` (or a bare g(t, y)): the solve stops where g changes sign.
            `Solution.event_t` and `event_y` carry gradients (implicit function theorem) with
            `BackpropAdjoint` and `CheckpointAdjoint`.
        dense: keep every step's interpolant, for `Solution.evaluate(t)`.
        max_steps: most steps (accepted and rejected) before giving up; default 10,000 (see
            `tidal.defaults`).
        throw: raise `SolveFailedError` if the solve cannot finish; with False, return the
            partial solution and check `Solution.status`.
        compile: take the steps in a `torch.compile`d function with f traced in (explicit
            adaptive methods on a shared grid, without events or dense output, torch >= 2.11;
            anything else, or an f that cannot be traced, runs eagerly with a warning). A
            solve that records no graph (inference, the checkpoint adjoint's forward) runs its
            whole loop in one compiled call, and its backward replays each step in one. With
            a graph (Backprop), True: one call per step; an integer n: n steps per call (less
            overhead per step, n times the compilation).
            The first solve pays the compilation (seconds); see `tidal.compiled` and
            docs/design.md.

    Returns:
        A `Solution` with `ys` of shape [T, *y0.shape] (time first), `stats` and `status`.

    Raises:
        InvalidArgumentError: a bad argument (named in the message).
        IncompatibleOptionsError: a solver and controller that do not fit together.
        SolveFailedError: the solve could not finish (and `throw=True`): too many steps, a
            step size float64 time cannot resolve, or a NaN or inf from the vector field (which
            ends the solve at once).

    Example:
        >>> import torch, tidal
        >>> sol = tidal.solve(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))
        >>> sol.ys.shape
        torch.Size([5, 3])
    """
    problem = make_problem(f, y0, ts, solver=solver, controller=controller, adjoint=adjoint,
                           args=args, event=event, dense=dense, max_steps=max_steps,
                           throw=throw, compile=compile)
    return problem.adjoint.run(problem, run_loop)


def run_loop(problem: Problem, y0: torch.Tensor, *, recorder: Recorder | None = None,
             f0: torch.Tensor | None = None) -> LoopResult:
    """The loop an adjoint drives (`tidal.adjoint.base.Loop`): the shared-grid loop or the
    per-sample one, as the problem's grid says."""
    setup = prepare(problem, y0, recorder, f0)
    compiled = compiled_loop(problem, setup) if problem.compile else None
    loop = compiled or (PerSampleLoop(setup) if problem.grid.batched else SharedLoop(setup))
    result = loop.run()
    raise_if_failed(problem, result)
    return result
