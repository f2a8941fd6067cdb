"""The one explicit Runge–Kutta step, driven by a `ButcherTableau`.

Stages are combined with one matrix-vector product each (stack the stages, multiply by the
tableau row), so a step costs a handful of large tensor operations whatever the batch size.
The same routine serves both layouts of the state: a flat vector [N] with one Python-float
step size (shared time grid), or [B, D] with one step size per sample (per-sample grids). The
difference is only in `Combine`, which forms y0 + dt * sum_j row_j K_j.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from tidal.solvers.tableau import ButcherTableau

Combine = Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]
Field = Callable[[object, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RKCoefficients:
    """A tableau's coefficients as tensors of the state's dtype and device."""

    a_rows: tuple[torch.Tensor, ...]  # a_rows[i]: row i of a, [i] (row 0 is empty)
    b: torch.Tensor  # [S]
    b_error: torch.Tensor  # [R, S]
    dense: torch.Tensor  # [S_dense, degree]
    extra_rows: tuple[torch.Tensor, ...]


@lru_cache(maxsize=64)
def rk_coefficients(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device
                    ) -> RKCoefficients:
    def tensor(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(dtype=dtype, device=device)

    s = tableau.num_stages
    return RKCoefficients(
        a_rows=tuple(tensor(row) for row in tableau.a),
        b=tensor(tableau.b),
        b_error=tensor(tableau.b_error) if tableau.b_error else torch.empty(0, s, dtype=dtype),
        dense=tensor(tableau.dense_weights()),
        extra_rows=tuple(tensor(row) for row in tableau.a_extra),
    )


def shared_combine(y0: torch.Tensor, dt: float) -> Combine:
    """y0 + dt * sum_j row_j K_j for a flat state [N] and one step size."""

    def combine(row: torch.Tensor, ks: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.addmv(y0, torch.stack(ks, 1), row, alpha=dt)

    return combine


def per_sample_combine(y0: torch.Tensor, dt: torch.Tensor) -> Combine:
    """y0 + dt_b * sum_j row_j K_j for a state [B, D] and step sizes dt [B, 1]."""

    def combine(row: torch.Tensor, ks: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ks, -1)  # [B, D, j]
        return torch.addcmul(y0, dt, stacked @ row)

    return combine


def rk_stages(field: Field, stage_times: Sequence, f0: torch.Tensor, combine: Combine,
              tableau: ButcherTableau, coef: RKCoefficients
              ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The stages k_0..k_{S-1} (k_0 = f0 is given) and y1.

    `stage_times[i]` is t0 + c_i dt. For an FSAL method y1 is the last stage's input (its
    last row of `a` equals `b`), so it costs nothing extra.
    """
    ks = [f0]
    y_stage = None
    for i in range(1, tableau.num_stages):
        y_stage = combine(coef.a_rows[i], ks)
        ks.append(field(stage_times[i], y_stage))
    if tableau.fsal:
        assert y_stage is not None, "an FSAL tableau has >= 2 stages; this is a bug in tidal"
        return ks, y_stage
    return ks, combine(coef.b, ks)


def extra_stages(field: Field, extra_times: Sequence, dense_ks: list[torch.Tensor],
                 combine: Combine, coef: RKCoefficients) -> list[torch.Tensor]:
    """Append the interpolant's extra stages (DOP853 has three) to the dense stages."""
    for time, row in zip(extra_times, coef.extra_rows):
        dense_ks = [*dense_ks, field(time, combine(row, dense_ks))]
    return dense_ks
