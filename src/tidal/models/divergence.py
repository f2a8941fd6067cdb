r"""The divergence of a vector field, exactly or by Hutchinson's estimator, together with the
squared Frobenius norm of its Jacobian J = ∂f/∂y (the RNODE regularizer).

Both work on a batch y [B, d] of independent samples, so the vector-Jacobian product of
sum_b f_b with a vector v [B, d] gives v_b^T J_b for every sample at once.

- `exact`: d vector-Jacobian products with the unit vectors give the rows of J, so
  div f = tr J and ||J||_F^2 are exact. Cost: one evaluation of f and d backward passes.
- `hutchinson`: for a probe eps with E[eps eps^T] = I (Rademacher or standard normal),
  E[eps^T J eps] = tr J and E[||eps^T J||^2] = ||J||_F^2, from one backward pass. The probe
  must stay fixed over a solve, or the integrand is not a continuous function of time and the
  adaptive solver takes tiny steps (Grathwohl et al., 2019).

Measured on 2 CPU cores (width 64, depth 3, batch 512, d = 2, training pass with the second
backward): the loop of d products takes 3.1 ms, `torch.autograd.grad(..., is_grads_batched=True)`
3.8 ms, `vmap(jacrev)` over samples 4.3 ms, `vmap(jacfwd)` 7.5 ms. At d = 32 `vmap(jacrev)`
wins (15 ms against 22 ms for the loop) but needs f to accept a single unbatched state; in
high dimensions use Hutchinson's estimator instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class FieldTerms(NamedTuple):
    """f(t, y) [B, d], its divergence [B] and ||J||_F^2 [B] (None unless asked for)."""

    dy: torch.Tensor
    divergence: torch.Tensor
    frobenius: torch.Tensor | None


Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def exact(f: Field, t: torch.Tensor, y: torch.Tensor, *, frobenius: bool = False,
          create_graph: bool = False) -> FieldTerms:
    """div f = sum_i ∂f_i/∂y_i from the d rows of J (one vector-Jacobian product each).

    `y` must require grad; `create_graph=True` keeps the graph for a gradient of the result
    (training).
    """
    dy = f(t, y)
    d = y.shape[-1]
    rows = []
    for i in range(d):
        row = torch.autograd.grad(dy[:, i].sum(), y, create_graph=create_graph,
                                  retain_graph=True)[0]
        rows.append(row)
    jac = torch.stack(rows, dim=1)  # [B, d, d]: jac[b, i, j] = ∂f_i/∂y_j at sample b
    divergence = jac.diagonal(dim1=1, dim2=2).sum(-1)
    return FieldTerms(dy, divergence, jac.square().sum((1, 2)) if frobenius else None)


def hutchinson(f: Field, t: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, *,
               frobenius: bool = False, create_graph: bool = False) -> FieldTerms:
    """div f ≈ eps^T J eps and ||J||_F^2 ≈ ||eps^T J||^2 for a probe eps [B, d].

    Unbiased for E[eps eps^T] = I; `y` must require grad.
    """
    dy = f(t, y)
    eps_jac = torch.autograd.grad(dy, y, eps, create_graph=create_graph)[0]  # eps^T J
    divergence = (eps_jac * eps).sum(-1)
    return FieldTerms(dy, divergence, eps_jac.square().sum(-1) if frobenius else None)


def probe(like: torch.Tensor, noise: str, generator: torch.Generator | None = None
          ) -> torch.Tensor:
    """A Hutchinson probe shaped like `like`: Rademacher (±1) or standard normal entries, from
    torch's global generator or from `generator` (a CPU generator: drawn on the CPU and moved
    to `like`'s device, so the numbers do not depend on the device)."""
    if generator is None:
        if noise == "gaussian":
            return torch.randn_like(like)
        return torch.randint_like(like, 2).mul_(2).sub_(1)
    if noise == "gaussian":
        drawn = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    else:
        drawn = torch.randint(2, like.shape, generator=generator, dtype=like.dtype) * 2 - 1
    return drawn.to(like.device)
