"""One LU factorization per sample for the stiff methods' linear systems, with a per-sample
`ok` flag instead of an exception and without a host sync.

A sample whose matrix is singular (an exactly zero pivot, `info != 0` from
`torch.linalg.lu_factor_ex`) or not finite is flagged and factored as the identity instead,
so its solves stay finite (the loop rejects that sample and retries it with a smaller step).
When autograd records, the substitution happens *before* the differentiable factorization,
found by a first factorization without a graph: the backward pass of an LU of a singular
matrix is NaN even for a zero incoming gradient, and one sample's NaN would reach every
parameter the batch shares. That costs one extra LU per step, only in training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class BatchedLU(NamedTuple):
    """LU factors of [B, n, n] matrices; `ok` [B] is false where a matrix was singular or not
    finite (its factors are then those of the identity)."""

    lu: torch.Tensor
    pivots: torch.Tensor
    ok: torch.Tensor


def lu_factor(matrix: torch.Tensor) -> BatchedLU:
    """Factor a batch of square matrices [B, n, n]."""
    n = matrix.shape[-1]
    eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    finite = torch.isfinite(matrix).all(-1).all(-1)
    if torch.is_grad_enabled() and matrix.requires_grad:
        with torch.no_grad():
            info = torch.linalg.lu_factor_ex(torch.where(finite[:, None, None], matrix,
                                                         eye)).info
        ok = finite & (info == 0)
        lu, pivots, _ = torch.linalg.lu_factor_ex(torch.where(ok[:, None, None], matrix, eye))
        return BatchedLU(lu, pivots, ok)
    lu, pivots, info = torch.linalg.lu_factor_ex(torch.where(finite[:, None, None], matrix, eye))
    ok = finite & (info == 0)
    identity_pivots = torch.arange(1, n + 1, dtype=pivots.dtype, device=pivots.device)
    return BatchedLU(torch.where(ok[:, None, None], lu, eye),
                     torch.where(ok[:, None], pivots, identity_pivots), ok)


def lu_solve(factors: BatchedLU, rhs: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
    """x [B, n] with M x = rhs (or M^T x = rhs when `adjoint`) for rhs [B, n]."""
    return torch.linalg.lu_solve(factors.lu, factors.pivots, rhs.unsqueeze(-1),
                                 adjoint=adjoint).squeeze(-1)
