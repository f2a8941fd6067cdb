r"""`NeuralSDE`: a learned drift and diagonal diffusion, dy = f_theta(t, y) dt + g_theta(t, y) dW
(Itô), sampled with `tidal.sdeint` and fitted to trajectories by the Euler–Maruyama transition
likelihood.

For observations y_k at times t_k with small gaps h_k, the Euler–Maruyama transition density
is Gaussian, y_{k+1} ~ N(y_k + f(t_k, y_k) h_k, diag(g(t_k, y_k)^2) h_k), and its negative log
likelihood

    sum_k sum_i [ (y_{k+1,i} - y_{k,i} - f_i h_k)^2 / (2 g_i^2 h_k) + log g_i + log(2 pi h_k)/2 ]

is a consistent estimator of drift and diffusion as the gaps shrink (the pseudo-likelihood of
discretely observed diffusions). It needs no simulation and no Brownian path, so it is cheap
and has no Monte-Carlo noise; its bias is O(h) in the drift. Data sampled coarsely relative to
the dynamics need a simulation-based objective (a latent SDE, not built yet).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.integrate_sde import sdeint
from tidal.models.neural_ode import raise_dtype_mismatch
from tidal.solution import Solution
from tidal.solvers.sde import EulerMaruyama, SDEMethod


class PositiveDiffusion(nn.Module):
    """g(t, y) = softplus(net(t, y)) + floor: a positive diagonal diffusion from any network."""

    def __init__(self, net: nn.Module, floor: float = 1e-4):
        super().__init__()
        self.net, self.floor = net, floor

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(t, y)) + self.floor


class NeuralSDE(nn.Module):
    """dy = drift(t, y) dt + diffusion(t, y) dW with diagonal noise (Itô).

    Args:
        drift: an `nn.Module` called as `drift(t, y)` -> [B, d], e.g. `tidal.nn.MLP(d)`.
        diffusion: an `nn.Module` called as `diffusion(t, y)` -> [B, d] (wrap an unconstrained
            network in `PositiveDiffusion`).
        dt: the step of `sample` (required: no default fits every time scale).
        solver: default `EulerMaruyama()`.

    `model.sample(y0, ts, seed=...)` returns sampled paths [T, B, d]; `model.transition_nll(
    ys, ts)` is the fitting objective (module docstring).
    """

    def __init__(self, drift: nn.Module, diffusion: nn.Module, *, dt: float,
                 solver: SDEMethod | None = None) -> None:
        super().__init__()
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf:
            raise InvalidArgumentError(f"`NeuralSDE(dt={dt!r})` must be a positive finite step "
                                       f"size in the model's time units.")
        self.drift, self.diffusion, self.dt = drift, diffusion, float(dt)
        self.solver = solver if solver is not None else EulerMaruyama()

    def sample(self, y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> torch.Tensor:
        return self.solve(y0, ts, **options).ys

    def solve(self, y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> Solution:
        """`tidal.sdeint` with this model's drift, diffusion, step and solver; `options`
        (seed, adjoint, ...) are passed on."""
        settings: dict[str, Any] = {"dt": self.dt, "solver": self.solver}
        settings.update(options)
        return sdeint(self.drift, self.diffusion, y0, ts, **settings)

    def transition_nll(self, ys: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """Mean negative log likelihood per transition and state of observed paths ys
        [T, B, d] at times ts [T] (or [T, B]) under the Euler–Maruyama transition density."""
        if not isinstance(ys, torch.Tensor):
            raise InvalidArgumentError(f"`NeuralSDE.transition_nll(ys=...)` must be a tensor "
                                       f"[T, B, d]; got {type(ys).__name__}.")
        ts = torch.as_tensor(ts, dtype=ys.dtype, device=ys.device)
        if ys.dim() != 3 or ys.shape[0] < 2 or ts.shape not in (ys.shape[:1], ys.shape[:2]):
            raise InvalidArgumentError(
                f"`NeuralSDE.transition_nll(ys, ts)` needs ys [T, B, d] with T >= 2 (one "
                f"transition at least) and ts [T] or [T, B] of the same T and B; got "
                f"{tuple(ys.shape)} and {tuple(ts.shape)}.")
        h = (ts[1:] - ts[:-1]).reshape(len(ts) - 1, -1, 1)  # [T-1, 1 or B, 1]
        if not bool((h > 0).all()):
            raise InvalidArgumentError("`NeuralSDE.transition_nll(ts=...)` must be strictly "
                                       "increasing.")
        shape = (len(ts) - 1, ys.shape[1])
        t = ts[:-1].reshape(len(ts) - 1, -1).expand(shape).reshape(-1)
        return self.pairs_nll(ys[:-1].reshape(-1, ys.shape[-1]), ys[1:].reshape(-1, ys.shape[-1]),
                              t, h[..., 0].expand(shape).reshape(-1))

    def pairs_nll(self, y: torch.Tensor, y_next: torch.Tensor, t: torch.Tensor,
                  h: torch.Tensor) -> torch.Tensor:
        """Mean negative log likelihood per transition and state of transitions y [N, d] at
        times t [N] to y_next [N, d] after gaps h [N] > 0."""
        try:
            f, g = self.drift(t, y), self.diffusion(t, y)
        except RuntimeError as error:
            raise_dtype_mismatch("NeuralSDE.pairs_nll(y, y_next, t, h)", "y", y, self, error)
            raise
        h = h.unsqueeze(-1)
        var = g * g * h
        nll = (y_next - y - f * h) ** 2 / (2 * var) + 0.5 * torch.log(2 * math.pi * var)
        return nll.mean()
