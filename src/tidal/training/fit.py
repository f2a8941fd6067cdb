"""`fit`: train a `NeuralODE` on trajectories with a horizon curriculum (and optionally a
multiple-shooting stage), through the shared training loop (`trainer.py`: early stopping,
checkpoints that resume exactly, a clean stop on divergence or Ctrl-C)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
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
from tidal.distributed import World
from tidal.models import NeuralODE
from tidal.models.augmented import extra_states
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
from tidal.training.config import AUTO_BATCH_LIMIT, TrainConfig
from tidal.training.progress import stage_label
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import FINAL_STATES, LoopSettings, finite
from tidal.training.trainer import train as train_loop


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


#: Batches `TrajectoryObjective.batch` keeps (the most recently used).
_CACHED_BATCHES = 8


def fit(model: NeuralODE, train: Trajectories, *, val: Trajectories | None = None,
        config: TrainConfig | None = None, scaling: Scaling | None = None,
        run_dir: str | Path | RunDirectory | None = None, resume: bool = False,
        progress: bool = True, initial_states: np.ndarray | None = None) -> FitResult:
    """Fit `model` so its trajectories from each training trajectory's first state pass
    through the observations (mean squared error over observed entries, in scaled units).

    Args:
        model: a `NeuralODE` (or `HamiltonianNN`, `UDE`); trained in place.
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
        initial_states: [N, D] (user units) to start the training trajectories' estimated
            initial states from, e.g. an earlier fit's `FitResult.initial_states`; default
            their first observations.

    Returns:
        A `FitResult`. Divergence (a non-finite loss or a failed solve) and Ctrl-C do not
        raise: training stops, the model keeps its last good weights, and the status and
        message say what happened; the checkpoint on disk is the last good one.
    """
    config = TrainConfig() if config is None else config
    _check_arguments(model, train, val, config)
    if resume and run_dir is None:
        raise InvalidArgumentError("`fit(resume=True)` needs the `run_dir` to resume from.")
    dtype = getattr(torch, config.dtype)
    model.to(dtype)
    _check_model_fits_data(model, train, dtype)
    if initial_states is not None and not np.isfinite(np.asarray(initial_states, float)).all():
        raise InvalidArgumentError(
            "`fit(initial_states=...)` contains NaN or infinite values; every initial state "
            "must be finite (leave it out to start from the first observations).")
    scaling = scaling or Scaling.fit(train)
    world = World.current()  # under torchrun only rank 0 writes; the others read its run
    folder = None if run_dir is None or isinstance(run_dir, RunDirectory) else run_dir
    run = run_dir if isinstance(run_dir, RunDirectory) else None
    previous = None  # the run's state before this call
    if folder is not None and world.leader:
        run = RunDirectory.open_or_create(folder, "neural-ode", command="fit")
        previous = run.state
        run.take_over()
    world.barrier()
    if folder is not None and not world.leader:
        run = RunDirectory.open(folder, "neural-ode")
    try:
        objective = TrajectoryObjective(model, train.scaled(scaling),
                                        val.scaled(scaling) if val else None, config, dtype)
        if initial_states is not None:
            objective.start_initial_states(scaling.scale_values(np.asarray(initial_states)))
        outcome = train_loop(objective, loop_settings(config), run_dir=run, resume=resume,
                             progress=progress)
    except BaseException:
        # an error leaves the run as it was (a finished run stays finished), else interrupted;
        # never "running" for a process that has moved on
        if run is not None and world.leader:
            run.set_state(previous if previous is not None and previous in FINAL_STATES.values()
                          else "interrupted")
        raise
    model.load_state_dict(outcome.kept["model"])
    initial_states = scaling.unscale_values(
        objective.initial_states(outcome.kept["initial_offsets"])).numpy()
    if run is not None and world.leader:
        write_initial_states(run, train, initial_states)
    if run is not None and folder is not None and world.leader:
        run.set_state(FINAL_STATES[outcome.status])
    return FitResult(model, scaling, outcome.history, outcome.status, outcome.message,
                     outcome.best_round, outcome.best_val_loss, config, initial_states)


def validation_loss(model: NeuralODE, train: Trajectories, val: Trajectories,
                    config: TrainConfig, scaling: Scaling,
                    initial_states: np.ndarray | None = None) -> float:
    """`model`'s validation loss as `fit` measures it (`TrajectoryObjective.validation_loss`),
    with the training trajectories' estimated `initial_states` [N, D] (user units; default
    their first observations)."""
    objective = TrajectoryObjective(model, train.scaled(scaling), val.scaled(scaling), config,
                                    getattr(torch, config.dtype))
    if initial_states is not None:
        objective.start_initial_states(scaling.scale_values(np.asarray(initial_states)))
    return objective.validation_loss()


def loop_settings(config: TrainConfig) -> LoopSettings:
    """The shared loop's settings for `config`: a cosine decay to lr / 100 after a warm-up."""
    return LoopSettings(rounds=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                        schedule=config.schedule, warmup=True, floor=0.01,
                        eval_every=config.eval_every, record_every=config.eval_every,
                        checkpoint_every=config.checkpoint_every, patience=config.patience,
                        grad_clip=config.grad_clip, seed=config.seed)


