"""`tidal.solve`: check the arguments, set up the problem, run the loop, build the `Solution`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tidal import _validate as check
from tidal._errors import SolveFailedError, Status
from tidal._loop import SharedLoop, SharedProblem
from tidal._loop_per_sample import PerSampleLoop, PerSampleProblem
from tidal._vector_field import PerSampleField, SharedField
from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint
from tidal.adjoint.backsolve import BacksolveProblem, _Backsolve, parameters_of
from tidal.adjoint.checkpoint import (
    CheckpointedSolve,
    CheckpointProblem,
    CheckpointRecorder,
    PerSampleCheckpointedSolve,
    PerSampleCheckpointProblem,
    PerSampleRecorder,
    Segment,
)
from tidal.adjoint.times import initial_time, output_times
from tidal.controllers import ConstantStepSize, PIDController
from tidal.controllers.norms import initial_step
from tidal.events import Event, EventWatcher, differentiable_event
from tidal.interpolation import PerSampleDenseOutput, SharedDenseOutput
from tidal.solution import Solution
from tidal.solvers import Dopri5, Solver


def solve(
    f: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    ts: torch.Tensor | Sequence[float],
    *,
    solver: Solver | None = None,
    controller: PIDController | ConstantStepSize | None = None,
    adjoint: BackpropAdjoint | CheckpointAdjoint | BacksolveAdjoint | None = None,
    args: Any = None,
    event: Event | Callable | None = None,
    dense: bool = False,
    max_steps: int = 10_000,
    throw: bool = True,
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
            `tidal.ImplicitMidpoint()`, with a fixed step.
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
        max_steps: most steps (accepted and rejected) before giving up.
        throw: raise `SolveFailedError` if the solve cannot finish; with False, return the
            partial solution and check `Solution.status`.

    Returns:
        A `Solution` with `ys` of shape [T, *y0.shape] (time first), `stats` and `status`.

    Raises:
        InvalidArgumentError: a bad argument (named in the message).
        IncompatibleOptionsError: a solver and controller that do not fit together.
        SolveFailedError: the solve could not finish (and `throw=True`).

    Example:
        >>> import torch, tidal
        >>> sol = tidal.solve(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))
        >>> sol.ys.shape
        torch.Size([5, 3])
    """
    check.callable_field(f)
    check.state(y0)
    event = Event(event) if event is not None and not isinstance(event, Event) else event
    times = check.times(ts, y0, allow_infinite_end=event is not None)
    solver = check.solver(solver if solver is not None else Dopri5())
    controller = check.controller(controller, solver)
    max_steps = check.max_steps(max_steps)
    adjoint = check.adjoint(adjoint, times, event, dense, controller, solver)
    if isinstance(adjoint, BacksolveAdjoint):
        return _solve_backsolve(f, y0, ts, times, solver, controller, args, max_steps, throw,
                                adjoint)
    time_grad = isinstance(ts, torch.Tensor) and ts.requires_grad and torch.is_grad_enabled()

    def call_f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return f(t, y) if args is None else f(t, y, args)

    start = initial_time(call_f, y0, ts[0]) if time_grad else y0
    if isinstance(adjoint, CheckpointAdjoint) and times.dim() == 1:
        solution, signs = _solve_checkpointed(f, start, times, solver, controller, args, event,
                                              max_steps, throw, adjoint)
    elif isinstance(adjoint, CheckpointAdjoint):
        solution, signs = _solve_checkpointed_per_sample(f, start, times, solver, controller,
                                                         args, event, max_steps, throw, adjoint)
    elif times.dim() == 1:
        solution, signs = _solve_shared(f, start, times, solver, controller, args, event, dense,
                                        max_steps, throw)
    else:
        solution, signs = _solve_per_sample(f, start, times, solver, controller, args, event,
                                            dense, max_steps, throw)
    if time_grad:
        solution.ys = output_times(call_f, ts, solution.ys)
    if event is not None and torch.is_grad_enabled():
        assert solution.event_t is not None and solution.event_y is not None
        solution.event_t, solution.event_y = differentiable_event(
            event, call_f, solution.event_t, solution.event_y, signs,
            fallback=(times[0], y0), batched=times.dim() == 2)
    return solution


