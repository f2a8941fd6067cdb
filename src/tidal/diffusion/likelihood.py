r"""Exact log-likelihood of a score model through the probability-flow ODE.

The probability-flow ODE dx/dt = v(t, x) = f(t) x - g(t)^2 s(x, t)/2 carries p_{t_min} to
p_T, and along a path the instantaneous change of variables gives
d log p_t(x(t))/dt = -div v. Solving from the data x at t_min to z at T,

$$ \log p_{t_{min}}(x) = \log p_T(z) + \int_{t_{min}}^{T} \operatorname{div} v\, dt, $$

with p_T replaced by the process's prior. The augmented solve is the CNF's (`tidal.models.cnf`:
the divergence exactly in low dimensions, by Hutchinson's estimator with a fixed probe in high
ones; the error norm on [x, Δ] only).

Bits per dimension for discrete data x ∈ {0, ..., K-1}^d modelled through y = a (x + u)/K + b,
u ~ U[0, 1)^d (uniform dequantization): log P(x) ≥ E_u[log p_y(y)] + d log(a/K), and
bits/dim = -log P(x) / (d log 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.controllers import PIDController
from tidal.controllers.base import StepSizeController
from tidal.diffusion.processes import ForwardProcess
from tidal.diffusion.sampling import CountedScore, Score, probability_flow_field
from tidal.models.cnf import CNF
from tidal.solvers.base import StepMethod
from tidal.solvers.tsit5 import Tsit5


class Likelihood(NamedTuple):
    """log p(x) [B] (nats), the prior point z [B, d] each x flows to, and the NFE of the solve
    (evaluations of the augmented field; each costs one score call and its divergence)."""

    log_prob: torch.Tensor
    z: torch.Tensor
    nfe: int


class _FlowField(nn.Module):
    """The probability-flow field as a module (so a score network's parameters are its own)."""

    def __init__(self, score: Score, process: ForwardProcess) -> None:
        super().__init__()
        self.score, self.process = score, process
        self.field = probability_flow_field(CountedScore(score), process)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.field(t, x)


def log_likelihood(score: Score, process: ForwardProcess, x: torch.Tensor, *,
                   trace: str = "exact", prior_log_prob: Callable[[torch.Tensor], torch.Tensor]
                   | None = None, solver: StepMethod | None = None,
                   controller: StepSizeController | None = None, seed: int = 0,
                   batch_size: int = 4096) -> Likelihood:
    """log p_{t_min}(x) [B] of points x [B, d] under the score model, by the probability-flow
    ODE from t_min to T.

    Args:
        score: s(x, t).
        process: its forward process.
        x: points [B, d].
        trace: "exact" (d backward passes per evaluation; low dimensions) or "hutchinson"
            (one Rademacher probe per point, fixed over the solve; unbiased).
        prior_log_prob: log p_T(z) [B]; default the process's prior. (Pass the exact p_T
            when it is known, to measure the ODE and divergence alone.)
        solver, controller: default `Tsit5()` and `PIDController(rtol=1e-5, atol=1e-5)`.
        seed: seeds the Hutchinson probes.
        batch_size: points per solve.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise InvalidArgumentError(
            f"`log_likelihood(x=...)` must be a floating-point tensor [B, d]; got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"`log_likelihood(batch_size={batch_size!r})` must be a "
                                   f"positive integer.")
    field = _FlowField(score, process)
    cnf = CNF(field, trace=trace, dim=x.shape[-1], t1=process.T,
              solver=solver if solver is not None else Tsit5(),
              controller=controller if controller is not None else PIDController(
                  rtol=1e-5, atol=1e-5))
    prior = prior_log_prob if prior_log_prob is not None else process.prior_log_prob
    log_probs, zs, nfe = [], [], 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for chunk in x.split(batch_size):
            flow = cnf.integrate(chunk, process.t_min, process.T)
            log_probs.append(prior(flow.y) - flow.delta_logp)
            zs.append(flow.y)
            nfe += 0 if cnf.last_stats is None else int(cnf.last_stats.num_fevals)
    return Likelihood(torch.cat(log_probs), torch.cat(zs), nfe)


def dequantize(x: torch.Tensor, levels: int, *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """(x + u)/levels in [0, 1) for integer-valued x in {0, ..., levels - 1}, u ~ U[0, 1)."""
    if not isinstance(levels, int) or levels < 2:
        raise InvalidArgumentError(f"`dequantize(levels={levels!r})` must be an integer >= 2.")
    if (x < 0).any() or (x > levels - 1).any() or (x != x.round()).any():
        raise InvalidArgumentError(
            f"`dequantize(x=...)` must hold integers in [0, {levels - 1}]; rescale or round "
            f"the data first.")
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + u) / levels


def bits_per_dim(log_prob: torch.Tensor, dim: int, *, levels: int | None = None,
                 scale: float = 1.0) -> float:
    """Mean bits per dimension of `log_prob` [B] (nats, of points y = scale·(x + u)/levels +
    shift for dequantized data; `levels=None`: continuous data, no discretization term)."""
    total = log_prob.mean().item()
    if levels is not None:
        total += dim * math.log(scale / levels)
    return -total / (dim * math.log(2))
