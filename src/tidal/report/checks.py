"""The verdict on a run: checks against stated limits, each passed or failed, and the summary
that heads report.html and ends `tidal fit`, `tidal demo` and `tidal report` on the terminal.

The limits are fixed here, where a reader can see them:

- held-out error: the worst state's RMSE on the test trajectories (validation when there is
  no test split) at most `HELD_OUT_LIMIT` of its range. Observations carry noise, so the
  floor is the noise level (5% of the range in `tidal demo`).
- with a built-in system: learned against true trajectories from the same initial states,
  over the data's span and over a forecast to 3x the span; the toggle switch's basins; the
  period of an oscillator; the learned physical parameters of a UDE.
- a Hamiltonian model: its learned energy's drift along forecasts, and whether the data's
  system conserves energy at all (a conservative model cannot fit a damped one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HELD_OUT_LIMIT = 0.10
DATA_SPAN_LIMIT = 0.05
FORECAST_LIMIT = 0.10
BASIN_LIMIT = 0.90
PERIOD_LIMIT = 0.05
ENERGY_LIMIT = 0.01
PARAMETER_LIMIT = 0.10


@dataclass(frozen=True)
class Check:
    """One check: `value` against `limit` (at most, or at least when `at_least`); a value of
    None could not be measured and fails. `percent` shows value and limit as percentages."""

    name: str
    value: float | None
    limit: float
    at_least: bool = False
    percent: bool = True
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def shown(self, number: float | None) -> str:
        if number is None:
            return "none"
        return f"{significant(100 * number)}%" if self.percent else significant(number)

    @property
    def requirement(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.shown(self.limit)}"


def percent(x: float | None) -> str:
    """A fraction as a percentage, or "not measurable" (None: the model could not be solved)."""
    return "not measurable" if x is None else f"{significant(100 * x)}%"


def significant(x: float, digits: int = 3) -> str:
    """x to `digits` significant digits: 0.0451 -> "0.0451", 4.5 -> "4.50", 98.5 -> "98.5"."""
    text = f"{x:#.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa.rstrip('.')}e{int(exponent)}"
    return text.rstrip(".")


def run_checks(metrics: dict[str, Any], config: dict[str, Any]) -> list[Check]:
    """The checks that apply to a run, from its metrics.json and config.json contents."""
    checks = []
    held_out = next((split for split in ("test", "val") if split in metrics), None)
    if held_out is not None:
        worst, name = _worst(metrics, metrics[held_out]["relative_rmse"])
        checks.append(Check(f"held-out error ({_SPLIT_NAMES[held_out]}), worst state ({name})",
                            worst, HELD_OUT_LIMIT, note="RMSE against the observations, % of "
                            "the state's range"))
    truth = metrics.get("truth", {})
    for key, title, limit in (("data_span", "over the data's span", DATA_SPAN_LIMIT),
                              ("forecast", "forecast to 3x the span", FORECAST_LIMIT)):
        if f"{key}_relative_rmse" in truth:
            worst, name = _worst(metrics, truth[f"{key}_relative_rmse"])
            checks.append(Check(f"learned vs true system {title}, worst state ({name})", worst,
                                limit, note="RMSE, both started from the test "
                                "trajectories' first observations, % of the state's range"))
    if "basin_agreement" in truth:
        basin = truth["basin_agreement"]
        checks.append(Check("basin agreement with the true system", basin["fraction"],
                            BASIN_LIMIT, at_least=True, note=f"same stable state at t = "
                            f"{basin['t_end']:g} from a {basin['grid']} grid"))
    if "period" in truth:
        checks.append(Check("oscillation period, worst relative error",
                             truth["period"]["max_relative_error"], PERIOD_LIMIT,
                             note=f"{len(truth['period']['true'])} starts in the system's "
                             "initial box; none = the learned model stopped oscillating"))
    if "energy" in metrics:
        checks.append(Check("learned energy drift along forecasts",
                            max(metrics["energy"]["learned_drift_of_range"]), ENERGY_LIMIT,
                            note="max |H(t) - H(0)|, % of H's range over the data"))
    system = config.get("data", {}).get("system")
    if config.get("model", {}).get("type") == "HamiltonianNN" and system is not None \
            and not _conservative(system):
        checks.append(Check(f"the data's system ({system}) conserves energy", None, 0.0,
                            note="it does not: a Hamiltonian model conserves energy and "
                            "cannot fit it"))
    ude = metrics.get("ude", {})
    for name, true in ude.get("true_parameters", {}).items():
        learned = ude["physical_parameters"][name]
        checks.append(Check(f"learned {name} = {significant(learned)} vs true "
                            f"{significant(true)}, relative error",
                            abs(learned - true) / max(abs(true), 1e-12), PARAMETER_LIMIT,
                            note="identifiable only when the correction cannot absorb the "
                            "term (see the formulas below)"))
    return checks


_SPLIT_NAMES = {"test": "test trajectories", "val": "validation trajectories"}
#: How a split's error is computed (metrics.json's "start"): held-out trajectories have no
#: estimated initial state, so they start from their first observation.
STARTS = {"learned": "from the initial states estimated in training",
          "first observation": "from the first (noisy) observations"}


def _worst(metrics: dict[str, Any], values: list[float | None]) -> tuple[float | None, str]:
    """The largest value and its state's name; a state that could not be measured (None:
    its prediction blew up) first."""
    index = next((i for i, value in enumerate(values) if value is None),
                 max(range(len(values)), key=lambda i: values[i] or 0.0))
    return values[index], metrics["states"][index]


def _conservative(system: str) -> bool:
    from tidal.data import SYSTEMS

    return system not in SYSTEMS or SYSTEMS[system].hamiltonian is not None


def describe_model(model: dict[str, Any]) -> str:
    """A model's config.json entry in words, e.g. "neural ODE (MLP 64 x 2, tanh), tsit5"."""
    kind = model.get("type", "NeuralODE")
    if kind == "Ensemble":  # tidal.models.ensemble
        sampled = ", each on a bootstrap resample" if model.get("bootstrap") else ""
        calibration = model.get("band_calibration")
        band = "5-95% band" if calibration is None else (
            f"5-95% band, calibrated on {calibration['points']} "
            f"{calibration.get('source', 'validation')} observations")
        return (f"ensemble of {model.get('members')} members (mean and {band}){sampled}: "
                f"{describe_model(model.get('member', {}))}")
    network = model.get("vector_field") or model.get("correction") or \
        model.get("hamiltonian") or model.get("potential") or {}
    net = (f"{network.get('type', 'network')} {network.get('width', '?')} x "
           f"{network.get('depth', '?')}, {network.get('activation', '?')}"
           + (" + linear term" if network.get("linear_term") else ""))
    if kind == "HamiltonianNN":
        form = "separable H = T(p) + V(q)" if "potential" in model else "H(q, p)"
        text = f"Hamiltonian neural network ({form}, {net})"
    elif kind == "UDE":
        text = f"UDE (known terms {model.get('known')} + {net} correction)"
    elif kind == "AugmentedNeuralODE":
        text = f"augmented neural ODE ({model.get('augment')} extra states, {net})"
    elif kind == "PolynomialODE":  # tidal.models.polynomial, kept by --discover
        terms = sum(sum(row) for row in model.get("active", []))
        text = (f"polynomial ODE ({terms} terms of degree <= {model.get('degree', '?')}, "
                "coefficients fitted; see the equations below)")
    else:
        text = f"neural ODE ({net})"
    return f"{text}, solver {model.get('solver', '?')}"


