"""Wrappers that call the user's f(t, y[, args]) from the solver's internal layout.

Inside the loop time runs forward: tau = direction * t. The state keeps the user's shape on a
shared grid and is [B, D] on per-sample grids. These wrappers turn tau back into the user's
time (a tensor of the state's dtype: 0-d on a shared grid, [B] on per-sample grids), restore
the user's shape where needed, and flip the sign of f when integrating backwards in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

UserField = Callable[..., torch.Tensor]


class SharedField:
    """f for a state of the user's shape at a Python-float time tau."""

    def __init__(self, f: UserField, args: Any, shape: torch.Size, direction: float,
                 dtype: torch.dtype, device: torch.device):
        self.f, self.args, self.shape = f, args, shape
        self.direction, self.dtype, self.device = direction, dtype, device

    def user_time(self, tau: float) -> torch.Tensor:
        return torch.full((), self.direction * tau, dtype=self.dtype, device=self.device)

    def __call__(self, tau: float, y: torch.Tensor) -> torch.Tensor:
        t = self.user_time(tau)
        dy = self.f(t, y) if self.args is None else self.f(t, y, self.args)
        return dy if self.direction > 0 else -dy


class PerSampleField:
    """f for a state [B, D] at float64 times tau [B] (one per sample)."""

    def __init__(self, f: UserField, args: Any, shape: torch.Size, direction: torch.Tensor,
                 dtype: torch.dtype):
        self.f, self.args, self.shape, self.dtype = f, args, shape, dtype
        self.direction = direction  # [B] float64 of +-1
        self.all_forward = bool((direction > 0).all())
        self.sign = direction.to(dtype).unsqueeze(-1)  # [B, 1]

    def user_time(self, tau: torch.Tensor) -> torch.Tensor:
        return (tau if self.all_forward else tau * self.direction).to(self.dtype)

    def __call__(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.user_time(tau)
        y = y.view(self.shape)
        dy = self.f(t, y) if self.args is None else self.f(t, y, self.args)
        dy = dy.reshape(y.shape[0], -1)
        return dy if self.all_forward else dy * self.sign
