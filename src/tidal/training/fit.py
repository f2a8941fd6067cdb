"""`fit`: train a `NeuralODE` on trajectories, with a horizon curriculum, early stopping,
checkpoints that resume exactly, and a clean stop on divergence or Ctrl-C."""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.data import Scaling, Trajectories
from tidal.models import NeuralODE
from tidal.training.batches import (
    Batch,
    Segments,
    continuity_mse,
    make_batch,
    masked_mse,
    masked_sse,
    segment,
    segment_counts,
    window,
)
from tidal.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from tidal.training.config import AUTO_BATCH_LIMIT, TrainConfig
from tidal.training.progress import Progress, stage_label
from tidal.training.run_directory import RunDirectory

#: The columns of `FitResult.history` and metrics.csv.
HISTORY_COLUMNS = ("epoch", "stage", "horizon", "segments", "train_loss", "val_loss", "lr",
                   "num_fevals", "seconds")
#: The run directory's state for each way `fit` ends.
FINAL_STATES = {"finished": "finished", "early-stopped": "finished",
                "interrupted": "interrupted", "diverged": "diverged"}


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        model: the trained model, holding the best weights (lowest validation loss in the last
            curriculum stage, or the last weights without validation data).
        scaling: the scaling the model was trained in (predictions are unscaled with it).
        history: one row per evaluation: epoch, stage, horizon, segments (multiple-shooting
            segments per trajectory; 1 outside the shooting stage), train_loss, val_loss, lr,
            num_fevals (forward evaluations of the last step), seconds.
        status: "finished", "early-stopped", "diverged" or "interrupted".
        message: one line saying why training stopped.
        best_epoch, best_val_loss: where the kept weights come from.
        initial_states: [N, D], each training trajectory's initial state (at its first time)
            in the user's units, as estimated with the kept weights (the first observations
            when `learn_initial_states` is off).
    """

    model: NeuralODE
    scaling: Scaling
    history: list[dict[str, Any]]
    status: str
    message: str
    best_epoch: int
    best_val_loss: float
    config: TrainConfig = field(default_factory=TrainConfig)
    initial_states: np.ndarray | None = None


#: Where `fit` writes the training trajectories' estimated initial states in a run directory:
#: columns id, t (the trajectory's first time) and one per state, in the user's units.
INITIAL_STATES = "data/initial_states.csv"


class _Diverged(Exception):
    pass


#: Batches `_Trainer.batch` keeps (the most recently used).
_CACHED_BATCHES = 8


def fit(model: NeuralODE, train: Trajectories, *, val: Trajectories | None = None,
        config: TrainConfig | None = None, scaling: Scaling | None = None,
        run_dir: str | Path | RunDirectory | None = None, resume: bool = False,
        progress: bool = True) -> FitResult:
    """Fit `model` so its trajectories from each training trajectory's first state pass
    through the observations (mean squared error over observed entries, in scaled units).

    Args:
        model: a `NeuralODE`; trained in place.
        train: training trajectories (irregular times and missing entries are fine).
        val: validation trajectories for early stopping and the choice of the kept weights.
        config: a `TrainConfig` (epochs, lr, curriculum, patience, ...).
        scaling: the units the model works in; default `Scaling.fit(train)` (each state
            standardized by its observed mean and spread).
        run_dir: the run directory (a `RunDirectory`, or a folder: a new or empty one, or a
            run) where checkpoint.pt, metrics.csv and data/initial_states.csv (the estimated
            initial states, `INITIAL_STATES`) are written (atomically); None writes nothing.
            When given a folder, `fit` records the run's final state in it.
        resume: continue from `run_dir`'s checkpoint.pt; the loss curve continues as if never
            stopped.
        progress: show a progress bar with the loss and the ETA.

    Returns:
        A `FitResult`. Divergence (a non-finite loss or a failed solve) and Ctrl-C do not
        raise: training stops, the model keeps its last good weights, and the status and
        message say what happened; the checkpoint on disk is the last good one.
    """
    config = config or TrainConfig()
    if resume and run_dir is None:
        raise InvalidArgumentError("`fit(resume=True)` needs the `run_dir` to resume from.")
    dtype = getattr(torch, config.dtype)
    model.to(dtype)
    scaling = scaling or Scaling.fit(train)
    run = run_dir
    if run_dir is not None and not isinstance(run_dir, RunDirectory):
        run = RunDirectory.open_or_create(run_dir, "neural-ode", command="fit")
        run.take_over()
    trainer = _Trainer(model, train.scaled(scaling), val.scaled(scaling) if val else None,
                       config, dtype, run)
    if resume:
        path = run.path / CHECKPOINT
        snapshot = load_checkpoint(path)
        try:
            trainer.restore(snapshot)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            raise InvalidArgumentError(
                f"{path}: not a checkpoint of this run and model ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}); the file was edited or damaged.") from error
    status, message = trainer.run(progress)
    model.load_state_dict(trainer.best_weights)
    initial_states = scaling.unscale_values(trainer.initial_states()).numpy()
    if run is not None:
        write_initial_states(run, train, initial_states)
    if run is not None and run is not run_dir:
        run.set_state(FINAL_STATES[status])
    return FitResult(model, scaling, trainer.history, status, message, trainer.best_epoch,
                     trainer.best_val_loss, config, initial_states)


class _Trainer:
    """The state of one training run: what a checkpoint holds."""

    def __init__(self, model: NeuralODE, train: Trajectories, val: Trajectories | None,
                 config: TrainConfig, dtype: torch.dtype, run_dir: RunDirectory | None) -> None:
        self.model, self.train, self.val = model, train, val
        self.config, self.dtype, self.run_dir = config, dtype, run_dir
        self.batch_size = min(config.batch_size or AUTO_BATCH_LIMIT, len(train))
        self.batches_per_epoch = math.ceil(len(train) / self.batch_size)
        # Estimated corrections to the training trajectories' first observations (noisy, like
        # every other observation); zero and frozen unless `learn_initial_states`.
        self.initial_offsets = torch.zeros(len(train), train.n_states, dtype=dtype,
                                           requires_grad=config.learn_initial_states)
        # Multiple shooting: a first stage fits segments of each trajectory, each from its own
        # estimated start (the first segment's is the trajectory's), before the curriculum.
        self.stages = [(h, 1) for h in config.horizons]
        counts = segment_counts(train, config.shooting_segments)
        self.segment_base = [0, *itertools.accumulate(c - 1 for c in counts)]
        if config.shooting_segments > 1:
            self.stages.insert(0, (1.0, config.shooting_segments))
        self.segment_offsets = torch.zeros(self.segment_base[-1], train.n_states, dtype=dtype,
                                           requires_grad=config.shooting_segments > 1)
        groups = [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
        if config.learn_initial_states:
            groups.append({"params": [self.initial_offsets], "weight_decay": 0.0})
        if config.shooting_segments > 1:
            groups.append({"params": [self.segment_offsets], "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_weights = copy.deepcopy(model.state_dict())
        self.best_initial_offsets = self.initial_offsets.detach().clone()
        self.bad_epochs = 0
        self.seconds = 0.0
        self._cache: OrderedDict[Any, Any] = OrderedDict()

    def _lr_factor(self, step: int) -> float:
        if self.config.schedule == "constant":
            return 1.0
        total = self.config.epochs * self.batches_per_epoch
        warmup = max(1, total // 50)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    def stage(self, epoch: int) -> int:
        stages = len(self.stages)
        return min(epoch * stages // self.config.epochs, stages - 1)

    def batch(self, data: Trajectories, horizon: float, indices: tuple[int, ...]) -> Batch:
        """Trajectories `indices` of `data`, cut to `horizon`, as a batch. The last few are
        kept: full-batch training and validation reuse theirs every epoch, while random
        mini-batches rarely repeat (a bounded cache keeps memory linear in the data)."""
        return self._cached((id(data), horizon, indices),
                            lambda: make_batch(window(data[list(indices)], horizon), self.dtype))

    def _cached(self, key: Any, build: Callable[[], Any]) -> Any:
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = build()
            while len(self._cache) > _CACHED_BATCHES:
                self._cache.popitem(last=False)
        return self._cache[key]

    def segments(self, indices: tuple[int, ...]) -> tuple[Segments, torch.Tensor]:
        """The training trajectories `indices` cut into shooting segments, and for each
        segment its row in cat(initial_offsets, segment_offsets)."""
        def build() -> tuple[Segments, torch.Tensor]:
            pieces = segment(self.train[list(indices)], self.config.shooting_segments,
                             self.dtype)
            trajectory = torch.tensor(indices)[pieces.owner]
            base = torch.tensor(self.segment_base)[trajectory]
            rows = torch.where(pieces.part == 0, trajectory,
                               len(self.train) + base + pieces.part - 1)
            return pieces, rows

        return self._cached(("segments", indices), build)

    def loss(self, batch: Batch, indices: tuple[int, ...] | None = None) -> torch.Tensor:
        y0 = batch.y0 if indices is None else batch.y0 + self.initial_offsets[list(indices)]
        return _finite(masked_mse(self.model(y0, batch.ts), batch))

    def shooting_loss(self, indices: tuple[int, ...]) -> torch.Tensor:
        """The observations' MSE over all segments plus the weighted continuity gaps."""
        pieces, rows = self.segments(indices)
        y0 = pieces.batch.y0 + torch.cat([self.initial_offsets, self.segment_offsets])[rows]
        prediction = self.model(y0, pieces.batch.ts)
        gaps = continuity_mse(prediction, y0, pieces)
        return _finite(masked_mse(prediction, pieces.batch) + self.config.shooting_weight * gaps)

    def train_epoch(self, horizon: float, segments: int = 1) -> float:
        order = torch.randperm(len(self.train), generator=self.generator).tolist()
        if self.batch_size == len(self.train):
            order = sorted(order)
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            indices = tuple(sorted(order[start:start + self.batch_size]))
            self.optimizer.zero_grad()
            if segments > 1:
                loss = self.shooting_loss(indices)
            else:
                loss = self.loss(self.batch(self.train, horizon, indices), indices)
            loss.backward()
            if self.config.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                      self.config.grad_clip)
                if not torch.isfinite(norm):
                    raise _Diverged("the gradient became non-finite")
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(indices)
        return total / len(self.train)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The masked MSE over every validation observation, in batches of `batch_size`."""
        if self.val is None:
            return math.nan
        total, count = torch.zeros((), dtype=self.dtype), torch.zeros((), dtype=torch.long)
        for start in range(0, len(self.val), self.batch_size):
            batch = self.batch(self.val, 1.0,
                               tuple(range(start, min(start + self.batch_size, len(self.val)))))
            errors, observed = masked_sse(self.model(batch.y0, batch.ts), batch)
            total, count = total + errors, count + observed
        return _finite(total / count.clamp_min(1)).item()

    def run(self, show_progress: bool) -> tuple[str, str]:
        config = self.config
        bar = Progress(config.epochs, initial=self.epoch, enabled=show_progress)
        last_good = self.snapshot()
        status, message = "finished", f"trained for {config.epochs} epochs"
        started = time.perf_counter() - self.seconds
        try:
            while self.epoch < config.epochs:
                stage = self.stage(self.epoch)
                train_loss = self.train_epoch(*self.stages[stage])
                fevals = _as_int(self.model.last_stats)
                self.epoch += 1
                self.seconds = time.perf_counter() - started
                if self.epoch % config.eval_every == 0 or self.epoch == config.epochs:
                    val_loss = self.validation_loss()
                    self.record(stage, train_loss, val_loss, fevals)
                    bar.update(self.epoch, train_loss, val_loss,
                               stage_label(stage, len(self.stages), *self.stages[stage]))
                    if self.bad_epochs >= (config.patience or math.inf):
                        status = "early-stopped"
                        message = (f"validation loss did not improve for {self.bad_epochs} "
                                   f"epochs; best at epoch {self.best_epoch}")
                        break
                if self.epoch % config.checkpoint_every == 0:
                    last_good = self.snapshot()
                    self.save(last_good)
        except (_Diverged, SolveFailedError) as error:
            reason = str(error).splitlines()[0]
            status = "diverged"
            message = (f"training diverged at epoch {self.epoch + 1} ({reason}); kept the "
                       f"weights of epoch {last_good['epoch']}")
            self.model.load_state_dict(last_good["model"])
            if self.best_epoch < 0:
                self.best_weights = last_good["model"]
                self.best_initial_offsets = last_good["initial_offsets"]
        except KeyboardInterrupt:
            status, message = "interrupted", f"interrupted at epoch {self.epoch}"
        finally:
            bar.close()
        if self.best_epoch < 0 and status != "diverged":
            self.best_weights = copy.deepcopy(self.model.state_dict())
            self.best_initial_offsets = self.initial_offsets.detach().clone()
            self.best_epoch = self.epoch
        if status != "diverged":
            self.save(self.snapshot())
        return status, message

    def record(self, stage: int, train_loss: float, val_loss: float, fevals: int) -> None:
        row = (self.epoch, stage, *self.stages[stage], train_loss, val_loss,
               self.optimizer.param_groups[0]["lr"], fevals, self.seconds)
        self.history.append(dict(zip(HISTORY_COLUMNS, row, strict=True)))
        if stage < len(self.stages) - 1 or math.isnan(val_loss):
            return
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_weights = copy.deepcopy(self.model.state_dict())
            self.best_initial_offsets = self.initial_offsets.detach().clone()
        else:
            self.bad_epochs += self.config.eval_every

    def snapshot(self) -> dict[str, Any]:
        return {"format": 1, "epoch": self.epoch,
                "model": copy.deepcopy(self.model.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "history": list(self.history),
                "initial_offsets": self.initial_offsets.detach().clone(),
                "segment_offsets": self.segment_offsets.detach().clone(),
                "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                "best_weights": copy.deepcopy(self.best_weights),
                "best_initial_offsets": self.best_initial_offsets.clone(),
                "bad_epochs": self.bad_epochs, "seconds": self.seconds}

    def save(self, snapshot: dict[str, Any]) -> None:
        if self.run_dir is not None:
            save_checkpoint(self.run_dir, CHECKPOINT, snapshot)
            write_metrics(self.run_dir, snapshot["history"])

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.scheduler.load_state_dict(snapshot["scheduler"])
        self.generator.set_state(snapshot["generator"])
        with torch.no_grad():
            self.initial_offsets.copy_(snapshot["initial_offsets"])
            if "segment_offsets" in snapshot:
                self.segment_offsets.copy_(snapshot["segment_offsets"])
        self.epoch, self.history = snapshot["epoch"], list(snapshot["history"])
        self.best_val_loss, self.best_epoch = snapshot["best_val_loss"], snapshot["best_epoch"]
        self.best_weights, self.bad_epochs = snapshot["best_weights"], snapshot["bad_epochs"]
        # checkpoints written before the estimated initial states were kept with the weights
        self.best_initial_offsets = snapshot.get("best_initial_offsets",
                                                 snapshot["initial_offsets"]).clone()
        self.seconds = snapshot["seconds"]

    def initial_states(self) -> torch.Tensor:
        """The training trajectories' initial states [N, D] (float64, scaled units) that go
        with the kept weights: the first observations plus the learned offsets."""
        first = torch.as_tensor(self.train.initial_states(), dtype=torch.float64)
        return first + self.best_initial_offsets.detach().to(torch.float64)


def _finite(loss: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(loss):
        raise _Diverged(f"the loss became {loss.item()}")
    return loss


def write_initial_states(run_dir: RunDirectory, train: Trajectories, states: np.ndarray) -> None:
    """`INITIAL_STATES` in `run_dir`: id, first time and initial state [N, D] (user units) of
    each training trajectory (written atomically)."""
    table = pd.DataFrame(states, columns=list(train.state_names))
    table.insert(0, "t", [float(t[0]) for t in train.times])
    table.insert(0, "id", list(train.ids))
    with run_dir.writing(INITIAL_STATES) as tmp:
        table.to_csv(tmp, index=False)


def write_metrics(run_dir: RunDirectory, history: list[dict[str, Any]]) -> None:
    """metrics.csv: one row per evaluation (written atomically)."""
    with run_dir.writing("metrics.csv") as tmp:  # the header even before the first row
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(tmp, index=False)


def _as_int(stats: Any) -> int:
    if stats is None:
        return 0
    fevals = stats.num_fevals
    return int(fevals.max()) if isinstance(fevals, torch.Tensor) else int(fevals)
