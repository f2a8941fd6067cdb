"""One training loop for every model kind.

`train` owns what every kind of fitting shares: the AdamW optimizer, the learning-rate
schedule, gradient clipping, early stopping and the kept (best validation) weights, checkpoints
that resume exactly, the clean stop on divergence or Ctrl-C, and the progress bar. What differs
between kinds is an `Objective`: the parameters it adds to the model's, one *round* of
optimizer steps (an epoch over trajectories for `fit`, one minibatch for `fit_flow`), the
validation loss and the state a checkpoint must hold to continue it.

A checkpoint (`checkpoint.pt`) holds the model, optimizer and scheduler states, the batch-order
generator, torch's global generator (for objectives that draw from it; flows and score models
draw from `batches.step_generator(seed, step)` instead), the history, the kept weights and the
objective's own state; metrics.csv holds the history. A resumed run reproduces
the uninterrupted one exactly.

Under torchrun (`torch.distributed` initialised) the same loop trains data-parallel
(`tidal.training.distributed`): the objective computes each rank's share of the global batch,
one all-reduce per step sums the gradients, only rank 0 writes, and a checkpoint holds the
complete state, so it resumes on any number of ranks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.distributed import World
from tidal.training import distributed
from tidal.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from tidal.training.progress import Progress
from tidal.training.run_directory import RunDirectory

#: The run directory's state for each way training ends.
FINAL_STATES = {"finished": "finished", "early-stopped": "finished",
                "interrupted": "interrupted", "diverged": "diverged"}
#: The history file of every run (one row per recorded round).
METRICS = "metrics.csv"


class Diverged(Exception):
    """Training cannot continue: a non-finite loss or gradient."""


def finite(loss: torch.Tensor) -> torch.Tensor:
    """`loss`, or `Diverged` when it is NaN or infinite."""
    if not torch.isfinite(loss):
        raise Diverged(f"the loss became {loss.item()}")
    return loss


@dataclass(frozen=True)
class LoopSettings:
    """How the shared loop trains (each fitting function fills it from its own options).

    rounds: rounds of optimizer steps (epochs for `fit`, steps for `fit_flow`).
    schedule: "cosine" (from lr down to `floor` x lr, after a warm-up of 1/50 of the steps when
        `warmup`) or "constant".
    eval_every: rounds between validation losses (and the early-stopping count).
    record_every: rounds between history rows (and progress updates).
    checkpoint_every: rounds between checkpoints (kept in memory as the last good state even
        without a run directory; also written at the end and on Ctrl-C).
    patience: stop when the validation loss has not improved for this many rounds.
    grad_clip: clip the model's gradient norm (None: no clipping).
    """

    rounds: int
    lr: float
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: bool = False
    floor: float = 0.0
    eval_every: int = 1
    record_every: int = 1
    checkpoint_every: int = 25
    patience: int | None = None
    grad_clip: float | None = None
    seed: int = 0


class Step(Protocol):
    """The loop's optimizer step, handed to `Objective.train_round`: backward of `loss`, clip,
    optimizer and schedule step; returns the loss's value (under torchrun the sum of the ranks'
    shares). `reported` [k] (a sharded objective's `step_reports`: this rank's shares of
    numbers it records) is summed over the ranks in place, in the step's one all-reduce."""

    def __call__(self, loss: torch.Tensor, reported: torch.Tensor | None = None) -> float: ...


