"""`Solution` of a solve: outputs, statistics, status, events and optional dense output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from tidal._errors import InvalidArgumentError, Status

if TYPE_CHECKING:
    from tidal.interpolation import DenseOutput


@dataclass
class Stats:
    """Work done by a solve, as int64 tensors on the CPU: 0-d on a shared grid, [B] (one count
    per sample) on per-sample grids.

    `num_fevals` counts calls of f per sample (a batched call counts once for each sample it
    advanced); `num_steps` = `num_accepted` + `num_rejected`. Stiff methods also count
    `num_jacobians` (df/dy, taken once per step start and reused by rejected attempts; its
    calls of f are not in `num_fevals`) and `num_factorizations` (LU factorizations of the
    step's matrix W, one per attempted step); `tidal.Auto` counts `num_switches` between its
    explicit and stiff methods. Use `int(stats.num_steps)` for a
    plain number on a shared grid. The loops count in Python ints (shared grid) or device
    tensors (per-sample grids) and convert once, at the end.
    """

    num_fevals: torch.Tensor = field(default_factory=lambda: _count(0))
    num_steps: torch.Tensor = field(default_factory=lambda: _count(0))
    num_accepted: torch.Tensor = field(default_factory=lambda: _count(0))
    num_rejected: torch.Tensor = field(default_factory=lambda: _count(0))
    num_jacobians: torch.Tensor = field(default_factory=lambda: _count(0))
    num_factorizations: torch.Tensor = field(default_factory=lambda: _count(0))
    num_switches: torch.Tensor = field(default_factory=lambda: _count(0))

    def add(self, other: Stats) -> None:
        """Add another solve's counts into these (in place)."""
        for name in ("num_fevals", "num_steps", "num_accepted", "num_rejected",
                     "num_jacobians", "num_factorizations", "num_switches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _count(n: int) -> torch.Tensor:
    return torch.tensor(n, dtype=torch.int64)


@dataclass
class Solution:
    """What `tidal.solve` returns.

    Attributes:
        ts: the requested output times (float64, as given).
        ys: states at `ts`, time first: [T, *y0.shape]. Rows the solve did not reach (after a
            terminal event, or after a failure with `throw=False`) are NaN.
        stats: `Stats` of the solve.
        status: `Status.SUCCESS` or `Status.EVENT` when every sample finished, else the first
            failure.
        sample_status: per-sample statuses on per-sample grids, else None.
        event_t: time of the terminal event (0-d, or [B] on per-sample grids; NaN where none
            happened), None without an event. With `BackpropAdjoint` or `CheckpointAdjoint`
            it is differentiable: dt*/dtheta = -(dg/dtheta) / (dg/dt along the solution).
        event_y: state at the event (NaN where none happened), None without an event;
            differentiable like `event_t`, moving with the event time along f.
        backward_stats: with `BacksolveAdjoint`, the work of the backward solve, filled in
            when gradients are computed.
    """

    ts: torch.Tensor
    ys: torch.Tensor
    stats: Stats
    status: Status
    sample_status: tuple[Status, ...] | None = None
    event_t: torch.Tensor | None = None
    event_y: torch.Tensor | None = None
    dense_output: DenseOutput | None = field(default=None, repr=False)
    backward_stats: Stats | None = None

    def evaluate(self, t: torch.Tensor | float) -> torch.Tensor:
        """The solution at any time(s) within the solved span (needs `solve(..., dense=True)`).

        On a shared grid `t` has any shape and the result is [*t.shape, *state]; on per-sample
        grids `t` is [B] or [M, B] (one time per sample; a single time serves every sample) and
        the result [B, *state] or [M, B, *state].
        """
        if self.dense_output is None:
            raise InvalidArgumentError(
                "`Solution.evaluate(t)` needs dense output; solve with `tidal.solve(..., "
                "dense=True)`. `tidal.sdeint` has none (a path between steps is not "
                "determined by them): put the times you need in its `ts`.")
        return self.dense_output.evaluate(t)
