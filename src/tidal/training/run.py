"""A run directory: everything needed to use, check and continue a trained model.

    tidal-run.json   the marker: kind, state, the files tidal wrote (see run_directory.py)
    config.json      model config, scaling, training config, data description, version
    model.pt         the kept weights (a state_dict), written when training ends
    checkpoint.pt    the training state, for `fit(..., resume=True)`
    metrics.csv      the loss curve
    data/            the train, validation and test trajectories (CSV)
    report.html, *.png, metrics.json   written by `tidal.report`

Every file is written to a temporary name and renamed. Loading reads JSON, CSV and
`torch.load(weights_only=True)` only: nothing in a run directory can execute code, and
config.json is checked against a schema (run_schema.py) before anything is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.data import SYSTEMS, Scaling, System, Trajectories, read_table, write_table
from tidal.models import NeuralODE
from tidal.models.augmented import extra_states
from tidal.models.registry import model_from_config
from tidal.training.checkpoint import build_with_weights, kept_weights, save_checkpoint
from tidal.training.config import TrainConfig
from tidal.training.run_directory import RunDirectory
from tidal.training.run_schema import RUN_CONFIG, read_checked

CONFIG = "config.json"
WEIGHTS = "model.pt"
SPLITS = ("train", "val", "test")
KIND = "neural-ode"


@dataclass
class Run:
    """A trained model with its scaling and the description of its data.

    `predict` works in the user's units; `model` itself works in scaled units. `notice` says,
    for a run whose training did not finish, which weights these are (None when it finished).
    """

    path: Path
    model: NeuralODE
    scaling: Scaling
    config: dict[str, Any]
    directory: RunDirectory
    notice: str | None = None

    @property
    def state_names(self) -> list[str]:
        return list(self.config["data"]["state_names"])

    @property
    def system(self) -> System | None:
        """The built-in system the data was simulated from, when known."""
        name = self.config["data"].get("system")
        return SYSTEMS.get(name)

    def data(self, split: str) -> Trajectories | None:
        """The run's "train", "val" or "test" trajectories (None when that split is empty)."""
        return read_split(self.directory, split, self.state_names)

    def training_data(self) -> Trajectories:
        """The run's training trajectories."""
        return read_train(self.directory, self.state_names)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model's weights (and so its states) are in."""
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def predict(self, y0: Any, ts: Any) -> np.ndarray:
        """States at times `ts` [T] from initial states `y0` [D] or [B, D], in the user's units.

        Returns [T, D] or [T, B, D].
        """
        y0, ts = _numbers(y0, "y0"), _numbers(ts, "ts")
        y0 = torch.tensor(y0, dtype=self.dtype)  # copied: may be read-only
        if y0.dim() not in (1, 2) or y0.shape[-1] != len(self.state_names):
            raise InvalidArgumentError(
                f"`predict(y0=...)`: expected {len(self.state_names)} states "
                f"({', '.join(self.state_names)}) per initial state; got shape "
                f"{tuple(y0.shape)}.")
        if ts.ndim != 1:
            raise InvalidArgumentError(
                f"`predict(ts=...)`: expected one list of times [T]; got shape {ts.shape}.")
        scaled = self.model(self.scaling.scale_values(y0),
                            torch.tensor(self.scaling.scale_times(ts)))
        return self.scaling.unscale_values(scaled).numpy()


def _numbers(values: Any, name: str) -> np.ndarray:
    """`values` as a float64 array; an error naming `predict`'s argument when they are not
    numbers."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"`predict({name}=...)` must hold numbers; got "
                                   f"{type(values).__name__} ({error}).") from None


def save_run(path: str | Path | RunDirectory, model: NeuralODE, scaling: Scaling, *,
             data: dict[str, Any], train_config: dict[str, Any],
             splits: dict[str, Trajectories | None] | None = None,
             outcome: dict[str, Any] | None = None, state: str = "finished") -> RunDirectory:
    """Write the data splits (when given), model.pt and config.json into a run directory (a
    new or empty folder, or a run already there) and record its `state`."""
    run = (path if isinstance(path, RunDirectory)
           else RunDirectory.open_or_create(path, KIND, command="save_run"))
    write_splits(run, splits or {})
    save_checkpoint(run, WEIGHTS, model.state_dict())
    write_config(run, model, scaling, data=data, train_config=train_config, outcome=outcome)
    run.set_state(state)
    return run


def write_config(run: RunDirectory, model: NeuralODE, scaling: Scaling, *,
                 data: dict[str, Any], train_config: dict[str, Any],
                 outcome: dict[str, Any] | None = None) -> None:
    from tidal import __version__

    run.write_json(CONFIG, {"tidal_version": __version__, "model": model.config(),
                            "scaling": scaling.to_dict(), "train": train_config,
                            "data": data, "fit": outcome or {}})


def write_splits(run: RunDirectory, splits: dict[str, Trajectories | None]) -> None:
    for split, trajectories in splits.items():
        if trajectories is not None:
            write_table(trajectories, run.claim(f"data/{split}.csv"), time="t", id="id")


def read_split(run: RunDirectory, split: str, state_names: list[str]) -> Trajectories | None:
    """The run's trajectories of `split` (None for an empty "val" or "test"; the training
    split must be there)."""
    if f"data/{split}.csv" not in run.files and split != "train":
        return None
    return read_train(run, state_names) if split == "train" else _read(run, split, state_names)


def read_train(run: RunDirectory, state_names: list[str]) -> Trajectories:
    """The run's training trajectories (every run has them)."""
    return _read(run, "train", state_names)


