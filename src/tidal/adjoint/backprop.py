"""`BackpropAdjoint`: differentiate a solve by recording every step with autograd."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tidal._loop_io import solution_of
from tidal.adjoint.base import DiscreteAdjoint, Loop
from tidal.solution import Solution

if TYPE_CHECKING:
    from tidal._problem import Problem


@dataclass(frozen=True)
class BackpropAdjoint(DiscreteAdjoint):
    """Autograd records every operation of every step: the exact gradient of the discrete
    solve, in any mode (shared or per-sample grids, events, dense output). Memory grows with
    the number of steps; prefer `CheckpointAdjoint` (the same gradient) or `BacksolveAdjoint`
    when that is the limit.

    Step sizes are treated as constants (their dependence on the state is not differentiated),
    as in torchdiffeq and diffrax. A terminal event's time and state get their gradients from
    the implicit function theorem at the located event (`tidal.events.differentiable_event`).
    """

    name = "backprop"

    def check(self, problem: Problem) -> None:
        """Everything is supported."""

    def states(self, problem: Problem, loop: Loop, y0: torch.Tensor
               ) -> tuple[Solution, torch.Tensor | None]:
        result = loop(problem, y0)
        return solution_of(problem, result), result.event_signs
