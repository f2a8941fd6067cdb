"""The one explicit Runge–Kutta step, driven by a `ButcherTableau`.

A stage's input y0 + dt * sum_j a_ij k_j is one matrix-vector product over the stages so far,
so a step costs a handful of large tensor operations whatever the state's size. Where the
stages live is the job of a `Stages` object, which the loop keeps from step to step:

- `StackedStages` keeps them as a list and stacks them for each product: every operation is
  out of place, so autograd can record the step (training with backprop);
- `BufferedStages` writes them into one preallocated [S, N] buffer: no allocation per stage,
  fewer operations, for solves that record no graph (inference, adjoint passes);
- `PerSampleStages` and `PerSampleBufferedStages` are the same two kinds for a [B, D] state
  with one step size per sample.

Stage values have the shape f works with (the user's shape on a shared grid, [B, D] on
per-sample grids), and `matrix()` gives the stages as flat rows [count, N] for the error
estimate and interpolation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from tidal.solvers.tableau import ButcherTableau

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RKCoefficients:
    """A tableau's coefficients as tensors: stage rows in the state's dtype, the dense-output
    polynomials in float64 (they cancel heavily; weights are cast after evaluation)."""

    a_rows: tuple[torch.Tensor, ...]  # a_rows[i]: row i of a, [i] (row 0 is empty)
    b: torch.Tensor  # [S]
    b_error: torch.Tensor  # [R, S]
    dense: torch.Tensor  # [S_dense, degree], float64
    extra_rows: tuple[torch.Tensor, ...]


@lru_cache(maxsize=64)
def rk_coefficients(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device
                    ) -> RKCoefficients:
    def tensor(values: object, as_dtype: torch.dtype = dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(dtype=as_dtype, device=device)

    s = tableau.num_stages
    return RKCoefficients(
        a_rows=tuple(tensor(row) for row in tableau.a),
        b=tensor(tableau.b),
        b_error=tensor(tableau.b_error) if tableau.b_error else torch.empty(0, s, dtype=dtype),
        dense=tensor(tableau.dense_weights(), torch.float64),
        extra_rows=tuple(tensor(row) for row in tableau.a_extra),
    )


class Stages:
    """The stages of the current step, kept by the loop from step to step (see the module
    docstring). `dt` is a Python float on a shared grid and a tensor [B, 1] (the state's
    dtype; 0 where a sample does not step) on per-sample grids."""

    y0: torch.Tensor
    dt: float | torch.Tensor

    def begin(self, y0: torch.Tensor, dt: float | torch.Tensor, f0: torch.Tensor) -> None:
        """Start a step from y0 with f(t0, y0) = f0 as stage 0."""
        raise NotImplementedError

    def combine(self, row: torch.Tensor) -> torch.Tensor:
        """y0 + dt * sum_j row_j k_j over the stages so far, in y0's layout."""
        raise NotImplementedError

    def append(self, k: torch.Tensor) -> None:
        raise NotImplementedError

    def first(self) -> torch.Tensor:
        """f(t0, y0)."""
        raise NotImplementedError

    def last(self) -> torch.Tensor:
        raise NotImplementedError

    def matrix(self) -> torch.Tensor:
        """The stages so far as flat rows, [count, N]."""
        raise NotImplementedError

    def hand_over(self, f1: torch.Tensor) -> torch.Tensor:
        """f(t1, y1) becomes the next step's first stage; returns it as the loop keeps it."""
        return f1


class StackedStages(Stages):
    """Stages as a list, stacked for each combination (autograd-friendly)."""

    ks: list[torch.Tensor]

    def begin(self, y0: torch.Tensor, dt: float | torch.Tensor, f0: torch.Tensor) -> None:
        self.y0, self.y0_flat, self.dt, self.ks = y0, y0.reshape(-1), dt, [f0]

    def combine(self, row: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.dt, float)
        y = torch.addmv(self.y0_flat, self.matrix().T, row, alpha=self.dt)
        return y if self.y0.dim() == 1 else y.view_as(self.y0)

    def append(self, k: torch.Tensor) -> None:
        self.ks.append(k)

    def first(self) -> torch.Tensor:
        return self.ks[0]

    def last(self) -> torch.Tensor:
        return self.ks[-1]

    def matrix(self) -> torch.Tensor:
        return torch.stack(self.ks).view(len(self.ks), -1)


