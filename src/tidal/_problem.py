"""Problem setup: a solve's checked arguments, as one object every adjoint runs.

`make_problem` checks the arguments (`tidal._checks`) and builds the `Problem`; a checkpoint
replay is the same problem started mid-solve (`tidal._loop_io.Start`) with a controller that
retakes recorded steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tidal import _checks as check
from tidal._grid import Grid
from tidal._vector_field import VectorField, bind_args
from tidal.events import Event

if TYPE_CHECKING:
    from tidal._loop_io import Start
    from tidal.adjoint.base import Adjoint
    from tidal.controllers.base import StepSizeController
    from tidal.solvers.base import StepMethod


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One solve, checked: what `tidal.solve` was asked, in the form the adjoints and the loops
    use. `f` has `args` bound (f(t, y)); `grid` holds the output times (see `tidal._grid`)."""

    f: VectorField
    args: Any
    y0: torch.Tensor
    ts: Any  # as the user gave them (a tensor that requires grad gets time gradients)
    grid: Grid
    solver: StepMethod
    controller: StepSizeController
    adjoint: Adjoint
    event: Event | None
    dense: bool
    max_steps: int
    throw: bool
    start: Start | None = None
    compile: int = 0  # steps per call of the compiled loop (`tidal.compiled`); 0: eager

    @property
    def time_grad(self) -> bool:
        """Whether the output times need gradients."""
        return (isinstance(self.ts, torch.Tensor) and self.ts.requires_grad
                and torch.is_grad_enabled())

    def replace(self, **changes: Any) -> Problem:
        return dataclasses.replace(self, **changes)


def make_problem(f: Callable[..., torch.Tensor], y0: torch.Tensor,
                 ts: torch.Tensor | Sequence[float], *, solver: Any, controller: Any,
                 adjoint: Any, args: Any, event: Any, dense: bool, max_steps: Any,
                 throw: bool, compile: bool | int = False) -> Problem:
    """Check every argument of `tidal.solve` and build its `Problem`."""
    check.callable_field(f)
    check.takes_args(f, args)
    check.state(y0)
    y0 = y0.contiguous()  # the loops view states as flat rows
    event = Event(event) if event is not None and not isinstance(event, Event) else event
    times = check.times(ts, y0, allow_infinite_end=event is not None)
    solver = check.solver(solver)
    problem = Problem(
        f=bind_args(f, args), args=args, y0=y0, ts=ts, grid=Grid.of(times, y0.device),
        solver=solver, controller=check.controller(controller, solver),
        adjoint=check.adjoint(adjoint), event=event, dense=bool(dense),
        max_steps=check.max_steps(max_steps), throw=bool(throw),
        compile=check.compile_steps(compile))
    problem.adjoint.check(problem)
    return problem