def _first_call(f: Callable, t: torch.Tensor, y0: torch.Tensor, args: Any) -> torch.Tensor:
    f0 = f(t, y0) if args is None else f(t, y0, args)
    check.field_output(f0, y0)
    return f0


def _solve_shared(f, y0, times, solver, controller, args, event, dense, max_steps, throw,
                  on_accept: Callable | None = None):
    taus, direction = check.forward_times(times.tolist())
    field = SharedField(f, args, y0.shape, direction, y0.dtype, y0.device)
    f0 = _first_call(f, field.user_time(taus[0]), y0, args)
    f0 = f0 if direction > 0 else -f0
    rtol, atol = check.tolerances(controller, y0, layout=y0.shape)
    watcher = _watcher(event, field.user_time(taus[0]), y0, batch=None)

    def f_at(h: torch.Tensor) -> torch.Tensor:
        return field(taus[0] + h.item(), y0 + h.item() * f0).reshape(1, -1)

    dt0, setup_fevals = _first_step(solver, controller, f_at, y0.reshape(1, -1),
                                    f0.reshape(1, -1), _rows(rtol), _rows(atol))
    span = taus[-1] - taus[0]
    problem = SharedProblem(
        field=field, solver=solver, controller=controller, y0=y0, f0=f0, taus=taus,
        tau_end=taus[-1], boundaries=check.boundaries(controller, direction, taus[0], taus[-1]),
        dt0=min(dt0.item(), span), setup_fevals=setup_fevals, rtol=rtol, atol=atol,
        norm=check.norm(controller, y0.shape), watcher=watcher, max_steps=max_steps,
        dense=dense, on_accept=on_accept)
    result = SharedLoop(problem).run()
    has_event = event is not None
    solution = Solution(
        ts=times, ys=result.ys.reshape(len(taus), *y0.shape), stats=result.stats,
        status=result.status,
        event_t=torch.tensor(direction * result.event_tau, dtype=torch.float64)
        if has_event else None,
        event_y=(result.event_y.view(y0.shape) if result.event_y is not None
                 else torch.full_like(y0, math.nan)) if has_event else None,
        dense_output=SharedDenseOutput(result.dense_steps, direction, y0.shape,
                                       problem.field.dtype, solver.tableau) if dense else None)
    return _finish(solution, result.status, result.where, throw), result.event_signs


def _solve_per_sample(f, y0, times, solver, controller, args, event, dense, max_steps, throw,
                      on_accept: Callable | None = None):
    batch = y0.shape[0]
    direction = torch.where(times[-1] < times[0], -1.0, 1.0)  # [B]
    taus = (times * direction).to(y0.device)  # [T, B] increasing per sample
    field = PerSampleField(f, args, y0.shape, direction.to(y0.device), y0.dtype)
    y = y0.reshape(batch, -1)
    f0 = _first_call(f, field.user_time(taus[0]), y0, args).reshape(batch, -1) * field.sign
    rtol, atol = check.tolerances(controller, y0, layout=(batch, -1))
    watcher = _watcher(event, field.user_time(taus[0]), y0, batch=batch)

    def f_at(h: torch.Tensor) -> torch.Tensor:
        return field(field.user_time(taus[0] + h), y + h.to(y.dtype).unsqueeze(-1) * f0)

    dt0, setup_fevals = _first_step(solver, controller, f_at, y, f0, rtol, atol)
    span = taus[-1] - taus[0]
    problem = PerSampleProblem(
        field=field, solver=solver, controller=controller, y0=y, f0=f0, taus=taus,
        boundaries=check.per_sample_boundaries(controller, direction, taus),
        dt0=torch.minimum(dt0, span.where(torch.isfinite(span), math.inf)),
        setup_fevals=setup_fevals, rtol=rtol,
        atol=atol, norm=check.norm(controller, y0.shape), watcher=watcher,
        max_steps=max_steps, dense=dense, on_accept=on_accept)
    result = PerSampleLoop(problem).run()
    statuses = tuple(Status(int(s)) for s in result.status.tolist())
    failed = [s for s in statuses if not s.ok]
    status = failed[0] if failed else (Status.EVENT if Status.EVENT in statuses
                                       else Status.SUCCESS)
    solution = Solution(
        ts=times, ys=result.ys.reshape(len(taus), *y0.shape), stats=result.stats,
        status=status, sample_status=statuses,
        event_t=(result.event_tau * direction.to(result.event_tau.device)).cpu()
        if event is not None else None,
        event_y=result.event_y.view(y0.shape) if event is not None else None,
        dense_output=PerSampleDenseOutput(result.dense_steps, direction, y0.shape,
                                          solver.tableau) if dense else None)
    return _finish(solution, status, result.where, throw), result.event_signs


