"""A diffusion run directory: train a score model on samples, save it, sample and score it.

    tidal-run.json  the marker: kind "diffusion", state, the files tidal wrote
    config.json     the options, the process, the columns, the data's transform, the source
                    and the outcome of training
    data/train.csv, data/val.csv   the samples trained on and held out (user units)
    checkpoint.pt   the training state (the shared loop's, trainer.py)
    metrics.csv     the training history
    model.pt        the kept weights (network and EMA; loaded with weights_only=True)
    metrics.json, samples.png, report.html   written by `tidal.report.diffusion`

Continuous data are standardized per column; discrete data (`levels`, e.g. the digits' 17
grey levels) are dequantized, y = (x + u)/levels, and mapped to [-1, 1] (z = 2y - 1), and their
likelihoods are reported in bits per dimension. Log-densities are in the user's units.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal._files import read_json
from tidal.controllers import PIDController
from tidal.diffusion import sampling
from tidal.diffusion.likelihood import dequantize, log_likelihood
from tidal.diffusion.processes import ForwardProcess, process_from_config
from tidal.diffusion.score_matching import ScoreMLP, ScoreModel
from tidal.distributed import World
from tidal.training.checkpoint import (
    has_checkpoint_to_resume,
    load_checkpoint,
    save_checkpoint,
)
from tidal.training.flow_run import SPLITS, create_sample_run, points, read_samples
from tidal.training.run_directory import RunDirectory
from tidal.training.score import ScoreHistory, fit_score
from tidal.training.trainer import FINAL_STATES

CONFIG = "config.json"
WEIGHTS = "model.pt"
KIND = "diffusion"
SAMPLERS = ("heun", "probability-flow", "reverse-sde")


@dataclass(frozen=True)
class DiffusionOptions:
    """The score network and its training (VP SDE, likelihood weighting)."""

    width: int = 128
    depth: int = 3
    steps: int = 4000
    batch_size: int = 512
    lr: float = 2e-3
    ema_decay: float = 0.995
    weighting: str = "likelihood"
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200
    eval_tol: float = 1e-5


def train_diffusion_run(samples: np.ndarray, run_dir: str | Path, *, columns: list[str],
                        process: ForwardProcess, options: DiffusionOptions | None = None,
                        levels: int | None = None, source: dict[str, Any] | None = None,
                        overwrite: bool = False, progress: bool = True) -> ScoreHistory:
    """Hold out a validation part of `samples` [N, d], fit a score model and write the run (a
    new or empty folder, or with `overwrite` an earlier run: only its own files go).
    `levels`: the data are integers in {0, ..., levels - 1} (dequantized; bits/dim)."""
    options = DiffusionOptions() if options is None else options
    for name, value, kind in (("options", options, DiffusionOptions),
                              ("process", process, ForwardProcess)):
        if not isinstance(value, kind):
            raise InvalidArgumentError(f"`train_diffusion_run({name}=...)` must be a "
                                       f"{kind.__name__}; got {type(value).__name__}.")
    if levels is not None:
        values = np.asarray(samples, dtype=float)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2 or not (
                (values >= 0) & (values <= levels - 1) & (values == np.round(values))).all():
            raise InvalidArgumentError(
                f"`train_diffusion_run(levels={levels!r})`: the samples must be integers in "
                f"[0, levels - 1] (levels an integer >= 2); rescale or round the data first.")
    source = source or {}
    run, train, val = create_sample_run(samples, run_dir, KIND, "diffusion fit",
                                        columns=columns, seed=options.seed,
                                        val_fraction=options.val_fraction, source=source,
                                        overwrite=overwrite)
    if levels is None:
        offset, scale = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-12)
    else:  # z = 2 (x + u)/levels - 1
        offset = scale = np.full(train.shape[1], levels / 2.0)
    config = {"type": "ScoreModel", "options": dataclasses.asdict(options),
              "process": process.config(), "columns": columns, "levels": levels,
              "offset": offset.tolist(), "scale": scale.tolist(), "source": source, "fit": {}}
    if World.current().leader:  # under torchrun rank 0 writes (create_sample_run)
        run.write_json(CONFIG, config)
    return _fit(run, config, train, val, resume=False, progress=progress)


def resume_diffusion_run(run_dir: str | Path, *, steps: int | None = None,
                         progress: bool = True) -> ScoreHistory:
    """Continue the diffusion run in `run_dir` from its checkpoint, with its own data and
    options (the same dequantization noise: it is seeded); the result equals an uninterrupted
    run. `steps` sets a new total (at least the steps already trained; the schedule stretches
    to it). A run stopped before its first checkpoint starts over."""
    run = RunDirectory.open(run_dir, KIND)
    config = read_json(run.file(CONFIG))
    if World.current().leader:
        run.take_over()
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvalidArgumentError(f"`--steps {steps}`: must be a positive integer.")
        config["options"]["steps"] = steps
    restart = not has_checkpoint_to_resume(run, config["options"]["steps"],
                                           f"--steps {steps}", "steps")
    train, val = (read_samples(run, split, config["columns"]) for split in SPLITS)
    history = _fit(run, config, train, val, resume=not restart, progress=progress)
    if restart:
        history.message = ("no checkpoint had been saved, so training started over; "
                           f"{history.message}")
    return history


def _fit(run: RunDirectory, config: dict[str, Any], train: np.ndarray, val: np.ndarray, *,
         resume: bool, progress: bool) -> ScoreHistory:
    """Fit the run's score model on its splits (from its checkpoint when `resume`), then write
    model.pt (the kept weights), the outcome in config.json and the final state."""
    options = DiffusionOptions(**config["options"])
    torch.manual_seed(options.seed)
    model = _build(config)
    process = process_from_config(config["process"])
    diffusion_run = DiffusionRun(run.path, model, process, config, run)
    generator = torch.Generator().manual_seed(options.seed)
    train_z, val_z = (diffusion_run.to_model_space(x, generator) for x in (train, val))
    history = fit_score(model, process, train_z, val_samples=val_z, steps=options.steps,
                        batch_size=min(options.batch_size, len(train_z)), lr=options.lr,
                        weighting=options.weighting, seed=options.seed,
                        checkpoint_every=options.checkpoint_every,
                        val_every=min(200, options.steps), progress=progress, run_dir=run,
                        resume=resume)
    config["fit"] = {"status": history.status, "message": history.message,
                     "steps": history.rows[-1]["step"] if history.rows else 0,
                     "seconds": history.wall_time}
    if World.current().leader:
        save_checkpoint(run, WEIGHTS, model.state_dict())
        run.write_json(CONFIG, config)
        run.set_state(FINAL_STATES[history.status])
    return history


def _build(config: dict[str, Any]) -> ScoreModel:
    options = DiffusionOptions(**config["options"])
    process = process_from_config(config["process"])
    network = ScoreMLP(len(config["columns"]), process, width=options.width,
                       depth=options.depth)
    return ScoreModel(network, ema_decay=options.ema_decay).double()


@dataclass
class DiffusionRun:
    path: Path
    model: ScoreModel
    process: ForwardProcess
    config: dict[str, Any]
    directory: RunDirectory

    @property
    def offset(self) -> np.ndarray:
        return np.asarray(self.config["offset"])

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.config["scale"])

    @property
    def levels(self) -> int | None:
        return self.config.get("levels")

    def data(self, split: str) -> np.ndarray:
        return read_samples(self.directory, split, self.config["columns"])

    def to_model_space(self, x: np.ndarray, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Standardized (or dequantized and mapped to [-1, 1]) points, float64."""
        values = torch.tensor(points("DiffusionRun", x, self.config["columns"]))
        if self.levels is not None:
            values = dequantize(values, self.levels, generator=generator) * self.levels
        return (values - torch.as_tensor(self.offset)) / torch.as_tensor(self.scale)

    def log_prob(self, x: np.ndarray, *, seed: int = 0) -> tuple[torch.Tensor, int]:
        """log p(x) [N] in the user's units (for discrete data: of one dequantization, the
        variational bound's integrand) and the NFE, by the PF-ODE."""
        z = self.to_model_space(x, torch.Generator().manual_seed(seed))
        tol = self.config["options"]["eval_tol"]
        trace = "exact" if z.shape[1] <= 8 else "hutchinson"
        result = log_likelihood(self.model, self.process, z, trace=trace, seed=seed,
                                controller=PIDController(rtol=tol, atol=tol))
        return result.log_prob - float(np.log(self.scale).sum()), result.nfe

    def nll(self, x: np.ndarray) -> tuple[float, int]:
        """Mean NLL in nats (continuous data) or bits/dim (discrete data), and the NFE."""
        log_prob, nfe = self.log_prob(x)
        if self.levels is None:
            return -log_prob.mean().item(), nfe
        return -log_prob.mean().item() / (len(self.config["columns"]) * math.log(2)), nfe

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str = "heun", steps: int = 20, seed: int = 0
               ) -> tuple[np.ndarray, int]:
        """n samples [n, d] in the user's units (rounded to levels for discrete data) and the
        NFE."""
        dim = len(self.config["columns"])
        if sampler == "heun":
            out = sampling.heun(self.model, self.process, n, dim, steps=steps, seed=seed)
        elif sampler == "probability-flow":
            out = sampling.probability_flow(self.model, self.process, n, dim, seed=seed)
        elif sampler == "reverse-sde":
            out = sampling.reverse_sde(self.model, self.process, n, dim, steps=steps, seed=seed)
        else:
            raise InvalidArgumentError(
                f"`sampler={sampler!r}` is not known; choose one of {list(SAMPLERS)}.")
        x = out.x.numpy() * self.scale + self.offset
        if self.levels is not None:
            x = np.clip(np.floor(x), 0, self.levels - 1)
        return x, out.nfe


def load_diffusion_run(path: str | Path) -> DiffusionRun:
    """Rebuild a diffusion run's score model from config.json and model.pt (weights only)."""
    run = RunDirectory.open(path, KIND)
    config = read_json(run.file(CONFIG))
    try:
        model = _build(config)
        process = process_from_config(config["process"])
    except (KeyError, TypeError) as error:
        raise InvalidArgumentError(f"{run.file(CONFIG)}: not a diffusion run's config "
                                   f"({error}); the file was edited or damaged.") from error
    weights = run.file(WEIGHTS) if run.has(WEIGHTS) else None
    if weights is None:
        raise InvalidArgumentError(f"{run.path} has no {WEIGHTS}: training did not finish.")
    model.load_state_dict(load_checkpoint(weights))
    return DiffusionRun(run.path, model.eval(), process, config, run)
