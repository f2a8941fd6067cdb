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
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal._grid import Grid
from tidal._vector_field import VectorField

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
    before the first crossing and <= 0 after it, which is what the bisection needs. g is kept
    as group rows [G, K] (see `tidal._grid`).
    """

    def __init__(self, event: Event, g0: torch.Tensor, groups: int):
        self.event, self.groups = event, groups
        g0 = g0.detach()  # an integer g is compared (and bisected) as float64
        self.previous = self._rows(g0 if g0.is_floating_point() else g0.to(torch.float64))

    def _rows(self, g: torch.Tensor) -> torch.Tensor:
        return g.reshape(self.groups, -1)

    @torch.no_grad()
    def values(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """g(t, y) as group rows [G, K]."""
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


def watch(event: Event, t0: torch.Tensor, y0: torch.Tensor, grid: Grid) -> EventWatcher:
    """The watcher of a solve, after checking g's value at the start (user time and shape)."""
    g0 = event.fn(t0, y0)
    _check_output(g0, grid)
    return EventWatcher(event, g0, grid.groups)


def _check_output(g0: Any, grid: Grid) -> None:
    """The event function's value at the start: a real tensor, [B] or [B, k] per sample."""
    if not isinstance(g0, torch.Tensor) or not (g0.is_floating_point() or g0.dtype == torch.long
                                                or g0.dtype == torch.int):
        raise InvalidArgumentError(
            f"`Event(fn=...)` must return a real tensor g(t, y); it returned "
            f"{type(g0).__name__ if not isinstance(g0, torch.Tensor) else g0.dtype}.")
    if grid.batched and (g0.dim() == 0 or g0.shape[0] != grid.groups):
        raise InvalidArgumentError(
            f"`Event(fn=...)` on per-sample grids must return one value per sample, shape [B] or "
            f"[B, k] with B = {grid.groups}; it returned shape {tuple(g0.shape)}.")


def bisection_steps(width: float, tol: float) -> int:
    """Number of halvings that shrink a bracket of `width` below `tol`."""
    if width <= tol:
        return 0
    return min(60, math.ceil(math.log2(width / tol)))


class _EventShift(torch.autograd.Function):
    """Zero in value; its gradient is that of the event time moved by a change of g:
    d(shift)/d(g) = -1 / (dg/dt along the solution). Keeping the value exactly zero leaves
    the located time and state untouched (and finite even where dg/dt vanishes)."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, inverse_rate: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse_rate)
        return torch.zeros_like(g)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse_rate,) = ctx.saved_tensors
        return -grad * inverse_rate, None


def differentiable_event(event: Event, f: VectorField, t_event: torch.Tensor,
                         y_event: torch.Tensor, signs: torch.Tensor | None,
                         fallback: tuple[torch.Tensor, torch.Tensor], grid: Grid
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The event time and state with their gradients, by the implicit function theorem.

    The event time t* solves g(t*, y(t*; theta); theta) = 0, so

    $$ \frac{dt^*}{d\theta} = -\frac{\partial_\theta g + \partial_y g \, \partial_\theta y(t^*)}
       {\partial_t g + \partial_y g \cdot f(t^*, y^*)}, \qquad
       \frac{dy(t^*)}{d\theta} = \partial_\theta y(t^*) + f(t^*, y^*) \frac{dt^*}{d\theta}. $$

    `y_event` is the state at the located time with the gradient of the solve at that fixed
    time (the numerator's \partial_\theta y); g evaluated on it carries the whole numerator.
    The denominator is computed once, without a graph. The returned time and state have the
    located values exactly; only their gradients change. The component of a vector g that
    triggered is the crossing one with the most negative signed value (`signs`: sign of g
    before the step where it crossed, 0 elsewhere). Samples without an event (NaN time) get
    no gradient. On per-sample grids g and f must treat samples independently.
    """
    rows, batched = grid.rows, grid.batched
    dtype, device = y_event.dtype, y_event.device
    found = torch.isfinite(t_event).to(device).reshape(-1)  # [rows]
    if signs is None or not bool(found.any()):
        return t_event, y_event
    column = found.view(-1, *([1] * (y_event.dim() - 1))) if batched else found.view(())
    t_user = t_event.to(dtype=dtype, device=device)
    t_safe = torch.where(found.view(t_user.shape), t_user,
                         fallback[0].to(dtype=dtype, device=device))
    y_safe = torch.where(column, y_event, fallback[1].detach())
    with torch.enable_grad():
        g_live = rows(event.fn(t_safe.detach(), y_safe))
        if not (g_live.is_floating_point() and g_live.requires_grad):
            return t_event, y_event
        signed = torch.where(signs != 0, signs * g_live.detach(), math.inf)
        component = signed.argmin(-1, keepdim=True)  # [rows, 1]
        g_live = g_live.gather(1, component).squeeze(1)  # [rows]
        t_leaf = t_safe.detach().requires_grad_(True)
        y_leaf = y_safe.detach().requires_grad_(True)
        g_leaf = rows(event.fn(t_leaf, y_leaf)).gather(1, component).squeeze(1)
        dg_dt, dg_dy = torch.autograd.grad(g_leaf.sum(), (t_leaf, y_leaf), allow_unused=True,
                                           retain_graph=True)  # g's tensors may share a graph
    with torch.no_grad():
        velocity = f(t_safe, y_safe.detach())
        rate = rows(dg_dy * velocity).sum(-1) if dg_dy is not None else torch.zeros_like(g_live)
        if dg_dt is not None:
            rate = rate + dg_dt.reshape(-1)
        inverse_rate = torch.where(found, 1.0 / rate, 0.0)
    shift = _EventShift.apply(g_live, inverse_rate)  # [rows]
    t_out = t_event + shift.to(dtype=t_event.dtype, device=t_event.device).view(t_event.shape)
    shift_y = shift.view(-1, *([1] * (y_event.dim() - 1))) if batched else shift.view(())
    y_out = y_event + velocity * shift_y
    return t_out, y_out
