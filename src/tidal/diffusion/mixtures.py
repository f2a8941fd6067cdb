r"""Gaussian mixtures pushed through a forward process: a score known in closed form.

For data p_0 = Σ_k w_k N(μ_k, s^2 I) and a process with x_t | x_0 ~ N(m(t) x_0, σ(t)^2 I),
the marginal is again a mixture,

$$ p_t(x) = \sum_k w_k\, \mathcal{N}\big(x;\, m(t) μ_k,\, v(t) I\big), \qquad
   v(t) = m(t)^2 s^2 + σ(t)^2, $$

with score ∇ log p_t(x) = Σ_k r_k(x) (m μ_k - x)/v, r_k the posterior responsibilities. This is
the reference for the samplers and the likelihood (no training involved).
"""

from __future__ import annotations

import math

import torch

from tidal._errors import InvalidArgumentError
from tidal.data.toys import EIGHT_GAUSSIANS_STD, eight_gaussians_centers
from tidal.diffusion.processes import ForwardProcess


class DiffusedMixture:
    """An isotropic Gaussian mixture diffused by `process`: exact p_t and score at any t.

    Args:
        means: the centres μ_k [K, d].
        std: the components' standard deviation s (shared, isotropic).
        process: the forward process; None: the mixture itself at every t.
        weights: w_k [K], summing to 1 (default equal).
    """

    def __init__(self, means: torch.Tensor, std: float, process: ForwardProcess | None = None,
                 weights: torch.Tensor | None = None) -> None:
        if means.dim() != 2:
            raise InvalidArgumentError(
                f"`DiffusedMixture(means=...)` must be [K, d]; got shape {tuple(means.shape)}.")
        if not std > 0:
            raise InvalidArgumentError(f"`DiffusedMixture(std={std!r})` must be > 0.")
        k = len(means)
        weights = torch.full((k,), 1.0 / k, dtype=means.dtype) if weights is None else weights
        if weights.shape != (k,) or (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-9:
            raise InvalidArgumentError(
                f"`DiffusedMixture(weights=...)` must be {k} non-negative numbers summing to 1.")
        self.means, self.std, self.process = means, float(std), process
        self.log_weights = weights.log()

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def _moments(self, x: torch.Tensor, t: torch.Tensor | float | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres m μ_k [B or 1, K, d], variance v [B or 1, 1, 1]) at times t."""
        means = self.means.to(x)
        if self.process is None or t is None:
            return means.unsqueeze(0), torch.full((1, 1, 1), self.std**2, dtype=x.dtype)
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        m = self.process.mean_scale(t).to(x.dtype).reshape(-1, 1, 1)
        sigma = self.process.std(t).to(x.dtype).reshape(-1, 1, 1)
        return m * means, m.square() * self.std**2 + sigma.square()

    def _log_components(self, x: torch.Tensor, t: torch.Tensor | float | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        centres, var = self._moments(x, t)
        diff = centres - x.unsqueeze(-2)  # [B, K, d]
        log_comp = (self.log_weights.to(x).unsqueeze(0)
                    - 0.5 * diff.square().sum(-1) / var.squeeze(-1)
                    - 0.5 * self.dim * (2 * math.pi * var.squeeze(-1)).log())
        return log_comp, diff, var

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """log p_t(x) [B] for x [B, d] (t: 0-d or [B]; None: the data density p_0)."""
        return torch.logsumexp(self._log_components(x, t)[0], dim=-1)

    def score(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> torch.Tensor:
        """∇_x log p_t(x) [B, d] = Σ_k r_k (m μ_k - x)/v."""
        log_comp, diff, var = self._log_components(x, t)
        resp = torch.softmax(log_comp, dim=-1).unsqueeze(-1)
        return (resp * diff).sum(-2) / var.squeeze(-1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score, so the mixture can stand in for a score network s(x, t)."""
        return self.score(x, t)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples [n, d] of the data density p_0."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.std * noise

    def entropy(self, n: int = 1_000_000, *, seed: int = 0) -> tuple[float, float]:
        """(H, its standard error): the entropy -E log p_0 of the data density by Monte Carlo."""
        generator = torch.Generator().manual_seed(seed)
        values = torch.cat([-self.log_prob(self.sample(min(n, 100_000), generator=generator))
                            for _ in range(math.ceil(n / 100_000))])
        return values.mean().item(), values.std().item() / math.sqrt(len(values))


def eight_gaussians(process: ForwardProcess | None = None,
                    dtype: torch.dtype = torch.float64) -> DiffusedMixture:
    """FFJORD's eight Gaussians (`tidal.data.toys`: radius 4/1.414, std 0.5/1.414) diffused by
    `process`."""
    return DiffusedMixture(eight_gaussians_centers(dtype), EIGHT_GAUSSIANS_STD, process)