class BufferedStages(Stages):
    """Stages written into a reusable [S_dense, N] buffer (no autograd graph). Row 0 holds the
    current step's f(t0, y0) until `hand_over` replaces it after an accepted step, so it
    survives rejected attempts. The flat result of the last combination is kept: when it is
    the next step's y0 (an accepted y1), it is that step's flat y0 (no reshape per step; on
    the autograd path, `StackedStages`, the same reuse made the backward pass ~2% slower)."""

    _combined: tuple[torch.Tensor, torch.Tensor] | None = None  # the last (shaped, flat) result

    def __init__(self, num_rows: int, like: torch.Tensor):
        self.buffer = torch.zeros(num_rows, like.numel(), dtype=like.dtype, device=like.device)
        self.rows = [row.view(like.shape) for row in self.buffer.unbind(0)]
        self.prefixes = [self.buffer[:i] for i in range(num_rows + 1)]
        self.prefixes_t = [prefix.T for prefix in self.prefixes]
        self.count = 0

    def begin(self, y0: torch.Tensor, dt: float | torch.Tensor, f0: torch.Tensor) -> None:
        combined = self._combined
        flat = (y0 if y0.dim() == 1 else combined[1]
                if combined is not None and combined[0] is y0 else y0.reshape(-1))
        self.y0, self.y0_flat, self.dt, self.count = y0, flat, dt, 1
        if f0 is not self.rows[0]:
            self.rows[0].copy_(f0)

    def combine(self, row: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.dt, float)
        y = torch.addmv(self.y0_flat, self.prefixes_t[self.count], row, alpha=self.dt)
        if self.y0.dim() == 1:
            return y
        shaped = y.view_as(self.y0)
        self._combined = (shaped, y)
        return shaped

    def append(self, k: torch.Tensor) -> None:
        self.rows[self.count].copy_(k)
        self.count += 1

    def first(self) -> torch.Tensor:
        return self.rows[0]

    def last(self) -> torch.Tensor:
        return self.rows[self.count - 1]

    def matrix(self) -> torch.Tensor:
        return self.prefixes[self.count]

    def hand_over(self, f1: torch.Tensor) -> torch.Tensor:
        self.rows[0].copy_(f1)
        return self.rows[0]


class PerSampleStages(StackedStages):
    """Stacked stages for a state [B, D] with step sizes dt [B, 1] (state dtype)."""

    def begin(self, y0: torch.Tensor, dt: float | torch.Tensor, f0: torch.Tensor) -> None:
        self.y0, self.dt, self.ks = y0, dt, [f0]

    def combine(self, row: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.dt, torch.Tensor)
        return torch.addcmul(self.y0, self.dt, torch.mv(self.matrix().T, row).view_as(self.y0))

    def merge_first(self, accept: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """The next step's f0: f1 for the samples whose step was accepted (`accept` [B, 1]),
        the current f(t0, y0) for the others."""
        return torch.where(accept, f1, self.first())


class PerSampleBufferedStages(BufferedStages):
    """Buffered stages for a state [B, D] with step sizes dt [B, 1] (state dtype). The sum
    over the stages goes into a scratch vector kept with its [B, D] view (two operations per
    stage, no allocation but the stage's input itself)."""

    def __init__(self, num_rows: int, like: torch.Tensor):
        super().__init__(num_rows, like)
        self.increment = torch.empty_like(like)
        self.increment_flat = self.increment.view(-1)

    def begin(self, y0: torch.Tensor, dt: float | torch.Tensor, f0: torch.Tensor) -> None:
        self.y0, self.dt, self.count = y0, dt, 1
        if f0 is not self.rows[0]:
            self.rows[0].copy_(f0)

    def combine(self, row: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.dt, torch.Tensor)
        torch.mv(self.prefixes_t[self.count], row, out=self.increment_flat)
        return torch.addcmul(self.y0, self.dt, self.increment)

    def merge_first(self, accept: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """`PerSampleStages.merge_first`, written into row 0 (which `begin` then keeps)."""
        return torch.where(accept, f1, self.rows[0], out=self.rows[0])


def rk_stages(field: Field, stage_times: Sequence[torch.Tensor], stages: Stages,
              tableau: ButcherTableau, coef: RKCoefficients) -> torch.Tensor:
    """Compute stages k_1..k_{S-1} into `stages` (k_0 is there from `begin`); returns y1.

    `stage_times[i]` is t0 + c_i dt. For an FSAL method y1 is the last stage's input (its
    last row of `a` equals `b`), so it costs nothing extra.
    """
    y_stage = stages.y0
    for i in range(1, tableau.num_stages):
        y_stage = stages.combine(coef.a_rows[i])
        stages.append(field(stage_times[i], y_stage))
    return y_stage if tableau.fsal and not tableau.reuse_last_stage else stages.combine(coef.b)


def extra_stages(field: Field, extra_times: Sequence[torch.Tensor], stages: Stages,
                 coef: RKCoefficients) -> None:
    """Append the interpolant's extra stages (DOP853 has three) after f(t1, y1)."""
    for time, row in zip(extra_times, coef.extra_rows):
        stages.append(field(time, stages.combine(row)))
