"""Scaled error norms and the automatic initial step (Hairer, Nørsett & Wanner, II.4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Tolerance = float | torch.Tensor


def error_scale(y0: torch.Tensor, y1: torch.Tensor, rtol: Tolerance, atol: Tolerance
                ) -> torch.Tensor:
    """atol + rtol * max(|y0|, |y1|), elementwise."""
    return torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension."""
    return torch.linalg.vector_norm(x, dim=-1).div_(x.shape[-1] ** 0.5)


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
