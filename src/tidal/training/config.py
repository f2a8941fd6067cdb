"""`TrainConfig`: every knob of `fit`, as plain values that go into a run's config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tidal._errors import InvalidArgumentError

#: The most trajectories per optimizer step when `TrainConfig.batch_size` is None.
AUTO_BATCH_LIMIT = 256


@dataclass(frozen=True)
class TrainConfig:
    """How `tidal.fit` trains.

    Args:
        epochs: passes over the training trajectories.
        batch_size: trajectories per optimizer step; None uses all of them, in batches of at
            most `AUTO_BATCH_LIMIT` (256): on 750 trajectories of 1000 observations, batches
            of 256 take about as long per epoch as one of 750 and learn more per epoch. Also
            the batch size of the validation loss.
        lr: Adam's learning rate (peak of the schedule).
        weight_decay: AdamW's decoupled weight decay.
        schedule: "cosine" (decay to lr / 100 over the run, after a short warm-up) or
            "constant".
        horizons: the horizon curriculum: fractions of each trajectory's span fitted in
            successive stages of equal length (e.g. (0.3, 0.6, 1.0)); a model first learns
            the short-time dynamics, which keeps long or oscillating series from locking into a
            poor local fit. (1.0,) fits whole trajectories from the start.
        patience: stop when the validation loss has not improved for this many epochs of the
            last stage (None: never stop early). The best weights are kept.
        eval_every: epochs between validation losses and progress updates.
        checkpoint_every: epochs between checkpoints (also written at the end and on Ctrl-C).
        grad_clip: clip the gradient's norm to this (None: no clipping).
        learn_initial_states: treat each training trajectory's initial state as unknown too,
            starting from its first observation: the first observation is as noisy as the
            others, and a field fitted from a noisy start bends to make up for it.
        shooting_segments: multiple shooting: when > 1, a first stage (as long as each
            curriculum stage) cuts each training trajectory into this many segments, each
            integrated from its own estimated initial state (starting from its first
            observation), with `shooting_weight` times the squared gap between a segment's end
            and the next one's start added to the loss. Short segments keep oscillating series
            from locking into a wrong phase or period; the curriculum then fits whole
            trajectories. 1: off.
        shooting_weight: the weight of the continuity gaps in the shooting stage.
        seed: seeds the initialization (when the caller builds the model under `seeded`) and
            the order of mini-batches.
        dtype: "float64" or "float32", the dtype of states during training.
    """

    epochs: int = 300
    batch_size: int | None = None
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "cosine"
    horizons: tuple[float, ...] = (0.3, 0.6, 1.0)
    patience: int | None = 100
    eval_every: int = 5
    checkpoint_every: int = 25
    grad_clip: float | None = 1.0
    learn_initial_states: bool = True
    shooting_segments: int = 1
    shooting_weight: float = 1.0
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        def fail(name: str, problem: str) -> InvalidArgumentError:
            return InvalidArgumentError(
                f"`TrainConfig({name}={getattr(self, name)!r})`: {problem}.")

        for name, kind in _TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if kind is bool and not isinstance(value, bool):
                raise fail(name, "must be True or False")
            if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise fail(name, "must be an integer")
            if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
                raise fail(name, "must be a finite number")
        for name in ("epochs", "batch_size", "lr", "patience", "eval_every",
                     "checkpoint_every", "grad_clip", "shooting_segments", "shooting_weight"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise fail(name, "must be > 0")
        if self.weight_decay < 0:
            raise fail("weight_decay", "must be >= 0")
        if not 0 <= self.seed < 2**63:
            raise fail("seed", "must be in [0, 2**63)")
        if self.schedule not in ("cosine", "constant"):
            raise InvalidArgumentError(
                f"`TrainConfig(schedule={self.schedule!r})`: use 'cosine' or 'constant'.")
        horizons = self.horizons
        if isinstance(horizons, (list, tuple)) and all(
                isinstance(h, (int, float)) and not isinstance(h, bool) for h in horizons):
            horizons = tuple(float(h) for h in horizons)
        else:
            horizons = ()
        if (not horizons or any(not 0 < h <= 1 for h in horizons) or horizons[-1] != 1.0
                or list(horizons) != sorted(horizons)):
            raise InvalidArgumentError(
                f"`TrainConfig(horizons={self.horizons!r})`: need increasing fractions in "
                "(0, 1] ending with 1.0, e.g. (0.3, 0.6, 1.0).")
        object.__setattr__(self, "horizons", horizons)
        if self.dtype not in ("float64", "float32"):
            raise InvalidArgumentError(
                f"`TrainConfig(dtype={self.dtype!r})`: use 'float64' or 'float32'.")
        stages = len(horizons) + (self.shooting_segments > 1)
        if stages > self.epochs:
            raise InvalidArgumentError(
                f"`TrainConfig(epochs={self.epochs})`: fewer epochs than training stages "
                f"({stages}: the curriculum {horizons}"
                f"{' after a shooting stage' if self.shooting_segments > 1 else ''}).")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["horizons"] = list(self.horizons)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_dict`; every value is checked (it may come from an edited
        file)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgumentError(
                f"Training config has unknown keys {unknown}; known: {sorted(known)}.")
        return cls(**values)


_TYPES = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float,
          "patience": int, "eval_every": int, "checkpoint_every": int, "grad_clip": float,
          "learn_initial_states": bool, "shooting_segments": int, "shooting_weight": float,
          "seed": int}
_OPTIONAL = {"batch_size", "patience", "grad_clip"}
