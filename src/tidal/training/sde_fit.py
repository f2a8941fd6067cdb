"""Fitting SDE models to trajectories through the one training loop (`trainer.py`): an
`Objective` per model kind.

- `TransitionObjective` (`NeuralSDE`): the Euler–Maruyama transition likelihood of consecutive
  fully observed rows (`NeuralSDE.pairs_nll`), in mini-batches of transitions.
- `ELBOObjective` (`LatentSDE`): the negative ELBO of whole trajectories (`LatentSDE.loss`),
  in mini-batches of trajectories, with the KL terms' weight rising linearly from 0 to 1 over
  the first `KL_WARMUP` of the epochs (a common remedy for posterior collapse early on).

Validation losses are computed under a fixed seed inside `torch.random.fork_rng`, so they are
comparable from epoch to epoch and do not move the training's random numbers (a resumed run
stays exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.data import Trajectories
from tidal.models.latent_sde import LatentSDE
from tidal.models.neural_sde import NeuralSDE
from tidal.training.batches import Batch, make_batch
from tidal.training.config import AUTO_BATCH_LIMIT, TrainConfig
from tidal.training.trainer import finite

#: Transitions per mini-batch of `TransitionObjective` when the batch size is not given.
TRANSITION_BATCH = 4096
#: The fraction of the epochs over which the latent SDE's KL weight rises from 0 to 1.
KL_WARMUP = 0.2
_VALIDATION_SEED = 12345


@dataclass(frozen=True)
class Transitions:
    """Consecutive fully observed rows of trajectories: states y [N, d] at times t [N], the
    next states y_next [N, d] after gaps h [N] > 0."""

    y: torch.Tensor
    y_next: torch.Tensor
    t: torch.Tensor
    h: torch.Tensor

    @classmethod
    def of(cls, data: Trajectories, dtype: torch.dtype) -> Transitions:
        parts: list[tuple[np.ndarray, ...]] = []
        for times, values, observed in zip(data.times, data.values, data.masks):
            rows = np.flatnonzero(observed.all(axis=1))
            parts.append((values[rows[:-1]], values[rows[1:]], times[rows[:-1]],
                          times[rows[1:]] - times[rows[:-1]]))
        y, y_next, t, h = (np.concatenate(column) for column in zip(*parts))
        if len(y) == 0:
            raise InvalidArgumentError(
                "`--model sde` fits transitions between consecutive fully observed rows and "
                "the data has none; give trajectories with at least two rows where every "
                "state is observed, or use --model latent-sde.")
        return cls(*(torch.as_tensor(a, dtype=dtype) for a in (y, y_next, t, h)))

    def __len__(self) -> int:
        return len(self.h)

    def __getitem__(self, index: torch.Tensor) -> Transitions:
        return Transitions(self.y[index], self.y_next[index], self.t[index], self.h[index])


class TransitionObjective:
    """A `NeuralSDE` fitted by its transition likelihood: one round is an epoch over the
    training transitions in mini-batches."""

    unit = "epoch"
    columns: tuple[str, ...] = ("train_loss", "val_loss", "lr", "seconds")

    def __init__(self, model: NeuralSDE, train: Trajectories, val: Trajectories | None,
                 config: TrainConfig, dtype: torch.dtype) -> None:
        self.model, self.config = model, config
        self.train = Transitions.of(train, dtype)
        self.val = Transitions.of(val, dtype) if val is not None else None
        self.batch_size = min(config.batch_size or TRANSITION_BATCH, len(self.train))
        self.steps_per_round = math.ceil(len(self.train) / self.batch_size)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]

    def train_round(self, index: int, step: Callable[[torch.Tensor], float],
                    generator: torch.Generator) -> dict[str, float]:
        order = torch.randperm(len(self.train), generator=generator)
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            part = self.train[order[start:start + self.batch_size]]
            loss = finite(self.model.pairs_nll(part.y, part.y_next, part.t, part.h))
            step(loss)
            total += loss.item() * len(part)
        return {"train_loss": total / len(self.train)}

    @torch.no_grad()
    def validation_loss(self) -> float:
        if self.val is None:
            return math.nan
        v = self.val
        return float(finite(self.model.pairs_nll(v.y, v.y_next, v.t, v.h)).item())

    def counts_for_best(self, index: int) -> bool:
        return True

    def label(self, index: int) -> str:
        return "transition likelihood"

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class ELBOObjective:
    """A `LatentSDE` fitted by its negative ELBO: one round is an epoch over the training
    trajectories in mini-batches (at most `AUTO_BATCH_LIMIT` by default)."""

    unit = "epoch"
    columns: tuple[str, ...] = ("kl_weight", "train_loss", "val_loss", "lr", "seconds")

    def __init__(self, model: LatentSDE, train: Trajectories, val: Trajectories | None,
                 config: TrainConfig, dtype: torch.dtype) -> None:
        self.model, self.config, self.dtype = model, config, dtype
        self.train, self.val = train, val
        self.batch_size = min(config.batch_size or AUTO_BATCH_LIMIT, len(train))
        self.steps_per_round = math.ceil(len(train) / self.batch_size)
        self._batches: dict[tuple[int, tuple[int, ...]], Batch] = {}

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]

    def kl_weight(self, index: int) -> float:
        return min(1.0, (index + 1) / max(1.0, KL_WARMUP * self.config.epochs))

    def batch(self, data: Trajectories, indices: tuple[int, ...]) -> Batch:
        """Trajectories `indices` of `data` as a batch on per-sample grids (the union of
        irregular times would make every series step and encode at every time of all of
        them); full batches are kept, they repeat every epoch."""
        key = (id(data), indices)
        if key in self._batches:
            return self._batches[key]
        batch = make_batch(data[list(indices)], self.dtype, per_sample=True)
        if len(indices) == len(data):
            self._batches[key] = batch
        return batch

    def loss(self, batch: Batch, kl_weight: float, seed: int | None = None) -> torch.Tensor:
        return finite(self.model.loss(batch.ts, batch.ys, batch.mask, kl_weight=kl_weight,
                                      seed=seed))

    def train_round(self, index: int, step: Callable[[torch.Tensor], float],
                    generator: torch.Generator) -> dict[str, float]:
        order = torch.randperm(len(self.train), generator=generator).tolist()
        weight, total = self.kl_weight(index), 0.0
        for start in range(0, len(order), self.batch_size):
            indices = tuple(sorted(order[start:start + self.batch_size]))
            loss = self.loss(self.batch(self.train, indices), weight)
            step(loss)
            total += loss.item() * len(indices)
        return {"kl_weight": weight, "train_loss": total / len(self.train)}

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The negative ELBO per observed entry of the validation trajectories (KL weight 1,
        a fixed seed)."""
        if self.val is None:
            return math.nan
        with torch.random.fork_rng():
            torch.manual_seed(_VALIDATION_SEED)
            loss = self.loss(self.batch(self.val, tuple(range(len(self.val)))), 1.0,
                             seed=_VALIDATION_SEED)
        return float(loss.item())

    def counts_for_best(self, index: int) -> bool:
        return self.kl_weight(index) == 1.0

    def label(self, index: int) -> str:
        return f"ELBO, KL weight {self.kl_weight(index):.2f}"

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def objective_for(model: nn.Module, train: Trajectories, val: Trajectories | None,
                  config: TrainConfig) -> TransitionObjective | ELBOObjective:
    """The objective that fits `model` (a `NeuralSDE` or a `LatentSDE`)."""
    dtype = getattr(torch, config.dtype)
    if isinstance(model, LatentSDE):
        return ELBOObjective(model, train, val, config, dtype)
    if isinstance(model, NeuralSDE):
        return TransitionObjective(model, train, val, config, dtype)
    raise InvalidArgumentError(f"SDE fitting takes a NeuralSDE or a LatentSDE; got "
                               f"{type(model).__name__}.")