def _check_arguments(model: Any, train: Any, val: Any, config: Any) -> None:
    """The types of `fit`'s main arguments, before anything runs or is written."""
    if not isinstance(model, NeuralODE):
        raise InvalidArgumentError(
            f"`fit(model=...)` must be a tidal.NeuralODE (or HamiltonianNN, UDE); got "
            f"{type(model).__name__}. Wrap a vector field in one: NeuralODE(tidal.nn.MLP(d)).")
    for name, value in (("train", train), ("val", val)):
        if not isinstance(value, Trajectories) and not (name == "val" and value is None):
            raise InvalidArgumentError(
                f"`fit({name}=...)` must be a tidal.Trajectories; got {type(value).__name__}. "
                "Read a table with tidal.read_table(path) or build one with "
                "tidal.Trajectories(times, values).")
    if val is not None and list(val.state_names) != list(train.state_names):
        raise InvalidArgumentError(
            f"`fit(val=...)` has the state(s) {list(val.state_names)} but the training data "
            f"has {list(train.state_names)}; validation trajectories must hold the same "
            "states, in the same order.")
    if not isinstance(config, TrainConfig):
        hint = (" Build one from the dict: TrainConfig(**config)."
                if isinstance(config, dict) else "")
        raise InvalidArgumentError(
            f"`fit(config=...)` must be a tidal.TrainConfig; got {type(config).__name__}.{hint}")


def _check_model_fits_data(model: NeuralODE, train: Trajectories, dtype: torch.dtype) -> None:
    """One call of the vector field on a state of the training data's size (with the model's
    extra states, if any) at the scaled data's centre, so that a model built for another
    number of states fails here, with the data's size, not inside torch. (A call, not a
    solve: nothing is compiled or stepped.)"""
    d = train.n_states
    y = torch.zeros(1, d + extra_states(model), dtype=dtype)
    try:
        with torch.no_grad():
            model.vector_field(torch.zeros((), dtype=dtype), y)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"`fit(model=...)` cannot take the training data's states: the data has {d} "
            f"state(s) {list(train.state_names)}, and the model's vector field raised "
            f"{type(error).__name__}: {str(error).splitlines()[0]} on a state of shape "
            f"{tuple(y.shape)}. Build the model for {d} state(s), e.g. "
            f"NeuralODE(tidal.nn.MLP({d})).") from None


