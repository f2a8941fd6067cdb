"""A flow run directory: train a CNF on samples, save it, continue it (`--resume`).

    tidal-run.json  the marker: kind "flow", state, the files tidal wrote (run_directory.py)
    config.json     the CNF's options, the columns, the data's standardization, the source
                    and the outcome of training
    data/train.csv, data/val.csv   the samples trained on and held out (user units)
    checkpoint.pt   the training state (the shared loop's, trainer.py)
    metrics.csv     one row per step: loss, NLL, regularization, validation NLL, NFE
    model.pt        the kept weights (loaded with weights_only=True), written when training ends
    metrics.json, density.png, samples.png, report.html   written by `tidal.report`

Samples are standardized per column before training; log-densities are reported in the user's
units (the standardization's log-Jacobian is added back).

Under torchrun (`tidal flow fit --nproc N`, also `diffusion_run`) every rank trains, and only
rank 0 writes the run (atomically, then a barrier before the others read it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal._errors import InvalidArgumentError
from tidal.adjoint import BackpropAdjoint
from tidal.controllers import PIDController
from tidal.distributed import World
from tidal.models import CNF
from tidal.nn import ConcatSquashMLP
from tidal.solvers import Dopri5
from tidal.training.checkpoint import (
    build_with_weights,
    has_checkpoint_to_resume,
    kept_weights,
    save_checkpoint,
)
from tidal.training.flow import FlowHistory, evaluate_nll, fit_flow
from tidal.training.run_directory import RunDirectory
from tidal.training.run_schema import FLOW_CONFIG, read_checked
from tidal.training.trainer import FINAL_STATES

CONFIG = "config.json"
WEIGHTS = "model.pt"
KIND = "flow"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class FlowOptions:
    """The CNF and its training (defaults: the settings that reached 0.02 nats of the true
    eight-Gaussians density, docs/benchmarks.md)."""

    width: int = 64
    depth: int = 3
    activation: str = "tanh"
    trace: str = "exact"
    kinetic: float = 0.05
    jacobian: float = 0.05
    train_tol: float = 1e-3
    eval_tol: float = 1e-5
    steps: int = 800
    batch_size: int = 512
    lr: float = 5e-3
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100


def build_cnf(dim: int, options: FlowOptions, tol: float) -> CNF:
    field = ConcatSquashMLP(dim, width=options.width, depth=options.depth,
                            activation=options.activation)
    return CNF(field, trace=options.trace, kinetic=options.kinetic, jacobian=options.jacobian,
               solver=Dopri5(), controller=PIDController(rtol=tol, atol=tol),
               adjoint=BackpropAdjoint()).double()


def train_flow_run(samples: np.ndarray, run_dir: str | Path, *, columns: list[str],
                   options: FlowOptions | None = None, source: dict[str, Any] | None = None,
                   overwrite: bool = False, progress: bool = True) -> FlowHistory:
    """Standardize `samples` [N, d], hold out a validation part, train a CNF and write the run
    (a new or empty folder, or with `overwrite` an earlier run: only the files it lists are
    deleted, never `source["path"]`). The report is `tidal.report.write_flow_report`'s."""
    options = FlowOptions() if options is None else options
    if not isinstance(options, FlowOptions):
        raise InvalidArgumentError(f"`train_flow_run(options=...)` must be a FlowOptions; got "
                                   f"{type(options).__name__}.")
    source = source or {}
    run, train, _ = create_sample_run(samples, run_dir, KIND, "flow fit", columns=columns,
                                      seed=options.seed, val_fraction=options.val_fraction,
                                      source=source, overwrite=overwrite)
    offset, scale = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-12)
    config = {"type": "CNF", "options": dataclasses.asdict(options), "columns": columns,
              "offset": offset.tolist(), "scale": scale.tolist(), "source": source, "fit": {}}
    if World.current().leader:
        run.write_json(CONFIG, config)
    torch.manual_seed(options.seed)
    cnf = build_cnf(samples.shape[1], options, options.train_tol)
    return _train(run, cnf, config, resume=False, progress=progress)


