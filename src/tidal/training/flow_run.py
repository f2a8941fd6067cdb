"""A flow run directory: train a CNF on samples, save it, report its density and samples.

    tidal-run.json the marker: kind, state, the files tidal wrote (see run_directory.py)
    config.json   the CNF's config and the data's standardization
    model.pt      weights (loaded with weights_only=True)
    history.csv   training NLL and NFE per step
    metrics.json  held-out NLL (and the true density's, for a toy that has one), NFE
    density.png, samples.png, report.html

Samples are standardized per column before training; log-densities are reported in the user's
units (the standardization's log-Jacobian is added back).
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers import PIDController
from tidal.models import CNF
from tidal.nn import ConcatSquashMLP
from tidal.training.checkpoint import build_with_weights, load_checkpoint, save_checkpoint
from tidal.training.flow import evaluate_nll, fit_flow
from tidal.training.run_directory import RunDirectory
from tidal.training.run_schema import FLOW_CONFIG, read_checked

CONFIG = "config.json"
WEIGHTS = "model.pt"
KIND = "flow"


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


def build_cnf(dim: int, options: FlowOptions, tol: float) -> CNF:
    field = ConcatSquashMLP(dim, width=options.width, depth=options.depth,
                            activation=options.activation)
    return CNF(field, trace=options.trace, kinetic=options.kinetic, jacobian=options.jacobian,
               controller=PIDController(rtol=tol, atol=tol)).double()


def train_flow_run(samples: np.ndarray, run_dir: str | Path, *, columns: list[str],
                   options: FlowOptions | None = None, source: dict[str, Any] | None = None,
                   true_log_prob: Any = None, overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Standardize `samples` [N, d], hold out a validation part, train a CNF and write the run
    (a new or empty folder, or with `overwrite` an earlier run: only the files it lists are
    deleted, never `source["path"]`).

    `true_log_prob(x) -> [N]` (user units), when known, adds the true density's held-out NLL to
    the metrics. Returns the metrics.
    """
    options = options or FlowOptions()
    source = source or {}
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or len(samples) < 20 or not np.isfinite(samples).all():
        raise InvalidArgumentError(
            f"Flow training needs at least 20 finite samples as rows of a table; got shape "
            f"{samples.shape} ({int((~np.isfinite(samples)).sum())} non-finite values).")
    run = RunDirectory.create(run_dir, KIND, command="flow fit", overwrite=overwrite,
                              keep=[source["path"]] if "path" in source else [])
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(samples))
    n_val = max(1, round(options.val_fraction * len(samples)))
    val, train = samples[order[:n_val]], samples[order[n_val:]]
    offset, scale = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-12)
    torch.manual_seed(options.seed)
    cnf = build_cnf(samples.shape[1], options, options.train_tol)
    history = fit_flow(cnf, torch.as_tensor((train - offset) / scale),
                       steps=options.steps, batch_size=min(options.batch_size, len(train)),
                       lr=options.lr,
                       seed=options.seed, progress=progress)
    save_checkpoint(run, WEIGHTS, cnf.state_dict())
    run.write_json(CONFIG, {"type": "CNF", "options": dataclasses.asdict(options),
                            "columns": columns, "offset": offset.tolist(),
                            "scale": scale.tolist(), "source": source})
    with run.writing("history.csv") as tmp:
        pd.DataFrame({"train_nll": history.train_nll,
                      "num_fevals": history.num_fevals}).to_csv(tmp, index_label="step")
    run.set_state("finished" if history.status == "finished" else "diverged")
    flow = load_flow_run(run.path)
    metrics = {"val_nll": flow.nll(val), "val_samples": len(val),
               "train_samples": len(train), "num_fevals_train_mean":
               float(np.mean(history.num_fevals)), "num_fevals_eval":
               int(flow.cnf.last_stats.num_fevals), "seconds": history.wall_time,
               "status": history.status, "message": history.message}
    if true_log_prob is not None:
        metrics["true_val_nll"] = -float(true_log_prob(torch.as_tensor(val)).mean())
        metrics["gap"] = metrics["val_nll"] - metrics["true_val_nll"]
    run.write_json("metrics.json", metrics)
    flow.write_report(samples, metrics)
    return metrics


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

    @torch.no_grad()
    def log_prob(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """log-density in the user's units: log p_std((x - offset) / scale) - sum log scale."""
        x = torch.as_tensor(np.asarray(x, dtype=float))
        standard = (x - torch.as_tensor(self.offset)) / torch.as_tensor(self.scale)
        return self.cnf.log_prob(standard) - float(np.log(self.scale).sum())

    def nll(self, x: np.ndarray) -> float:
        return evaluate_nll(self.cnf, torch.as_tensor((x - self.offset) / self.scale),
                            batch_size=len(x)) + float(np.log(self.scale).sum())

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        z = self.cnf.sample(n, generator=torch.Generator().manual_seed(seed))
        return z.numpy() * self.scale + self.offset

    def write_report(self, data: np.ndarray, metrics: dict[str, Any]) -> None:
        from matplotlib.figure import Figure

        from tidal.plots.density import plot_density, plot_samples

        lo, hi = data.min(axis=0), data.max(axis=0)
        pad = 0.15 * (hi - lo)
        bounds = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        images = []
        if data.shape[1] == 2:
            figure = Figure(figsize=(5, 4.6), layout="constrained")
            plot_density(self.log_prob, bounds, ax=figure.subplots(), resolution=80,
                         title="learned density")
            images.append(self._save(figure, "density.png"))
        figure = Figure(figsize=(5, 4.6), layout="constrained")
        plot_samples(self.sample(2000)[:, :2], reference=data[:2000, :2],
                     bounds=bounds if data.shape[1] == 2 else None, ax=figure.subplots(),
                     title="samples (model vs data)")
        images.append(self._save(figure, "samples.png"))
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.4g}</td></tr>"
                       for k, v in metrics.items() if isinstance(v, (int, float)))
        body = "".join(f'<img src="{name}" alt="{name}">' for name in images)
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tidal flow</title>"
                f"</head><body><h1>tidal flow: {html.escape(self.path.name)}</h1>"
                f"<table>{rows}</table>{body}</body></html>")
        self.directory.write_text("report.html", page)

    def _save(self, figure: Any, name: str) -> str:
        with self.directory.writing(name) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        return name


def load_flow_run(path: str | Path) -> FlowRun:
    """Rebuild a flow run's CNF from config.json and model.pt (no code from the files runs;
    config.json is checked against its schema before anything is built)."""
    run = RunDirectory.open(path, KIND)
    if run.state == "running":
        status = ("was stopped before it finished" if run.was_killed()
                  else "is still running")
        raise InvalidArgumentError(f"{run.path}: training {status}, so there are no trained "
                                   "weights; start it again with `tidal flow fit ... "
                                   "--overwrite`.")
    config_path = run.file(CONFIG)
    config = read_checked(config_path, FLOW_CONFIG)
    dim = len(config["columns"])
    if not len(config["offset"]) == len(config["scale"]) == dim:
        raise InvalidArgumentError(f"{config_path}: {dim} columns but {len(config['offset'])} "
                                   f"offsets and {len(config['scale'])} scales (the file was "
                                   "edited or damaged).")
    options = FlowOptions(**config["options"])
    weights_path = run.file(WEIGHTS)
    cnf = build_with_weights(lambda: build_cnf(dim, options, options.eval_tol), config_path,
                             load_checkpoint(weights_path), weights_path)
    notice = (f"{run.path}: training diverged; these are its last good weights."
              if run.state == "diverged" else None)
    return FlowRun(run.path, cnf.double().eval(), config, run, notice)
