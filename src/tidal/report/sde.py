"""The report of an SDE run (`tidal fit --model sde|latent-sde`): predictive bands against
held-out data, metrics.json and report.html through the shared page (`page.py`).

Each held-out trajectory (the test split, else the validation split) is forecast from its
first observation by `SAMPLES` sampled paths (with the latent SDE's observation noise); the
check is the calibration of the 90% band (5% to 95% quantiles): the fraction of held-out
observed entries after the first row that fall inside it must lie in [`COVERAGE_LOW`,
`COVERAGE_HIGH`] (a band that covers far more than 90% is too wide to be useful).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tidal.data import Trajectories
from tidal.report.checks import Check, checks_json, significant
from tidal.report.page import Section, report_page, summary_text
from tidal.training.sde_run import SDERun, load_sde_run

SAMPLES = 200
COVERAGE_LOW, COVERAGE_HIGH = 0.80, 0.98
QUANTILES = (0.05, 0.5, 0.95)
#: Trajectories drawn in bands.png, and points on each one's dense time grid.
SHOWN, GRID_POINTS = 6, 100


def held_out(run: SDERun) -> tuple[str, Trajectories] | None:
    """The split the report scores ("test", else "val") and its trajectories."""
    for split in ("test", "val"):
        data = run.data(split)
        if data is not None:
            return split, data
    return None


def band_coverage(data: Trajectories, grid: np.ndarray, samples: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(inside, observed) counts per state: held-out entries after each trajectory's first row
    inside the 5%-95% band of `samples` [T, n, B, D] (at the trajectories' own times `grid`
    [T, B])."""
    low, high = np.quantile(samples, (QUANTILES[0], QUANTILES[2]), axis=1)  # [T, B, D]
    inside = np.zeros(data.n_states, dtype=int)
    observed = np.zeros(data.n_states, dtype=int)
    for b, (times, values, mask) in enumerate(zip(data.times, data.values, data.masks)):
        rows = slice(1, len(times))
        assert np.array_equal(grid[rows, b], times[rows])
        seen = mask[rows]
        hit = (values[rows] >= low[rows, b]) & (values[rows] <= high[rows, b]) & seen
        inside += hit.sum(axis=0)
        observed += seen.sum(axis=0)
    return inside, observed


def evaluate_sde(run: SDERun) -> dict[str, Any]:
    """metrics.json of an SDE run: the held-out coverage of the 90% band (overall and per
    state), the median forecast's RMSE, and how training ended."""
    fit = run.config["fit"]
    metrics: dict[str, Any] = {"status": fit.get("status", "unknown"),
                               "message": fit.get("message", ""),
                               "seconds": fit.get("seconds"), "samples": SAMPLES}
    found = held_out(run)
    if found is None:
        return metrics
    split, data = found
    grid, samples = run.forecast_samples(data, SAMPLES)
    inside, observed = band_coverage(data, grid, samples)
    median = np.median(samples, axis=1)
    errors = [(values[1:] - median[1:len(times), b])[mask[1:]]
              for b, (times, values, mask) in enumerate(zip(data.times, data.values,
                                                              data.masks))]
    flat = np.concatenate(errors)
    metrics.update(held_out_split=split, held_out_trajectories=len(data),
                   held_out_points=int(observed.sum()),
                   coverage_90=float(inside.sum() / max(observed.sum(), 1)),
                   coverage_90_per_state={name: float(i / max(o, 1)) for name, i, o in
                                          zip(data.state_names, inside, observed)},
                   median_rmse=float(np.sqrt(np.mean(flat ** 2))) if len(flat) else None)
    return metrics


def sde_checks(metrics: dict[str, Any]) -> list[Check]:
    if "coverage_90" not in metrics:
        return []
    note = (f"held-out observations inside the 5-95% band of {metrics['samples']} paths "
            "forecast from each trajectory's first observation")
    return [Check("coverage of the 90% band (at least)", metrics["coverage_90"], COVERAGE_LOW,
                  at_least=True, note=note),
            Check("coverage of the 90% band (at most)", metrics["coverage_90"], COVERAGE_HIGH,
                  note="a wider band than needed covers too much")]