def resume_flow_run(run_dir: str | Path, *, steps: int | None = None,
                    progress: bool = True) -> FlowHistory:
    """Continue the flow run in `run_dir` from its checkpoint, with its own data and options;
    the result equals an uninterrupted run. `steps` sets a new total (at least the steps
    already trained; the schedule stretches to it). A run stopped before its first checkpoint
    starts over."""
    run = RunDirectory.open(run_dir, KIND)
    config = read_config(run)
    world = World.current()
    if world.leader:
        run.take_over()
    options = FlowOptions(**config["options"])
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise InvalidArgumentError(f"`--steps {steps}`: must be a positive integer.")
        config["options"]["steps"] = steps
    restart = not has_checkpoint_to_resume(run, config["options"]["steps"],
                                           f"--steps {steps}", "steps")
    torch.manual_seed(options.seed)
    cnf = build_cnf(len(config["columns"]), options, options.train_tol)
    history = _train(run, cnf, config, resume=not restart, progress=progress)
    if restart:
        history.message = ("no checkpoint had been saved, so training started over; "
                           f"{history.message}")
        if world.leader:
            _write_outcome(run, config, history)
    return history


def _train(run: RunDirectory, cnf: CNF, config: dict[str, Any], *, resume: bool,
           progress: bool) -> FlowHistory:
    """Fit `cnf` on the run's standardized splits through the shared loop, then write model.pt
    (the kept weights), the outcome in config.json and the final state."""
    options = FlowOptions(**config["options"])
    train, val = (_standardized(config, read_samples(run, split, config["columns"]))
                  for split in SPLITS)
    history = fit_flow(cnf, train, val_samples=val, steps=options.steps,
                       batch_size=min(options.batch_size, len(train)), lr=options.lr,
                       seed=options.seed, checkpoint_every=options.checkpoint_every,
                       val_every=min(100, options.steps), progress=progress, run_dir=run,
                       resume=resume)
    if World.current().leader:
        save_checkpoint(run, WEIGHTS, cnf.state_dict())
        _write_outcome(run, config, history)
        run.set_state(FINAL_STATES[history.status])
    return history


def _write_outcome(run: RunDirectory, config: dict[str, Any], history: FlowHistory) -> None:
    config["fit"] = {"status": history.status, "message": history.message,
                     "steps": history.rows[-1]["step"] if history.rows else 0,
                     "seconds": history.wall_time}
    run.write_json(CONFIG, config)


def _standardized(config: dict[str, Any], values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor((values - np.asarray(config["offset"])) / np.asarray(config["scale"]))


def create_sample_run(samples: np.ndarray, run_dir: str | Path, kind: str, command: str, *,
                      columns: list[str], seed: int, val_fraction: float,
                      source: dict[str, Any], overwrite: bool
                      ) -> tuple[RunDirectory, np.ndarray, np.ndarray]:
    """A density run's start (flows, diffusion): check `samples` [N, d], create the run (a new
    or empty folder, or with `overwrite` an earlier run of `kind`: only the files it lists are
    deleted, never `source["path"]`), hold out a seeded `val_fraction` and write both splits.
    Returns (run, train, val). Under torchrun rank 0 creates and writes, the others open the run
    once it has."""
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or len(samples) < 20 or not np.isfinite(samples).all():
        raise InvalidArgumentError(
            f"`{command}` needs at least 20 finite samples as rows of a table; got shape "
            f"{samples.shape} ({int((~np.isfinite(samples)).sum())} non-finite values).")
    names = list(columns) if isinstance(columns, (list, tuple)) else None
    if names is None or len(names) != samples.shape[1] or len(set(names)) != len(names) or \
            not all(isinstance(name, str) for name in names):
        raise InvalidArgumentError(
            f"`{command}`: columns={columns!r} must name each of the samples' "
            f"{samples.shape[1]} columns once (a list of strings).")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or \
            not 0 < val_fraction < 1:
        raise InvalidArgumentError(f"`{command}`: val_fraction={val_fraction!r} must be a "
                                   f"fraction in (0, 1).")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, round(val_fraction * len(samples)))
    val, train = samples[order[:n_val]], samples[order[n_val:]]
    world = World.current()
    if world.leader:
        run = RunDirectory.create(run_dir, kind, command=command, overwrite=overwrite,
                                  keep=[source["path"]] if "path" in source else [])
        for split, values in zip(SPLITS, (train, val)):
            with run.writing(f"data/{split}.csv") as tmp:
                pd.DataFrame(values, columns=columns).to_csv(tmp, index=False)
    world.barrier()
    if not world.leader:
        run = RunDirectory.open(run_dir, kind)
    return run, train, val


