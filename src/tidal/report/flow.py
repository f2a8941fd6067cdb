"""The report of a flow run (`tidal flow fit`): metrics.json, density and sample figures, and
report.html through the shared page (`page.py`), with checks against stated limits:

- the held-out NLL must be below that of a Gaussian fitted to the training samples (mean and
  covariance): a flow that does no better has learned nothing of the data's shape;
- for a toy with a known density (eight Gaussians), the held-out NLL at most `GAP_LIMIT` nats
  above the true density's (the default settings reach 0.02, docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tidal.report.checks import Check, checks_json, significant
from tidal.report.page import Section, report_page, summary_text
from tidal.training.flow_run import FlowRun, load_flow_run

GAP_LIMIT = 0.10
#: Toys whose log-density is known in closed form (`tidal.data.toys.toy_log_prob`).
KNOWN_DENSITIES = ("eight-gaussians",)


def evaluate_flow(run: FlowRun) -> dict[str, Any]:
    """metrics.json of a flow run: held-out NLL (and a Gaussian's, and the true density's
    when known), sample counts, NFE and how training ended."""
    val, train = run.data("val"), run.data("train")
    fit = run.config.get("fit", {})
    metrics: dict[str, Any] = {"status": fit.get("status", "unknown"),
                               "message": fit.get("message", ""),
                               "seconds": fit.get("seconds")}
    if val is None or train is None:
        return metrics
    metrics.update(val_nll=run.nll(val), val_samples=len(val), train_samples=len(train),
                   gaussian_val_nll=gaussian_nll(train, val))
    stats = run.cnf.last_stats
    metrics["num_fevals_eval"] = None if stats is None else int(stats.num_fevals)
    history = run.path / "metrics.csv"
    if history.is_file():
        import pandas as pd

        metrics["num_fevals_train_mean"] = float(pd.read_csv(history)["num_fevals"].mean())
    toy = run.config["source"].get("toy")
    if toy in KNOWN_DENSITIES:
        from tidal.data.toys import toy_log_prob

        metrics["true_val_nll"] = -float(toy_log_prob(toy, torch.as_tensor(val)).mean())
        metrics["gap"] = metrics["val_nll"] - metrics["true_val_nll"]
    return metrics


def gaussian_nll(train: np.ndarray, val: np.ndarray) -> float:
    """The mean NLL of `val` under the Gaussian with `train`'s mean and covariance."""
    mean = train.mean(axis=0)
    cov = np.atleast_2d(np.cov(train, rowvar=False)) + 1e-12 * np.eye(train.shape[1])
    centred = val - mean
    _, logdet = np.linalg.slogdet(cov)
    mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
    return float(0.5 * (mahalanobis.mean() + logdet + train.shape[1] * np.log(2 * np.pi)))


def flow_checks(metrics: dict[str, Any]) -> list[Check]:
    checks = []
    if "val_nll" in metrics:
        checks.append(Check("held-out NLL minus a fitted Gaussian's",
                            metrics["val_nll"] - metrics["gaussian_val_nll"], 0.0,
                            percent=False, note="nats per sample; below 0: the flow explains "
                            "the held-out samples better than their mean and covariance do"))
    if "gap" in metrics:
        checks.append(Check("held-out NLL above the true density's", metrics["gap"],
                            GAP_LIMIT, percent=False, note="nats per sample"))
    return checks