def describe_data(data: dict[str, Any]) -> str:
    if data.get("simulated"):
        return f"simulated from the built-in system {data.get('system')} (seed {data.get('seed')})"
    text = str(data.get("path", "trajectories given in Python"))
    system = data.get("system")
    return f"{text}, compared with the built-in system {system}" if system else text


def run_facts(metrics: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, str]]:
    """What was fitted, as (label, text) pairs: model, data, states, trajectories, training."""
    fit, train = config.get("fit", {}), config.get("train", {})
    counts = ", ".join(f"{metrics[split]['trajectories']} {name}" for split, name in
                       (("train", "training"), ("val", "validation"), ("test", "test"))
                       if split in metrics)
    data = config.get("data", {})
    if data.get("split") == "time":
        val, test = data.get("held_out", ("?", "?"))
        counts += (f"; held out in time, not by trajectory: the last {_percent(test)} of each "
                   f"series' observations test and the {_percent(val)} before them validate")
    seconds = fit.get("seconds")
    took = "" if seconds is None else f", {significant(float(seconds))} s"
    return [("model", describe_model(config.get("model", {}))),
            ("data", describe_data(config.get("data", {}))),
            ("states", ", ".join(metrics["states"])), ("trajectories", counts),
            ("training", f"{fit.get('epochs', '?')} of {train.get('epochs', '?')} epochs"
                         f"{took}: {fit.get('status', 'unknown')} ({fit.get('message', '')})")]


def _percent(fraction: Any) -> str:
    return f"{significant(100 * fraction)}%" if isinstance(fraction, (int, float)) else "?"


def summary_lines(metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The run in a few lines of plain text: what was fitted, the error per state on each
    split and each check, pass or fail, against its limit."""
    from tidal.report.page import summary_text

    lines = []
    for split in ("test", "val", "train"):
        if split in metrics:
            errors = ", ".join(f"{name} {percent(r)}" for name, r in
                               zip(metrics["states"], metrics[split]["relative_rmse"]))
            how = STARTS[metrics[split]["start"]]
            lines.append(f"{split} error, % of range ({how}): {errors}")
    lines = summary_text(run_facts(metrics, config), lines, run_checks(metrics, config))
    return lines + [w["line"] for w in metrics.get("warnings", [])]  # tidal.report.warnings


def verdict(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if not checks:
        return "checks: none apply (no held-out trajectories and no known system)"
    if not failed:
        return f"checks: all {len(checks)} pass"
    return f"checks: {len(failed)} of {len(checks)} FAIL"


def checks_json(checks: list[Check]) -> list[dict[str, Any]]:
    """The checks as metrics.json stores them."""
    return [{**asdict(c), "passed": c.passed} for c in checks]


def read_summary(run_dir: str | Path) -> str:
    """The summary of the run in `run_dir` from its config.json and metrics.json (written by
    `write_report`)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return "\n".join(summary_lines(metrics, config))