def _solve_backsolve(f, y0, ts, times, solver, controller, args, max_steps, throw,
                     adjoint: BacksolveAdjoint) -> Solution:
    """Forward solve without a graph; gradients by the adjoint ODE (see `tidal.adjoint`)."""
    t0 = times[0].to(dtype=y0.dtype, device=y0.device)
    params = parameters_of(adjoint, lambda t, y: f(t, y) if args is None else f(t, y, args),
                           t0, y0, args)
    back_solver = adjoint.solver if adjoint.solver is not None else solver
    back_controller = adjoint.controller if adjoint.controller is not None else controller

    def call_f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return f(t, y) if args is None else f(t, y, args)

    def forward(y0_: torch.Tensor) -> Solution:
        solve_ = _solve_shared if times.dim() == 1 else _solve_per_sample
        return solve_(f, y0_, times, solver, controller, args, None, False, max_steps, throw)[0]

    def backward_solve(aug, z0: torch.Tensor, ts_: torch.Tensor, norm) -> Solution:
        c = back_controller
        if isinstance(c, PIDController) and c.norm is None:
            c = dataclasses.replace(c, norm=norm)
        return solve(aug, z0, ts_, solver=back_solver, controller=c, max_steps=max_steps)

    problem = BacksolveProblem(forward, call_f, backward_solve, times, params, adjoint.seminorm)
    ts_input = ts if isinstance(ts, torch.Tensor) and ts.requires_grad else times
    ys = _Backsolve.apply(problem, y0, ts_input, *params)
    solution = problem.solution
    assert solution is not None, "the forward solve ran; this is a bug in tidal"
    solution.ys = ys
    return solution


