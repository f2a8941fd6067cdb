"""What a loop is given (`LoopSetup`, made by `prepare`) and what it gives back (`LoopResult`,
turned into the user's `Solution` by `solution_of`). Both loops (`tidal._loop` on a shared
grid, `tidal._loop_per_sample` on per-sample grids) take and return these same objects; values
per group are tensors [G] (see `tidal._grid`), whatever the loop uses inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from tidal._errors import SolveFailedError, Status, overall_status
from tidal._grid import Grid
from tidal._vector_field import Field, bind_args, check_output
from tidal.controllers.base import Boundaries, StepControl
from tidal.events import EventWatcher, watch
from tidal.interpolation import DenseOutput, DenseSteps
from tidal.solution import Solution, Stats
from tidal.solvers.base import StepMethod

if TYPE_CHECKING:
    from tidal._problem import Problem


@dataclass(frozen=True)
class Start:
    """Where a run resumes mid-solve (checkpoint replays), per group in forward time: at `tau`
    [G], with outputs up to `next_out` [G] (exclusive) already written elsewhere, until
    `tau_end` [G]. The run's y0 is the state at `tau`."""

    tau: torch.Tensor
    next_out: torch.Tensor
    tau_end: torch.Tensor


class Recorder(Protocol):
    """Called by a loop after every iteration (on a shared grid: every accepted step) with
    the groups that accepted a step [G] (None: all of them, known on the host), where their
    steps ended (forward time [G]) and the states there (loop layout).
    `tidal.adjoint.checkpoint` keeps checkpoints this way."""

    def record(self, accept: torch.Tensor | None, tau1: torch.Tensor, y1: torch.Tensor
               ) -> None: ...


@dataclass(kw_only=True, slots=True)
class LoopSetup:
    """Everything a loop needs, in the loop's layout and forward time."""

    grid: Grid
    field: Field
    solver: StepMethod
    control: StepControl
    y0: torch.Tensor  # loop layout (the user's shape on a shared grid, [B, D] per sample)
    f0: torch.Tensor  # f(t0, y0) in forward time, loop layout
    tau0: torch.Tensor  # [G] where the run starts
    tau_end: torch.Tensor  # [G] where it ends (inf when only an event ends it)
    start: Start | None  # a replay's start (None: a fresh solve, which writes y0 as row 0)
    boundaries: Boundaries | None
    dt0: torch.Tensor  # [G] float64 first step size
    setup_fevals: int  # calls of f made while setting up (f0, the initial-step trial)
    finite: torch.Tensor  # [G] bool: f(t0, y0) is finite (elsewhere the group fails at once)
    watcher: EventWatcher | None
    max_steps: int
    dense: bool
    recorder: Recorder | None


@dataclass
class LoopResult:
    """What a loop returns; `solution_of` turns it into the user's `Solution`."""

    ys: torch.Tensor  # [T, *loop layout]; rows not reached are NaN
    counts: torch.Tensor  # [7, *group shape] int64 on the CPU: f calls, steps, accepted,
    # rejected, Jacobians, factorizations, method switches (the fields of `Stats`, in order)
    statuses: tuple[Status, ...]  # per group
    where: str  # where the first failure happened, for the error message
    y_end: torch.Tensor  # loop layout: where each group stopped
    event_tau: torch.Tensor | None  # [G] forward time of the event (NaN where none)
    event_y: torch.Tensor | None  # loop layout, the state at the event (NaN where none)
    event_signs: torch.Tensor | None  # [G, K]: sign of g before the step where it crossed
    dense: DenseSteps | None


def prepare(problem: Problem, y0: torch.Tensor, recorder: Recorder | None = None,
            f0: torch.Tensor | None = None) -> LoopSetup:
    """The loop setup of a problem started from y0 (the user's shape): the first call of f
    (checked; `f0`: its value at the grid's first time if the caller has it), the controller
    bound to the solve, the first step, the event watcher."""
    grid, start = problem.grid, problem.start
    jac = problem.solver.jac
    field = Field(problem.f, grid, y0.shape, y0.dtype,
                  jac=None if jac is None else bind_args(jac, problem.args))
    y = y0.reshape(field.loop_shape) if field.unflatten else y0
    if start is None:
        tau0, tau_end = grid.taus[0], grid.taus[-1]
    else:
        tau0, tau_end = start.tau, start.tau_end
    boundaries = problem.controller.boundaries(grid)
    t0 = grid.user_time(tau0, y0.dtype)
    t_f = t0
    # starting on a jump: f from its far side (inside the solve)
    if boundaries is not None and boundaries.any_jump:
        after = grid.user_time_beside(tau0, y0.dtype, 1.0)
        t_f = torch.where(boundaries.contains_jump(tau0).reshape(t0.shape), after, t0)
    raw = f0 if f0 is not None and t_f is t0 and start is None else problem.f(t_f, y0)
    check_output(raw, y0)
    f0 = field.from_user(raw)
    rows, f0_rows = grid.rows(y), grid.rows(f0)
    finite = torch.isfinite(f0_rows).all(-1)
    control = problem.controller.bind(problem.solver, y, y0.shape, grid.groups)

    def trial(h: torch.Tensor) -> torch.Tensor:
        """f(t0 + h, y0 + h f0) as group rows."""
        y_h = rows + h.to(y.dtype).unsqueeze(-1) * f0_rows
        return grid.rows(field(grid.user_time(tau0 + h, y0.dtype), y_h.view(y.shape)))

    dt0, setup_fevals = control.first_step(trial, rows, f0_rows)
    dt0 = torch.minimum(dt0, tau_end - tau0)  # NaN where f0 is not finite (no step is taken)
    return LoopSetup(
        grid=grid, field=field, solver=problem.solver, control=control, y0=y, f0=f0,
        tau0=tau0, tau_end=tau_end, start=start, boundaries=boundaries, dt0=dt0,
        setup_fevals=setup_fevals, finite=finite,
        watcher=watch(problem.event, t_f, y0, grid) if problem.event is not None else None,
        max_steps=problem.max_steps, dense=problem.dense, recorder=recorder)


def solution_of(problem: Problem, result: LoopResult) -> Solution:
    """The user's `Solution` of a loop's result (outputs, statistics, status, event, dense
    output), with the tensors as the loop made them (the adjoints attach gradients after)."""
    grid, shape = problem.grid, problem.y0.shape
    status = overall_status(result.statuses)
    event_t = event_y = None
    if result.event_tau is not None and result.event_y is not None:
        event_t = grid.per_group(result.event_tau * grid.direction).cpu()
        event_y = result.event_y.reshape(shape)
    dense = None
    if result.dense is not None:
        coefficients = problem.solver.coefficients(problem.y0.dtype, problem.y0.device)
        dense = DenseOutput(result.dense, grid, shape, coefficients.dense)
    stats = Stats(*result.counts.unbind(0))
    return Solution(ts=grid.times, ys=result.ys.reshape(len(grid.taus), *shape), stats=stats,
                    status=status, sample_status=result.statuses if grid.batched else None,
                    event_t=event_t, event_y=event_y, dense_output=dense)


def raise_if_failed(problem: Problem, result: LoopResult) -> None:
    """With `throw=True`, a failed loop raises `SolveFailedError` with the partial solution."""
    if problem.throw:
        status = overall_status(result.statuses)
        if not status.ok:
            raise SolveFailedError(status, result.where, solution_of(problem, result))