def _read(run: RunDirectory, split: str, state_names: list[str]) -> Trajectories:
    return read_table(run.file(f"data/{split}.csv"), time="t", id="id", states=state_names)


def load_run(path: str | Path) -> Run:
    """Rebuild a run's model from config.json and its weights (no code from the files runs).

    A run whose training did not finish (interrupted, diverged, killed or still running) loads
    the weights it kept (model.pt, or the last checkpoint's when it was killed) and says which
    in `Run.notice`; one killed before its first checkpoint has no trained weights and is
    refused.
    """
    run = RunDirectory.open(path, KIND)
    if CONFIG not in run.files:
        raise InvalidArgumentError(
            f"`load_run({str(path)!r})`: the run has no {CONFIG} describing its model; "
            "`tidal.fit(run_dir=...)` keeps only checkpoints and metrics there. Save the "
            "fitted model into it with tidal.training.save_run(run_dir, result.model, "
            "result.scaling, data={'state_names': [...]}, train_config=result.config"
            ".to_dict()), or train with tidal.training.train_run, which writes a whole run.")
    config = read_config(run)
    ensemble = config["model"].get("type") == "Ensemble"  # keeps no checkpoints
    weights, weights_file, notice = kept_weights(
        run, WEIGHTS, config["fit"].get("message", ""),
        f"tidal fit --overwrite -o {run.path}" if ensemble
        else f"tidal fit --resume -o {run.path}")
    model = build_model(config, run.path / CONFIG, weights=weights, weights_file=weights_file)
    if notice is not None:
        config = {**config, "fit": {**config["fit"], "status": run.state, "message": notice}}
    return Run(run.path, model.eval(), Scaling.from_dict(config["scaling"]), config, run,
               notice)


def read_config(run: RunDirectory) -> dict[str, Any]:
    """config.json, checked against the schema and for consistency."""
    path = run.file(CONFIG)
    config = read_checked(path, RUN_CONFIG)
    names = config["data"]["state_names"]
    scaling = config["scaling"]
    system = config["data"].get("system")
    problems = scaling_and_training_problems(scaling, names, config["train"])
    if system is not None and len(SYSTEMS[system].state_names) != len(names):
        problems.append(f"system {system!r} has {len(SYSTEMS[system].state_names)} states, "
                        f"the data {len(names)}")
    raise_if_damaged(path, problems)
    return config


def scaling_and_training_problems(scaling: dict[str, Any], names: list[str],
                                  train: dict[str, Any]) -> list[str]:
    """What is inconsistent in a config.json's scaling (one offset and scale per state) and
    training section (`TrainConfig.from_dict`)."""
    problems = []
    if not len(scaling["state_offset"]) == len(scaling["state_scale"]) == len(names):
        problems.append(f"scaling has {len(scaling['state_offset'])} offsets and "
                        f"{len(scaling['state_scale'])} scales for {len(names)} states")
    try:
        TrainConfig.from_dict(train)
    except InvalidArgumentError as error:
        problems.append(f"train: {error}")
    return problems


def raise_if_damaged(path: Path, problems: list[str]) -> None:
    """One line naming `path` and the first of `problems`, if any."""
    if problems:
        raise InvalidArgumentError(f"{path}: {problems[0]} (the file was edited or damaged; "
                                   "start the run again with --overwrite).")


def build_model(config: dict[str, Any], where: Path, *,
                weights: dict[str, torch.Tensor] | None = None,
                weights_file: Path | None = None) -> NeuralODE:
    """The model config.json (`where`) describes, with `weights` (read from `weights_file`)
    loaded, checked before allocation (`build_with_weights`) and after (it must take the data's
    states)."""
    model = build_with_weights(lambda: model_from_config(config["model"]), where, weights,
                               weights_file)
    _check_dimension(model, len(config["data"]["state_names"]), where)
    return model


def _check_dimension(model: NeuralODE, n_states: int, where: Path) -> None:
    """The model maps a state of the data's size to a rate of the same size."""
    dtype = next(model.parameters(), torch.zeros((), dtype=torch.float64)).dtype
    y = torch.zeros(1, n_states + extra_states(model), dtype=dtype)
    try:
        with torch.no_grad():
            rate = model.vector_field(torch.zeros((), dtype=dtype), y)
        ok = rate.shape == y.shape
    except (RuntimeError, IndexError, ValueError):
        ok = False
    if not ok:
        raise InvalidArgumentError(f"{where}: model: it does not take the data's {n_states} "
                                   "states (the file was edited or damaged).")
