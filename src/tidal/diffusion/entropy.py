r"""Entropy production and probability currents from a stationary score.

For dynamics dx = b(x) dt + √(2D) dW with a constant symmetric positive-definite diffusion
matrix D and stationary density p, the probability current is J = p v with the
probability-flow velocity

$$ v(x) = b(x) - D\, ∇ \log p(x), $$

and the steady-state entropy production rate (in units of k_B per unit time) is

$$ Σ = E_p[v^T D^{-1} v] = \sum_i E_p[v_i (D^{-1} v)_i], $$

the sum splitting it by coordinate (or by particle, summing a particle's coordinates). At
equilibrium (detailed balance) v = 0 and Σ = 0. Given samples of p and a score s ≈ ∇ log p
(learned with `tidal.training.score.fit_score(..., process=None, method="sliced")`; all in one
call: `tidal.training.score.learned_entropy_production`), the estimate is the sample mean
(Boffi & Vanden-Eijnden 2023, "Deep learning probability flows and entropy production rates in
active matter").

`linear_entropy_production` is the exact rate of a linear SDE dx = -A x dt + √(2D) dW: the
stationary covariance C solves A C + C A^T = 2D, s = -C^{-1} x, v = (D C^{-1} - A) x =: M x,
so Σ = tr(D^{-1} M C M^T) (= tr(D^{-1} A C A^T) - tr A; docs/design.md derives closed forms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from tidal._errors import InvalidArgumentError
from tidal.integrate_sde import sdeint
from tidal.solvers.sde import SRA1

Field = Callable[[torch.Tensor], torch.Tensor]


class EntropyProduction(NamedTuple):
    """The rate Σ, its Monte-Carlo standard error, and Σ_i per coordinate [d] (summing to
    Σ)."""

    rate: float
    standard_error: float
    per_coordinate: torch.Tensor


def diffusion_matrix(diffusion: torch.Tensor | float, dim: int) -> torch.Tensor:
    """D as a [d, d] matrix from a scalar, a vector (diagonal) or a matrix; checked symmetric
    positive definite."""
    d = torch.as_tensor(diffusion, dtype=torch.float64)
    if d.dim() == 0:
        d = d * torch.eye(dim, dtype=torch.float64)
    elif d.dim() == 1:
        d = torch.diag(d)
    if d.shape != (dim, dim):
        raise InvalidArgumentError(
            f"`diffusion` must be a number, {dim} numbers (diagonal) or a {dim} x {dim} matrix; "
            f"got shape {tuple(d.shape)}.")
    if not torch.allclose(d, d.T) or torch.linalg.eigvalsh(d).min() <= 0:
        raise InvalidArgumentError(
            "`diffusion` must be symmetric positive definite: every coordinate needs noise "
            "for the rate E[v^T D^-1 v] to be finite.")
    return d


def probability_flow_velocity(score: Field, drift: Field, diffusion: torch.Tensor,
                              x: torch.Tensor) -> torch.Tensor:
    """v = b(x) - D s(x) [B, d] for x [B, d] and D [d, d]."""
    return drift(x) - score(x) @ diffusion.to(x).T


def entropy_production(score: Field, drift: Field, diffusion: torch.Tensor | float,
                       samples: torch.Tensor, *, batch_size: int = 65536
                       ) -> EntropyProduction:
    """Estimate Σ = E[v^T D^-1 v] on stationary `samples` [N, d] (module doc).

    Args:
        score: s(x) ≈ ∇ log p(x), [B, d] -> [B, d].
        drift: b(x), [B, d] -> [B, d].
        diffusion: D (number, diagonal [d] or matrix [d, d]); the noise is √(2D) dW.
        samples: points of the stationary density.
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        raise InvalidArgumentError("`entropy_production(samples=...)` must be a tensor [N, d].")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"`entropy_production(batch_size={batch_size!r})` must be a "
                                   f"positive integer.")
    d = diffusion_matrix(diffusion, samples.shape[-1]).to(samples)
    d_inv = torch.linalg.inv(d)
    terms = []
    with torch.no_grad():
        for chunk in samples.split(batch_size):
            v = probability_flow_velocity(score, drift, d, chunk)
            terms.append(v * (v @ d_inv.T))  # v_i (D^-1 v)_i
    per_point = torch.cat(terms)
    total = per_point.sum(-1)
    return EntropyProduction(total.mean().item(), total.std().item() / math.sqrt(len(total)),
                             per_point.mean(0))


class LinearSteadyState(NamedTuple):
    """The stationary covariance C, the exact rate Σ and its split per coordinate Σ_i."""

    covariance: torch.Tensor
    rate: float
    per_coordinate: torch.Tensor


