r"""Training a score network s(x, t) ≈ ∇ log p_t(x), through the shared training loop
(`tidal.training.trainer`: schedule, checkpoints that resume exactly, divergence, progress).

- Denoising score matching (Vincent 2011; Song et al. 2021) with the standard weighting
  λ(t) = σ(t)^2: with x_t = m(t) x_0 + σ(t) ε,

  $$ L = E_{t, x_0, ε} \| σ(t)\, s(x_t, t) + ε \|^2, $$

  t uniform on [t_min, T] (log-normal noise levels for `EDMProcess`).
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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.diffusion.processes import ForwardProcess
from tidal.models import divergence
from tidal.nn import ACTIVATIONS
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import LoopSettings, Outcome, finite, train

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
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The (per-point) score-matching loss [B] of `score` on data x0 [B, d] (module doc)."""
    n = len(x0)
    if process is None:
        t = torch.zeros(n, dtype=x0.dtype, device=x0.device)
        xt, sigma = x0, torch.ones(n, 1, dtype=x0.dtype, device=x0.device)
        noise = None
    else:
        t = process.sample_times(n, generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        xt = process.perturb(x0, t, noise)
        sigma = process.std(t).to(x0.dtype).reshape(-1, 1)
        t = t.to(x0.dtype)
    if method == "denoising":
        if noise is None:
            raise InvalidArgumentError(
                "Denoising score matching needs a forward process to add noise; use "
                "method='sliced' to fit the score of the samples themselves.")
        return (sigma * score(xt, t) + noise).square().sum(-1)
    xt = xt.detach().requires_grad_(True)
    field = lambda time, y: score(y, time)  # noqa: E731  (divergence's f(t, y))
    if trace == "exact":
        terms = divergence.exact(field, t, xt, create_graph=True)
    else:
        probe = divergence.probe(xt, "rademacher") if generator is None else (
            torch.randint(2, xt.shape, generator=generator, dtype=xt.dtype) * 2 - 1)
        terms = divergence.hutchinson(field, t, xt, probe, create_graph=True)
    return sigma.squeeze(-1).square() * (terms.divergence + 0.5 * terms.dy.square().sum(-1))


class ScoreMatchingObjective:
    """Score matching for the shared loop: one round is one minibatch step (then an EMA
    update). The validation loss is the same loss on held-out points with fixed noise, times
    and probes, evaluated with the EMA network."""

    unit = "step"
    columns: tuple[str, ...] = ("train_loss", "val_loss", "lr", "seconds")
    steps_per_round = 1

    def __init__(self, model: ScoreModel, process: ForwardProcess | None,
                 samples: torch.Tensor, val_samples: torch.Tensor | None, batch_size: int,
                 method: str, trace: str) -> None:
        self.model, self.process, self.samples = model, process, samples
        self.val_samples, self.batch_size = val_samples, batch_size
        self.method, self.trace = method, trace
        self.batches_per_epoch = len(samples) // batch_size
        self.order = torch.zeros(len(samples), dtype=torch.long)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.network.parameters()),
                 "weight_decay": weight_decay}]

    def train_round(self, index: int, step: Callable[[torch.Tensor], None],
                    generator: torch.Generator) -> dict[str, float]:
        position = index % self.batches_per_epoch
        if position == 0:
            self.order = torch.randperm(len(self.samples), generator=generator)
        chosen = self.order[position * self.batch_size:(position + 1) * self.batch_size]
        loss = finite(score_matching_loss(
            self.model.network, self.process, self.samples[chosen.to(self.samples.device)],
            method=self.method, trace=self.trace).mean())
        step(loss)
        self.model.update_ema()
        return {"train_loss": loss.item()}

    def validation_loss(self) -> float:
        if self.val_samples is None:
            return math.nan
        generator = torch.Generator().manual_seed(12345)
        total = 0.0
        for chunk in self.val_samples.split(4 * self.batch_size):
            with torch.set_grad_enabled(self.method == "sliced"):
                loss = score_matching_loss(self.model, self.process, chunk, method=self.method,
                                           trace=self.trace, generator=generator)
            total += loss.sum().item()
        return total / len(self.val_samples)

    def counts_for_best(self, index: int) -> bool:
        return True

    def label(self, index: int) -> str:
        return "fit_score"

    def state(self) -> dict[str, torch.Tensor]:
        return {"order": self.order}

    def load_state(self, state: dict[str, Any]) -> None:
        self.order = state["order"].clone()


@dataclass
class ScoreHistory:
    """What `fit_score` measured: the loss per step, validation losses, time and status."""

    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    status: str = "finished"
    message: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, outcome: Outcome) -> ScoreHistory:
        rows = outcome.history
        validated = [r for r in rows if not math.isnan(r["val_loss"])]
        return cls([r["train_loss"] for r in rows], [r["step"] for r in validated],
                   [r["val_loss"] for r in validated], rows[-1]["seconds"] if rows else 0.0,
                   outcome.status, outcome.message, rows)


def fit_score(model: ScoreModel, process: ForwardProcess | None, samples: torch.Tensor, *,
              val_samples: torch.Tensor | None = None, method: str = "denoising",
              trace: str = "hutchinson", steps: int = 2000, batch_size: int = 512,
              lr: float = 2e-3, weight_decay: float = 0.0, schedule: str = "cosine",
              val_every: int = 200, checkpoint_every: int = 200, seed: int = 0,
              progress: bool = True, run_dir: RunDirectory | None = None,
              resume: bool = False) -> ScoreHistory:
    """Fit `model` (its network; the EMA follows) to `samples` [N, d] by score matching.

    Args:
        model: a `ScoreModel`; trained in place, ending with the kept weights (those of the
            best validation loss when `val_samples` are given, else the last).
        process: the forward process (None: the samples' own score, `method="sliced"`).
        samples, val_samples: training and held-out points [N, d] in the model's dtype.
        method: "denoising" or "sliced".
        trace: for "sliced": "hutchinson" (one Rademacher probe) or "exact".
        steps, batch_size, lr, weight_decay, schedule: the optimization (AdamW; "cosine" or
            "constant" learning rate).
        val_every, checkpoint_every: steps between validation losses / checkpoints.
        seed: seeds the minibatch order, times and noise.
        progress, run_dir, resume: as `tidal.training.flow.fit_flow`.
    """
    if method not in METHODS:
        raise InvalidArgumentError(
            f"`fit_score(method={method!r})` is not known; choose one of {list(METHODS)}.")
    if trace not in ("exact", "hutchinson"):
        raise InvalidArgumentError(
            f"`fit_score(trace={trace!r})` must be 'exact' or 'hutchinson'.")
    if process is None and method != "sliced":
        raise InvalidArgumentError(
            "`fit_score(process=None)` fits the samples' own score: use method='sliced'.")
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        raise InvalidArgumentError("`fit_score(samples=...)` must be a tensor [N, d].")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(samples):
        raise InvalidArgumentError(
            f"`fit_score(batch_size={batch_size!r})` must be between 1 and the {len(samples)} "
            f"samples.")
    if not resume:
        torch.manual_seed(seed)
    settings = LoopSettings(rounds=steps, lr=lr, weight_decay=weight_decay, schedule=schedule,
                            eval_every=val_every, record_every=10,
                            checkpoint_every=checkpoint_every, seed=seed)
    objective = ScoreMatchingObjective(model, process, samples, val_samples, batch_size,
                                       method, trace)
    outcome = train(objective, settings, run_dir=run_dir, resume=resume, progress=progress)
    model.load_state_dict(outcome.kept["model"])
    return ScoreHistory.of(outcome)
