"""A sequence run directory (`tidal fit --model latent-ode|ode-rnn|cde|gru`): train a sequence
model on a long table of series, save it, load it.

    tidal-run.json  the marker: kind "sequence", state, the files tidal wrote
    config.json     the options, the feature names, the label column and its classes, the
                    features' standardization, the decoder step, the source and the outcome
    data/train.csv, data/val.csv, data/test.csv   the series (user units, with their ids)
    data/labels.csv the label of every series (classification)
    checkpoint.pt   the training state (the shared loop's, trainer.py)
    metrics.csv     one row per epoch
    model.pt        the kept weights (loaded with weights_only=True), written when training ends
    metrics.json, fits.png or confusion.png, report.html   written by `tidal.report.sequence`
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories, read_table, write_table
from tidal.data.sequences import IrregularSeries
from tidal.models import LatentODE
from tidal.training.checkpoint import (
    CHECKPOINT,
    build_with_weights,
    kept_weights,
    load_checkpoint,
    save_checkpoint,
)
from tidal.training.run_directory import RunDirectory
from tidal.training.run_schema import SEQUENCE_CONFIG, read_checked
from tidal.training.sequence_fit import (
    DECODER_STEPS,
    SequenceObjective,
    SequenceOptions,
    build_sequence_model,
    choose_refinement,
    classify,
    forecast,
)
from tidal.training.trainer import FINAL_STATES, LoopSettings, train

CONFIG = "config.json"
WEIGHTS = "model.pt"
LABELS = "data/labels.csv"
KIND = "sequence"
SPLITS = ("train", "val", "test")


def read_labels(path: str | Path, *, id_column: str, label: str, ids: tuple[str, ...]
                ) -> list[str]:
    """The label of each series `ids` in the table at `path`: column `label`, one value per
    series (as text)."""
    path = Path(path)
    table = (pd.read_parquet(path) if path.suffix in (".parquet", ".pq")
             else pd.read_csv(path, dtype=str, keep_default_na=False))
    for column in (id_column, label):
        if column not in table.columns:
            raise InvalidArgumentError(f"{path}: no column {column!r}; the file has "
                                       f"{list(table.columns)}.")
    table = table[[id_column, label]].astype(str)
    table[label] = table[label].str.strip()
    table[id_column] = table[id_column].str.strip()
    per_series = table[table[label] != ""].groupby(id_column)[label].unique()
    labels = []
    for name in ids:
        found = per_series.get(name)
        if found is None or len(found) != 1:
            problem = "no label" if found is None else f"labels {sorted(found)[:3]}"
            raise InvalidArgumentError(
                f"{path}: series {name!r} has {problem} in column {label!r}; each series needs "
                "exactly one label (repeated on its rows).")
        labels.append(str(found[0]))
    return labels


def train_sequence_run(path: str | Path, run_dir: str | Path, *, options: SequenceOptions,
                       time: str = "t", id_column: str | None = None,
                       states: list[str] | None = None, label: str | None = None,
                       split: tuple[float, float] = (0.125, 0.125), overwrite: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Read the long table at `path` (a time column, an id column, feature columns with blanks
    where unobserved, and for classification a `label` column), split it by series into
    train / validation / test, train the sequence model of `options` and write the run.
    Returns the outcome (status, message, best_epoch, seconds)."""
    if (options.task == "classify") != (label is not None):
        raise InvalidArgumentError("`--task classify` needs `--label COLUMN` (the class of each "
                                   "series), and `--label` needs `--task classify`.")
    if id_column is None:
        raise InvalidArgumentError("Sequence models learn from many series: give `--id COLUMN`, "
                                   "the column that says which rows form one series.")
    if label is not None:
        header = _columns(Path(path))
        if label not in header:
            raise InvalidArgumentError(f"{path}: no label column {label!r} (`--label`); the "
                                       f"file has {header}.")
        if states is None:
            states = [c for c in header if c not in (time, label, id_column)]
    data = read_table(path, time=time, id=id_column, states=states)
    if len(data) < 3:
        raise InvalidArgumentError(f"{path}: {len(data)} series; a sequence model needs at "
                                   "least 3 (to hold out validation and test series).")
    labels = None if label is None else read_labels(path, id_column=id_column, label=label,
                                                    ids=data.ids)
    if labels is not None and len(set(labels)) < 2:
        raise InvalidArgumentError(f"{path}: every series has the label {labels[0]!r} in column "
                                   f"{label!r}; classification needs at least 2 classes.")
    parts = data.split(*_split_fractions(split, len(data)), seed=options.seed)
    scaling = Scaling.fit(parts[0])
    spans = [float(t[-1] - t[0]) for t in parts[0].times]
    config = {"type": "sequence", "options": dataclasses.asdict(options),
              "features": list(data.state_names), "time": time, "id": id_column,
              "label": label, "classes": sorted(set(labels)) if labels else None,
              "scaling": scaling.to_dict(), "decoder_dt": max(spans) / DECODER_STEPS,
              "source": {"path": str(path)}, "fit": {}}
    run = RunDirectory.create(run_dir, KIND, command="fit", overwrite=overwrite,
                              keep=[path])
    for name, part in zip(SPLITS, parts):
        write_table(part, run.claim(f"data/{name}.csv"), time=time, id=id_column)
    if labels is not None:
        with run.writing(LABELS) as tmp:
            pd.DataFrame({"id": list(data.ids), "label": labels}).to_csv(tmp, index=False)
    run.write_json(CONFIG, config)
    return _train(run, config, resume=False, progress=progress)


