"""Wrappers that call the user's f(t, y[, args]) from the solver's internal layout.

Inside the loop time runs forward: tau = direction * t. The state keeps the user's shape on a
shared grid and is [B, D] on per-sample grids. These wrappers turn tau back into the user's
time (a tensor of the state's dtype: 0-d on a shared grid, [B] on per-sample grids), restore
the user's shape where needed, and flip the sign of f when integrating backwards in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

UserField = Callable[..., torch.Tensor]


class SharedField:
    """f for a state of the user's shape at a Python-float time tau."""

    def __init__(self, f: UserField, args: Any, shape: torch.Size, direction: float,
                 dtype: torch.dtype, device: torch.device):
        self.f, self.args, self.shape = f, args, shape
        self.direction, self.dtype, self.device = direction, dtype, device

        on_cpu = device.type == "cpu"
        self.numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype if on_cpu else None

    def user_time(self, tau: float) -> torch.Tensor:
        return torch.full((), self.direction * tau, dtype=self.dtype, device=self.device)

    def user_times(self, taus: list[float]) -> tuple[torch.Tensor, ...]:
        """Many user times at once (one tensor per stage of a step)."""
        if self.numpy_dtype is None:
            return tuple(self.user_time(tau) for tau in taus)
        values = np.array(taus, dtype=self.numpy_dtype)
        return torch.from_numpy(values if self.direction > 0 else -values).unbind()

    def __call__(self, tau: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f at forward time tau (a float), or at a user time already made by `user_times`."""
        t = self.user_time(tau) if type(tau) is float else tau
        dy = self.f(t, y) if self.args is None else self.f(t, y, self.args)
        return dy if self.direction > 0 else -dy


class PerSampleField:
    """f for a state [B, D] at user times t [B] (one per sample; see `user_time`)."""

    def __init__(self, f: UserField, args: Any, shape: torch.Size, direction: torch.Tensor,
                 dtype: torch.dtype):
        self.f, self.args, self.shape, self.dtype = f, args, shape, dtype
        self.direction = direction  # [B] float64 of +-1
        self.all_forward = bool((direction > 0).all())
        self.sign = direction.to(dtype).unsqueeze(-1)  # [B, 1]
        self.flat = len(shape) == 2

    def user_time(self, tau: torch.Tensor) -> torch.Tensor:
        """Forward times tau [...] (float64) to the user's times in the state's dtype."""
        return (tau if self.all_forward else tau * self.direction).to(self.dtype)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f at user times t [B] (from `user_time`) and state y [B, D]."""
        if not self.flat:
            y = y.view(self.shape)
        dy = self.f(t, y) if self.args is None else self.f(t, y, self.args)
        if not self.flat:
            dy = dy.reshape(y.shape[0], -1)
        return dy if self.all_forward else dy * self.sign
