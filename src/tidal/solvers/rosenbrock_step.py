r"""One step of a Rosenbrock method (`RosenbrockTableau`) for a batch with one step size per
sample: a pure function, no loop state, no host sync.

With W = I - gamma h J (the transformed form multiplied by gamma h, so that a sample with
h = 0 has W = I and stays where it is instead of dividing by zero), stage i solves

    W u_i = gamma h f(t0 + c_i h, y0 + sum_{j<i} a_ij u_j) + gamma sum_{j<i} C_ij u_j
            + gamma d_i h^2 f_t,

with one LU of W per step (`batched_lu`). Then y1 = y0 + sum b_i u_i, the error estimate is
sum (b_i - b_hat_i) u_i, and the dense output is y0 + sum_r P_r(theta) q_r with
q_r = sum_i H_ri u_i (`rosenbrock_interpolate`).

Gradients flow through every operation, J and df/dt included, when those were computed with
grad mode on (`BatchedJacobian` does this): backpropagating through steps gives the exact
derivative of the discrete solution. A step with J detached would give a measurably different
gradient (the step's result depends on J at every order above one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from tidal.solvers.batched_lu import lu_factor, lu_solve
from tidal.solvers.jacobian import Field
from tidal.solvers.rosenbrock import RosenbrockTableau


class RosenbrockStep(NamedTuple):
    """One step for every sample.

    Attributes:
        y1: [B, D] the state at t0 + dt.
        error: [B, D] the local error estimate y1 - y1_hat (for the controller's norm).
        dense: [B, R, D] the interpolant's vectors q_r (see `rosenbrock_interpolate`).
        ok: [B] false where W was singular or not finite, or a stage was not finite: the
            loop must reject that sample's step (retry with a smaller dt), whatever its error.
        f1: f(t0 + dt, y1) when the tableau is FSAL (its last stage), else None.
        num_fevals: calls of the field the step made (f0 is given and not counted).
        increments: [B, S, D] the increments u_i (y1 = y0 + sum b_i u_i).
        regular: [B] false where W itself was singular or not finite (part of `ok`).
    """

    y1: torch.Tensor
    error: torch.Tensor
    dense: torch.Tensor
    ok: torch.Tensor
    f1: torch.Tensor | None
    num_fevals: int
    increments: torch.Tensor
    regular: torch.Tensor


@dataclass(frozen=True)
class _Coefficients:
    a_rows: tuple[torch.Tensor, ...]  # row i: [i]
    gamma_c_rows: tuple[torch.Tensor, ...]  # gamma * C, row i: [i]
    b: torch.Tensor  # [S]
    b_error: torch.Tensor  # [S], b - b_hat
    H: torch.Tensor  # [R, S]
    dense_poly: torch.Tensor  # [R, degree], float64


@lru_cache(maxsize=64)
def _coefficients(tableau: RosenbrockTableau, dtype: torch.dtype, device: torch.device
                  ) -> _Coefficients:
    def tensor(values, as_dtype: torch.dtype = dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(dtype=as_dtype, device=device)

    return _Coefficients(
        a_rows=tuple(tensor(row) for row in tableau.a),
        gamma_c_rows=tuple(tensor(row) * tableau.gamma for row in tableau.C),
        b=tensor(tableau.b),
        b_error=tensor([x - y for x, y in zip(tableau.b, tableau.b_hat)]),
        H=tensor(tableau.H),
        dense_poly=tensor(tableau.H_poly, torch.float64),
    )


def _per_sample(dt: torch.Tensor) -> torch.Tensor:
    """dt [B] -> [B, 1] to scale rows; a 0-d dt (shared by the batch) stays 0-d."""
    return dt.unsqueeze(-1) if dt.dim() else dt


def rosenbrock_step(field: Field, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor,
                    dt: torch.Tensor, tableau: RosenbrockTableau, J: torch.Tensor,
                    dfdt: torch.Tensor | None,
                    times: Sequence[torch.Tensor] | None = None) -> RosenbrockStep:
    """One Rosenbrock step of every sample.

    Args:
        field: f(t, y) -> [B, D], called with t = t0 + c_i dt.
        t0: [B] (or 0-d) start times; y0, f0: [B, D] the state and f(t0, y0).
        dt: [B] (or 0-d) step sizes; 0 leaves a sample at y0.
        tableau: the method.
        J: [B, D, D] df/dy at (t0, y0); dfdt: [B, D] df/dt there, or None (autonomous).
            Computed once per step start and reused for every attempt at the same point.
        times: the stage times t0 + c_i dt as the caller computes them (a loop keeps time in
            float64 and takes f at a jump from its near side); default: from t0 and dt.
    """
    coef = _coefficients(tableau, y0.dtype, y0.device)
    h = _per_sample(dt)  # [B, 1] or 0-d
    gamma_h = tableau.gamma * h
    eye = torch.eye(y0.shape[-1], dtype=y0.dtype, device=y0.device)
    factors = lu_factor(eye - _per_sample(gamma_h) * J)  # gamma h as [B, 1, 1] or 0-d
    # gamma d_i h^2 f_t = (gamma h) (h f_t) d_i
    time_term = None if dfdt is None else gamma_h * h * dfdt

    increments: list[torch.Tensor] = []
    f_stage = f0
    for i in range(tableau.num_stages):
        if i > 0:
            stacked = torch.stack(increments, dim=1)  # [B, i, D]
            y_stage = y0 + coef.a_rows[i] @ stacked
            t_stage = t0 + tableau.c[i] * dt if times is None else times[i]
            f_stage = field(t_stage, y_stage)
        rhs = gamma_h * f_stage
        if i > 0:
            rhs = rhs + coef.gamma_c_rows[i] @ stacked
        if time_term is not None and tableau.d[i] != 0.0:
            rhs = rhs + tableau.d[i] * time_term
        increments.append(lu_solve(factors, rhs))

    stages = torch.stack(increments, dim=1)  # [B, S, D]
    y1 = y_stage if tableau.fsal else y0 + coef.b @ stages
    error = coef.b_error @ stages
    dense = torch.einsum("rs,bsd->brd", coef.H, stages)
    ok = factors.ok & torch.isfinite(stages).all(-1).all(-1) & torch.isfinite(y1).all(-1)
    return RosenbrockStep(y1, error, dense, ok, f_stage if tableau.fsal else None,
                          tableau.num_stages - 1, stages, factors.ok)


def rosenbrock_interpolate(tableau: RosenbrockTableau, y0: torch.Tensor, dense: torch.Tensor,
                           theta: torch.Tensor) -> torch.Tensor:
    """y(t0 + theta dt) = y0 + sum_r P_r(theta) q_r for theta [B] (one per sample) or 0-d;
    `dense` [B, R, D] from `RosenbrockStep.dense`. The polynomials are evaluated in float64."""
    coef = _coefficients(tableau, y0.dtype, y0.device)
    powers = torch.arange(1, coef.dense_poly.shape[1] + 1, device=y0.device)
    theta64 = theta.to(torch.float64)
    weights = (theta64.unsqueeze(-1) ** powers) @ coef.dense_poly.T  # [B, R] or [R]
    weights = weights.to(y0.dtype).expand(dense.shape[0], -1)
    return y0 + torch.einsum("br,brd->bd", weights, dense)
