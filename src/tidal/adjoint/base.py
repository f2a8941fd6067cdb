"""The adjoint protocol: an adjoint owns the run of the solve it differentiates.

`tidal.solve` checks its arguments, builds the `Problem` and calls `adjoint.run(problem, loop)`
(the pattern of diffrax's `AbstractAdjoint.loop`). `loop(problem, y0, recorder=...)` runs the
solver loop of the problem's grid from y0 and returns a `LoopResult`; `solution_of` turns a
result into the user's `Solution`. An adjoint decides what runs with autograd on, what is saved,
what is recomputed and how the backward pass goes, so a new adjoint (an interpolating or Gauss
adjoint, a reversible one for SDEs) is one new module with a subclass of `Adjoint`, and no
change to `tidal.solve`.

`DiscreteAdjoint` is the base of adjoints that differentiate the discrete solve itself
(Backprop, Checkpoint): it attaches the gradients with respect to the time grid and through a
terminal event, which follow from the states alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal._vector_field import VectorField
from tidal.adjoint.times import initial_time, output_times
from tidal.events import differentiable_event
from tidal.solution import Solution

if TYPE_CHECKING:
    from tidal._loop_io import LoopResult, Recorder
    from tidal._problem import Problem


class Loop(Protocol):
    """The solver loop, as `tidal.solve` hands it to an adjoint: runs `problem` from y0 (the
    user's shape; `f0`: f there, if the adjoint has it) and returns the loop's result; raises
    `SolveFailedError` on a failure when the problem says `throw`."""

    def __call__(self, problem: Problem, y0: torch.Tensor, *,
                 recorder: Recorder | None = None, f0: torch.Tensor | None = None
                 ) -> LoopResult: ...


class Adjoint(ABC):
    """Base of every adjoint. Subclasses are frozen dataclasses of their options."""

    #: the name used by config files and the command line (see `tidal.registry`)
    name: ClassVar[str]

    def check(self, problem: Problem) -> None:
        """Refuse, with `IncompatibleOptionsError`, what this adjoint cannot differentiate."""
        if problem.dense:
            raise IncompatibleOptionsError(
                f"`solve(dense=True, adjoint={type(self).__name__}())` is not supported; use "
                "adjoint=tidal.BackpropAdjoint() instead.")

    @abstractmethod
    def run(self, problem: Problem, loop: Loop) -> Solution:
        """Solve `problem` so that its outputs carry this adjoint's gradients."""


class DiscreteAdjoint(Adjoint):
    """An adjoint whose gradient is that of the discrete solve (`states` provides the outputs
    from y0); the time-grid and event gradients are attached here, the same way for all."""

    @abstractmethod
    def states(self, problem: Problem, loop: Loop, y0: torch.Tensor
               ) -> tuple[Solution, torch.Tensor | None]:
        """(the solution with outputs differentiable with respect to y0 and the tensors f
        uses, the event's crossing signs from the loop)."""

    def run(self, problem: Problem, loop: Loop) -> Solution:
        start = initial_time(problem) if problem.time_grad else problem.y0
        solution, signs = self.states(problem, loop, start)
        if problem.time_grad:
            solution.ys = output_times(problem, solution.ys)
        if problem.event is not None and torch.is_grad_enabled():
            assert solution.event_t is not None and solution.event_y is not None
            solution.event_t, solution.event_y = differentiable_event(
                problem.event, problem.f, solution.event_t, solution.event_y, signs,
                fallback=(problem.grid.times[0], problem.y0), grid=problem.grid)
        return solution


def parameters_of(params: Sequence[torch.Tensor] | None, owner: str, f: VectorField,
                  t0: torch.Tensor, y0: torch.Tensor, args: Any = None
                  ) -> tuple[torch.Tensor, ...]:
    """The tensors an adjoint with its own backward pass differentiates: `params` (plus the
    tensors in `args`) when given, else every leaf tensor that requires grad and that f's value
    depends on, found by evaluating f once and walking its graph: an nn.Module's parameters,
    tensors in a closure or in `args`."""
    if params is not None:
        given = tuple(params)
        if not all(isinstance(p, torch.Tensor) for p in given):
            raise InvalidArgumentError(f"`{owner}(params=...)` must be a sequence of tensors.")
        found = (*given, *_tensors_in(args))
        return tuple({id(p): p for p in found if p.requires_grad}.values())
    return tensors_f_uses(f, t0, y0)[0]


def parameters_and_f0(params: Sequence[torch.Tensor] | None, owner: str, problem: Problem,
                      y0: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """`parameters_of` for an adjoint's forward solve from y0, and f at the solve's start when
    finding the tensors called f there (the forward solve takes the value over: `Loop`'s
    `f0`), else None."""
    t0 = problem.grid.user_time(problem.grid.taus[0], y0.dtype)
    if params is None:
        return tensors_f_uses(problem.f, t0, y0)
    return parameters_of(params, owner, problem.f, t0, y0, problem.args), None


def tensors_f_uses(f: VectorField, t0: torch.Tensor, y0: torch.Tensor
                   ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(every leaf tensor requiring grad that f(t0, y0) depends on, f(t0, y0) detached): one
    call of f, recording its graph."""
    with torch.enable_grad():
        y = y0.detach().requires_grad_(True)
        out = f(t0, y)
    if not isinstance(out, torch.Tensor):  # named by the solve's check of f's output
        return (), out
    return tuple(leaf for leaf in _leaves(out.grad_fn) if leaf is not y), out.detach()


def _tensors_in(args: Any) -> list[torch.Tensor]:
    """Every tensor in `args`, looking inside (nested) tuples, lists and dicts."""
    if isinstance(args, torch.Tensor):
        return [args]
    if isinstance(args, dict):
        args = list(args.values())
    if isinstance(args, (tuple, list)):
        return [t for item in args for t in _tensors_in(item)]
    return []


def _leaves(root: Any) -> list[torch.Tensor]:
    """Leaf tensors (those autograd accumulates into) reachable from a graph node.

    `next_functions` makes a new Python object for a node each time it is asked, and one that
    is freed can leave its id to the next: the nodes seen are kept alive in `seen`, or a leaf
    reached after a freed node could be taken for it and skipped (seen on Python 3.12)."""
    found: dict[int, torch.Tensor] = {}
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(found.values())
