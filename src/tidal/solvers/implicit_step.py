r"""One step of an implicit Runge–Kutta method (`ImplicitTableau`) for a batch with one step size
per sample, by simplified Newton iteration over the stage system; a pure function.

The m implicit stage increments Z [B, m, D] solve

    G(Z) = Z - h a_E f0 - h (A_I (x) I) F(Z) = 0,   F_j(Z) = f(t0 + c_j h, y0 + Z_j),

by Z <- Z - M^{-1} G(Z) from Z = 0, with the simplified Newton matrix M = I - h A_I (x) J
([B, mD, mD], J = f_y at the step start, one LU per step, `batched_lu`). A sample converges
when its increment max_ij |dZ_ij| / (1 + |y0_j|) falls to `tol`; from then on it stays fixed,
so its result does not depend on the rest of the batch. It fails (ok = False, never an
exception) if its increments become non-finite, more than double (the iteration diverges), or
it has not converged after `max_iters` iterations; the caller retries it with a smaller step or
reports it.

Gradients use the implicit function theorem, not the iterations: the iteration runs without a
graph, and the converged Z* is attached to (y0, f0, h, the field's parameters) through
dZ*/dp = -(dG/dZ)^{-1} dG/dp, with the exact dG/dZ = I - h (A_I (x) I) blockdiag(f_y(Y_j))
(Jacobians at the converged stages, computed in the backward pass). This is the derivative of
the exact discrete step, exact up to the iteration's tolerance, at the memory cost of one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from tidal.solvers.batched_lu import lu_factor, lu_solve
from tidal.solvers.implicit import ImplicitTableau
from tidal.solvers.jacobian import Field

JacobianFn = Any  # (t, y) -> object with `.J` [B, D, D], e.g. a `BatchedJacobian`


class ImplicitStep(NamedTuple):
    """One step for every sample.

    Attributes:
        y1: [B, D] the state at t0 + dt.
        ok: [B] false where the Newton iteration failed (diverged, not finite, or not
            converged in `max_iters`) or the Newton matrix was singular.
        iterations: [B] Newton iterations each sample took.
        num_fevals: calls of the field (each call evaluates the whole batch).
    """

    y1: torch.Tensor
    ok: torch.Tensor
    iterations: torch.Tensor
    num_fevals: int


@dataclass(frozen=True)
class _Coefficients:
    a_implicit: torch.Tensor  # [m, m] the implicit block A_I
    a_explicit: torch.Tensor  # [m] the explicit column a_E (zeros without an explicit stage)
    z_weights: torch.Tensor  # [m]


@lru_cache(maxsize=64)
def _coefficients(tableau: ImplicitTableau, dtype: torch.dtype, device: torch.device
                  ) -> _Coefficients:
    rows = [tableau.a[i] for i in tableau.implicit]
    first = tableau.implicit.start
    explicit = [row[0] if tableau.explicit_first else 0.0 for row in rows]

    def tensor(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(dtype=dtype, device=device)

    return _Coefficients(tensor([row[first:] for row in rows]), tensor(explicit),
                         tensor(tableau.z_weights))


def _per_sample(dt: torch.Tensor) -> torch.Tensor:
    return dt.unsqueeze(-1) if dt.dim() else dt


def _residual(field: Field, times: list[torch.Tensor], y0: torch.Tensor, f0: torch.Tensor,
              h: torch.Tensor, coef: _Coefficients, Z: torch.Tensor) -> torch.Tensor:
    """G(Z) [B, m, D]."""
    F = torch.stack([field(t, y0 + Z[:, j]) for j, t in enumerate(times)], dim=1)
    explicit = coef.a_explicit[:, None] * f0[:, None, :]  # [B, m, D]
    return Z - h.unsqueeze(-1) * (explicit + coef.a_implicit @ F)


def _stage_matrix(a_implicit: torch.Tensor, h: torch.Tensor, jacobians: torch.Tensor
                  ) -> torch.Tensor:
    """I - h (A (x) I) blockdiag(J_k): [B, mD, mD] from J_k [B, m, D, D] (or [B, 1, D, D] for
    one J shared by the stages, the simplified Newton matrix)."""
    batch, _, dim, _ = jacobians.shape
    m = a_implicit.shape[0]
    h4 = h.reshape(-1, 1, 1, 1, 1) if h.dim() else h
    # block (j, k) = delta_jk I - h A_jk J_k; indices [b, j, p, k, q]
    blocks = h4 * a_implicit[None, :, None, :, None] * jacobians.permute(0, 2, 1, 3)[:, None]
    eye = torch.eye(m * dim, dtype=jacobians.dtype, device=jacobians.device)
    return eye - blocks.reshape(batch, m * dim, m * dim)


def implicit_step(field: Field, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor,
                  dt: torch.Tensor, tableau: ImplicitTableau, J: torch.Tensor,
                  jacobian: JacobianFn, tol: float | None = None,
                  max_iters: int = 50, times: list[torch.Tensor] | None = None) -> ImplicitStep:
    """One implicit Runge–Kutta step of every sample.

    Args:
        field: f(t, y) -> [B, D], called with t = t0 + c_j dt.
        t0: [B] (or 0-d) start times; y0, f0: [B, D] the state and f(t0, y0).
        dt: [B] (or 0-d) step sizes; 0 leaves a sample at y0.
        tableau: the method.
        J: [B, D, D] df/dy at (t0, y0), for the simplified Newton matrix.
        jacobian: (t, y) -> Jacobian at the converged stages, used only by the backward pass.
        tol: Newton tolerance (default: 100 machine epsilons of the state's dtype).
        max_iters: the most Newton iterations per step.
        times: the implicit stages' times t0 + c_j dt as the caller computes them (a loop
            keeps time in float64, forward or backward); default: from t0 and dt.
    """
    coef = _coefficients(tableau, y0.dtype, y0.device)
    tol = 100.0 * torch.finfo(y0.dtype).eps if tol is None else tol
    h = _per_sample(dt)
    if times is None:
        times = [t0 + tableau.c[i] * dt for i in tableau.implicit]
    m = len(times)
    with torch.no_grad():
        factors = lu_factor(_stage_matrix(coef.a_implicit, h.detach(), J.detach()[:, None]))
        Z, ok, iterations = _newton(field, [t.detach() for t in times], y0.detach(),
                                    f0.detach(), h.detach(), coef, factors, tol, max_iters)
    records = torch.is_grad_enabled() and any(
        x.requires_grad for x in (y0, f0, dt, t0))
    if records:
        residual = _residual(field, times, y0, f0, h, coef, Z)
        stages = _Stages(jacobian, times, y0[:, None] + Z, h, coef)
        Z = Z + _ImplicitFunction.apply(residual, stages)
    y1 = y0 + coef.z_weights @ Z
    if tableau.f0_weight:
        y1 = y1 + tableau.f0_weight * h * f0
    fevals = m * int(iterations.max()) + (m if records else 0)
    return ImplicitStep(y1, ok & factors.ok, iterations, fevals)


def _newton(field: Field, times: list[torch.Tensor], y0: torch.Tensor, f0: torch.Tensor,
            h: torch.Tensor, coef: _Coefficients, factors: Any, tol: float, max_iters: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Simplified Newton from Z = 0: (Z [B, m, D], converged [B], iterations [B])."""
    batch, dim = y0.shape
    m = coef.a_implicit.shape[0]
    Z = torch.zeros(batch, m, dim, dtype=y0.dtype, device=y0.device)
    scale = 1.0 + y0.abs()[:, None, :]
    converged = torch.zeros(batch, dtype=torch.bool, device=y0.device)
    failed = ~factors.ok
    iterations = torch.zeros(batch, dtype=torch.long, device=y0.device)
    previous = torch.full((batch,), torch.inf, dtype=y0.dtype, device=y0.device)
    for _ in range(max_iters):
        active = ~(converged | failed)
        if not bool(active.any()):
            break
        G = _residual(field, times, y0, f0, h, coef, Z)
        delta = lu_solve(factors, G.reshape(batch, m * dim)).reshape(batch, m, dim)
        size = (delta.abs() / scale).amax((1, 2))
        Z = torch.where(active[:, None, None], Z - delta, Z)
        iterations = iterations + active
        # An increment more than twice the last, well above the tolerance, means divergence;
        # slower growth can be a transient of a converging iteration (measured on ROBER:
        # 1.9e-9, 3.4e-9, 5e-11, ...) and is left to `max_iters`.
        diverging = (size > 2.0 * previous) & (size > 1e3 * tol)
        failed = failed | (active & (~torch.isfinite(size) | diverging))
        converged = converged | (active & (size <= tol))
        previous = torch.where(active, size, previous)
    return Z, converged & ~failed, iterations


