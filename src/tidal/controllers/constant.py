"""Fixed step sizes: `ConstantStepSize(dt)` and `StepTo(ts)`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers._times import as_time_tuple


@dataclass(frozen=True)
class ConstantStepSize:
    """Take steps of size `dt` (the last one is shortened to land on the final time).

    Steps also land exactly on `step_ts` and `jump_ts`; after a time in `jump_ts` the vector
    field is evaluated afresh (a known discontinuity). Works with every solver; an adaptive
    solver's error estimate is then ignored.

    Args:
        dt: step size (> 0; its sign follows the direction of integration).
        step_ts: times every step must land on.
        jump_ts: times where f is discontinuous.
    """

    dt: float
    step_ts: tuple[float, ...] = field(default=(), kw_only=True)
    jump_ts: tuple[float, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.dt, (int, float)) or not self.dt > 0:
            raise InvalidArgumentError(
                f"`{name}(dt={self.dt!r})`: dt must be a positive number of time units; give "
                "its size, the direction of integration is taken from the time grid.")
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "step_ts", as_time_tuple("step_ts", name, self.step_ts))
        object.__setattr__(self, "jump_ts", as_time_tuple("jump_ts", name, self.jump_ts))

    adaptive = False


class StepTo(ConstantStepSize):
    """Step exactly from one time of `ts` to the next (torchdiffeq's fixed-grid default)."""

    def __init__(self, ts: Sequence[float] | torch.Tensor):
        times = as_time_tuple("ts", "StepTo", ts)
        if not times:
            raise InvalidArgumentError("`StepTo(ts=...)` needs at least one time to step to.")
        super().__init__(dt=math.inf, step_ts=times)

    def __repr__(self) -> str:
        return f"StepTo(ts={self.step_ts})"
