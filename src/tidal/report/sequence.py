"""The report of a sequence run (`tidal fit --model latent-ode|ode-rnn|cde|gru`): metrics.json,
a figure and report.html through the shared page (`page.py`), with checks against stated
limits on the test series:

- forecasting and interpolation: the MSE of the observations not read (after each series'
  context, or hidden), per feature, must be below that of the naive prediction that repeats
  each feature's last observation read before them (`PERSISTENCE_LIMIT` of it); the figure
  shows per-feature fits of test series, with the 5-95% band of `POSTERIOR_SAMPLES`
  posterior samples for a latent ODE;
- classification: the accuracy must be above the share of the most frequent training class
  (a classifier that learned nothing predicts it); the figure is the confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tidal.report.checks import Check, checks_json, significant
from tidal.report.page import Section, escape, report_page, summary_text
from tidal.training.sequence_fit import HIDDEN_FRACTION, evaluate, forecast, visible_mask
from tidal.training.sequence_run import SequenceRun, load_sequence_run

PERSISTENCE_LIMIT = 1.0
POSTERIOR_SAMPLES = 32
PANELS = 4


def last_value_mse(values: torch.Tensor, mask: torch.Tensor, seen: torch.Tensor
                   ) -> torch.Tensor:
    """Per feature, the MSE on the observations not `seen` of repeating the series' last seen
    observation of the feature before each (the mean of all seen values when there is none)."""
    rows = torch.arange(values.shape[0])[:, None, None].expand(values.shape)
    last_row = torch.where(seen, rows, -1).cummax(0).values  # [K, B, D]
    last = values.gather(0, last_row.clamp(min=0))
    fallback = torch.where(seen, values, 0.0).sum((0, 1)) / seen.sum((0, 1)).clamp(min=1)
    last = torch.where(last_row >= 0, last, fallback)
    after = mask & ~seen
    error = torch.where(after, values - last, 0.0).square()
    return error.sum((0, 1)) / after.sum((0, 1)).clamp(min=1)


def evaluate_sequence(run: SequenceRun) -> dict[str, Any]:
    """metrics.json: how training ended and the test series' scores."""
    fit = run.config.get("fit", {})
    metrics: dict[str, Any] = {key: fit.get(key) for key in ("status", "message", "seconds")}
    test = run.series("test")
    scores = evaluate(run.model, test, run.options, refine=run.refine)
    metrics["test_series"] = test.values.shape[1]
    if run.options.task == "classify":
        assert test.labels is not None
        classes = run.config["classes"]
        confusion = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(confusion, (test.labels.numpy(), scores["predicted"].numpy()), 1)
        train_labels = run.series("train").labels
        assert train_labels is not None
        majority = torch.bincount(train_labels, minlength=len(classes)).argmax()
        metrics.update(accuracy=scores["accuracy"], cross_entropy=scores["loss"],
                       confusion=confusion.tolist(),
                       majority_accuracy=(test.labels == majority).double().mean().item())
        return metrics
    seen = visible_mask(test, run.options)
    scale = np.asarray(run.scaling.state_scale) ** 2
    model = scores["mse_per_feature"].double().numpy()
    naive = last_value_mse(test.values, test.mask, seen).double().numpy()
    metrics.update(forecast_mse=dict(zip(run.config["features"], (model * scale).tolist())),
                   last_value_mse=dict(zip(run.config["features"], (naive * scale).tolist())),
                   relative_to_last_value=float((model / np.maximum(naive, 1e-300)).max()),
                   forecast_mse_scaled=scores["loss"])
    return metrics


def sequence_checks(run: SequenceRun, metrics: dict[str, Any]) -> list[Check]:
    if run.options.task == "classify":
        # Both accuracies count test series, so "above" means at least one series more
        # than always predicting the most frequent class: equal accuracy (e.g. a single
        # class, or chance on two series) is not a pass.
        step = 1.0 / metrics["test_series"]
        return [Check("test accuracy above the most frequent class's share",
                      metrics["accuracy"] - metrics["majority_accuracy"], step * (1 - 1e-9),
                      at_least=True,
                      note=f"accuracy {significant(metrics['accuracy'])}, always the most "
                      f"frequent training class {significant(metrics['majority_accuracy'])}; "
                      "the limit is one test series")]
    return [Check("forecast MSE / last-value forecast's MSE, worst feature",
                  metrics["relative_to_last_value"], PERSISTENCE_LIMIT, percent=False,
                  note=f"test series, {_scored(run)}; below 1: better than repeating the "
                  "last observation read")]