class Objective(Protocol):
    """What one kind of fitting supplies to `train`.

    Attributes:
        model: the module trained (its state_dict is what a checkpoint and the kept weights
            hold).
        unit: "epoch" or "step": what one round is, in messages, the history's first column
            and the progress bar.
        columns: the history's columns after the unit, in order; the loop fills "val_loss",
            "lr" and "seconds", the objective the others from `train_round`.
        steps_per_round: optimizer steps per round (the schedule's length is rounds times it).
    """

    @property
    def model(self) -> nn.Module: ...

    @property
    def unit(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    @property
    def steps_per_round(self) -> int: ...

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW's parameter groups: the model's and the objective's own (e.g. estimated
        initial states)."""
        ...

    def train_round(self, index: int, step: Step, generator: torch.Generator
                    ) -> dict[str, float]:
        """Round `index` (0-based): compute losses and hand each to `step` (backward, clip,
        optimizer and schedule step), which returns the loss's value (under torchrun: the sum of
        the ranks' shares, see `shards`); return the row's values (at least "train_loss").
        `generator` orders the batches."""
        ...

    def validation_loss(self) -> float:
        """The validation loss (NaN without validation data)."""
        ...

    def counts_for_best(self, index: int) -> bool:
        """Whether round `index`'s validation loss may choose the kept weights (e.g. only in
        the curriculum's last stage)."""
        ...

    def label(self, index: int) -> str:
        """The progress bar's description during round `index`."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """The objective's own trained tensors (checkpointed, and kept with the best weights
        under "best_" + name)."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` from a checkpoint."""
        ...


class ShardedObjective(Objective, Protocol):
    """An objective that trains data-parallel under torchrun: each rank hands `step` its share
    of the global batch's loss (the shares sum to the one-process loss), and the rows of its own
    trained tensors (`state()`) are owned by ranks (`owned_rows`). An objective may also hand
    `step` the numbers named by `step_reports` (optional attribute; none by default)."""

    shards: bool

    def owned_rows(self, world: World) -> dict[str, torch.Tensor]:
        """For each owned tensor of `state()`, a bool mask of the rows `world.rank` owns."""
        ...


@dataclass
class Outcome:
    """How `train` ended: status ("finished", "early-stopped", "diverged", "interrupted"),
    a one-line message, the history rows and the kept state (model weights under "model",
    the objective's state under its names), from round `best_round` (validation loss
    `best_val_loss`; NaN when nothing validated)."""

    status: str
    message: str
    history: list[dict[str, Any]]
    kept: dict[str, Any]
    best_round: int
    best_val_loss: float


