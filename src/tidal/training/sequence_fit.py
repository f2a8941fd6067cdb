r"""Fitting the sequence models (`LatentODE`, `ODERNN`, `NeuralCDE`, `GRUDelta`) to irregular
series, through the shared training loop (`trainer.py`): `SequenceObjective` is their
`Objective`.

Three tasks:

- **forecast**: each series is read up to its *context* (the observations in the first
  `context` fraction of its own time span) and predicted at every observed row, inside the
  context and after it. The loss is the masked mean squared error of the predictions (the
  negative ELBO for the latent ODE, with the KL term annealed in over the first
  `KL_WARMUP` of training); the validation loss is the MSE after the context only (the
  forecast). Each model predicts a row from what came before it: the ODE-RNN and the GRU
  read out their state advanced to the row before its observation updates it, the CDE reads
  out its state at the previous row (on a Hermite cubic path, which is causal: a natural
  cubic one would carry a row's value into the state before it), the latent
  ODE decodes from the encoding of the whole context.
- **interpolate**: a random `HIDDEN_FRACTION` of each series' observations (redrawn every
  batch in training, a fixed draw in evaluation) is hidden from the model, which predicts every
  observed row as in forecasting; the validation loss is the MSE on the hidden observations.
- **classify**: one label per series; cross-entropy of the logits read out from the state
  after the last observation (the ODE-RNN's and GRU's encoding, the CDE's last state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import tidal
from tidal._errors import InvalidArgumentError
from tidal.data.sequences import IrregularSeries
from tidal.models import ODERNN, GRUDelta, LatentODE, NeuralCDE
from tidal.models.latent_ode import REFINE_CHOICES, strictly_increasing
from tidal.training.trainer import finite

#: The models `tidal fit --model` trains on sequences, and their classes.
SEQUENCE_MODELS = {"latent-ode": LatentODE, "ode-rnn": ODERNN, "cde": NeuralCDE,
                   "gru": GRUDelta}
TASKS = ("forecast", "interpolate", "classify")
#: The fraction of the observations hidden from the model and scored in `interpolate`.
HIDDEN_FRACTION = 0.3
#: The seed of the hidden observations in evaluation (validation, report).
EVALUATION_SEED = 0
#: The fraction of training over which the latent ODE's KL weight rises from 0 to 1.
KL_WARMUP = 0.3
#: Steps of the latent ODE's decoder over the longest training span (fixed-step RK4).
DECODER_STEPS = 200


@dataclass(frozen=True)
class SequenceOptions:
    """A sequence model and its training, as plain values (config.json's "options").

    model: one of `SEQUENCE_MODELS`; task: "forecast" or "classify".
    hidden: size of the recurrent or CDE state; latent: size of the latent ODE's z;
    width: width of the MLPs (vector fields); context: the fraction of each series' span
    read before forecasting; obs_std: the latent ODE's observation noise (scaled units).
    The ODE-RNN and the latent ODE's encoder take one RK4 step per interval between
    observations, the CDE one midpoint step per interval of its path, the latent ODE's
    decoder `DECODER_STEPS` RK4 steps over the longest training span (`decoder_dt`).
    refine: the latent ODE predicts (report, `tidal predict`) from z_0 after this many steps
    toward the posterior's mode (0: from the encoder's posterior mean, as it is validated
    during training); None: the number `choose_refinement` picks on the validation series
    after training (recorded in config.json's "fit").
    """

    model: str = "ode-rnn"
    task: str = "forecast"
    hidden: int = 32
    latent: int = 8
    width: int = 64
    context: float = 0.5
    obs_std: float = 0.1
    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 32
    patience: int | None = None
    grad_clip: float = 10.0
    seed: int = 0
    checkpoint_every: int = 25
    refine: int | None = None

    def __post_init__(self) -> None:
        if self.model not in SEQUENCE_MODELS:
            raise InvalidArgumentError(f"`model={self.model!r}` is not a sequence model; choose "
                                       f"one of {', '.join(SEQUENCE_MODELS)}.")
        if self.task not in TASKS:
            raise InvalidArgumentError(f"`task={self.task!r}`: choose one of {TASKS}.")
        if self.task == "classify" and self.model == "latent-ode":
            raise InvalidArgumentError(
                "`model='latent-ode'` forecasts and interpolates; for `task='classify'` use "
                "cde, ode-rnn or gru.")
        for name in ("hidden", "latent", "width", "epochs", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"`{name}={value!r}` must be a positive integer.")
        if self.refine is not None and (not isinstance(self.refine, int)
                                        or isinstance(self.refine, bool) or self.refine < 0):
            raise InvalidArgumentError(f"`refine={self.refine!r}` must be an integer >= 0 (steps "
                                       "toward the posterior's mode; 0: the posterior mean).")
        if not 0.0 < self.context < 1.0:
            raise InvalidArgumentError(f"`context={self.context!r}` must be a fraction in (0, 1) "
                                       "(the part of each series read before forecasting).")
        if not (self.lr > 0 and self.obs_std > 0 and self.grad_clip > 0):
            raise InvalidArgumentError(f"`lr={self.lr!r}`, `obs_std={self.obs_std!r}` and "
                                       f"`grad_clip={self.grad_clip!r}` must be positive.")


def build_sequence_model(options: SequenceOptions, features: int, outputs: int,
                         decoder_dt: float) -> nn.Module:
    """The model of `options` for `features` inputs and `outputs` readouts (the features for
    forecasting, the classes for classification)."""
    interval: dict[str, Any] = {"solver": tidal.RK4(),
                                "controller": tidal.ConstantStepSize(1.0)}
    if options.model == "latent-ode":
        return LatentODE(features, options.latent, options.hidden, width=options.width,
                         obs_std=options.obs_std, decoder_options={
                             "solver": tidal.RK4(),
                             "controller": tidal.ConstantStepSize(decoder_dt)}, **interval)
    if options.model == "ode-rnn":
        return ODERNN(features, options.hidden, outputs, width=options.width, **interval)
    if options.model == "cde":
        path = "natural_cubic" if options.task == "classify" else "hermite_cubic"
        return NeuralCDE(features, options.hidden, outputs, width=options.width, path=path,
                         solver=tidal.Midpoint(), controller=tidal.ConstantStepSize(1.0))
    return GRUDelta(features, options.hidden, outputs)


def context_mask(series: IrregularSeries, context: float) -> torch.Tensor:
    """[K, B, D]: the observations in the first `context` of each series' own time span."""
    times = series.times if series.times.dim() == 2 else series.times[:, None].expand(
        series.values.shape[:2])
    start, end = times[0], times[-1]
    inside = times <= start + context * (end - start)
    return series.mask & inside.unsqueeze(-1)


def visible_mask(series: IrregularSeries, options: SequenceOptions,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """[K, B, D]: what the model reads: the context (forecast), or the observations not hidden
    (interpolate: a random `HIDDEN_FRACTION`, drawn with `generator`, by default the fixed
    evaluation draw)."""
    if options.task == "forecast":
        return context_mask(series, options.context)
    generator = generator or torch.Generator().manual_seed(EVALUATION_SEED)
    return series.mask & (torch.rand(series.mask.shape, generator=generator) >= HIDDEN_FRACTION)


def forecast(model: nn.Module, series: IrregularSeries, seen: torch.Tensor, *,
             refine: int = 0, samples: int = 0) -> torch.Tensor:
    """Predictions of every row [K, B, D] from the observations `seen`. A latent ODE decodes
    from its posterior mean, or from z_0 after `refine` steps toward the posterior's mode;
    with `samples` S > 0, the decodings of S draws about that z_0 (the encoder's sigma),
    [S, K, B, D]."""
    times, values = series.times, series.values
    if isinstance(model, LatentODE):
        read, targets = _latent_inputs(series, seen)
        z0, std = model.posterior_mode(*read, steps=refine)
        if not samples:
            return model.decode(z0, targets)
        draws = (z0 + std * torch.randn(samples, *std.shape, dtype=std.dtype)).flatten(0, 1)
        grid = targets if targets.dim() == 1 else targets.repeat(1, samples)  # draw-major
        decoded = model.decode(draws, grid)
        return decoded.view(len(targets), samples, *z0.shape[:1], -1).transpose(0, 1)
    if isinstance(model, NeuralCDE):
        out = model(times, values, seen)
        return torch.cat([out[:1], out[:-1]])  # row i from the state at row i - 1
    return model(times, values, seen)


def _latent_inputs(series: IrregularSeries, seen: torch.Tensor
                   ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """What a latent ODE's encoder reads (times, values, mask up to the last row with a seen
    observation) and the grid it decodes on (every row, padding moved on)."""
    times = series.times
    prefix = int(seen.any(-1).any(-1).nonzero().max()) + 1
    targets = times if times.dim() == 1 else strictly_increasing(times)
    return (times[:prefix], series.values[:prefix], seen[:prefix]), targets


def choose_refinement(model: LatentODE, data: IrregularSeries, options: SequenceOptions
                      ) -> tuple[int, dict[int, float]]:
    """`LatentODE.choose_refinement` on `data`'s observations not read (the validation loss),
    among `REFINE_CHOICES`."""
    seen = visible_mask(data, options)
    read, targets = _latent_inputs(data, seen)
    return model.choose_refinement(*read, targets, data.values, data.mask & ~seen,
                                   REFINE_CHOICES)


def classify(model: nn.Module, series: IrregularSeries) -> torch.Tensor:
    """Logits [B, classes] from the state after each series' last observation."""
    if isinstance(model, NeuralCDE):
        return model(series.times, series.values, series.mask)[-1]
    assert isinstance(model, (ODERNN, GRUDelta))
    return model.readout(model.encode(series.times, series.values, series.mask))


def masked_mse(predicted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    return torch.where(mask, predicted - values, 0.0).square().sum() / mask.sum().clamp(min=1)


class SequenceObjective:
    """Fitting a sequence model, for the shared loop: one round is an epoch over the training
    series in mini-batches."""

    unit = "epoch"

    def __init__(self, model: nn.Module, train: IrregularSeries,
                 val: IrregularSeries | None, options: SequenceOptions) -> None:
        self.model, self.train, self.val, self.options = model, train, val, options
        self.n = train.values.shape[1]
        self.batch_size = min(options.batch_size, self.n)
        self.steps_per_round = math.ceil(self.n / self.batch_size)
        self.columns: tuple[str, ...] = ("train_loss", "val_loss", "lr", "num_fevals",
                                         "seconds")
        if options.task == "classify":
            self.columns = ("train_loss", "train_accuracy", "val_loss", "lr", "num_fevals",
                            "seconds")

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]

    def loss(self, batch: IrregularSeries, progress: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
        """The training loss of `batch` and, for classification, its accuracy (NaN else)."""
        if self.options.task == "classify":
            assert batch.labels is not None
            logits = classify(self.model, batch)
            accuracy = (logits.argmax(-1) == batch.labels).double().mean().item()
            return nn.functional.cross_entropy(logits, batch.labels), accuracy
        seen = visible_mask(batch, self.options, generator)
        if isinstance(self.model, LatentODE):
            prefix = int(seen.any(-1).any(-1).nonzero().max()) + 1
            times = batch.times
            targets = times if times.dim() == 1 else strictly_increasing(times)
            kl_weight = min(1.0, progress / KL_WARMUP)
            loss = self.model.loss(times[:prefix], batch.values[:prefix], seen[:prefix],
                                   targets, batch.values, batch.mask, kl_weight=kl_weight)
            return loss, math.nan
        return masked_mse(forecast(self.model, batch, seen), batch.values, batch.mask), math.nan

    def train_round(self, index: int, step: Callable[[torch.Tensor], float],
                    generator: torch.Generator) -> dict[str, float]:
        order = torch.randperm(self.n, generator=generator)
        total = correct = 0.0
        for position, chosen in enumerate(order.split(self.batch_size)):
            progress = (index * self.steps_per_round + position) / (
                self.options.epochs * self.steps_per_round)
            loss, accuracy = self.loss(self.train[chosen.sort().values], progress, generator)
            step(finite(loss))
            total += loss.item() * len(chosen)
            correct += accuracy * len(chosen)
        row = {"train_loss": total / self.n,
               "num_fevals": float(getattr(self.model, "nfe", 0))}
        if self.options.task == "classify":
            row["train_accuracy"] = correct / self.n
        return row

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Classification: the cross-entropy; else the MSE of the observations not read."""
        if self.val is None:
            return math.nan
        return evaluate(self.model, self.val, self.options)["loss"]

    def counts_for_best(self, index: int) -> bool:
        return True

    def label(self, index: int) -> str:
        return f"{self.options.model} {self.options.task}"

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None


@torch.no_grad()
def evaluate(model: nn.Module, data: IrregularSeries, options: SequenceOptions, *,
             refine: int = 0) -> dict[str, Any]:
    """"loss" (the validation loss) and, for classification, "accuracy" and the "predicted"
    classes [B]; else "mse_per_feature" [D] of the observations not read (after the context,
    or hidden), in scaled units; a latent ODE predicts after `refine` steps toward the
    posterior's mode."""
    if options.task == "classify":
        assert data.labels is not None
        logits = classify(model, data)
        predicted = logits.argmax(-1)
        return {"loss": nn.functional.cross_entropy(logits, data.labels).item(),
                "accuracy": (predicted == data.labels).double().mean().item(),
                "predicted": predicted}
    seen = visible_mask(data, options)
    after = data.mask & ~seen
    if not bool(after.any()):
        raise InvalidArgumentError(
            f"No observation is left to score after the context (`context={options.context}`) "
            "or among the hidden ones; lower the context or give longer series.")
    predicted = forecast(model, data, seen, refine=refine)
    error = torch.where(after, predicted - data.values, 0.0).square()
    per_feature = error.sum((0, 1)) / after.sum((0, 1)).clamp(min=1)
    return {"loss": float(error.sum() / after.sum()), "mse_per_feature": per_feature}