def sequence_facts(run: SequenceRun, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    options, fit = run.options, run.config.get("fit", {})
    model = {"latent-ode": f"latent ODE (latent {options.latent}, ODE-RNN encoder "
                           f"{options.hidden})", "ode-rnn": f"ODE-RNN (hidden {options.hidden})",
             "cde": f"neural CDE (hidden {options.hidden})",
             "gru": f"GRU with time deltas (hidden {options.hidden})"}[options.model]
    task = (f"classify by {run.config['label']} ({len(run.config['classes'])} classes)"
            if options.task == "classify" else
            f"forecast after the first {options.context:.0%} of each series' span"
            if options.task == "forecast" else
            f"interpolate {HIDDEN_FRACTION:.0%} of the observations, hidden at random")
    seconds = fit.get("seconds")
    took = "" if seconds is None else f", {significant(float(seconds))} s"
    facts = [("model", f"{model}, MLP width {options.width}"), ("task", task),
             ("data", str(run.config["source"].get("path", "?"))),
             ("features", ", ".join(run.config["features"])),
             ("training", f"{fit.get('epochs', '?')} of {options.epochs} epochs{took}: "
                          f"{fit.get('status', 'unknown')} ({fit.get('message', '')})"),
             ("test series", str(metrics["test_series"]))]
    if options.model == "latent-ode":
        facts.append(("prediction", _refinement(run)))
    return facts


def _refinement(run: SequenceRun) -> str:
    """How the latent ODE's z0 is found: the posterior mean, or refined (and how chosen)."""
    steps, losses = run.refine, run.config["fit"].get("refine_val_loss")
    start = ("from the encoder's posterior mean of z0" if not steps else
             f"from z0 refined {steps} steps toward the posterior's mode")
    if run.options.refine is not None:
        return f"{start} (--refine)"
    before, after = (losses or {}).get("0"), (losses or {}).get(str(steps))
    if before is None or after is None:
        return start
    return (f"{start}, chosen on the validation series (MSE of the observations not read, "
            f"scaled units: {significant(before)} from the posterior mean, "
            f"{significant(after)} refined)")


def _table(run: SequenceRun, metrics: dict[str, Any]) -> str:
    if run.options.task == "classify":
        classes = run.config["classes"]
        head = "".join(f"<th>{escape(c)}</th>" for c in classes)
        rows = "".join(f"<tr><th>{escape(c)}</th>"
                       + "".join(f"<td class='n'>{n}</td>" for n in row) + "</tr>"
                       for c, row in zip(classes, metrics["confusion"]))
        return ("<h2>Confusion matrix (test series)</h2><p class='caption'>Rows: true class; "
                f"columns: predicted.</p><table><tr><th></th>{head}</tr>{rows}</table>")
    rows = "".join(f"<tr><th>{escape(name)}</th><td class='n'>{significant(value)}</td>"
                   f"<td class='n'>{significant(metrics['last_value_mse'][name])}</td></tr>"
                   for name, value in metrics["forecast_mse"].items())
    return ("<h2>Prediction error (test series)</h2><p class='caption'>MSE of the "
            f"{_scored(run)}, in the data's units.</p><table><tr><th>feature</th><th>model</th>"
            f"<th>last observation read</th></tr>{rows}</table>")


def _scored(run: SequenceRun) -> str:
    return ("observations after each series' context" if run.options.task == "forecast"
            else "hidden observations")


def write_sequence_report(run_dir: str | Path) -> Path:
    """Evaluate the sequence run in `run_dir` and write metrics.json, the figure and
    report.html. Returns the path of report.html."""
    run = load_sequence_run(run_dir)
    metrics = evaluate_sequence(run)
    checks = sequence_checks(run, metrics)
    metrics["checks"] = checks_json(checks)
    run.directory.write_json("metrics.json", metrics)
    sections = [_confusion_figure(run, metrics) if run.options.task == "classify"
                else _fits_figure(run)]
    page = report_page(f"tidal sequence model: {run.path.name}", checks,
                       sequence_facts(run, metrics), tables=[_table(run, metrics)],
                       sections=sections)
    run.directory.write_text("report.html", page)
    return run.path / "report.html"


def sequence_summary(run_dir: str | Path) -> str:
    """The run's verdict for the terminal, from what `write_sequence_report` wrote."""
    from tidal._files import read_json

    run = load_sequence_run(run_dir)
    metrics = read_json(run.path / "metrics.json")
    lines = ([f"test accuracy {significant(metrics['accuracy'])}"]
             if run.options.task == "classify" else
             [f"forecast MSE {name} {significant(value)} (last value "
              f"{significant(metrics['last_value_mse'][name])})"
              for name, value in metrics["forecast_mse"].items()])
    return "\n".join(summary_text(sequence_facts(run, metrics), lines,
                                  sequence_checks(run, metrics)))


@torch.no_grad()
def _fits_figure(run: SequenceRun) -> Section:
    from tidal.models import LatentODE
    from tidal.plots.trajectories import plot_fits

    test = run.series("test")
    chosen = torch.arange(min(PANELS, test.values.shape[1]))
    part = test[chosen]
    seen = visible_mask(part, run.options)
    refine = run.refine
    predicted = forecast(run.model, part, seen, refine=refine)
    bands = None
    if isinstance(run.model, LatentODE):
        torch.manual_seed(0)
        draws = forecast(run.model, part, seen, refine=refine, samples=POSTERIOR_SAMPLES)
        low, high = torch.quantile(draws.double(), torch.tensor([0.05, 0.95],
                                                                dtype=torch.float64), dim=0)
    times = part.times if part.times.dim() == 2 else part.times[:, None].expand(
        part.values.shape[:2])
    ids = run.trajectories("test").ids
    observed, fitted, titles, shade, band_list = [], [], [], [], []
    for b in range(len(chosen)):
        rows = part.mask[:, b].any(-1).numpy()
        t = times[rows, b].numpy()
        values = np.where(part.mask[rows, b].numpy(), run.unscale(part.values[rows, b]), np.nan)
        observed.append((t, values))
        fitted.append((t, run.unscale(predicted[rows, b])))
        if isinstance(run.model, LatentODE):
            band_list.append((run.unscale(low[rows, b]), run.unscale(high[rows, b])))
        start, end = float(t[0]), float(t[-1])
        shade.append(start + run.options.context * (end - start)
                     if run.options.task == "forecast" else end)
        titles.append(f"test series {ids[int(chosen[b])]}")
    if band_list:
        bands = band_list
    figure = plot_fits(observed, fitted, state_names=run.config["features"], titles=titles,
                       shade_until=shade, bands=bands)
    caption = "Test series: observations (points) and the model's prediction of each " + (
        "observed row from what came before it (lines); the grey region is forecast from the "
        "context alone." if run.options.task == "forecast" else "observed row from the "
        "observations read (lines); the hidden observations are those the model did not read "
        "(scored).")
    if bands is not None:
        z0 = (f"z0 moved {refine} steps toward the posterior's mode" if refine
              else "the posterior mean of z0")
        caption += (f" The latent ODE decodes from {z0}; shaded: 5-95% of "
                    f"{POSTERIOR_SAMPLES} decodings of draws about it (the encoder's sigma).")
    return Section("Per-feature fits", caption, [_save(run, figure, "fits.png")])


def _confusion_figure(run: SequenceRun, metrics: dict[str, Any]) -> Section:
    from matplotlib.figure import Figure

    confusion = np.asarray(metrics["confusion"])
    classes = run.config["classes"]
    figure = Figure(figsize=(1.2 + 0.5 * len(classes), 1.0 + 0.5 * len(classes)),
                    layout="constrained")
    ax = figure.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    return Section("Confusion matrix", "Test series by true and predicted class.",
                   [_save(run, figure, "confusion.png")])


def _save(run: SequenceRun, figure: Any, name: str) -> str:
    with run.directory.writing(name) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return name