def resume_sequence_run(run_dir: str | Path, *, epochs: int | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Continue the sequence run in `run_dir` from its checkpoint, with its own data and
    options (`epochs`: a new total, at least those trained; the schedule stretches to it). A
    run stopped before its first checkpoint starts over. Returns the outcome."""
    run = RunDirectory.open(run_dir, KIND)
    config: dict[str, Any] = read_checked(run.file(CONFIG), SEQUENCE_CONFIG)
    run.take_over()
    restart = not run.has(CHECKPOINT)
    if epochs is not None:
        trained = 0 if restart else load_checkpoint(run.file(CHECKPOINT)).get("epoch", 0)
        if not isinstance(epochs, int) or epochs < max(1, trained):
            raise InvalidArgumentError(f"`--epochs {epochs}`: the run has already trained "
                                       f"{trained} epochs; give at least that many.")
        config["options"]["epochs"] = epochs
    return _train(run, config, resume=not restart, progress=progress)


def _train(run: RunDirectory, config: dict[str, Any], *, resume: bool, progress: bool
           ) -> dict[str, Any]:
    """Train the run's model on its splits through the shared loop, then write model.pt (the
    kept weights), the outcome in config.json and the final state."""
    options = SequenceOptions(**config["options"])
    torch.manual_seed(options.seed)
    loaded = SequenceRun(run.path, _build(config), config, run)
    objective = SequenceObjective(loaded.model, loaded.series("train"), loaded.series("val"),
                                  options)
    settings = LoopSettings(rounds=options.epochs, lr=options.lr, warmup=True, floor=0.01,
                            checkpoint_every=options.checkpoint_every,
                            patience=options.patience, grad_clip=options.grad_clip,
                            seed=options.seed)
    outcome = train(objective, settings, run_dir=run, resume=resume, progress=progress)
    loaded.model.load_state_dict(outcome.kept["model"])
    save_checkpoint(run, WEIGHTS, loaded.model.state_dict())
    fit = {"status": outcome.status, "message": outcome.message,
           "best_epoch": outcome.best_round,
           "epochs": outcome.history[-1]["epoch"] if outcome.history else 0,
           "seconds": outcome.history[-1]["seconds"] if outcome.history else 0.0}
    if isinstance(loaded.model, LatentODE) and options.refine is None:
        fit["refine"], scores = choose_refinement(loaded.model, loaded.series("val"), options)
        fit["refine_val_loss"] = {str(steps): loss for steps, loss in scores.items()}
    config["fit"] = fit
    run.write_json(CONFIG, config)
    run.set_state(FINAL_STATES[outcome.status])
    return fit


def _split_fractions(split: tuple[float, float], n: int) -> tuple[int, int, int]:
    """Counts of series for train, validation and test: each held-out part at least one."""
    val, test = (max(1, round(fraction * n)) for fraction in split)
    if val + test >= n:
        raise InvalidArgumentError(f"--val {split[0]} and --test {split[1]} leave no training "
                                   f"series of {n}; hold out smaller fractions.")
    return n - val - test, val, test


def _columns(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file.")
    header = (pd.read_parquet(path).columns if path.suffix in (".parquet", ".pq")
              else pd.read_csv(path, nrows=0).columns)
    return [str(c) for c in header]


def _build(config: dict[str, Any]) -> nn.Module:
    options = SequenceOptions(**config["options"])
    features = len(config["features"])
    outputs = len(config["classes"]) if options.task == "classify" else features
    return build_sequence_model(options, features, outputs, config["decoder_dt"])


@dataclass
class SequenceRun:
    """A loaded sequence run: the model with its kept weights, config.json and the folder."""

    path: Path
    model: nn.Module
    config: dict[str, Any]
    directory: RunDirectory
    notice: str | None = None  # set when training did not finish

    @property
    def options(self) -> SequenceOptions:
        return SequenceOptions(**self.config["options"])

    @property
    def scaling(self) -> Scaling:
        return Scaling.from_dict(self.config["scaling"])

    @property
    def refine(self) -> int:
        """Steps toward the posterior's mode before a latent ODE predicts: the option, else
        the number chosen on the validation series (0 where none was: the posterior mean)."""
        chosen = self.options.refine
        return chosen if chosen is not None else int(self.config["fit"].get("refine", 0))

    def trajectories(self, split: str) -> Trajectories:
        """The run's "train", "val" or "test" series in the user's units."""
        return read_table(self.directory.file(f"data/{split}.csv"), time=self.config["time"],
                          id=self.config["id"], states=self.config["features"])

    def series(self, split: str) -> IrregularSeries:
        """The split as the models read it: standardized features, labels as class indices."""
        data = self.trajectories(split).scaled(self.scaling)
        labels = None
        if self.config["classes"] is not None:
            table = pd.read_csv(self.directory.file(LABELS), dtype=str,
                                keep_default_na=False)
            by_id = dict(zip(table["id"], table["label"]))
            index = {name: i for i, name in enumerate(self.config["classes"])}
            try:
                labels = torch.tensor([index[by_id[name]] for name in data.ids])
            except KeyError as error:
                raise InvalidArgumentError(
                    f"{self.directory.file(LABELS)}: no known label for series {error}; the "
                    "file was edited or damaged.") from None
        return IrregularSeries.from_trajectories(data, labels)

    def unscale(self, values: torch.Tensor) -> np.ndarray:
        """Model outputs (standardized) in the user's units."""
        return np.asarray(self.scaling.unscale_values(values.double().numpy()))