def sde_facts(run: SDERun, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    options, fit, data = run.config["options"], run.config["fit"], run.config["data"]
    model = (f"NeuralSDE (drift and diagonal diffusion MLPs {options['width']} x "
             f"{options['depth']}, {options['activation']}), fitted by the Euler-Maruyama "
             "transition likelihood" if run.config["type"] == "NeuralSDE" else
             f"LatentSDE (latent size {options['latent_size']}, context "
             f"{options['context_size']}, MLPs {options['width']} x {options['depth']}), "
             "fitted by the ELBO")
    seconds = fit.get("seconds")
    took = "" if seconds is None else f", {significant(float(seconds))} s"
    facts = [("model", f"{model}; Euler-Maruyama step {significant(options['dt'])}"),
             ("data", str(data.get("path", "trajectories given in Python"))),
             ("states", ", ".join(run.state_names)),
             ("training", f"{fit.get('epochs', '?')} epochs{took}: "
                          f"{fit.get('status', 'unknown')} ({fit.get('message', '')})")]
    if "coverage_90" in metrics:
        facts.append(("held out", f"{metrics['held_out_trajectories']} trajectories "
                                  f"({metrics['held_out_split']} split, split "
                                  f"{data.get('split', '?')}), {metrics['held_out_points']} "
                                  "observed entries scored"))
    return facts


def write_sde_report(run_dir: str | Path) -> Path:
    """Evaluate the SDE run in `run_dir` and write metrics.json, bands.png and report.html.
    Returns the path of report.html."""
    run = load_sde_run(run_dir)
    metrics = evaluate_sde(run)
    checks = sde_checks(metrics)
    metrics["checks"] = checks_json(checks)
    run.directory.write_json("metrics.json", metrics)
    found = held_out(run)
    sections = [] if found is None else [_bands_section(run, found[1])]
    page = report_page(f"tidal SDE fit: {run.path.name}", checks, sde_facts(run, metrics),
                       sections=sections)
    run.directory.write_text("report.html", page)
    return run.path / "report.html"


def sde_summary(run_dir: str | Path) -> str:
    """The SDE run's verdict for the terminal, from what `write_sde_report` wrote."""
    from tidal._files import read_json

    run = load_sde_run(run_dir)
    metrics = read_json(run.path / "metrics.json")
    lines = ([] if "coverage_90" not in metrics else
             [f"held-out coverage of the 90% band: {significant(100 * metrics['coverage_90'])}%"
              f" of {metrics['held_out_points']} observed entries"])
    return "\n".join(summary_text(sde_facts(run, metrics), lines, sde_checks(metrics)))


def _bands_section(run: SDERun, data: Trajectories) -> Section:
    from tidal.plots.bands import plot_bands

    shown = data[list(range(min(SHOWN, len(data))))]
    times = [np.linspace(t[0], t[-1], GRID_POINTS) for t in shown.times]
    _, samples = run.forecast_samples(shown, SAMPLES, times=times)
    low, median, high = np.quantile(samples, QUANTILES, axis=1)
    bands = [(times[b], low[:, b], median[:, b], high[:, b]) for b in range(len(shown))]
    observed = [(t, np.where(m, v, np.nan)) for t, v, m in
                zip(shown.times, shown.values, shown.masks)]
    figure = plot_bands(observed, bands, state_names=run.state_names,
                        titles=[f"held out: {name}" for name in shown.ids])
    with run.directory.writing("bands.png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return Section("Predictive bands on held-out data",
                   f"{SAMPLES} paths forecast from each trajectory's first observation: median "
                   "(line) and 5-95% band (shaded), with the held-out observations.",
                   ["bands.png"])
