"""Score matching through the shared training loop (`trainer.py`: schedule, checkpoints that
resume exactly, divergence, progress): `fit_score` for any `ScoreModel`, and
`learned_entropy_production`, which learns a stationary score from samples and estimates the
entropy production rate with it (`tidal.diffusion.entropy`).

Under torchrun every rank draws the same global minibatch and, from the generator of
(seed, step) (`batches.step_generator`), the same noise levels, noise and probes for all of it;
it computes the loss of its rows b ≡ rank (mod world size), summed and divided by the global
batch size, and the step's all-reduce adds the shares: the one-process loss and gradient."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from tidal._errors import InvalidArgumentError
from tidal.diffusion.entropy import EntropyProduction, Field, entropy_production
from tidal.diffusion.processes import ForwardProcess
from tidal.diffusion.score_matching import METHODS, ScoreMLP, ScoreModel, score_matching_loss
from tidal.distributed import World
from tidal.training.batches import SampleMinibatches, step_generator
from tidal.training.flow import check_fit
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import LoopSettings, Outcome, Step, finite, train


class ScoreMatchingObjective:
    """Score matching for the shared loop: one round is one minibatch step (then an EMA
    update). The validation loss is the same loss on held-out points with fixed noise, times
    and probes, evaluated with the EMA network. Shards under torchrun (module doc)."""

    unit = "step"
    columns: tuple[str, ...] = ("train_loss", "val_loss", "lr", "seconds")
    steps_per_round = 1
    shards = True

    def __init__(self, model: ScoreModel, process: ForwardProcess | None,
                 samples: torch.Tensor, val_samples: torch.Tensor | None, batch_size: int,
                 method: str, trace: str, weighting: str, seed: int = 0) -> None:
        self.model, self.process = model, process
        self.val_samples, self.batch_size = val_samples, batch_size
        self.method, self.trace, self.weighting = method, trace, weighting
        self.seed = seed
        self.batches = SampleMinibatches(samples, batch_size)
        self.world = World.current()

    def owned_rows(self, world: World) -> dict[str, torch.Tensor]:
        return {}  # the batch order (`state`) is the same on every rank

    def share(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This rank's share of the global `batch`'s loss: the sum over its rows, with the
        draws the whole batch makes from `generator`, divided by the batch size."""
        rows = self.world.shard(range(len(batch)))
        losses = score_matching_loss(self.model.network, self.process, batch,
                                     method=self.method, trace=self.trace,
                                     weighting=self.weighting, generator=generator, rows=rows)
        return losses.sum() / len(batch)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.network.parameters()),
                 "weight_decay": weight_decay}]

    def train_round(self, index: int, step: Step, generator: torch.Generator
                    ) -> dict[str, float]:
        batch = self.batches.batch(index, generator)
        value = step(finite(self.share(batch, step_generator(self.seed, index))))
        self.model.update_ema()
        return {"train_loss": value}

    def validation_loss(self) -> float:
        """The loss of the held-out points (this rank's rows of each chunk, summed over the
        ranks) with the EMA network and fixed draws."""
        if self.val_samples is None:
            return math.nan
        generator = torch.Generator().manual_seed(12345)
        total = self.val_samples.new_zeros(())
        for chunk in self.val_samples.split(4 * self.batch_size):
            with torch.set_grad_enabled(self.method == "sliced"):
                loss = score_matching_loss(self.model, self.process, chunk, method=self.method,
                                           trace=self.trace, weighting=self.weighting,
                                           generator=generator,
                                           rows=self.world.shard(range(len(chunk))))
            total += loss.sum().detach()
        return float(self.world.sum(total)) / len(self.val_samples)

    def counts_for_best(self, index: int) -> bool:
        return True

    def label(self, index: int) -> str:
        return "fit_score"

    def state(self) -> dict[str, torch.Tensor]:
        return self.batches.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.batches.load_state(state)


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
              trace: str = "hutchinson", weighting: str = "standard", steps: int = 2000,
              batch_size: int = 512, lr: float = 2e-3, weight_decay: float = 0.0,
              schedule: str = "cosine",
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
        weighting: "standard" (λ = σ^2, times uniform; EDM log-normal) or "likelihood"
            (λ = g^2 by importance sampling: `ForwardProcess.sample_times`), the choice for
            likelihoods.
        steps, batch_size, lr, weight_decay, schedule: the optimization (AdamW; "cosine" or
            "constant" learning rate).
        val_every, checkpoint_every: steps between validation losses / checkpoints.
        seed: seeds the minibatch order and the times, noise and probes (step i's from the
            generator of (seed, i)).
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
    check_fit("fit_score", model, samples, val_samples, batch_size=batch_size, steps=steps,
              schedule=schedule, val_every=val_every, checkpoint_every=checkpoint_every, lr=lr,
              weight_decay=weight_decay, seed=seed)
    config = getattr(model.network, "config", None)
    dim = config().get("dim") if callable(config) else None
    if dim is not None and dim != samples.shape[1]:
        raise InvalidArgumentError(
            f"`fit_score(samples=...)` has {samples.shape[1]} columns but the score network "
            f"is for dim={dim}.")
    if not resume:
        torch.manual_seed(seed)
    settings = LoopSettings(rounds=steps, lr=lr, weight_decay=weight_decay, schedule=schedule,
                            eval_every=val_every, record_every=10,
                            checkpoint_every=checkpoint_every, seed=seed)
    objective = ScoreMatchingObjective(model, process, samples, val_samples, batch_size,
                                       method, trace, weighting, seed)
    outcome = train(objective, settings, run_dir=run_dir, resume=resume, progress=progress)
    model.load_state_dict(outcome.kept["model"])
    return ScoreHistory.of(outcome)


class LearnedEntropyProduction(NamedTuple):
    """The estimate on held-out samples with the learned score, and the score model."""

    estimate: EntropyProduction
    model: torch.nn.Module
    seconds: float


def learned_entropy_production(samples: torch.Tensor, drift: Field,
                               diffusion: torch.Tensor | float, *, steps: int = 600,
                               batch_size: int = 1000, lr: float = 3e-3, width: int = 64,
                               held_out: float = 0.1, seed: int = 0, progress: bool = False
                               ) -> LearnedEntropyProduction:
    """Learn the stationary score from `samples` [N, d] (sliced score matching with the exact
    trace, no added noise: `fit_score(..., process=None)`) and estimate Σ on the held-out
    fraction `held_out` of them (the rest trains; the last checkpoint with the lowest held-out
    loss is kept)."""
    if not 0 < held_out < 1:
        raise InvalidArgumentError(f"`held_out={held_out!r}` must be a fraction in (0, 1).")
    generator = torch.Generator().manual_seed(seed)
    shuffled = samples[torch.randperm(len(samples), generator=generator)]
    cut = int(len(samples) * (1 - held_out))
    torch.manual_seed(seed)
    model = ScoreModel(ScoreMLP(samples.shape[-1], None, width=width, depth=2,
                                data_std=float(samples.std())).to(samples.dtype),
                       ema_decay=0.99)
    start = time.perf_counter()
    fit_score(model, None, shuffled[:cut], val_samples=shuffled[cut:], method="sliced",
              trace="exact", steps=steps, batch_size=min(batch_size, cut), lr=lr,
              val_every=max(1, steps // 6), seed=seed, progress=progress)
    seconds = time.perf_counter() - start

    def score(x: torch.Tensor) -> torch.Tensor:
        return model(x, x.new_zeros(len(x)))

    return LearnedEntropyProduction(
        entropy_production(score, drift, diffusion, shuffled[cut:]), model, seconds)