def load_sequence_run(path: str | Path) -> SequenceRun:
    """Rebuild a sequence run's model from config.json (checked against its schema first)
    and its kept weights (weights_only; a run whose training did not finish uses its last
    checkpoint and says so in `notice`)."""
    run = RunDirectory.open(path, KIND)
    config: dict[str, Any] = read_checked(run.file(CONFIG), SEQUENCE_CONFIG)
    try:
        SequenceOptions(**config["options"])
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"{run.file(CONFIG)}: options: {error} (the file was edited "
                                   "or damaged).") from None
    weights, weights_file, notice = kept_weights(
        run, WEIGHTS, config.get("fit", {}).get("message", ""),
        f"tidal fit --resume -o {run.path}")
    model = build_with_weights(lambda: _build(config), run.file(CONFIG), weights, weights_file)
    return SequenceRun(run.path, model.eval(), config, run, notice)


def predict_sequences(run: SequenceRun, path: str | Path) -> pd.DataFrame:
    """The run's model applied to the series of the table at `path`, which has the fit's
    schema: its time and id columns and its feature columns (blank where unobserved; other
    columns are ignored).

    - classify: one row per series: the id, the predicted class (in the label column's name)
      and the probability of each class (`p_CLASS`).
    - forecast / interpolate: every row of every series (time, id, features), each feature
      predicted in the user's units from the series' observed cells: rows with blank
      features after the last observation ask for a forecast at their times, blanks between
      observations for an interpolation. The ODE-RNN, GRU and CDE predict a row from the
      observations before it (as in training), the latent ODE decodes every row from the
      encoding of all of them (its posterior mean, moved `run.refine` steps toward the
      posterior's mode).
    """
    config, options = run.config, run.options
    needed = [config["time"], config["id"], *config["features"]]
    missing = [name for name in needed if name not in _columns(Path(path))]
    if missing:
        raise InvalidArgumentError(
            f"{path}: no column(s) {missing}. The model in {run.path} was fitted on a table "
            f"with time column {config['time']!r}, id column {config['id']!r} and features "
            f"{config['features']}; give new series with the same columns.")
    data = read_table(path, time=config["time"], id=config["id"], states=config["features"])
    series = IrregularSeries.from_trajectories(data.scaled(run.scaling))
    with torch.no_grad():
        if options.task == "classify":
            probabilities = classify(run.model, series).double().softmax(-1).numpy()
            table = pd.DataFrame({config["id"]: list(data.ids),
                                  config["label"]: [config["classes"][i] for i in
                                                    probabilities.argmax(-1)]})
            for j, name in enumerate(config["classes"]):
                table[f"p_{name}"] = probabilities[:, j]
            return table
        predicted = forecast(run.model, series, series.mask, refine=run.refine)
    frames = []
    for b, (times, name) in enumerate(zip(data.times, data.ids)):
        values = run.unscale(predicted[:len(times), b])
        frames.append(pd.DataFrame({config["time"]: times, config["id"]: name,
                                    **dict(zip(config["features"], values.T))}))
    return pd.concat(frames, ignore_index=True)
