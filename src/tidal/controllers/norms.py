"""Scaled error norms and the automatic initial step (Hairer, Nørsett & Wanner, II.4)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tidal._constants import constant
from tidal._errors import InvalidArgumentError

Tolerance = float | torch.Tensor
Scalar = Any  # a Python float (shared grid) or a float64 tensor [G] (per-sample grids)
Combine = Callable[[Sequence[Any]], Any]


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension."""
    return torch.linalg.vector_norm(x, dim=-1).div_(x.shape[-1] ** 0.5)


def tolerance(name: str, value: Tolerance, y0: torch.Tensor, shape: torch.Size) -> Tolerance:
    """A tolerance as a float, or as a tensor of y0's dtype and device in y0's layout, from a
    tensor that broadcasts to the user's state `shape` (detached: error ratios are never
    differentiated)."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    try:
        full = torch.broadcast_to(value.to(y0.dtype), shape)
    except RuntimeError:
        raise InvalidArgumentError(
            f"`PIDController({name}=tensor of shape {tuple(value.shape)})` does not broadcast to "
            f"the state's shape {tuple(shape)}.") from None
    return full.to(y0.device).reshape(y0.shape).detach()


class LeadingRMS:
    """A `PIDController(norm=...)` that controls only the first `k` entries of each sample's
    state (an augmented state's own part, not what rides along with it): the RMS of their
    scaled error over the batch (a shared grid) or per sample (`per_sample`: per-sample grids).
    """

    def __init__(self, k: int, per_sample: bool = False) -> None:
        self.k, self.per_sample = k, per_sample

    def __call__(self, scaled: torch.Tensor) -> torch.Tensor:
        leading = scaled[:, :self.k].square()
        return (leading.mean(-1) if self.per_sample else leading.mean()).sqrt()


class ErrorNorm:
    r"""The error ratio of a step: for each group, the RMS over its N entries of

    $$ \frac{dt \, e_i}{\text{atol}_i + \text{rtol}_i \max(|y_{0,i}|, |y_{1,i}|)} $$

    for every error estimate e (a row of the solver's estimates), combined by the solver
    (most have one estimate; DOP853 combines two). A user `norm` replaces the RMS: it is called
    on the scaled error in the state's own shape (dt included) and returns one value per group.

    On a shared grid (a float dt) the norms come to the host in one synchronisation and the
    rest is Python arithmetic; on per-sample grids everything stays a tensor [G].
    """

    def __init__(self, rtol: Tolerance, atol: Tolerance, y0: torch.Tensor, shape: torch.Size,
                 groups: int, combine: Combine, norm: Callable | None = None):
        self.rtol = tolerance("rtol", rtol, y0, shape)
        self.atol = tolerance("atol", atol, y0, shape)
        self.shape, self.groups, self.combine, self.user_norm = shape, groups, combine, norm
        self.root_n = math.sqrt(y0.numel() // groups)
        self._last: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        # the scale atol + rtol max(|y0|, |y1|), rewritten each step, and its flat view
        self._scale: tuple[torch.Tensor, torch.Tensor] | None = None

    def rows(self, tol: Tolerance) -> Tolerance:
        """A tolerance in group rows [G, N] (for the initial step)."""
        return tol.reshape(self.groups, -1) if isinstance(tol, torch.Tensor) else tol

    def __call__(self, errors: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, dt: Scalar
                 ) -> Scalar:
        """errors [R, numel] (before the factor dt), y0 and y1 in the loop's layout."""
        last_y1, last_abs = self._last
        # an accepted y1 is the next y0
        abs_y0 = last_abs if y0 is last_y1 and last_abs is not None else y0.abs()
        abs_y1 = y1.abs()
        self._last = (y1, abs_y1)
        rtol, atol = self.rtol, self.atol  # floats as cached tensors: no cast per step
        scale, scale_flat = self._scale_buffer(abs_y1)
        torch.maximum(abs_y0, abs_y1, out=scale).mul_(
            constant(rtol, abs_y1) if isinstance(rtol, float) else rtol).add_(
            constant(atol, abs_y1) if isinstance(atol, float) else atol)
        scaled = errors.div_(scale_flat)
        if self.user_norm is not None:
            return self._user(scaled, dt)
        if isinstance(dt, float):  # one group: one host synchronisation
            size = dt / self.root_n
            return self.combine([size * n for n in torch.linalg.vector_norm(
                scaled, dim=-1).tolist()])
        size = dt / self.root_n  # float64 [G]: the product below is float64 (exact promotion)
        if len(scaled) == 1:
            return self.combine([torch.linalg.vector_norm(scaled.view(self.groups, -1), dim=-1)
                                 * size])
        norms = torch.linalg.vector_norm(scaled.view(len(scaled), self.groups, -1), dim=-1)
        return self.combine((norms * size).unbind(0))

    def _scale_buffer(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale's buffer in the state's layout and its flat view (made on first use)."""
        if self._scale is None or self._scale[0].shape != like.shape:
            scale = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            self._scale = (scale, scale.view(-1))
        return self._scale

    def _user(self, scaled: torch.Tensor, dt: Scalar) -> Scalar:
        if isinstance(dt, float):
            scaled.mul_(dt)
            return self.combine([float(self._user_norm(row)) for row in scaled])
        rows = scaled.view(len(scaled), self.groups, -1)
        rows = rows * dt.to(scaled.dtype).view(1, self.groups, 1)
        return self.combine([self._user_norm(row).double() for row in rows])

    def _user_norm(self, scaled: torch.Tensor) -> torch.Tensor:
        """The user's norm of one row of scaled errors: one value per group, checked."""
        assert self.user_norm is not None
        value = torch.as_tensor(self.user_norm(scaled.view(self.shape)))
        if value.numel() != self.groups:
            per, example = (("sample", "e.abs().amax(-1)") if self.groups > 1
                            else ("solve", "e.abs().max()"))
            raise InvalidArgumentError(
                f"`PIDController(norm=...)` must return one number per {per} ({self.groups} "
                f"here) from the scaled error; got a value of shape {tuple(value.shape)}. "
                f"Reduce over the state, e.g. norm=lambda e: {example}.")
        return value.reshape(-1)


@torch.no_grad()
def initial_step(f_at: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor,
                 f0: torch.Tensor, rtol: Tolerance, atol: Tolerance, error_order: int
                 ) -> torch.Tensor:
    """First step size for each row of y0 [G, M] (G = 1 for a shared grid), as float64 [G].

    d0 = ||y0||, d1 = ||f0||; an explicit Euler trial step h0 = 0.01 d0 / d1 gives
    d2 = ||f(t0 + h0, y0 + h0 f0) - f0|| / h0, and the step is
    min(100 h0, (0.01 / max(d1, d2))^(1/(q+1))), all norms scaled by atol + rtol |y0|.
    `f_at(h)` evaluates f(t0 + h, y0 + h f0) for per-row steps h [G].
    """
    scale = y0.abs().mul(rtol).add(atol)
    d0 = rms(y0 / scale).double()
    d1 = rms(f0 / scale).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1.clamp(min=1e-300))
    f1 = f_at(h0)
    d2 = rms((f1 - f0) / scale).double() / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(d12 <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                     (0.01 / d12.clamp(min=1e-300)) ** (1.0 / (error_order + 1)))
    return torch.minimum(100 * h0, h1)