class Trainer:
    """The state of one training run: what a checkpoint holds."""

    def __init__(self, objective: Objective, settings: LoopSettings,
                 run_dir: RunDirectory | None = None) -> None:
        self.objective, self.settings, self.run_dir = objective, settings, run_dir
        self.world = World.current()
        if self.world.distributed and not getattr(objective, "shards", False):
            raise InvalidArgumentError(
                f"{type(objective).__name__} cannot train on several processes (it does not "
                "shard its batches); run it in one process, without torchrun.")
        self.optimizer = torch.optim.AdamW(objective.parameter_groups(settings.weight_decay),
                                           lr=settings.lr)
        # the model's trained parameters, whose gradients the step's all-reduce sums (not its
        # frozen ones, e.g. a score model's EMA copy)
        self._shared = [p for p in objective.model.parameters() if p.requires_grad]
        model_ids = {id(p) for p in objective.model.parameters()}
        self._owned = [p for group in self.optimizer.param_groups for p in group["params"]
                       if id(p) not in model_ids]
        self._reports = len(getattr(objective, "step_reports", ()))
        distributed.broadcast_parameters(self.world, list(objective.model.parameters()))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_loss = math.inf
        self.best_round = -1
        self.kept = self._current()
        self.bad_rounds = 0
        self.seconds = 0.0
        # the generators' states when the current round began: a Ctrl-C inside a round saves
        # these, so the resumed round draws the same batches and probes
        self._round_start = self._random_states()

    def _lr_factor(self, step: int) -> float:
        settings = self.settings
        if settings.schedule == "constant":
            return 1.0
        total = settings.rounds * self.objective.steps_per_round
        warmup = max(1, total // 50) if settings.warmup else 0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return settings.floor + (1 - settings.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def _step(self, loss: torch.Tensor, reported: torch.Tensor | None = None) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        if self.world.distributed:
            value = distributed.reduce_step(self.world, loss, self._shared, self._owned,
                                            reported)
            self._joined = True  # an error from here on is raised on every rank alike
            if not math.isfinite(value):
                raise Diverged("the loss or a gradient became non-finite on some rank")
        else:
            loss.backward()
            value = float(loss.detach())
        if self.settings.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.objective.model.parameters(),
                                                  self.settings.grad_clip)
            if not torch.isfinite(norm):
                raise Diverged("the gradient became non-finite")
        self.optimizer.step()
        self.scheduler.step()
        self._joined = False
        return value

    def _train_round(self, index: int) -> dict[str, float]:
        """The objective's round; under torchrun a loss or solve that fails on this rank
        before the step's all-reduce joins it with NaNs, so every rank stops as diverged
        together."""
        self._joined = False
        try:
            return self.objective.train_round(index, self._step, self.generator)
        except (Diverged, SolveFailedError):
            if self.world.distributed and not self._joined:
                distributed.fail_step(self.world, self._shared, self._reports)
            raise

    def run(self, progress: bool = True,
            stop: Callable[[int, list[dict[str, Any]]], bool | None] | None = None) -> Outcome:
        """Train from `self.round` to `settings.rounds`. `stop(round, history)` after each
        round may end training early (status "early-stopped")."""
        settings, objective, unit = self.settings, self.objective, self.objective.unit
        bar = Progress(settings.rounds, initial=self.round,
                       enabled=progress and self.world.leader, unit=unit)
        last_good = self.snapshot()
        status, message = "finished", f"trained for {settings.rounds} {unit}s"
        started = time.perf_counter() - self.seconds
        try:
            while self.round < settings.rounds:
                index = self.round
                self._round_start = self._random_states()
                row = self._train_round(index)
                self.round += 1
                self.seconds = time.perf_counter() - started
                last = self.round == settings.rounds
                if self.round % settings.eval_every == 0 or last:
                    self._validate(index, row)
                if self.round % settings.record_every == 0 or last:
                    self._record(row)
                    bar.update(self.round, row["train_loss"], row.get("val_loss", math.nan),
                               objective.label(index))
                if self.bad_rounds >= (settings.patience or math.inf):
                    status = "early-stopped"
                    message = (f"validation loss did not improve for {self.bad_rounds} "
                               f"{unit}s; best at {unit} {self.best_round}")
                    break
                if stop is not None and stop(index, self.history):
                    status, message = "early-stopped", f"stopped by the callback at {unit} " \
                                                       f"{self.round}"
                    break
                if self.round % settings.checkpoint_every == 0:
                    last_good = self.snapshot()
                    self.save(last_good)
        except (Diverged, SolveFailedError) as error:
            reason = str(error).splitlines()[0]
            status = "diverged"
            message = (f"training diverged at {unit} {self.round + 1} ({reason}); kept the "
                       f"weights of {unit} {last_good['epoch']}")
            self._load_current(last_good)
            if self.best_round < 0:
                self.kept = self._current()
        except KeyboardInterrupt:
            status, message = "interrupted", f"interrupted at {unit} {self.round}"
        finally:
            bar.close()
        if self.best_round < 0 and status != "diverged":
            self.kept, self.best_round = self._current(), self.round
        if status != "diverged":
            self.save(self.snapshot(self._round_start if status == "interrupted" else None))
        return Outcome(status, message, self.history, self.kept, self.best_round,
                       self.best_val_loss)

    def _validate(self, index: int, row: dict[str, Any]) -> None:
        """Add the validation loss to `row`; keep the weights when it is the best so far."""
        val_loss = self.objective.validation_loss()
        row["val_loss"] = val_loss
        if math.isnan(val_loss) or not self.objective.counts_for_best(index):
            return
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_round, self.bad_rounds = val_loss, self.round, 0
            self.kept = self._current()
        else:
            self.bad_rounds += self.settings.eval_every

    def _record(self, row: dict[str, Any]) -> None:
        values = {**row, self.objective.unit: self.round, "val_loss": row.get("val_loss",
                                                                              math.nan),
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": self.seconds}
        self.history.append({name: values[name] for name in self.columns})

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.objective.unit, *self.objective.columns)

    def _current(self) -> dict[str, Any]:
        """The model's weights and the objective's state (complete: owned rows gathered from
        every rank), copied."""
        if self.world.distributed:
            owned = self.objective.owned_rows(self.world)  # type: ignore[attr-defined]
            state = self.objective.state()
            for name, rows in owned.items():
                distributed.gather_owned(self.world, state[name], rows, self.optimizer)
        return {"model": copy.deepcopy(self.objective.model.state_dict()),
                **{name: value.detach().clone()
                   for name, value in self.objective.state().items()}}

    def _load_current(self, snapshot: dict[str, Any]) -> None:
        self.objective.model.load_state_dict(snapshot["model"])
        self.objective.load_state(snapshot)

    def _random_states(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def snapshot(self, random_states: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, Any]:
        """What checkpoint.pt holds (with `random_states` instead of the generators' current
        ones when given). The round is stored as "epoch" for every unit, as checkpoints
        always have."""
        return {"format": 1, "epoch": self.round, **self._current(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(),
                **(random_states or self._random_states()),
                "history": list(self.history), "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_round, "best_weights": self.kept["model"],
                **{f"best_{name}": value for name, value in self.kept.items()
                   if name != "model"},
                "bad_epochs": self.bad_rounds, "seconds": self.seconds}

    def save(self, snapshot: dict[str, Any]) -> None:
        """Write the checkpoint and metrics.csv (rank 0 only; the other ranks wait)."""
        if self.run_dir is not None and self.world.leader:
            save_checkpoint(self.run_dir, CHECKPOINT, snapshot)
            write_history(self.run_dir, snapshot["history"], self.columns)
        self.world.barrier()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self._load_current(snapshot)
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.scheduler.load_state_dict(snapshot["scheduler"])
        self.generator.set_state(snapshot["generator"])
        if "torch_rng" in snapshot:
            torch.set_rng_state(snapshot["torch_rng"])
        self.round, self.history = snapshot["epoch"], list(snapshot["history"])
        self.best_val_loss, self.best_round = snapshot["best_val_loss"], snapshot["best_epoch"]
        self.bad_rounds, self.seconds = snapshot["bad_epochs"], snapshot["seconds"]
        # older checkpoints may lack the kept (or any) value of a part of the objective's
        # state: then its current value stands in
        current = self._current()
        self.kept = {"model": snapshot["best_weights"],
                     **{name: snapshot.get(f"best_{name}", snapshot.get(name, value)).clone()
                        for name, value in current.items() if name != "model"}}

    def resume(self, run_dir: RunDirectory) -> None:
        """Continue from `run_dir`'s checkpoint.pt."""
        path = run_dir.path / CHECKPOINT
        snapshot = load_checkpoint(path)
        try:
            self.restore(snapshot)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            raise InvalidArgumentError(
                f"{path}: not a checkpoint of this run and model ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}); the file was edited or damaged.") from error


def train(objective: Objective, settings: LoopSettings, *, run_dir: RunDirectory | None = None,
          resume: bool = False, progress: bool = True,
          stop: Callable[[int, list[dict[str, Any]]], bool | None] | None = None) -> Outcome:
    """Train `objective` with `settings`, checkpointing into `run_dir` (and continuing from its
    checkpoint when `resume`). The model is left holding its current weights; the kept ones
    are in the `Outcome`."""
    if resume and run_dir is None:
        raise InvalidArgumentError("`resume=True` needs the `run_dir` to resume from.")
    trainer = Trainer(objective, settings, run_dir)
    if resume:
        assert run_dir is not None
        trainer.resume(run_dir)
    return trainer.run(progress, stop)


def write_history(run_dir: RunDirectory, history: list[dict[str, Any]],
                  columns: tuple[str, ...]) -> None:
    """metrics.csv: one row per recorded round (written atomically; the header even before
    the first row)."""
    with run_dir.writing(METRICS) as tmp:
        pd.DataFrame(history, columns=list(columns)).to_csv(tmp, index=False)

