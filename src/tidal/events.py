"""Terminal events: stop a solve where g(t, y) changes sign, located on the dense interpolant.

For a vector-valued g, the solve stops at the first component to cross zero in an allowed
`direction`; crossings are found between the ends of each accepted step, so a component may
first cross the other way and later trigger the event. The event time is found by bisection on
the step's interpolant until the bracket is shorter than `tol`;
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
    """Watches g across accepted steps and finds the first crossing inside a step.

    A component crosses in a step when its sign goes from positive to <= 0 (downward) or from
    negative to >= 0 (upward) between the step's ends, in a direction the event allows; a
    component at exactly zero at a step's start cannot cross in that step, so a zero at the
    start of the solve, or at a located event, does not trigger again. Inside the step,
    `margin` = min over crossing components of sign(g at the step's start) * g is positive
    before the first crossing and <= 0 after it, which is what the bisection needs.
    `batched=True` keeps one row per sample (the leading dimension of g's output).
    """

    def __init__(self, event: Event, g0: torch.Tensor, batched: bool):
        self.event, self.batched = event, batched
        self.previous = self._rows(g0.detach())

    def _rows(self, g: torch.Tensor) -> torch.Tensor:
        return g.reshape(g.shape[0], -1) if self.batched else g.reshape(1, -1)

    @torch.no_grad()
    def values(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """g(t, y) as rows [B, K] (batched) or [1, K]."""
        return self._rows(self.event.fn(t, y)).to(self.previous.dtype)

    def crossings(self, g: torch.Tensor) -> torch.Tensor:
        """[rows, K] mask of components that crossed since the previous accepted step."""
        down = (self.previous > 0) & (g <= 0)
        up = (self.previous < 0) & (g >= 0)
        if self.event.direction < 0:
            return down
        if self.event.direction > 0:
            return up
        return down | up

    def margin(self, g: torch.Tensor, crossing: torch.Tensor) -> torch.Tensor:
        """[rows]: > 0 before the first crossing among `crossing` components, <= 0 after."""
        signed = torch.sign(self.previous) * g
        return signed.masked_fill(~crossing, math.inf).amin(-1)

    def advance(self, g: torch.Tensor, accept: torch.Tensor | bool = True) -> None:
        """The step ending at g was accepted (per row where `accept` is a mask)."""
        if isinstance(accept, torch.Tensor):
            g = torch.where(accept.unsqueeze(-1), g, self.previous)
        self.previous = g


def bisection_steps(width: float, tol: float) -> int:
    """Number of halvings that shrink a bracket of `width` below `tol`."""
    if width <= tol:
        return 0
    return min(60, math.ceil(math.log2(width / tol)))
