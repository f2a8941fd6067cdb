"""The controller protocol: what a loop asks about step sizes, and nothing else.

A `StepSizeController` (PIDController, ConstantStepSize, StepTo, ...) is a frozen description.
`bind` ties it to one solve and returns a `StepControl`, which owns everything the loops used
to compute themselves:

- `first_step`: the first step size per group (given, or Hairer's automatic choice);
- `error_ratio`: the step's scaled error norm (or, without error control, whether the step
  stayed finite);
- `decide`: accept or reject, the next step size, clamped to [dt_min, dt_max].

Step sizes and error ratios are Python floats on a shared grid and float64 tensors [G] on
per-sample grids; the methods take either (see `tidal._grid`). Where steps must land (`step_ts`,
`jump_ts`) is described by `boundaries`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from tidal.controllers._times import Times

if TYPE_CHECKING:
    from tidal._grid import Grid
    from tidal.solvers.base import StepMethod
    from tidal.solvers.explicit_rk import Stages

#: A step size, error ratio or time: a Python float (shared grid) or float64 tensor [G].
Scalar = Any
#: f(t0 + h, y0 + h f0) for per-group trial steps h [G] (float64), as group rows [G, N].
TrialField = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Boundaries:
    """Times every step must land on, per group, in forward time: `taus` [G, J] sorted in each
    row (inf pads), `jumps` [G, J] marks the ones where f is discontinuous."""

    taus: torch.Tensor
    jumps: torch.Tensor

    @cached_property
    def any_jump(self) -> bool:
        """Whether any group has a jump (asked once; without one, a loop's setup skips the
        jump checks: a checkpoint replay's recorded step ends usually have none)."""
        return bool(self.jumps.any())

    def contains_jump(self, tau: torch.Tensor) -> torch.Tensor:
        """[G]: whether tau [G] is one of the group's jump times."""
        return ((self.taus == tau.unsqueeze(-1)) & self.jumps).any(-1)


class StepControl(ABC):
    """A controller bound to one solve. The loops call these three methods and nothing else."""

    #: how many steps in a row that are not finite (a NaN or inf in a stage) are retried with
    #: a smaller step before the solve ends with `Status.NONFINITE`
    nonfinite_retries: ClassVar[int] = 0
    #: whether the loops call `before_step` (off by default: nothing extra on the hot path)
    observes_steps: ClassVar[bool] = False

    def before_step(self, t0: torch.Tensor, dt: Scalar, y0: torch.Tensor) -> None:  # noqa: B027
        """Called before each attempted step when `observes_steps`: the step's user start
        time(s) t0, its forward size dt and start state y0 in the loop's layout (a hook, e.g.
        for torchdiffeq's `callback_step`)."""

    @abstractmethod
    def first_step(self, trial: TrialField, y: torch.Tensor, f0: torch.Tensor
                   ) -> tuple[torch.Tensor, int]:
        """(first step size per group, float64 [G]; calls of f it made). y and f0 are group
        rows [G, N]."""

    @abstractmethod
    def error_ratio(self, stages: Stages, y0: torch.Tensor, y1: torch.Tensor, dt: Scalar
                    ) -> Scalar:
        """The step's error ratio (accept when <= 1); inf or NaN when the step left the finite
        numbers. A float for a float `dt`, else float64 [G]."""

    @abstractmethod
    def decide(self, ratio: Scalar, taken: Scalar, proposed: Scalar) -> tuple[Scalar, Scalar]:
        """(accept, next step size) from the error ratio of a step of size `taken` (shortened
        from `proposed` to land on a boundary)."""


class StepSizeController(ABC):
    """Base of every step-size controller: a frozen description, bound to a solve by `bind`."""

    #: whether the step size follows an error estimate
    adaptive: ClassVar[bool]
    #: times every step must land on (user time; a sorted tuple of floats once constructed)
    step_ts: Times
    #: times where f is discontinuous: steps land there and f is evaluated afresh after them
    jump_ts: Times

    @abstractmethod
    def bind(self, solver: StepMethod, y0: torch.Tensor, shape: torch.Size, groups: int
             ) -> StepControl:
        """This controller for one solve: y0 in the loop's layout, `shape` the user's state
        shape, `groups` the number of groups (see `tidal._grid`)."""

    def boundaries(self, grid: Grid) -> Boundaries | None:
        """`step_ts` and `jump_ts` per group in forward time, or None without any."""
        times = [*self.step_ts, *self.jump_ts]
        if not times:
            return None
        device = grid.taus.device
        t = torch.tensor(times, dtype=torch.float64, device=device)
        jumps = torch.tensor([False] * len(self.step_ts) + [True] * len(self.jump_ts),
                             device=device)
        taus, order = torch.sort(grid.direction.unsqueeze(-1) * t, dim=-1, stable=True)
        return Boundaries(taus, jumps[order])


def clip(x: Scalar, low: float, high: float) -> Scalar:
    """x clamped to [low, high], for a float or a tensor."""
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, low, high)
    return min(max(x, low), high)
