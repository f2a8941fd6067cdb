"""Terminal events: stop a solve where g(t, y) changes sign, located on the dense interpolant.

For a vector-valued g, the solve stops at the first component to cross zero. Components that
start exactly at zero, or that cannot cross in the requested `direction`, are ignored. The event
time is found by bisection on the step's interpolant until the bracket is shorter than `tol`;
the reported time is the bracket's far end (where g has already crossed), so
|t_event - t_true| <= tol up to the interpolant's own error, which is of the solver's tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tidal._errors import InvalidArgumentError

EventFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Event:
    """A terminal event.

    Args:
        fn: g(t, y) -> tensor; the solve stops where a component of g changes sign. On
            per-sample grids t is [B] and g returns [B] or [B, k], and each sample stops at its
            own event.
        direction: 0 for any crossing, +1 only from negative to positive, -1 only from positive
            to negative.
        tol: precision of the event time; None gives 1e-12 * max(1, |t|).
    """

    fn: EventFn
    direction: int = 0
    tol: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidArgumentError(f"`Event(fn=...)` must be callable g(t, y); got "
                                       f"{type(self.fn).__name__}.")
        if self.direction not in (-1, 0, 1):
            raise InvalidArgumentError(f"`Event(direction={self.direction!r})` must be -1, 0 "
                                       "or +1.")
        if self.tol is not None and not self.tol > 0:
            raise InvalidArgumentError(f"`Event(tol={self.tol!r})` must be positive.")

    def time_tol(self, t: float) -> float:
        return self.tol if self.tol is not None else 1e-12 * max(1.0, abs(t))


class EventWatcher:
    """Tracks min_k(sign_k(g(t0)) * g_k(t, y)), which is positive until the first crossing.

    `batched=True` keeps one value per sample (the leading dimension of g's output).
    """

    def __init__(self, event: Event, g0: torch.Tensor, batched: bool):
        self.event, self.batched = event, batched
        g0 = g0.detach()
        g0 = g0.reshape(g0.shape[0], -1) if batched else g0.reshape(1, -1)
        sign = torch.sign(g0)
        active = sign != 0
        if event.direction != 0:
            active &= sign == -event.direction
        self.sign = torch.where(active, sign, 0.0)
        self.inactive = ~active

    @torch.no_grad()
    def value(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[B] (batched) or [1]: positive before the crossing, <= 0 at or after it."""
        g = self.event.fn(t, y)
        g = g.reshape(self.sign.shape).to(self.sign.dtype)
        return (self.sign * g).masked_fill(self.inactive, math.inf).amin(-1)


def bisection_steps(width: float, tol: float) -> int:
    """Number of halvings that shrink a bracket of `width` below `tol`."""
    if width <= tol:
        return 0
    return min(60, math.ceil(math.log2(width / tol)))
