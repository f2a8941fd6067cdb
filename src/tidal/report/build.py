"""The run report: PNG figures, metrics.json and a self-contained report.html beside them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal.data import Trajectories
from tidal.models import HamiltonianNN
from tidal.plots.energy import plot_energy
from tidal.plots.losses import plot_losses
from tidal.plots.trajectories import plot_fits
from tidal.plots.vector_field import plot_vector_fields
from tidal.report.metrics import (
    FORECAST_FACTOR,
    energy_along_forecasts,
    evaluate_run,
    true_trajectories,
)
from tidal.training.run import Run, load_run

PER_PAGE = 4
MAX_PAGES = 3


def write_report(run_dir: str | Path) -> Path:
    """Evaluate the run in `run_dir` and write metrics.json, the figures and report.html.

    Returns the path of report.html.
    """
    run = load_run(run_dir)
    metrics = evaluate_run(run)
    run.directory.write_json("metrics.json", metrics)
    sections: list[tuple[str, list[str]]] = []
    for split in ("test", "train"):
        data = run.data(split)
        if data is not None:
            sections.append((f"Observed vs fitted: {split} trajectories",
                             _fit_pages(run, data, split)))
    test = run.data("test") or run.data("train")
    sections.append(("Forecast beyond the data", [_save(run, "forecast.png",
                                                        _forecast(run, test))]))
    if len(run.state_names) >= 2:
        sections.append(("Vector field", [_save(run, "vector_field.png",
                                                _vector_fields(run, test))]))
    if isinstance(run.model, HamiltonianNN):
        ts, learned, true = energy_along_forecasts(run, test)
        sections.append(("Energy along forecasts", [_save(run, "energy.png",
                                                          plot_energy(ts, learned, true))]))
    history = _history(run)
    if history:
        sections.append(("Loss", [_save(run, "loss.png", plot_losses(history))]))
    run.directory.write_text("report.html", _html(run, metrics, sections))
    return run.path / "report.html"


def _fit_pages(run: Run, data: Trajectories, split: str) -> list[str]:
    names = []
    count = min(len(data), PER_PAGE * MAX_PAGES)
    for page, start in enumerate(range(0, count, PER_PAGE), start=1):
        part = data[list(range(start, min(start + PER_PAGE, count)))]
        t0, t1 = part.t_span
        ts = np.linspace(t0, t1, 200)
        predictions = run.predict(part.initial_states(), ts)
        figure = plot_fits(list(zip(part.times, part.values)),
                           [(ts, predictions[:, b]) for b in range(len(part))],
                           state_names=run.state_names,
                           titles=[f"{split} trajectory {i}" for i in part.ids])
        names.append(_save(run, f"fit_{split}_{page}.png", figure))
    return names


def _forecast(run: Run, data: Trajectories) -> Any:
    part = data[list(range(min(len(data), PER_PAGE)))]
    t0, t1 = part.t_span
    ts = np.linspace(t0, t0 + FORECAST_FACTOR * (t1 - t0), 300)
    y0 = part.initial_states()
    predictions = run.predict(y0, ts)
    truth = None
    if run.system is not None:
        true = true_trajectories(run.system, y0, ts)
        truth = [(ts, true[:, b]) for b in range(len(part))]
    return plot_fits(list(zip(part.times, part.values)),
                     [(ts, predictions[:, b]) for b in range(len(part))],
                     state_names=run.state_names, truth=truth, shade_until=t1,
                     titles=[f"forecast from trajectory {i} (grey: beyond the data)"
                             for i in part.ids])


def _vector_fields(run: Run, data: Trajectories) -> Any:
    """Learned (and true) field in the plane of the first two states, others at their mean."""
    observed = np.concatenate(data.values)
    mean = np.nanmean(observed, axis=0)
    system = run.system
    if system is not None:
        bounds = [tuple(b) for b in system.bounds[:2]]
    else:
        lo, hi = np.nanmin(observed, axis=0), np.nanmax(observed, axis=0)
        pad = 0.1 * (hi - lo)
        bounds = [(lo[i] - pad[i], hi[i] + pad[i]) for i in range(2)]

    def lift(points: np.ndarray) -> np.ndarray:
        full = np.tile(mean, (len(points), 1))
        full[:, :2] = points
        return full

    def learned(points: np.ndarray) -> np.ndarray:
        dtype = run.dtype
        y = run.scaling.scale_values(torch.as_tensor(lift(points), dtype=dtype))
        with torch.no_grad():
            dy = run.model.vector_field(torch.zeros((), dtype=dtype), y)
        # chain rule: y_user = offset + scale * y, t_user = time_scale * t
        return (dy.numpy() * run.scaling.state_scale / run.scaling.time_scale)[:, :2]

    fields = [("learned", learned)]
    if system is not None:
        def true(points: np.ndarray) -> np.ndarray:
            y = torch.as_tensor(lift(points), dtype=torch.float64)
            return system.vector_field(torch.zeros((), dtype=torch.float64), y).numpy()[:, :2]
        fields.append(("true", true))
    return plot_vector_fields(fields, bounds=bounds, axis_names=run.state_names[:2],
                              points=observed[:, :2])


def _history(run: Run) -> list[dict[str, Any]]:
    path = run.path / "metrics.csv"
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _save(run: Run, name: str, figure: Any) -> str:
    with run.directory.writing(name) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return name


def _html(run: Run, metrics: dict[str, Any], sections: list[tuple[str, list[str]]]) -> str:
    rows = []
    for split in ("train", "val", "test"):
        if split in metrics:
            cells = "".join(f"<td>{v:.4g} ({100 * r:.1f}%)</td>" for v, r in
                            zip(metrics[split]["rmse"], metrics[split]["relative_rmse"]))
            rows.append(f"<tr><th>{split} ({metrics[split]['trajectories']})</th>{cells}</tr>")
    header = "".join(f"<th>{html.escape(name)}</th>" for name in run.state_names)
    fit = metrics.get("fit", {})
    body = [f"<h1>tidal run: {html.escape(run.path.name)}</h1>",
            f"<p>{html.escape(str(fit.get('message', '')))}</p>",
            "<h2>Error against observations (RMSE, % of each state's range)</h2>",
            f"<table><tr><th>split</th>{header}</tr>{''.join(rows)}</table>"]
    for key, title in (("truth", "Against the true system"),
                       ("ude", "Physical parameters and the recovered correction (SINDy)"),
                       ("energy", "Energy along forecasts (Hamiltonian model)")):
        if key in metrics:
            body.append(f"<h2>{title}</h2><pre>"
                        f"{html.escape(json.dumps(metrics[key], indent=2))}</pre>")
    for title, images in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [f'<img src="{name}" alt="{html.escape(title)}">' for name in images]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
             "td,th{padding:2px 10px;text-align:right}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tidal report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
