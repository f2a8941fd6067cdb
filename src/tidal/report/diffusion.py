"""The report of a diffusion run (`tidal diffusion fit`): metrics.json, a samples figure and
report.html through the shared page, with checks:

- the held-out NLL (PF-ODE) below that of a Gaussian fitted to the training samples;
- for eight Gaussians (known density), the held-out NLL at most `GAP_LIMIT` nats above the
  true density's, and the Heun samples' NLL under the true density beside its entropy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tidal.report.checks import Check, checks_json, significant
from tidal.report.flow import KNOWN_DENSITIES, gaussian_nll
from tidal.report.page import Section, report_page, summary_text
from tidal.training.diffusion_run import DiffusionRun, load_diffusion_run

GAP_LIMIT = 0.10
SAMPLE_STEPS = 20  # Heun: 2 x 20 - 1 = 39 NFE


def evaluate_diffusion(run: DiffusionRun) -> dict[str, Any]:
    """Held-out NLL (nats, or bits/dim for discrete data) by the PF-ODE with its NFE, a
    Gaussian's NLL, and for a known toy density the true NLL and the samples' NLL under it."""
    val, train = run.data("val"), run.data("train")
    fit = run.config.get("fit", {})
    unit = "nats" if run.levels is None else "bits/dim"
    nll, nfe = run.nll(val)
    metrics: dict[str, Any] = {"status": fit.get("status", "unknown"),
                               "message": fit.get("message", ""), "seconds": fit.get("seconds"),
                               "unit": unit, "val_nll": nll, "num_fevals_likelihood": nfe,
                               "val_samples": len(val), "train_samples": len(train)}
    if run.levels is None:
        metrics["gaussian_val_nll"] = gaussian_nll(train, val)
    samples, sample_nfe = run.sample(2000, steps=SAMPLE_STEPS)
    metrics["num_fevals_sample"] = sample_nfe
    toy = run.config["source"].get("toy")
    if toy in KNOWN_DENSITIES:
        from tidal.data.toys import toy_log_prob

        metrics["true_val_nll"] = -float(toy_log_prob(toy, torch.as_tensor(val)).mean())
        metrics["gap"] = metrics["val_nll"] - metrics["true_val_nll"]
        metrics["sample_nll_true_density"] = -float(
            toy_log_prob(toy, torch.as_tensor(samples)).mean())
    return metrics


def diffusion_checks(metrics: dict[str, Any]) -> list[Check]:
    checks = []
    if "gaussian_val_nll" in metrics:
        checks.append(Check("held-out NLL minus a fitted Gaussian's",
                            metrics["val_nll"] - metrics["gaussian_val_nll"], 0.0,
                            percent=False, note="nats per sample"))
    if "gap" in metrics:
        checks.append(Check("held-out NLL above the true density's", metrics["gap"],
                            GAP_LIMIT, percent=False, note="nats per sample"))
    return checks


def diffusion_facts(run: DiffusionRun, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    options, source, fit = run.config["options"], run.config["source"], run.config["fit"]
    data = (f"toy {source['toy']}" if "toy" in source else
            "scikit-learn digits (8 x 8, 17 levels)" if source.get("digits") else
            str(source.get("path", "samples given in Python")))
    seconds = fit.get("seconds")
    took = "" if seconds is None else f", {significant(float(seconds))} s"
    return [("model", f"score MLP {options['width']} x {options['depth']} (EMA "
                      f"{options['ema_decay']}), {run.process.name} SDE, "
                      f"{options['weighting']} weighting"),
            ("data", data), ("samples", f"{metrics['train_samples']} training, "
                                        f"{metrics['val_samples']} held out"),
            ("training", f"{fit.get('steps', '?')} of {options['steps']} steps{took}: "
                         f"{fit.get('status', 'unknown')} ({fit.get('message', '')})"),
            ("likelihood", f"probability-flow ODE, tolerance {options['eval_tol']:g}, "
                           f"{metrics['num_fevals_likelihood']} NFE"),
            ("sampler", f"EDM Heun, {SAMPLE_STEPS} steps, {metrics['num_fevals_sample']} NFE")]


def _lines(metrics: dict[str, Any]) -> list[str]:
    unit = metrics["unit"]
    lines = [f"held-out NLL {significant(metrics['val_nll'])} {unit} (PF-ODE)"]
    for key, label in (("gaussian_val_nll", "Gaussian"), ("true_val_nll", "true density"),
                       ("sample_nll_true_density", "Heun samples under the true density")):
        if key in metrics:
            lines.append(f"{label}: {significant(metrics[key])} nats")
    return lines


def write_diffusion_report(run_dir: str | Path) -> Path:
    """Evaluate the run in `run_dir`; write metrics.json, samples.png and report.html."""
    run = load_diffusion_run(run_dir)
    metrics = evaluate_diffusion(run)
    checks = diffusion_checks(metrics)
    metrics["checks"] = checks_json(checks)
    run.directory.write_json("metrics.json", metrics)
    cells = "".join(f"<tr><td>{line}</td></tr>" for line in _lines(metrics))
    page = report_page(f"tidal diffusion: {run.path.name}", checks,
                       diffusion_facts(run, metrics),
                       tables=[f"<h2>Likelihood and samples</h2><table>{cells}</table>"],
                       sections=_figures(run))
    run.directory.write_text("report.html", page)
    return run.path / "report.html"


def diffusion_summary(run_dir: str | Path) -> str:
    from tidal._files import read_json

    run = load_diffusion_run(run_dir)
    metrics = read_json(run.path / "metrics.json")
    return "\n".join(summary_text(diffusion_facts(run, metrics), _lines(metrics),
                                  diffusion_checks(metrics)))


def _figures(run: DiffusionRun) -> list[Section]:
    from matplotlib.figure import Figure

    from tidal.plots.density import plot_samples

    samples, _ = run.sample(2000 if run.levels is None else 64, steps=SAMPLE_STEPS, seed=1)
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    if run.levels is not None and samples.shape[1] == 64:
        axes = figure.subplots(8, 8)
        for ax, image in zip(axes.flat, samples):
            ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=run.levels - 1)
            ax.set_axis_off()
        caption = "64 samples (EDM Heun sampler), as 8 x 8 images."
    elif samples.shape[1] < 2:  # the figures show two columns
        return []
    else:
        data = run.data("train")
        plot_samples(samples[:, :2], reference=data[:2000, :2], ax=figure.subplots(),
                     title="samples (model vs data)")
        caption = "2000 samples (EDM Heun sampler) over the data (grey); the first two columns."
    with run.directory.writing("samples.png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    sections = [Section("Samples", caption, ["samples.png"])]
    if run.levels is None and samples.shape[1] == 2:
        sections.insert(0, _density(run))
    return sections


def _density(run: DiffusionRun) -> Section:
    """exp(log p) by the probability-flow ODE (exact trace) on a 48 x 48 grid over the data."""
    from matplotlib.figure import Figure

    from tidal.plots.density import plot_density
    from tidal.report.flow import data_bounds

    bounds = data_bounds(run.data("train"))
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    plot_density(lambda x: run.log_prob(x.double().numpy())[0], bounds, resolution=48,
                 dtype=torch.float64,
                 ax=figure.subplots(), title="learned density (probability-flow ODE)")
    with run.directory.writing("density.png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return Section("Learned density", "exp(log p) on a grid over the data, each point's log p "
                   "by the probability-flow ODE with the exact trace.", ["density.png"])