def points(owner: str, x: Any, columns: list[str]) -> np.ndarray:
    """x as finite float64 points [N, d] with one column per name in `columns`, else an error
    naming `owner(x=...)`."""
    try:
        values = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                            dtype=float)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.ndim != 2 or values.shape[1] != len(columns) or len(values) == 0:
        raise InvalidArgumentError(
            f"`{owner}(x=...)` must be points [N, {len(columns)}] (columns {columns}); got "
            f"shape {values.shape}. Use x.reshape(1, -1) for one point.")
    if not np.isfinite(values).all():
        raise InvalidArgumentError(f"`{owner}(x=...)` contains NaN or infinite values.")
    return values


def read_samples(run: RunDirectory, split: str, columns: list[str]) -> np.ndarray:
    """The run's "train" or "val" samples [N, d] in the user's units."""
    path = run.file(f"data/{split}.csv")
    try:
        values = pd.read_csv(path)[columns].to_numpy(dtype=float)
    except (KeyError, ValueError, pd.errors.ParserError) as error:
        raise InvalidArgumentError(f"{path}: not the run's samples ({error}); the file was "
                                   "edited or damaged.") from error
    if not np.isfinite(values).all() or len(values) == 0:
        raise InvalidArgumentError(f"{path}: empty or non-finite samples; the file was edited "
                                   "or damaged.")
    return values


@dataclass
class FlowRun:
    path: Path
    cnf: CNF
    config: dict[str, Any]
    directory: RunDirectory
    notice: str | None = None  # set when training did not finish

    @property
    def offset(self) -> np.ndarray:
        return np.asarray(self.config["offset"])

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.config["scale"])

    def data(self, split: str) -> np.ndarray | None:
        """The run's "train" or "val" samples (None for a run written before they were kept)."""
        if f"data/{split}.csv" not in self.directory.files:
            return None
        return read_samples(self.directory, split, self.config["columns"])

    @torch.no_grad()
    def log_prob(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """log-density in the user's units: log p_std((x - offset) / scale) - sum log scale."""
        x = torch.as_tensor(points("FlowRun.log_prob", x, self.config["columns"]))
        standard = (x - torch.as_tensor(self.offset)) / torch.as_tensor(self.scale)
        return self.cnf.log_prob(standard) - float(np.log(self.scale).sum())

    def nll(self, x: np.ndarray) -> float:
        x = points("FlowRun.nll", x, self.config["columns"])
        return evaluate_nll(self.cnf, torch.as_tensor((x - self.offset) / self.scale),
                            batch_size=len(x)) + float(np.log(self.scale).sum())

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        z = self.cnf.sample(n, generator=torch.Generator().manual_seed(seed))
        return np.asarray(z.numpy() * self.scale + self.offset)


def read_config(run: RunDirectory) -> dict[str, Any]:
    """config.json, checked against the schema and for consistency."""
    path = run.file(CONFIG)
    config: dict[str, Any] = read_checked(path, FLOW_CONFIG)
    dim = len(config["columns"])
    if not len(config["offset"]) == len(config["scale"]) == dim:
        raise InvalidArgumentError(f"{path}: {dim} columns but {len(config['offset'])} "
                                   f"offsets and {len(config['scale'])} scales (the file was "
                                   "edited or damaged).")
    return config


def load_flow_run(path: str | Path) -> FlowRun:
    """Rebuild a flow run's CNF from config.json and its weights (no code from the files runs;
    config.json is checked against its schema before anything is built). A run whose training
    did not finish uses the weights it kept (model.pt, or a killed run's last checkpoint) and
    says which in `FlowRun.notice`."""
    run = RunDirectory.open(path, KIND)
    config = read_config(run)
    options = FlowOptions(**config["options"])
    weights, weights_file, notice = kept_weights(
        run, WEIGHTS, config.get("fit", {}).get("message", ""),
        f"tidal flow fit --resume -o {run.path}", unit="step")
    cnf = build_with_weights(lambda: build_cnf(len(config["columns"]), options,
                                               options.eval_tol),
                             run.path / CONFIG, weights, weights_file)
    return FlowRun(run.path, cnf.double().eval(), config, run, notice)