def _solve_checkpointed(f, y0, times, solver, controller, args, event, max_steps, throw,
                        adjoint: CheckpointAdjoint):
    """Solve once without a graph, keeping a few accepted states as checkpoints; the backward
    pass replays the steps between them (see `tidal.adjoint.checkpoint`). After an event the
    last segment replays the step that holds it, with the event time as one more output."""
    direction = -1.0 if len(times) > 1 and times[-1] < times[0] else 1.0
    recorder = CheckpointRecorder(adjoint, direction, set(controller.jump_ts))
    with torch.no_grad():
        first, signs = _solve_shared(f, y0.detach(), times, solver, controller, args, event,
                                     False, max_steps, throw, recorder.record)
    event_y = first.event_y if first.event_y is not None else torch.full_like(y0, math.nan)
    if len(times) == 1 or not recorder.step_ends:
        first.ys = torch.cat([y0.unsqueeze(0), first.ys[1:]])
        return first, signs
    replay_controller = ConstantStepSize(math.inf, step_ts=recorder.step_ends,
                                         jump_ts=controller.jump_ts)

    def replay(y_start: torch.Tensor, seg_times: list[float]) -> torch.Tensor:
        seg_ts = torch.tensor(seg_times, dtype=torch.float64)
        return solve(f, y_start, seg_ts, solver=solver, controller=replay_controller,
                     args=args, max_steps=max_steps).ys[1:]

    def call_f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return f(t, y) if args is None else f(t, y, args)

    # the outputs the solve reached, then the event time unless an output falls on it
    has_event = first.status is Status.EVENT
    stop = float(first.event_t) if has_event else recorder.step_ends[-1]
    rows = [float(t) for t in times.tolist() if direction * t <= direction * stop]
    reached, event_row = len(rows), None
    if has_event:
        if rows[-1] != stop or reached == 1:
            rows.append(stop)
        event_row = len(rows) - 1
    t0 = times[0].to(dtype=y0.dtype, device=y0.device)
    bounds, starts = recorder.segment_starts(y0.detach())
    problem = CheckpointProblem(replay, _segments(rows, bounds, direction),
                                parameters_of(adjoint, call_f, t0, y0, args),
                                first.ys.detach(), starts, event_y.detach(), reached, event_row)
    first.ys, event_y = CheckpointedSolve.apply(problem, y0, *problem.params)
    if has_event:
        first.event_y = event_y
    return first, signs


def _segments(rows: list[float], bounds: list[float], direction: float) -> list[Segment]:
    """One segment from each checkpoint to the next, with the replayed rows inside it."""
    segments, start, pending = [], rows[0], rows[1:]
    for bound in bounds:
        inside = [t for t in pending if direction * t <= direction * bound]
        pending = pending[len(inside):]
        tail = [] if inside and inside[-1] == bound else [bound]
        segments.append(Segment([start, *inside, *tail], len(inside)))
        start = bound
    return segments


