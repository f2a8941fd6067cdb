"""An SDE run directory (`tidal fit --model sde|latent-sde`): split, build, fit through the
one training loop (`sde_fit.py` objectives), save, load, and predictive samples.

    tidal-run.json  the marker: kind "sde", state, the files tidal wrote (run_directory.py)
    config.json     the model's type and options (`SDEOptions`, with the step dt resolved),
                    the state names, the scaling, the training config, the data's description
                    and the outcome of training (schema: `run_schema.SDE_CONFIG`)
    data/           train, val, test trajectories (user units)
    checkpoint.pt, metrics.csv   the shared loop's
    model.pt        the kept weights (loaded with weights_only=True)
    metrics.json, bands.png, report.html   written by `tidal.report.sde`

States are standardized per state (`Scaling.fit`); time keeps the user's units.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.models.latent_sde import LatentSDE
from tidal.models.neural_sde import NeuralSDE, PositiveDiffusion
from tidal.nn import MLP
from tidal.training.batches import make_batch
from tidal.training.checkpoint import (
    build_with_weights,
    has_checkpoint_to_resume,
    kept_weights,
    save_checkpoint,
)
from tidal.training.config import TrainConfig
from tidal.training.fit import loop_settings
from tidal.training.run import (
    raise_if_damaged,
    read_split,
    scaling_and_training_problems,
    write_splits,
)
from tidal.training.run_directory import RunDirectory
from tidal.training.run_schema import SDE_CONFIG, read_checked
from tidal.training.sde_fit import objective_for
from tidal.training.time_split import split_in_time, split_kind
from tidal.training.trainer import FINAL_STATES
from tidal.training.trainer import train as train_loop

CONFIG = "config.json"
WEIGHTS = "model.pt"
KIND = "sde"
#: `--model` names and the class each builds.
SDE_MODELS = {"sde": "NeuralSDE", "latent-sde": "LatentSDE"}


@dataclass(frozen=True)
class SDEOptions:
    """The model `train_sde_run` builds.

    kind: "sde" (`NeuralSDE`: MLP drift and positive diagonal diffusion on the observed
    states, fitted by the Euler–Maruyama transition likelihood) or "latent-sde" (`LatentSDE`,
    fitted by its ELBO). dt: the Euler–Maruyama step in the data's time units; None takes the
    median gap between consecutive observations (`NeuralSDE`: its fit is the one-step law over
    that gap) or half of it (`LatentSDE`). latent_size: None takes the number of states.
    """

    kind: str = "sde"
    width: int = 64
    depth: int = 2
    activation: str = "tanh"
    dt: float | None = None
    latent_size: int | None = None
    context_size: int = 16
    hidden_size: int = 32

    def __post_init__(self) -> None:
        if self.kind not in SDE_MODELS:
            raise InvalidArgumentError(f"`--model {self.kind}` is not an SDE model; choose one "
                                       f"of {list(SDE_MODELS)}.")
        if self.dt is not None and (isinstance(self.dt, bool) or not isinstance(
                self.dt, (int, float)) or not 0 < self.dt < float("inf")):
            raise InvalidArgumentError(f"`--dt {self.dt!r}` must be a positive step size.")
        for name in ("width", "depth", "context_size", "hidden_size", "latent_size"):
            value = getattr(self, name)
            if (value is not None or name != "latent_size") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"`SDEOptions({name}={value!r})` must be a positive "
                                           f"integer.")

    def resolved(self, data: Trajectories, n_states: int) -> SDEOptions:
        """These options with dt and latent_size filled in from `data`."""
        dt = self.dt
        if dt is None:
            gaps = np.concatenate([np.diff(t) for t in data.times])
            gaps = gaps[gaps > 0]
            if len(gaps) == 0:
                raise InvalidArgumentError("The data has no two distinct times to take a step "
                                           "size from; give --dt.")
            dt = float(np.median(gaps)) / (1 if self.kind == "sde" else 2)
        return dataclasses.replace(self, dt=dt, latent_size=self.latent_size or n_states)


def build_sde_model(options: SDEOptions, n_states: int) -> nn.Module:
    """The untrained model `options` (resolved) describe, for `n_states` states."""
    assert options.dt is not None and options.latent_size is not None
    if options.kind == "latent-sde":
        return LatentSDE(n_states, options.latent_size, context_size=options.context_size,
                         hidden_size=options.hidden_size, width=options.width,
                         depth=options.depth, activation=options.activation, dt=options.dt)
    mlp: dict[str, Any] = {"width": options.width, "depth": options.depth,
                           "activation": options.activation}
    return NeuralSDE(MLP(n_states, **mlp), PositiveDiffusion(MLP(n_states, **mlp)),
                     dt=options.dt)


@dataclass
class SDEResult:
    """What `train_sde_run` returns (the fields the command line reads, as `FitResult`)."""

    model: nn.Module
    status: str
    message: str
    history: list[dict[str, Any]]
    best_epoch: int


def train_sde_run(data: Trajectories, run_dir: str | Path, *, options: SDEOptions,
                  config: TrainConfig | None = None,
                  split: tuple[float, float] = (0.125, 0.125), split_by: str = "auto",
                  source: dict[str, Any] | None = None, overwrite: bool = False,
                  progress: bool = True) -> SDEResult:
    """Split `data` (as `train_run`: by trajectory, or in time below 12 trajectories), fit
    the SDE model `options` describe on the training part and write the run directory."""
    from tidal.training.pipeline import _check_arguments, _split

    config = TrainConfig() if config is None else config
    _check_arguments(data, options, config, split, owner="train_sde_run", model_name="options",
                     model_kind=SDEOptions)
    source = source or {}
    kind = split_kind(len(data), split_by)
    train, val, test = (split_in_time(data, *split) if kind == "time"
                        else _split(data, split, config.seed))
    options = options.resolved(train, data.n_states)
    scaling = Scaling.fit(train)
    run = RunDirectory.create(run_dir, KIND, command="fit", overwrite=overwrite,
                              keep=[source["path"]] if "path" in source else [])
    write_splits(run, {"train": train, "val": val, "test": test})
    saved = {"type": SDE_MODELS[options.kind], "options": dataclasses.asdict(options),
             "state_names": list(data.state_names), "scaling": scaling.to_dict(),
             "train": config.to_dict(),
             "data": {**source, "split": kind, "held_out": list(split)}, "fit": {}}
    _write_config(run, saved)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_sde_model(options, data.n_states)
    return _fit(run, saved, model, resume=False, progress=progress)


def resume_sde_run(run_dir: str | Path, *, epochs: int | None = None,
                   progress: bool = True) -> SDEResult:
    """Continue the SDE run in `run_dir` from its checkpoint with its own config and data
    (`epochs`: a new total, at least the epochs trained); a run stopped before its first
    checkpoint starts over."""
    run = RunDirectory.open(run_dir, KIND)
    saved = read_sde_config(run)
    run.take_over()
    if epochs is not None:
        try:
            saved["train"] = dataclasses.replace(TrainConfig.from_dict(saved["train"]),
                                                 epochs=epochs).to_dict()
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"`--epochs {epochs}`: {error}") from None
    restart = not has_checkpoint_to_resume(run, saved["train"]["epochs"],
                                           f"--epochs {epochs}", "epochs")
    with torch.random.fork_rng():
        torch.manual_seed(saved["train"]["seed"])
        model = build_sde_model(SDEOptions(**saved["options"]), len(saved["state_names"]))
    return _fit(run, saved, model, resume=not restart, progress=progress)


def _fit(run: RunDirectory, saved: dict[str, Any], model: nn.Module, *, resume: bool,
         progress: bool) -> SDEResult:
    """Train `model` on the run's splits through the shared loop, then write model.pt (the
    kept weights), the outcome in config.json and the final state."""
    config = TrainConfig.from_dict(saved["train"])
    scaling = Scaling.from_dict(saved["scaling"])
    names = saved["state_names"]
    train, val = (read_split(run, split, names) for split in ("train", "val"))
    assert train is not None
    model.to(getattr(torch, config.dtype))
    objective = objective_for(model, train.scaled(scaling),
                              val.scaled(scaling) if val else None, config)
    with torch.random.fork_rng():  # the paths' random numbers: seeded, and checkpointed
        torch.manual_seed(config.seed)
        outcome = train_loop(objective, loop_settings(config), run_dir=run, resume=resume,
                             progress=progress)
    model.load_state_dict(outcome.kept["model"])
    save_checkpoint(run, WEIGHTS, model.state_dict())
    saved["fit"] = {"status": outcome.status, "message": outcome.message,
                    "best_epoch": outcome.best_round, "best_val_loss": outcome.best_val_loss,
                    "epochs": outcome.history[-1]["epoch"] if outcome.history else 0,
                    "seconds": outcome.history[-1]["seconds"] if outcome.history else 0.0}
    _write_config(run, saved)
    run.set_state(FINAL_STATES[outcome.status])
    return SDEResult(model, outcome.status, outcome.message, outcome.history,
                     outcome.best_round)


def _write_config(run: RunDirectory, saved: dict[str, Any]) -> None:
    from tidal import __version__

    run.write_json(CONFIG, {"tidal_version": __version__, **saved})


@dataclass
class SDERun:
    """A trained SDE model with its scaling and data; `notice` says which weights these are
    when training did not finish."""

    path: Path
    model: nn.Module
    scaling: Scaling
    config: dict[str, Any]
    directory: RunDirectory
    notice: str | None = None

    @property
    def state_names(self) -> list[str]:
        return list(self.config["state_names"])

    def data(self, split: str) -> Trajectories | None:
        """The run's "train", "val" or "test" trajectories (None when that split is empty)."""
        return read_split(self.directory, split, self.state_names)

    @torch.no_grad()
    def forecast_samples(self, data: Trajectories, n_samples: int, *, seed: int = 0,
                         times: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictive samples of each trajectory of `data` from its first observation: (grid
        [T, B], samples [T, n_samples, B, D]) in the user's units, at each trajectory's own
        times (or at `times`, one array per trajectory, starting at its first time). Grids
        of unequal length are padded past their end (those rows are not predictions)."""
        _check_forecast(data, n_samples, times)
        dtype = next(self.model.parameters()).dtype
        batch = make_batch(data.scaled(self.scaling), dtype, per_sample=True)
        ts = batch.ts if times is None else _padded(times)
        if isinstance(self.model, LatentSDE):
            samples = self.model.sample(batch.ts[:1], batch.ys[:1], batch.mask[:1], ts,
                                        n_samples, seed=seed)
        else:
            assert isinstance(self.model, NeuralSDE)
            count = batch.y0.shape[0]
            y0 = batch.y0.nan_to_num(0.0).repeat(n_samples, 1)
            paths = self.model.sample(y0, ts.repeat(1, n_samples), seed=seed)
            samples = paths.reshape(len(ts), n_samples, count, -1)
        return ts.numpy(), self.scaling.unscale_values(samples).numpy()


def _check_forecast(data: Any, n_samples: Any, times: Any) -> None:
    """`SDERun.forecast_samples`' arguments: a count, and times per trajectory from its first
    observation (the forecast starts there)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InvalidArgumentError(f"`forecast_samples(n_samples={n_samples!r})` must be a "
                                   f"positive integer.")
    if times is None:
        return
    if not isinstance(data, Trajectories) or len(times) != len(data):
        raise InvalidArgumentError(
            f"`forecast_samples(times=...)` needs one array per trajectory of `data`; got "
            f"{len(times)} for {len(data) if isinstance(data, Trajectories) else '?'}.")
    for k, (own, start) in enumerate(zip(times, data.times)):
        own = np.asarray(own, dtype=float)
        if own.ndim != 1 or len(own) == 0 or own[0] != start[0] or not (
                np.diff(own) > 0).all():
            raise InvalidArgumentError(
                f"`forecast_samples(times=...)`: array {k} must be increasing and start at its "
                f"trajectory's first time {start[0]} (the forecast starts from that "
                f"observation); got {own.tolist()[:4]}.")


def _padded(times: list[np.ndarray]) -> torch.Tensor:
    length = max(len(t) for t in times)
    grid = np.empty((length, len(times)))
    for b, t in enumerate(times):
        span = max(t[-1] - t[0], 1.0)
        grid[:len(t), b] = t
        grid[len(t):, b] = t[-1] + span * 1e-6 * np.arange(1, length - len(t) + 1)
    return torch.as_tensor(grid)


def read_sde_config(run: RunDirectory) -> dict[str, Any]:
    """config.json, checked against the schema and for consistency."""
    path = run.file(CONFIG)
    config: dict[str, Any] = read_checked(path, SDE_CONFIG)
    problems = scaling_and_training_problems(config["scaling"], config["state_names"],
                                             config["train"])
    if SDE_MODELS.get(config["options"]["kind"]) != config["type"]:
        problems.append(f"type {config['type']!r} does not match options.kind")
    raise_if_damaged(path, problems)
    return config


def load_sde_run(path: str | Path) -> SDERun:
    """Rebuild an SDE run's model from config.json and its weights (JSON and
    `torch.load(weights_only=True)` only; config.json is checked against its schema first).
    A run whose training did not finish uses the weights it kept and says so in `notice`."""
    run = RunDirectory.open(path, KIND)
    config = read_sde_config(run)
    options = SDEOptions(**config["options"])
    weights, weights_file, notice = kept_weights(
        run, WEIGHTS, config["fit"].get("message", ""), f"tidal fit --resume -o {run.path}")
    model = build_with_weights(lambda: build_sde_model(options, len(config["state_names"])),
                               run.path / CONFIG, weights, weights_file)
    dtype = next(iter(weights.values())).dtype
    return SDERun(run.path, model.to(dtype).eval(), Scaling.from_dict(config["scaling"]),
                  config, run, notice)
