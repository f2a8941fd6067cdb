"""`CheckpointAdjoint`: the exact gradient of the discrete solve with bounded memory.

The forward solve runs once without recording a graph and notes where its accepted steps
ended. The solve is then cut into `checkpoints` segments of about equal numbers of steps;
each segment is replayed over exactly those steps (no error control, no rejected steps)
inside `torch.utils.checkpoint`, which keeps only the segment's starting state and recomputes
the segment during the backward pass. The gradient is therefore that of the same discrete
solve `BackpropAdjoint` differentiates (equal to round-off), while memory holds the
checkpointed states plus one segment's graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidal._errors import InvalidArgumentError


@dataclass(frozen=True)
class CheckpointAdjoint:
    """Recompute segments of the solve in the backward pass instead of storing every step.

    Args:
        checkpoints: number of segments; memory grows with it, recomputation shrinks. None
            picks about sqrt(number of steps), the classic balance.

    Shared time grids only, without events or dense output; use `BackpropAdjoint` for those.
    """

    checkpoints: int | None = None

    def __post_init__(self) -> None:
        n = self.checkpoints
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidArgumentError(
                f"`CheckpointAdjoint(checkpoints={n!r})` must be a positive integer or None.")

    def segments(self, num_steps: int) -> int:
        n = self.checkpoints if self.checkpoints is not None else math.isqrt(max(num_steps, 1))
        return max(1, min(n, num_steps))