class TrajectoryObjective:
    """Fitting trajectories, for the shared loop: one round is an epoch over the training
    trajectories in mini-batches, through the curriculum's stages (a multiple-shooting stage
    first when asked); the estimated initial states are trained with the model.

    Under torchrun each rank computes the trajectories of every batch it owns (`World.shard`)
    and hands `step` its share of the batch's loss (`share`); the initial states of trajectory i
    (and its segments') are owned by the rank that owns i."""

    unit = "epoch"
    shards = True
    columns: tuple[str, ...] = ("stage", "horizon", "segments", "train_loss", "val_loss", "lr",
                                "num_fevals", "seconds")

    def __init__(self, model: NeuralODE, train: Trajectories, val: Trajectories | None,
                 config: TrainConfig, dtype: torch.dtype) -> None:
        self.model, self.train, self.val = model, train, val
        self.config, self.dtype = config, dtype
        self.batch_size = min(config.batch_size or AUTO_BATCH_LIMIT, len(train))
        self.batches_per_epoch = self.steps_per_round = math.ceil(len(train) / self.batch_size)
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
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self.world = World.current()
        # Held out in time: validate each series' continuation from its estimated start.
        self.val_continued = continuations(train, val)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        exempt = {id(p) for module in self.model.modules()
                  for p in getattr(module, "undecayed_parameters", list)()}
        groups = [{"params": [p for p in self.model.parameters() if id(p) not in exempt],
                   "weight_decay": weight_decay}]
        if exempt:
            groups.append({"params": [p for p in self.model.parameters() if id(p) in exempt],
                           "weight_decay": 0.0})
        if self.config.learn_initial_states:
            groups.append({"params": [self.initial_offsets], "weight_decay": 0.0})
        if self.config.shooting_segments > 1:
            groups.append({"params": [self.segment_offsets], "weight_decay": 0.0})
        return groups

    def stage(self, epoch: int) -> int:
        stages = len(self.stages)
        return min(epoch * stages // self.config.epochs, stages - 1)

    def counts_for_best(self, index: int) -> bool:
        return self.stage(index) == len(self.stages) - 1

    def label(self, index: int) -> str:
        stage = self.stage(index)
        return stage_label(stage, len(self.stages), *self.stages[stage])

    def state(self) -> dict[str, torch.Tensor]:
        return {"initial_offsets": self.initial_offsets,
                "segment_offsets": self.segment_offsets}

    def owned_rows(self, world: World) -> dict[str, torch.Tensor]:
        trajectories = torch.arange(len(self.train)) % world.size == world.rank
        segment_owner = torch.repeat_interleave(trajectories, torch.tensor(
            [b - a for a, b in zip(self.segment_base, self.segment_base[1:])]))
        return {"initial_offsets": trajectories, "segment_offsets": segment_owner}

    def load_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.initial_offsets.copy_(state["initial_offsets"])
            if "segment_offsets" in state:
                self.segment_offsets.copy_(state["segment_offsets"])

    def start_initial_states(self, states: np.ndarray) -> None:
        """Start the estimated initial states at `states` [N, D] (scaled units)."""
        first = self.train.initial_states()
        if np.shape(states) != first.shape:
            raise InvalidArgumentError(
                f"`fit(initial_states=...)`: shape {np.shape(states)}, but the training data "
                f"has {first.shape[0]} trajectories of {first.shape[1]} states; give one "
                "initial state per training trajectory.")
        with torch.no_grad():
            self.initial_offsets.copy_(torch.as_tensor(states - first, dtype=self.dtype))

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

        result: tuple[Segments, torch.Tensor] = self._cached(("segments", indices), build)
        return result

    def loss(self, batch: Batch, indices: tuple[int, ...] | None = None) -> torch.Tensor:
        y0 = batch.y0 if indices is None else batch.y0 + self.initial_offsets[list(indices)]
        return finite(masked_mse(self.model(y0, batch.ts), batch))

    def shooting_loss(self, indices: tuple[int, ...],
                      counts: tuple[int, int] | None = None) -> torch.Tensor:
        """The observations' MSE over all segments plus the weighted continuity gaps; with the
        global batch's `counts` (observed entries, gap entries), this rank's share of it."""
        pieces, rows = self.segments(indices)
        y0 = pieces.batch.y0 + torch.cat([self.initial_offsets, self.segment_offsets])[rows]
        prediction = self.model(y0, pieces.batch.ts)
        mse, gaps = masked_mse(prediction, pieces.batch), continuity_mse(prediction, y0, pieces)
        if counts is not None:
            mse = mse * pieces.batch.mask.sum() / max(counts[0], 1)
            gaps = gaps * pieces.link_row.numel() * y0.shape[-1] / max(counts[1], 1)
        return finite(mse + self.config.shooting_weight * gaps)

    def share(self, horizon: float, segments: int, indices: tuple[int, ...]) -> torch.Tensor:
        """This rank's share of the loss of the global batch `indices`: the loss of the
        trajectories it owns, reweighted by their part of the batch's observed (and gap)
        entries, so that the ranks' shares sum to the one-process loss. Zero (no graph) when
        it owns none of them."""
        mine = self.world.shard(indices)
        if not mine:
            return torch.zeros((), dtype=self.dtype)
        observed = self._cached(("observed", horizon, indices), lambda: sum(
            int(mask.sum()) for mask in window(self.train[list(indices)], horizon).masks))
        if segments > 1:
            links = sum(self.segment_base[i + 1] - self.segment_base[i] for i in indices)
            return self.shooting_loss(mine, (observed, links * self.train.n_states))
        batch = self.batch(self.train, horizon, mine)
        return self.loss(batch, mine) * batch.mask.sum() / max(observed, 1)

    def train_round(self, index: int, step: Callable[[torch.Tensor], float],
                    generator: torch.Generator) -> dict[str, float]:
        stage = self.stage(index)
        horizon, segments = self.stages[stage]
        order = torch.randperm(len(self.train), generator=generator).tolist()
        if self.batch_size == len(self.train):
            order = sorted(order)
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            indices = tuple(sorted(order[start:start + self.batch_size]))
            if self.world.distributed:
                loss = self.share(horizon, segments, indices)
            elif segments > 1:
                loss = self.shooting_loss(indices)
            else:
                loss = self.loss(self.batch(self.train, horizon, indices), indices)
            total += step(loss) * len(indices)
        fevals = torch.tensor(float(_as_int(self.model.last_stats)), dtype=torch.float64)
        return {"stage": stage, "horizon": horizon, "segments": segments,
                "train_loss": total / len(self.train),
                # under torchrun: the sum of the ranks' last solves (one reduction per epoch)
                "num_fevals": int(self.world.sum(fevals))}

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The masked MSE over every validation observation, in batches of `batch_size` (under
        torchrun each rank takes its trajectories of each batch and the sums are added up; a
        solve that fails on one rank makes it NaN on all). Validation series that continue the
        training ones (`continuations`) are predicted from the training series' estimated
        initial states; others from their own first observations."""
        if self.val is None:
            return math.nan
        total, count = torch.zeros((), dtype=self.dtype), torch.zeros((), dtype=torch.long)
        try:
            for start in range(0, len(self.val), self.batch_size):
                indices = self.world.shard(range(start, min(start + self.batch_size,
                                                            len(self.val))))
                if not indices:
                    continue
                if self.val_continued is None:
                    batch = self.batch(self.val, 1.0, indices)
                    y0 = batch.y0
                else:
                    batch = self._cached(("continued", tuple(indices)), functools.partial(
                        self._continued, self.val_continued, tuple(indices)))
                    y0 = batch.y0 + self.initial_offsets[list(indices)]
                errors, observed = masked_sse(self.model(y0, batch.ts), batch)
                total, count = total + errors, count + observed
        except SolveFailedError:
            if not self.world.distributed:
                raise
            total = torch.full((), math.nan, dtype=self.dtype)
        if self.world.distributed:
            total, count = self.world.sum(torch.stack([total, count.to(self.dtype)]))
        return float(finite(total / count.clamp_min(1)).item())

    def _continued(self, continued: Trajectories, indices: tuple[int, ...]) -> Batch:
        """The training series `indices` carried on through their validation rows, observed
        after the training rows only."""
        ends = torch.as_tensor([self.train.times[i][-1] for i in indices])
        return later_rows(make_batch(continued[list(indices)], self.dtype), ends)

    def initial_states(self, offsets: torch.Tensor) -> torch.Tensor:
        """The training trajectories' initial states [N, D] (float64, scaled units) for the
        kept `offsets`: the first observations plus the learned offsets."""
        first = torch.as_tensor(self.train.initial_states(), dtype=torch.float64)
        return first + offsets.detach().to(torch.float64)


def continuations(train: Trajectories, val: Trajectories | None) -> Trajectories | None:
    """When `val` holds the training series' later parts (a split in time,
    `tidal.training.time_split`: the same ids, each starting at its training series' last
    time), each training series followed by its validation observations; else None. The
    validation loss counts only the rows after the training series' end (`later_rows`).

    Validated this way, a model is judged on what a fitted series is for, carrying the series
    on from its (estimated) initial state past the training window, rather than on a short
    forecast from the noisy observation at the window's end: a field that has collapsed onto
    a fixed point near the data's mean forecasts a few steps from an observed state well, but
    carries the series on badly (measured on Lotka-Volterra, docs/benchmarks.md).
    """
    if val is None or list(val.ids) != list(train.ids) or any(
            v[0] != t[-1] for t, v in zip(train.times, val.times)):
        return None
    return Trajectories([np.concatenate((t, v[1:])) for t, v in zip(train.times, val.times)],
                        [np.concatenate((a, b[1:])) for a, b in zip(train.values, val.values)],
                        ids=val.ids, state_names=val.state_names)


def later_rows(batch: Batch, ends: torch.Tensor) -> Batch:
    """`batch` observed only after each trajectory's time in `ends` [B]."""
    later = batch.ts[:, None] > ends if batch.ts.dim() == 1 else batch.ts > ends
    return dataclasses.replace(batch, mask=batch.mask & later[..., None])


def write_initial_states(run_dir: RunDirectory, train: Trajectories, states: np.ndarray) -> None:
    """`INITIAL_STATES` in `run_dir`: id, first time and initial state [N, D] (user units) of
    each training trajectory (written atomically)."""
    table = pd.DataFrame(states, columns=list(train.state_names))
    table.insert(0, "t", [float(t[0]) for t in train.times])
    table.insert(0, "id", list(train.ids))
    with run_dir.writing(INITIAL_STATES) as tmp:
        table.to_csv(tmp, index=False)


def _as_int(stats: Any) -> int:
    if stats is None:
        return 0
    fevals = stats.num_fevals
    return int(fevals.max()) if isinstance(fevals, torch.Tensor) else int(fevals)
