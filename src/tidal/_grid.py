"""The time grid of a solve: one grid for the whole state, or one grid per sample.

A solve advances G *groups*, each with its own times, step size and accept/reject decisions:
on a shared grid (ts of shape [T]) the whole state is one group (G = 1); on per-sample grids
(ts of shape [T, B]) every sample is a group (G = B). Inside a solve time runs forward in every
group, tau = direction * t.

Everything off the per-step hot path (problem setup, recorder, checkpoint replay, dense output,
events, statistics, gradients with respect to time) works on group tensors: times [..., G]
(float64) and states as group rows [G, N]. So one implementation serves both grids; only the
shared-grid loop (`tidal._loop`) keeps its time as Python floats, for speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """Output times and directions of a solve, as group tensors.

    Attributes:
        times: the user's output times, float64 [T] (shared) or [T, B] (per sample).
        direction: +1 or -1 per group, float64 [G] on the state's device.
        taus: output times in forward time, float64 [T, G] on the state's device, increasing in
            every group.
        batched: per-sample grids (one group per sample).
    """

    times: torch.Tensor
    direction: torch.Tensor
    taus: torch.Tensor
    batched: bool
    forward: bool = True  # every group runs forward in time

    @classmethod
    def of(cls, times: torch.Tensor, device: torch.device) -> Grid:
        """The grid of checked float64 output times [T] or [T, B]."""
        if times.dim() == 1:  # one group: decide the direction on the host
            values = times.tolist()
            sign = -1.0 if values[-1] < values[0] else 1.0
            taus = times.unsqueeze(-1).to(device)
            return cls(times, torch.full((1,), sign, dtype=torch.float64, device=device),
                       taus if sign > 0 else -taus, False, sign > 0)
        direction = torch.where(times[-1] < times[0], -1.0, 1.0).to(torch.float64).to(device)
        return cls(times, direction, times.to(device) * direction, True,
                   bool((direction > 0).all()))

    def with_taus(self, taus: torch.Tensor) -> Grid:
        """The same groups and directions with other output times (forward time, [T', G])."""
        times = (taus * self.direction).cpu()
        return Grid(times if self.batched else times[:, 0], self.direction, taus, self.batched,
                    self.forward)

    @property
    def groups(self) -> int:
        return self.taus.shape[1]

    @property
    def group_shape(self) -> tuple[int, ...]:
        """Shape of one value per group as the user sees it: () on a shared grid, (B,)."""
        return (self.groups,) if self.batched else ()

    def loop_shape(self, shape: torch.Size) -> torch.Size:
        """The state's layout inside the loop: the user's shape on a shared grid (f is called
        with it as it is), [B, D] on per-sample grids."""
        if not self.batched:
            return shape
        return torch.Size((shape[0], math.prod(shape[1:])))

    def user_time(self, tau: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Forward times tau [..., G] (float64) as the user's times in the state's dtype, shaped
        [..., *group_shape] (a 0-d time on a shared grid, [B] on per-sample grids)."""
        t = (tau if self.forward else tau * self.direction.to(tau.device)).to(dtype)
        return t if self.batched else t.reshape(tau.shape[:-1])

    def user_time_beside(self, tau: torch.Tensor, dtype: torch.dtype, side: float
                         ) -> torch.Tensor:
        """`user_time(tau)`'s neighbour in the state's dtype just after (side = +1) or just
        before (side = -1) tau in forward time: f from one side of a jump. Taken in the state's
        dtype, so that it is not rounded back onto the jump (as a float64 neighbour would be
        in float32)."""
        toward = self.user_time(torch.full_like(tau, side * math.inf), dtype)
        return torch.nextafter(self.user_time(tau, dtype), toward)

    def forward_time(self, t: torch.Tensor) -> torch.Tensor:
        """User times [..., *group_shape] as forward times [..., G] (float64)."""
        t = t.to(dtype=torch.float64, device=self.direction.device)
        return t.reshape((*t.shape[:t.dim() - len(self.group_shape)], self.groups)) * self.direction

    def per_group(self, values: torch.Tensor) -> torch.Tensor:
        """One value per group [G] in the user's shape for such values (see `group_shape`)."""
        return values.reshape(self.group_shape)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """A state (or anything with one leading entry per group) as group rows [G, N]."""
        return x.reshape(self.groups, -1)

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """u . v in float64 within each group: 0-d on a shared grid, [B] on per-sample grids."""
        return self.per_group(self.rows((u * v).double()).sum(-1))