class _Stages(NamedTuple):
    """What the backward pass needs to form dG/dZ at the converged stages."""

    jacobian: JacobianFn
    times: list[torch.Tensor]
    Y: torch.Tensor  # [B, m, D]
    h: torch.Tensor
    coef: _Coefficients


class _ImplicitFunction(torch.autograd.Function):
    """Adds 0 to the converged Z*, with the gradient of the implicit function theorem: for the
    incoming g = dL/dZ*, dL/dG = -(dG/dZ)^{-T} g, which autograd then pushes through the
    residual G(Z*, p) to the parameters p."""

    @staticmethod
    def forward(residual: torch.Tensor, stages: _Stages) -> torch.Tensor:
        return torch.zeros_like(residual)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.stages = inputs[1]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        stages: _Stages = ctx.stages
        batch, m, dim = stages.Y.shape
        with torch.no_grad():
            jacobians = torch.stack([stages.jacobian(t.detach(), stages.Y[:, j].detach()).J
                                     for j, t in enumerate(stages.times)], dim=1)
            matrix = _stage_matrix(stages.coef.a_implicit, stages.h.detach(), jacobians)
            factors = lu_factor(matrix)
            adjoint = lu_solve(factors, grad.reshape(batch, m * dim), adjoint=True)
        return -adjoint.reshape(batch, m, dim), None
