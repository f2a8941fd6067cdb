r"""Score networks s(x, t) ≈ ∇ log p_t(x) and their losses (trained by
`tidal.training.score.fit_score` through the shared loop).

- Denoising score matching (Vincent 2011; Song et al. 2021) with the standard weighting
  λ(t) = σ(t)^2: with x_t = m(t) x_0 + σ(t) ε,

  $$ L = E_{t, x_0, ε} \| σ(t)\, s(x_t, t) + ε \|^2, $$

  t uniform on [t_min, T] (log-normal noise levels for `EDMProcess`), or, with
  `weighting="likelihood"`, log(σ/m) uniform: the likelihood weighting λ = g^2 of Song et al.
  (2021b) by importance sampling, which is what held-out likelihoods reward.
- Sliced score matching (Song et al. 2019) at the perturbed points, weighted the same way:
  L = E σ^2 [v^T ∇_x s v + ||s||^2 / 2] with a Rademacher probe v (the CNF's Hutchinson code),
  or with the exact trace tr ∇_x s in low dimensions. Without a process (`process=None`) it
  fits the score of the samples' own density: what entropy production needs.

`ScoreModel` holds the trained network and an exponential moving average (EMA) of its weights;
both are in its state_dict, so checkpoints and the kept weights carry the EMA, and calling the
model evaluates the EMA network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.diffusion.processes import ForwardProcess
from tidal.models import divergence
from tidal.nn import ACTIVATIONS

METHODS = ("denoising", "sliced")


class ScoreMLP(nn.Module):
    r"""An MLP score network s(x, t) with EDM-style scalings: the input is x / √(m^2 σ_d^2 +
    σ^2) with the log noise-to-signal ratio log(σ/m) as the time feature, and the output is
    divided by σ(t), so the network predicts -ε (unit scale at every noise level).

    Args:
        dim: the data dimension d.
        process: the forward process (None: a stationary score s(x), t ignored, output
            unscaled, input divided by `data_std`).
        width, depth, activation: the hidden layers (`tidal.nn.ACTIVATIONS`).
        data_std: σ_d, the data's standard deviation per coordinate.
    """

    def __init__(self, dim: int, process: ForwardProcess | None = None, *, width: int = 128,
                 depth: int = 3, activation: str = "silu", data_std: float = 1.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InvalidArgumentError(
                f"`ScoreMLP(activation={activation!r})` is not known; choose one of "
                f"{sorted(ACTIVATIONS)}.")
        self.process, self.data_std = process, float(data_std)
        self._config = {"dim": dim, "width": width, "depth": depth, "activation": activation,
                        "data_std": data_std}
        layers: list[nn.Module] = []
        size = dim + (process is not None)
        for _ in range(depth):
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            size = width
        self.net = nn.Sequential(*layers, nn.Linear(size, dim))

    def config(self) -> dict[str, Any]:
        """Constructor arguments but the process (JSON-able)."""
        return dict(self._config)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.process is None:
            return self.net(x / self.data_std) / self.data_std
        t = t.to(torch.float64)
        m = self.process.mean_scale(t).to(x.dtype).reshape(-1, 1)
        sigma = self.process.std(t).to(x.dtype).reshape(-1, 1)
        scale = (m.square() * self.data_std**2 + sigma.square()).rsqrt()
        features = torch.cat([x * scale, (sigma / m).log().expand(len(x), 1)], dim=-1)
        return self.net(features) / sigma


class ScoreModel(nn.Module):
    """A score network and the EMA of its weights; calling the model evaluates the EMA.

    Args:
        network: any module s(x, t) (x [B, d], t [B]).
        ema_decay: the EMA's decay per optimizer step (0: the EMA is the network).
    """

    def __init__(self, network: nn.Module, ema_decay: float = 0.999) -> None:
        super().__init__()
        if not 0 <= ema_decay < 1:
            raise InvalidArgumentError(f"`ScoreModel(ema_decay={ema_decay!r})` must be in [0, 1).")
        self.network, self.ema_decay = network, float(ema_decay)
        self.ema = copy.deepcopy(network).requires_grad_(False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.ema(x, t)

    @torch.no_grad()
    def update_ema(self) -> None:
        for average, current in zip(self.ema.parameters(), self.network.parameters()):
            average.lerp_(current, 1 - self.ema_decay)


def score_matching_loss(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        process: ForwardProcess | None, x0: torch.Tensor, *,
                        method: str = "denoising", trace: str = "hutchinson",
                        weighting: str = "standard", generator: torch.Generator | None = None,
                        rows: Sequence[int] | None = None) -> torch.Tensor:
    """The (per-point) score-matching loss [B] of `score` on data x0 [B, d] (module doc).

    The random times, noise and probes are drawn for all B points, from torch's global
    generator or from `generator` (a CPU generator; the draws are moved to x0's device).
    `rows` computes the loss of those points only ([len(rows)]), with the draws they get in
    the whole batch: a share of a batch (one rank's, under torchrun) is the batch's loss at
    those rows."""
    n = len(x0)
    noise = probe = None
    if process is None:
        t = torch.zeros(n, dtype=x0.dtype, device=x0.device)
    else:
        t = process.sample_times(n, generator=generator, device=x0.device,
                                 weighting=weighting)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    if method == "denoising" and noise is None:
        raise InvalidArgumentError(
            "Denoising score matching needs a forward process to add noise; use "
            "method='sliced' to fit the score of the samples themselves.")
    if method == "sliced" and trace != "exact":
        probe = divergence.probe(x0, "rademacher", generator)
    if rows is not None:
        index = torch.as_tensor(list(rows), dtype=torch.long, device=x0.device)
        x0, t = x0[index], t[index]
        noise = None if noise is None else noise[index]
        probe = None if probe is None else probe[index]
    if noise is None:
        xt, sigma = x0, torch.ones(len(x0), 1, dtype=x0.dtype, device=x0.device)
    else:
        assert process is not None  # noise is drawn only with a process
        xt = process.perturb(x0, t, noise)
        sigma = process.std(t).to(x0.dtype).reshape(-1, 1)
        t = t.to(x0.dtype)
    if method == "denoising":
        assert noise is not None
        return (sigma * score(xt, t) + noise).square().sum(-1)
    xt = xt.detach().requires_grad_(True)
    field = lambda time, y: score(y, time)  # noqa: E731  (divergence's f(t, y))
    if probe is None:
        terms = divergence.exact(field, t, xt, create_graph=True)
    else:
        terms = divergence.hutchinson(field, t, xt, probe, create_graph=True)
    return sigma.squeeze(-1).square() * (terms.divergence + 0.5 * terms.dy.square().sum(-1))