def linear_entropy_production(a: torch.Tensor, diffusion: torch.Tensor | float
                              ) -> LinearSteadyState:
    """Exact stationary covariance and entropy production of dx = -A x dt + √(2D) dW (A with
    eigenvalues of positive real part), through the Lyapunov equation A C + C A^T = 2D."""
    a = torch.as_tensor(a, dtype=torch.float64)
    d = diffusion_matrix(diffusion, a.shape[0])
    if (np.linalg.eigvals(a.numpy()).real <= 0).any():
        raise InvalidArgumentError(
            "`linear_entropy_production(a=...)`: -A must be stable (eigenvalues of A with "
            "positive real part) for a stationary state to exist.")
    c = torch.from_numpy(scipy.linalg.solve_continuous_lyapunov(a.numpy(), 2 * d.numpy()))
    m = d @ torch.linalg.inv(c) - a
    per = torch.diagonal(torch.linalg.inv(d) @ m @ c @ m.T)
    return LinearSteadyState(c, per.sum().item(), per)


def active_ou(stiffness: float = 1.0, activity: float = 1.0, tau: float = 1.0,
              d_x: float = 1.0, d_f: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(A, D) of an active Ornstein-Uhlenbeck particle in a harmonic trap, state (x, f):
    dx = (-k x + a f) dt + √(2 D_x) dW_1, df = -f/τ dt + √(2 D_f) dW_2. The active force f
    is coloured noise (variance D_f τ, correlation time τ); `activity` a = 0 is equilibrium.
    Exact rate: Σ = a^2 D_f τ / (D_x (1 + k τ)) (docs/design.md)."""
    a = torch.tensor([[stiffness, -activity], [0.0, 1.0 / tau]], dtype=torch.float64)
    return a, torch.diag(torch.tensor([d_x, d_f], dtype=torch.float64))


def coupled_ou(stiffness: float = 1.0, coupling: float = 0.5, t1: float = 1.0,
               t2: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(A, D) of two Ornstein-Uhlenbeck processes coupled symmetrically, each in its own bath:
    dx_i = (-k x_i + c x_j) dt + √(2 T_i) dW_i (|c| < k). Equilibrium iff T_1 = T_2.
    Exact rate: Σ = c^2 (T_1 - T_2)^2 / (2 k T_1 T_2) (docs/design.md)."""
    a = torch.tensor([[stiffness, -coupling], [-coupling, stiffness]], dtype=torch.float64)
    return a, torch.diag(torch.tensor([t1, t2], dtype=torch.float64))


#: the built-in linear systems: name -> function of the parameters returning (A, D)
LINEAR_SYSTEMS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "active-ou": active_ou, "coupled-ou": coupled_ou}


#: States `simulate_linear` keeps of each path by default.
SNAPSHOTS = 10


def simulate_linear(a: torch.Tensor, diffusion: torch.Tensor, n: int, *,
                    snapshots: int = SNAPSHOTS, seed: int = 0) -> torch.Tensor:
    """n stationary samples [n, d] of dx = -A x dt + √(2D) dW as trajectory snapshots: n /
    `snapshots` paths by `tidal.sdeint` (SRA1, strong order 1.5 for additive noise, 20 steps
    per relaxation time) from 0, a burn-in of 10 relaxation times, then `snapshots` states
    two relaxation times apart."""
    if n < 1 or n % snapshots:
        raise InvalidArgumentError(
            f"`simulate_linear(n={n}, snapshots={snapshots})`: n must be a positive multiple "
            f"of snapshots.")
    dim = a.shape[0]
    slowest = float(np.linalg.eigvals(a.numpy()).real.min())
    if not slowest > 0:
        raise InvalidArgumentError(
            "dx = -A x dt + sqrt(2D) dW has a stationary density only when every eigenvalue "
            f"of A has a positive real part; the smallest real part here is {slowest:.3g}.")
    relax = 1.0 / slowest
    root = torch.linalg.cholesky(2 * diffusion_matrix(diffusion, dim))
    paths = n // snapshots
    ts = torch.tensor([10 * relax + 2 * i * relax for i in range(snapshots)],
                      dtype=torch.float64)
    ts = torch.cat([torch.zeros(1, dtype=torch.float64), ts])
    with torch.no_grad():
        sol = sdeint(lambda t, x: -x @ a.T, lambda t, x: root.expand(len(x), dim, dim),
                     torch.zeros(paths, dim, dtype=torch.float64), ts, dt=relax / 20,
                     noise="additive", solver=SRA1(), seed=seed)
    return sol.ys[1:].reshape(-1, dim)