def _solve_checkpointed_per_sample(f, y0, times, solver, controller, args, event, max_steps,
                                   throw, adjoint: CheckpointAdjoint):
    """CheckpointAdjoint on per-sample grids (see `tidal.adjoint.checkpoint.PerSampleRecorder`):
    the forward solve runs once without a graph while each sample keeps its own checkpoints and
    step ends; the backward pass replays one segment at a time, every sample over exactly its
    own accepted steps (a per-sample loop stepping from one recorded end to the next)."""
    batch = y0.shape[0]
    direction = torch.where(times[-1] < times[0], -1.0, 1.0)  # [B]
    taus = (times * direction).to(y0.device)  # [T, B]
    y_flat = y0.detach().reshape(batch, -1)
    recorder = PerSampleRecorder(adjoint, taus[0], y_flat)
    with torch.no_grad():
        first, signs = _solve_per_sample(f, y0.detach(), times, solver, controller, args, event,
                                         False, max_steps, throw, recorder.record)
    event_tau = (first.event_t.to(y0.device) * direction.to(y0.device) if event is not None
                 else torch.full_like(taus[0], math.nan))
    replay_taus, reached, event_row = _replay_rows(taus, event_tau, recorder.last_end)
    spans, starts = recorder.segments(taus[0], y_flat)
    field = PerSampleField(f, args, y0.shape, direction.to(y0.device), y0.dtype)
    jumps = check.per_sample_boundaries(controller, direction, taus)
    jump_taus = torch.where(jumps[1], jumps[0], math.nan) if jumps is not None else None
    ends = recorder.step_ends()
    boundaries = (ends, torch.zeros_like(ends, dtype=torch.bool) if jump_taus is None
                  else (ends.unsqueeze(-1) == jump_taus.unsqueeze(1)).any(-1))

    def replay(y_start: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        tau_start, tau_end = spans[j]
        f_tau = tau_start
        if jump_taus is not None and j > 0:  # resuming on a jump: f from its far side
            on_jump = (jump_taus == tau_start.unsqueeze(-1)).any(-1)
            f_tau = torch.where(on_jump, torch.nextafter(tau_start, torch.full_like(
                tau_start, math.inf)), tau_start)
        problem = PerSampleProblem(
            field=field, solver=solver, controller=ConstantStepSize(math.inf), y0=y_start,
            f0=field(field.user_time(f_tau), y_start), taus=replay_taus,
            boundaries=boundaries, dt0=torch.full_like(tau_start, math.inf), setup_fevals=1,
            rtol=0.0, atol=0.0, norm=None, watcher=None, max_steps=max_steps, dense=False,
            start=(tau_start, (replay_taus <= tau_start).sum(0)), tau_end=tau_end)
        result = PerSampleLoop(problem).run()
        assert result.y is not None
        return result.ys, result.y

    def call_f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return f(t, y) if args is None else f(t, y, args)

    event_y = (first.event_y if first.event_y is not None
               else torch.full_like(y0, math.nan)).reshape(batch, -1)
    t0 = times[0].to(dtype=y0.dtype, device=y0.device)
    problem = PerSampleCheckpointProblem(
        replay, len(spans), parameters_of(adjoint, call_f, t0, y0, args),
        first.ys.detach().reshape(len(taus), batch, -1), event_y.detach(), starts, reached,
        event_row)
    ys, event_y = PerSampleCheckpointedSolve.apply(problem, y0.reshape(batch, -1),
                                                   *problem.params)
    first.ys = ys.view(len(taus), *y0.shape)
    if event is not None:
        first.event_y = event_y.view(y0.shape)
    return first, signs


def _replay_rows(taus: torch.Tensor, event_tau: torch.Tensor, last_end: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output grid a per-sample replay writes: each sample's reached outputs, then its
    event time if it had one (inf after). Returns (grid [T, B], reached outputs [B], the
    event's row [B], -1 without an event); an event on the last output time shares its row."""
    has_event = torch.isfinite(event_tau)
    reached = (taus <= torch.where(has_event, event_tau, last_end)).sum(0)
    index = torch.arange(len(taus), device=taus.device).unsqueeze(-1)
    grid = torch.where(index < reached, taus, math.inf)
    grid = torch.where((index == reached) & has_event, event_tau, grid)
    event_row = torch.where(has_event, reached.clamp(max=len(taus) - 1), -1)
    return grid, reached, event_row


def _watcher(event: Event | None, t0: torch.Tensor, y0: torch.Tensor, batch: int | None
             ) -> EventWatcher | None:
    """The event watcher, after checking g's value at the start."""
    if event is None:
        return None
    g0 = event.fn(t0, y0)
    check.event_output(g0, batch=batch)
    return EventWatcher(event, g0, batched=batch is not None)


def _first_step(solver: Solver, controller: PIDController | ConstantStepSize,
                f_at: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, f0: torch.Tensor,
                rtol: Any, atol: Any) -> tuple[torch.Tensor, int]:
    """(first step size per row of y [G, M] as float64 [G], calls of f made so far)."""
    rows = y.shape[0]
    if not controller.adaptive or not solver.adaptive:
        return torch.full((rows,), controller.dt, dtype=torch.float64, device=y.device), 1
    if controller.dt0 is not None:
        dt0, setup_fevals = torch.full((rows,), controller.dt0, dtype=torch.float64,
                                       device=y.device), 1
    else:
        dt0, setup_fevals = initial_step(f_at, y, f0, rtol, atol, solver.error_order), 2
    return dt0.clamp(controller.dt_min, controller.dt_max), setup_fevals


def _rows(tolerance: float | torch.Tensor) -> float | torch.Tensor:
    """A tolerance in the initial-step layout [1, N]."""
    return tolerance.reshape(1, -1) if isinstance(tolerance, torch.Tensor) else tolerance


def _finish(solution: Solution, status: Status, where: str, throw: bool) -> Solution:
    if throw and not status.ok:
        raise SolveFailedError(status, where, solution)
    return solution
