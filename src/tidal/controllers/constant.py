"""Fixed step sizes: `ConstantStepSize(dt)`, `StepTo(ts)`, and `RecordedSteps` (each group's
own step ends: how a checkpoint replay retakes exactly the steps of the forward solve)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from tidal._constants import constant
from tidal._errors import InvalidArgumentError
from tidal.controllers._times import Times, as_time_tuple
from tidal.controllers.base import (
    Boundaries,
    Scalar,
    StepControl,
    StepSizeController,
    TrialField,
)

if TYPE_CHECKING:
    from tidal._grid import Grid
    from tidal.solvers.base import StepMethod
    from tidal.solvers.explicit_rk import Stages


@dataclass(frozen=True)
class ConstantStepSize(StepSizeController):
    """Take steps of size `dt` (the last one is shortened to land on the final time).

    Steps also land exactly on `step_ts` and `jump_ts`; after a time in `jump_ts` the vector
    field is evaluated afresh (a known discontinuity). Works with every solver; an adaptive
    solver's error estimate is then ignored.

    Args:
        dt: step size (> 0; its sign follows the direction of integration).
        step_ts: times every step must land on.
        jump_ts: times where f is discontinuous.
    """

    adaptive = False
    dt: float
    step_ts: Times = field(default=(), kw_only=True)
    jump_ts: Times = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if (isinstance(self.dt, bool) or not isinstance(self.dt, (int, float))
                or not self.dt > 0):
            raise InvalidArgumentError(
                f"`{name}(dt={self.dt!r})`: dt must be a positive number of time units; give "
                "its size, the direction of integration is taken from the time grid.")
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "step_ts", as_time_tuple("step_ts", name, self.step_ts))
        object.__setattr__(self, "jump_ts", as_time_tuple("jump_ts", name, self.jump_ts))

    def bind(self, solver: StepMethod, y0: torch.Tensor, shape: torch.Size, groups: int
             ) -> FixedControl:
        return FixedControl(self.dt)


class StepTo(ConstantStepSize):
    """Step exactly from one time of `ts` to the next (torchdiffeq's fixed-grid default)."""

    def __init__(self, ts: Sequence[float] | torch.Tensor):
        times = as_time_tuple("ts", "StepTo", ts)
        if not times:
            raise InvalidArgumentError("`StepTo(ts=...)` needs at least one time to step to.")
        super().__init__(dt=math.inf, step_ts=times)

    def __repr__(self) -> str:
        return f"StepTo(ts={self.step_ts})"


@dataclass(frozen=True)
class RecordedSteps(ConstantStepSize):
    """Step exactly to each group's own step ends (`recorded`, in forward time, with the ends
    at a discontinuity marked). Internal: a checkpoint replay retakes the accepted steps of the
    forward solve with it, `RecordedSteps(math.inf, recorded=...)`."""

    recorded: Boundaries = field(kw_only=True, compare=False)

    def boundaries(self, grid: Grid) -> Boundaries:
        return self.recorded


class FixedControl(StepControl):
    """A fixed step bound to one solve: no error estimate; a step is accepted when it stayed
    finite (a non-finite one ends the solve, see `tidal._loop`)."""

    def __init__(self, dt: float):
        self.dt = dt

    def first_step(self, trial: TrialField, y: torch.Tensor, f0: torch.Tensor
                   ) -> tuple[torch.Tensor, int]:
        return torch.full((len(y),), self.dt, dtype=torch.float64, device=y.device), 1

    def error_ratio(self, stages: Stages, y0: torch.Tensor, y1: torch.Tensor, dt: Scalar
                    ) -> Scalar:
        # the largest |y1| is finite when every entry is (a NaN propagates): two operations
        # where isfinite takes four
        y1 = y1.detach()
        if isinstance(dt, float):
            return 0.0 if math.isfinite(y1.abs().max()) else math.inf
        largest = y1.reshape(len(dt), -1).abs().amax(-1)
        return torch.where(largest < constant(math.inf, largest), constant(0.0, dt),
                           constant(math.inf, dt))

    def decide(self, ratio: Scalar, taken: Scalar, proposed: Scalar) -> tuple[Scalar, Scalar]:
        return ratio == 0.0, proposed
