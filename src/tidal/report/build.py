"""The run report: PNG figures, metrics.json and a self-contained report.html beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal.data import Trajectories
from tidal.models import HamiltonianNN
from tidal.models.augmented import extra_states
from tidal.models.ensemble import Ensemble
from tidal.models.polynomial import PolynomialODE
from tidal.plots.energy import plot_energy
from tidal.plots.losses import plot_losses
from tidal.plots.trajectories import plot_fits
from tidal.plots.vector_field import plot_vector_fields
from tidal.report.checks import (
    STARTS,
    Check,
    checks_json,
    percent,
    run_checks,
    run_facts,
    significant,
)
from tidal.report.metrics import (
    FORECAST_FACTOR,
    energy_along_forecasts,
    evaluate_run,
    learned_initial_states,
    predicted,
    true_trajectories,
)
from tidal.report.page import Section, report_page
from tidal.report.page import escape as _e
from tidal.report.warnings import FitWarning, fit_warnings, warnings_json
from tidal.training.ensemble import predictive_quantiles
from tidal.training.run import Run, load_run

PER_PAGE = 4
MAX_PAGES = 3
BAND = (0.05, 0.95)  # the predictive band drawn for an ensemble
SPREAD_CAPTION = (" For an ensemble: the members' mean field, and beside it their spread "
                  "(sqrt of the members' variances of dy/dt, summed over the two states "
                  "drawn): where it is large, the members disagree and the data do not pin "
                  "the field down.")


def write_report(run_dir: str | Path) -> Path:
    """Evaluate the run in `run_dir` and write metrics.json, the figures and report.html.

    Returns the path of report.html.
    """
    run = load_run(run_dir)
    metrics = evaluate_run(run)
    checks = run_checks(metrics, run.config)
    metrics["checks"] = checks_json(checks)
    warned = fit_warnings(run, metrics)
    metrics["warnings"] = warnings_json(warned)
    run.directory.write_json("metrics.json", metrics)
    sections: list[tuple[str, str, list[str]]] = []
    for split in ("test", "train"):
        data = run.data(split)
        if data is not None:
            starts = learned_initial_states(run, data) if split == "train" else None
            sections.append((f"Observed vs fitted: {split} trajectories",
                             _fit_caption(starts is not None),
                             _fit_pages(run, data, split, starts)))
    test = run.data("test") or run.training_data()
    sections.append(("Forecast beyond the data", "Dashed: the true system, when known.",
                     [_save(run, "forecast.png", _forecast(run, test))]))
    if len(run.state_names) >= 2 and not extra_states(run.model):  # no field in y alone
        sections.append(("Vector field", "Streamlines coloured by speed |dy/dt|; other states "
                         "at their mean." + (SPREAD_CAPTION if isinstance(run.model, Ensemble)
                                             else ""), [_save(run, "vector_field.png",
                                                  _vector_fields(run, test))]))
    if isinstance(run.model, HamiltonianNN):
        ts, learned, true = energy_along_forecasts(run, test)
        sections.append(("Energy along forecasts", "A Hamiltonian model keeps its own energy "
                         "whether or not it fits the data: read it with the errors above.",
                         [_save(run, "energy.png", plot_energy(ts, learned, true))]))
    history = _history(run)
    if history:
        kept_formula = run.config["data"].get("discover", {}).get("kept") == "formula"
        sections.append(("Loss", "The loss rises where the curriculum lengthens the fitted "
                         "window (dotted lines): a longer window is harder to fit, not a "
                         "divergence." + (" These are the network's losses: the kept formula "
                                          "was fitted after it (its losses are in the table "
                                          "of equations discovered)." if kept_formula else ""),
                         [_save(run, "loss.png", plot_losses(history))]))
    run.directory.write_text("report.html", _html(run, metrics, checks, sections, warned))
    return run.path / "report.html"


def _fit_caption(learned: bool) -> str:
    if learned:
        return ("Each curve starts from the initial state estimated in training (a cross), "
                "not from the noisy first observation.")
    return "Each curve starts from the trajectory's first (noisy) observation."


def _fit_pages(run: Run, data: Trajectories, split: str, starts: np.ndarray | None
               ) -> list[str]:
    """Figures of up to PER_PAGE trajectories each, the model run from `starts` [N, D]
    (marked on the figure) or from each trajectory's first observation."""
    names = []
    count = min(len(data), PER_PAGE * MAX_PAGES)
    y0 = data.initial_states() if starts is None else starts
    for page, start in enumerate(range(0, count, PER_PAGE), start=1):
        picked = list(range(start, min(start + PER_PAGE, count)))
        part = data[picked]
        t0, t1 = part.t_span
        ts = np.linspace(t0, t1, 200)
        predictions = predicted(run, y0[picked], ts)
        if not np.isfinite(predictions).all():  # one blew up: NaN (no line) for it alone
            predictions = np.stack([predicted(run, y0[i], ts) for i in picked], 1)
        figure = plot_fits(list(zip(part.times, part.values)),
                           [(ts, predictions[:, b]) for b in range(len(part))],
                           state_names=run.state_names,
                           titles=[f"{split} trajectory {i}" for i in part.ids],
                           starts=None if starts is None else
                           [(ts[0], y0[i]) for i in picked],
                           bands=_bands(run, y0[picked], ts, noisy_start=starts is None))
        names.append(_save(run, f"fit_{split}_{page}.png", figure))
    return names