def flow_facts(run: FlowRun, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    options, source = run.config["options"], run.config["source"]
    data = (f"toy {source['toy']} ({source.get('samples', '?')} samples)" if "toy" in source
            else str(source.get("path", "samples given in Python")))
    fit = run.config.get("fit", {})
    seconds = fit.get("seconds")
    took = "" if seconds is None else f", {significant(float(seconds))} s"
    facts = [("model", f"CNF (ConcatSquashMLP {options['width']} x {options['depth']}, "
                       f"{options['activation']}), {options['trace']} trace, kinetic "
                       f"{options['kinetic']:g}, jacobian {options['jacobian']:g}, tolerance "
                       f"{options['train_tol']:g} in training, {options['eval_tol']:g} here"),
             ("data", data), ("columns", ", ".join(run.config["columns"])),
             ("training", f"{fit.get('steps', '?')} of {options['steps']} steps{took}: "
                          f"{fit.get('status', 'unknown')} ({fit.get('message', '')})")]
    if "val_nll" in metrics:
        facts.append(("samples", f"{metrics['train_samples']} training, "
                                 f"{metrics['val_samples']} held out"))
    return facts


def _nll_table(metrics: dict[str, Any]) -> str:
    rows = [(label, metrics[key]) for key, label in (
        ("val_nll", "the flow"), ("gaussian_val_nll", "a Gaussian fitted to the training "
                                  "samples"), ("true_val_nll", "the true density"))
        if key in metrics]
    if not rows:
        return ""
    cells = "".join(f"<tr><th>{label}</th><td class='n'>{significant(value)}</td></tr>"
                    for label, value in rows)
    return ("<h2>Held-out negative log-likelihood</h2><p class='caption'>Nats per sample, in "
            f"the data's units; lower is better.</p><table>{cells}</table>")


def write_flow_report(run_dir: str | Path) -> Path:
    """Evaluate the flow run in `run_dir` and write metrics.json, the figures and report.html.
    Returns the path of report.html."""
    run = load_flow_run(run_dir)
    metrics = evaluate_flow(run)
    checks = flow_checks(metrics)
    metrics["checks"] = checks_json(checks)
    run.directory.write_json("metrics.json", metrics)
    parts = [part for part in (run.data("train"), run.data("val")) if part is not None]
    sections = _figures(run, np.concatenate(parts)) if parts else []
    page = report_page(f"tidal flow: {run.path.name}", checks, flow_facts(run, metrics),
                       tables=[_nll_table(metrics)], sections=sections)
    run.directory.write_text("report.html", page)
    return run.path / "report.html"


def flow_summary(run_dir: str | Path) -> str:
    """The flow run's verdict for the terminal, from what `write_flow_report` wrote."""
    from tidal._files import read_json

    run = load_flow_run(run_dir)
    metrics = read_json(run.path / "metrics.json")
    lines = [f"held-out NLL {significant(metrics[key])} nats ({label})"
             for key, label in (("val_nll", "flow"), ("gaussian_val_nll", "Gaussian"),
                                ("true_val_nll", "true density")) if key in metrics]
    return "\n".join(summary_text(flow_facts(run, metrics), lines, flow_checks(metrics)))


def _figures(run: FlowRun, data: np.ndarray) -> list[Section]:
    from matplotlib.figure import Figure

    from tidal.plots.density import plot_density, plot_samples

    if data.shape[1] < 2:  # the figures show two columns
        return []
    bounds = data_bounds(data) if data.shape[1] == 2 else None
    sections = []
    if bounds is not None:
        figure = Figure(figsize=(5, 4.6), layout="constrained")
        plot_density(run.log_prob, bounds, ax=figure.subplots(), resolution=80,
                     title="learned density", dtype=torch.float64)
        sections.append(Section("Learned density", "exp(log p) on a grid over the data.",
                                [_save(run, figure, "density.png")]))
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    plot_samples(run.sample(2000)[:, :2], reference=data[:2000, :2], bounds=bounds,
                 ax=figure.subplots(), title="samples (model vs data)")
    sections.append(Section("Samples", "2000 samples of the flow over the data (grey); the "
                            "first two columns.", [_save(run, figure, "samples.png")]))
    return sections


def data_bounds(data: np.ndarray) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) around the first two columns, padded by 15% of their range
    (or, for a column of one value, by half its magnitude or 0.5)."""
    lo, hi = data[:, :2].min(axis=0), data[:, :2].max(axis=0)
    pad = np.where(hi > lo, 0.15 * (hi - lo), np.maximum(0.5 * np.abs(lo), 0.5))
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]),
            float(hi[1] + pad[1]))


def _save(run: FlowRun, figure: Any, name: str) -> str:
    with run.directory.writing(name) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return name