def _forecast(run: Run, data: Trajectories) -> Any:
    part = data[list(range(min(len(data), PER_PAGE)))]
    t0, t1 = part.t_span
    ts = np.linspace(t0, t0 + FORECAST_FACTOR * (t1 - t0), 300)
    y0 = part.initial_states()
    predictions = predicted(run, y0, ts)
    truth = None
    if run.system is not None:
        true = true_trajectories(run.system, y0, ts)
        truth = [(ts, true[:, b]) for b in range(len(part))]
    return plot_fits(list(zip(part.times, part.values)),
                     [(ts, predictions[:, b]) for b in range(len(part))],
                     state_names=run.state_names, truth=truth, shade_until=t1,
                     bands=_bands(run, y0, ts, noisy_start=True),
                     titles=[f"forecast from trajectory {i} (grey: beyond the data)"
                             for i in part.ids])


def _bands(run: Run, y0: np.ndarray, ts: np.ndarray, *, noisy_start: bool
           ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """An ensemble's 5-95% predictive band (members, observation noise, and the start's
    noise when `y0` [B, D] are observations) per trajectory; None for a single model."""
    if not isinstance(run.model, Ensemble):
        return None
    low, high = predictive_quantiles(run, np.ascontiguousarray(y0), ts, BAND,
                                     noisy_start=noisy_start)
    return [(low[:, b], high[:, b]) for b in range(len(y0))]


def _vector_fields(run: Run, data: Trajectories) -> Any:
    """Learned (and true) field in the plane of the first two states, others at their mean."""
    observed = np.concatenate(data.values)
    mean = np.nanmean(observed, axis=0)
    system = run.system
    if system is not None:
        bounds = [(float(b[0]), float(b[1])) for b in system.bounds[:2]]
    else:
        lo, hi = np.nanmin(observed, axis=0), np.nanmax(observed, axis=0)
        # a state constant in the data still gets a plane (its value +- 10%, or +- 0.1)
        pad = 0.1 * np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
        bounds = [(lo[i] - pad[i], hi[i] + pad[i]) for i in range(2)]

    def lift(points: np.ndarray) -> np.ndarray:
        full = np.tile(mean, (len(points), 1))
        full[:, :2] = points
        return full

    def rates(model: Any, points: np.ndarray) -> np.ndarray:
        dtype = run.dtype
        y = run.scaling.scale_values(torch.as_tensor(lift(points), dtype=dtype))
        with torch.no_grad():
            dy = model.vector_field(torch.zeros((), dtype=dtype), y)
        return run.scaling.unscale_rates(dy).numpy()[:, :2]

    spread = None
    if isinstance(run.model, Ensemble):
        members = run.model.members

        def disagreement(points: np.ndarray) -> np.ndarray:
            each = np.stack([rates(member, points) for member in members])
            return np.sqrt(each.var(axis=0, ddof=1).sum(axis=-1))

        spread = ("members' spread", disagreement)
    fields = [("learned" if spread is None else "learned (members' mean)",
               lambda points: rates(run.model, points))]
    if system is not None:
        def true(points: np.ndarray) -> np.ndarray:
            y = torch.as_tensor(lift(points), dtype=torch.float64)
            return system.vector_field(torch.zeros((), dtype=torch.float64), y).numpy()[:, :2]
        fields.append(("true", true))
    return plot_vector_fields(fields, bounds=bounds, axis_names=run.state_names[:2],
                              points=observed[:, :2], spread=spread)


def _history(run: Run) -> list[dict[str, Any]]:
    path = run.path / "metrics.csv"
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _save(run: Run, name: str, figure: Any) -> str:
    with run.directory.writing(name) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return name


def _html(run: Run, metrics: dict[str, Any], checks: list[Check],
          sections: list[tuple[str, str, list[str]]], warned: list[FitWarning]) -> str:
    after = [_ude_section(metrics["ude"])] if "ude" in metrics else []
    if "discover" in run.config["data"]:
        after.append(_discovery_section(run.config["data"]["discover"], run.model))
    return report_page(f"tidal report: {run.path.name}", checks,
                       run_facts(metrics, run.config), tables=[_errors(run, metrics)],
                       sections=[Section(*section) for section in sections],
                       after_checks=after, warnings=[w.line for w in warned])


def _errors(run: Run, metrics: dict[str, Any]) -> str:
    """The error per state on each split."""
    header = "".join(f"<th>{_e(name)}</th>" for name in run.state_names)
    rows = []
    for split in ("test", "val", "train"):
        if split in metrics:
            cells = "".join(f"<td class='n'>{percent(r)}"
                            f"{'' if v is None else f' ({significant(v)})'}</td>"
                            for v, r in zip(metrics[split]["rmse"],
                                            metrics[split]["relative_rmse"]))
            if isinstance(run.model, Ensemble):
                covered = metrics[split].get("band_coverage")
                cells += (f"<td class='n'>{percent(covered)}</td>")
            rows.append(f"<tr><th>{split} ({metrics[split]['trajectories']})</th>{cells}"
                        f"<td>{_e(STARTS[metrics[split]['start']])}</td></tr>")
    if isinstance(run.model, Ensemble):
        header += "<th>inside the 90% band</th>"
    return ("<h2>Error against the observations</h2><p class='caption'>RMSE as % of "
            "each state's observed range (in the data's units in brackets). Observations "
            "are noisy, so the noise level is the floor."
            f"{band_caption(run.model) if isinstance(run.model, Ensemble) else ''}</p>"
            f"<table><tr><th>split</th>{header}<th>trajectories predicted</th></tr>"
            f"{''.join(rows)}</table>")


BAND_CAPTION = (" An ensemble's 90% band (its members' spread and the noise estimated from "
                "the data) should hold about 90% of the observations it was not trained on.")


def band_caption(model: Ensemble) -> str:
    """BAND_CAPTION and how the band was calibrated (`tidal.training.band_calibration`)."""
    calibration = model.band_calibration
    if calibration is None and model.bootstrap:
        return BAND_CAPTION + (" Each member trained on a bootstrap resample of the training "
                               "series; the band is their spread, widened for their number "
                               "(the truth as one more member), and the noise, not rescaled.")
    if calibration is None:
        return BAND_CAPTION + (" The band is not calibrated on validation data; the members' "
                               "spread is widened for their number.")
    if calibration.get("source") == "out-of-bag":  # runs saved before the eighth session
        return (BAND_CAPTION + f" The band is calibrated out of bag: scaled by "
                f"{significant(calibration['scale'])} about the members' mean so that it "
                f"holds 90% of {calibration['points']} observations ({_e(calibration['data'])}).")
    return (BAND_CAPTION + f" The band is calibrated on validation data: scaled by "
            f"{significant(calibration['scale'])} about the members' mean so that it holds 90% "
            f"of {calibration['points']} validation observations ({_e(calibration['data'])}); "
            "the validation split is therefore not an independent check of the band.")


def _discovery_section(found: dict[str, Any], model: Any) -> str:
    """What `--discover` found and which model the run kept (`tidal.training.discovery`)."""
    parts = ["<h2>Equations discovered (--discover)</h2>"]
    if not found["candidates"]:
        parts.append(f"<p>{_e(found['why'])}; the network is kept.</p>")
        return "".join(parts)

    def loss(candidate: dict[str, Any], key: str) -> str:
        value = candidate.get(key)  # no training loss in runs before the least-squares fit
        return ("-" if key not in candidate else _e(candidate["status"]) if value is None
                else significant(value))

    rows = "".join(
        f"<tr><td><pre>{_e(chr(10).join(c['formula']))}</pre>"
        + (f"pruned from the {c['pruned_from']}-term formula" if c.get("pruned_from") else "")
        + f"</td><td class='n'>{c['terms']}"
        f"</td><td class='n'>{c['threshold']:g}</td><td class='n'>{loss(c, 'train_loss')}"
        f"</td><td class='n'>{loss(c, 'val_loss')}</td></tr>"
        for c in found["candidates"])
    parts.append("<p class='caption'>Formulas that explain the learned field (SINDy, within "
                 "10% of its range), each fitted to the data again (to its least-squares "
                 "optimum on the training rows), then pruned one term at a time while a "
                 "coefficient is within two standard errors of zero. Kept: the sparsest whose "
                 "validation loss is "
                 "within twice the best, else the network (validation loss "
                 f"{significant(found['network_val_loss'])}).</p>"
                 "<table><tr><th>formula, as found (or pruned: at its optimum)</th><th>terms</th>"
                 "<th>threshold</th>"
                 "<th>training loss, refitted</th>"
                 f"<th>validation loss, refitted</th></tr>{rows}</table>")
    if isinstance(model, PolynomialODE):
        parts.append("<h3>Kept: the formula, refitted</h3>"
                     f"<pre>{_e(chr(10).join(model.equations()))}</pre>")
    else:
        parts.append("<h3>Kept: the network</h3>")
    return "".join(parts)


def _ude_section(ude: dict[str, Any]) -> str:
    true = ude.get("true_parameters", {})
    rows = "".join(f"<tr><th>{_e(name)}</th><td class='n'>{significant(value)}</td>"
                   f"<td class='n'>{significant(true[name]) if name in true else ''}</td></tr>"
                   for name, value in ude["physical_parameters"].items())
    parts = ["<h2>Physical parameters and recovered formulas (UDE)</h2>",
             f"<table><tr><th>parameter</th><th>learned</th><th>true</th></tr>{rows}</table>"]
    for key, title in (("field", "The whole learned field (known terms + correction)"),
                       ("correction", "The correction alone")):
        found = ude.get(key)
        text = ("no formula of degree <= 2 explains it within 5% of its range" if found is None
                else f"{found['formula']}\n(SINDy threshold {found['threshold']:g})")
        parts.append(f"<h3>{_e(title)}</h3><pre>{_e(text)}</pre>")
    parts.append("<p class='caption'>Only the whole field is determined by the data: a "
                 "correction that can represent a known term (a network can represent c y) "
                 "gives the same dynamics for any split of that term between the parameter and "
                 "the network, so a parameter alone can be off while the whole field is "
                 "right.</p>")
    return "".join(parts)
