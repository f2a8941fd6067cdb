"""The run report: errors against an exact model, where each trajectory starts, the checks and
their limits, the page's content, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tidal.cli.main import main
from tidal.controllers import PIDController
from tidal.data import Scaling, Trajectories, simulate
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.report import evaluate_run, read_summary, write_report
from tidal.report.checks import (
    BASIN_LIMIT,
    HELD_OUT_LIMIT,
    PERIOD_LIMIT,
    run_checks,
    significant,
    summary_lines,
)
from tidal.training import TrainConfig, fit, load_run, save_run
from tidal.training.fit import INITIAL_STATES

RATES = {"alpha": 0.3, "gamma": 0.5}  # x' = alpha x, y' = -gamma y: x0 e^(alpha t), y0 e^(-gamma t)
NOISE = 0.05
TINY = ["--epochs", "6", "--horizons", "0.5,1.0", "--width", "8", "--depth", "1", "--quiet"]


def exact(y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The known-terms-only Lotka-Volterra (exponential growth and decay), exactly."""
    return np.stack([y0[0] * np.exp(RATES["alpha"] * t), y0[1] * np.exp(-RATES["gamma"] * t)], 1)


def exact_run(path: Path) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A run directory whose model is the exact dynamics (a UDE without correction, solved at
    tight tolerance) and whose train and test data are those dynamics plus known noise.

    Returns (clean initial states, noise of each trajectory, times of each trajectory)."""
    rng = np.random.default_rng(1)
    y0 = rng.uniform(1.0, 2.0, size=(6, 2))
    times = [np.sort(np.concatenate([[0.0], rng.uniform(0, 3, 9)])) for _ in range(6)]
    noise = [rng.normal(0, NOISE, (10, 2)) for _ in range(6)]
    values = [exact(y, t) + n for y, t, n in zip(y0, times, noise)]
    data = Trajectories(times, values, ids=[f"c{i}" for i in range(6)], state_names=("x", "y"))
    model = UDE(KNOWN_PHYSICS["lotka-volterra-linear"].equations, None, RATES,
                controller=PIDController(rtol=1e-10, atol=1e-12)).to(torch.float64)
    save_run(path, model, Scaling((0.0, 0.0), (1.0, 1.0)), data={"state_names": ["x", "y"]},
             train_config=TrainConfig().to_dict(), splits={"train": data[[0, 1, 2]],
                                                           "test": data[[3, 4, 5]]})
    return y0, noise, times


def _write_initial_states(path: Path, ids: list[str], times: list[float], states: np.ndarray
                          ) -> None:
    table = pd.DataFrame(states, columns=["x", "y"])
    table.insert(0, "t", times)
    table.insert(0, "id", ids)
    (path / INITIAL_STATES).parent.mkdir(exist_ok=True)
    table.to_csv(path / INITIAL_STATES, index=False)


def test_train_error_starts_from_the_learned_initial_states(tmp_path):
    """With the exact model, a training trajectory started from its true initial state misses
    the observations by the noise alone; a held-out one starts from its noisy first
    observation, and its error is that of the exact flow from that noisy start (computed here
    by the formula)."""
    y0, noise, times = exact_run(tmp_path)
    _write_initial_states(tmp_path, ["c0", "c1", "c2"], [0.0] * 3, y0[:3])
    metrics = evaluate_run(load_run(tmp_path))

    expected = np.sqrt(np.mean(np.concatenate(noise[:3]) ** 2, axis=0))
    np.testing.assert_allclose(metrics["train"]["rmse"], expected, rtol=1e-6)
    assert metrics["train"]["start"] == "learned"

    squared = []
    for i in (3, 4, 5):
        observed = exact(y0[i], times[i]) + noise[i]
        squared.append(exact(observed[0], times[i]) - observed)
    expected = np.sqrt(np.mean(np.concatenate(squared) ** 2, axis=0))
    np.testing.assert_allclose(metrics["test"]["rmse"], expected, rtol=1e-6)
    assert metrics["test"]["start"] == "first observation"

    # SINDy on the whole learned field finds the exact equations
    terms = metrics["ude"]["field"]["terms"]
    assert {out: list(t) for out, t in terms.items()} == {"dx": ["x"], "dy": ["y"]}
    assert terms["dx"]["x"] == pytest.approx(RATES["alpha"], rel=1e-6)
    assert terms["dy"]["y"] == pytest.approx(-RATES["gamma"], rel=1e-6)


def test_a_run_without_initial_states_starts_from_the_first_observation(tmp_path):
    y0, noise, times = exact_run(tmp_path)
    metrics = evaluate_run(load_run(tmp_path))
    assert metrics["train"]["start"] == "first observation"
    squared = []
    for i in (0, 1, 2):
        observed = exact(y0[i], times[i]) + noise[i]
        squared.append(exact(observed[0], times[i]) - observed)
    np.testing.assert_allclose(metrics["train"]["rmse"],
                               np.sqrt(np.mean(np.concatenate(squared) ** 2, axis=0)), rtol=1e-6)


@pytest.mark.parametrize("content", ["id,t,x\nc0,0,1\n", "id,t,x,y\nc9,0,1,2\n",
                                     "id,t,x,y\nc0,0,1,nan\nc1,0,1,1\nc2,0,1,1\n"])
def test_a_damaged_initial_states_file_is_a_clean_error(tmp_path, content):
    exact_run(tmp_path)
    (tmp_path / INITIAL_STATES).write_text(content)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "initial_states.csv" in result.output and "Traceback" not in result.output


def test_fit_saves_the_initial_states_it_learned(tmp_path):
    """data/initial_states.csv holds FitResult.initial_states (user units, each trajectory's
    first time); without learning they are exactly the first observations."""
    data = simulate("toggle-switch", 4, n_obs=10, noise=0.05, seed=2)
    config = TrainConfig(epochs=4, horizons=(1.0,), seed=0)
    model = load_like_cli(data.n_states)
    result = fit(model, data, config=config, run_dir=tmp_path, progress=False)
    table = pd.read_csv(tmp_path / INITIAL_STATES, dtype={"id": str})
    assert list(table["id"]) == list(data.ids)
    np.testing.assert_array_equal(table["t"], [t[0] for t in data.times])
    np.testing.assert_allclose(table[["u", "v"]].to_numpy(), result.initial_states, rtol=1e-12)
    assert np.abs(result.initial_states - data.initial_states()).max() > 1e-4  # they moved

    frozen = TrainConfig(epochs=2, horizons=(1.0,), learn_initial_states=False)
    result = fit(load_like_cli(data.n_states), data, config=frozen, run_dir=tmp_path,
                 progress=False)
    np.testing.assert_allclose(result.initial_states, data.initial_states(), rtol=1e-12)
    table = pd.read_csv(tmp_path / INITIAL_STATES, dtype={"id": str})
    np.testing.assert_allclose(table[["u", "v"]].to_numpy(), data.initial_states(), rtol=1e-12)


def load_like_cli(n_states: int):
    from tidal.training import ModelOptions

    return ModelOptions(width=8, depth=1).build(n_states, seed=0)


def test_significant_digits():
    assert [significant(x) for x in (4.5, 0.0451234, 98.5, 100.0, 76.31, 1234.5, 2e-7)] == \
        ["4.50", "0.0451", "98.5", "100", "76.3", "1.23e3", "2.00e-7"]


def _metrics(**extra) -> dict:
    return {"states": ["u", "v"], "test": {"trajectories": 8, "relative_rmse": [0.045, 0.06],
                                           "rmse": [0.2, 0.3], "start": "first observation"},
            **extra}


def test_checks_pass_and_fail_against_their_limits():
    config = {"model": {"type": "NeuralODE"}, "data": {"system": "toggle-switch"}}
    truth = {"basin_agreement": {"fraction": BASIN_LIMIT, "grid": "20x20", "t_end": 30.0},
             "period": {"max_relative_error": None, "true": [1.0, 2.0]}}
    checks = {c.name.split(",")[0]: c for c in run_checks(_metrics(truth=truth), config)}
    assert checks["held-out error (test trajectories)"].passed
    assert checks["basin agreement with the true system"].passed  # at the limit
    assert not checks["oscillation period"].passed  # stopped oscillating: no period

    metrics = _metrics(truth={"basin_agreement": {"fraction": 0.5, "grid": "20x20",
                                                  "t_end": 30.0},
                              "period": {"max_relative_error": PERIOD_LIMIT * 1.01,
                                         "true": [1.0]}})
    metrics["test"]["relative_rmse"] = [0.045, HELD_OUT_LIMIT * 1.01]
    assert not any(c.passed for c in run_checks(metrics, config))


def test_a_hamiltonian_fit_of_a_damped_system_fails_in_the_headline():
    """A Hamiltonian model conserves energy: its own drift is tiny whatever the data. The
    headline must show the large held-out error and that the damped pendulum is not
    conservative, not only the small drift."""
    metrics = _metrics(energy={"learned_drift_of_range": [1e-4, 2e-4]})
    metrics["test"]["relative_rmse"] = [0.763, 0.5]
    config = {"model": {"type": "HamiltonianNN", "potential": {}},
              "data": {"system": "damped-pendulum"}, "fit": {}, "train": {}}
    lines = summary_lines(metrics, config)
    assert "checks: 2 of 3 FAIL" in lines
    assert any(line.startswith("  FAIL  held-out error") and "76.3%" in line for line in lines)
    assert any("FAIL  the data's system (damped-pendulum) conserves energy" in line
               for line in lines)
    assert any(line.startswith("  pass  learned energy drift") for line in lines)
    config["data"]["system"] = "ideal-pendulum"
    assert "checks: 1 of 2 FAIL" in summary_lines(metrics, config)


def test_cli_prints_the_headline_and_the_page_states_the_result(tmp_path):
    data = tmp_path / "d.csv"
    runner = CliRunner()
    assert runner.invoke(main, ["simulate", "toggle-switch", "--trajectories", "8", "--obs",
                                "12", "-o", str(data)]).exit_code == 0
    run = tmp_path / "run"
    result = runner.invoke(main, ["fit", str(data), "--id", "id", "--system", "toggle-switch",
                                  "-o", str(run), *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    summary = read_summary(run)
    assert summary in result.output
    test_error = ", ".join(f"{n} {significant(100 * r)}%" for n, r in
                           zip("uv", metrics["test"]["relative_rmse"]))
    assert test_error in summary
    assert re.search(r"^checks: (all 4 pass|\d of 4 FAIL)$", summary, re.M)
    assert [c["name"].split(",")[0] for c in metrics["checks"]] == [
        "held-out error (test trajectories)", "learned vs true system over the data's span",
        "learned vs true system forecast to 3x the span", "basin agreement with the true system"]

    page = (run / "report.html").read_text()
    for text in ("What was fitted", "neural ODE (MLP 8 x 1, tanh + linear term)", "Checks",
                 "from the initial states estimated in training",
                 f"{significant(100 * metrics['test']['relative_rmse'][0])}%",
                 f"{significant(100 * metrics['truth']['basin_agreement']['fraction'])}%"):
        assert text in page, text
    assert "<pre>{" not in page  # no JSON dump
    assert page.index("Checks") < page.index("<img")  # the result before the figures


def test_progress_bar_shows_the_stage_and_horizon(capsys):
    data = simulate("toggle-switch", 3, n_obs=8, seed=0)
    config = TrainConfig(epochs=4, horizons=(0.5, 1.0), eval_every=1)
    fit(load_like_cli(2), data, config=config, progress=True)
    err = capsys.readouterr().err
    assert "stage 1/2 horizon 0.5" in err and "stage 2/2 horizon 1" in err


def test_figures_label_their_axes_stages_and_colours():
    from tidal.plots.losses import plot_losses
    from tidal.plots.vector_field import plot_vector_fields

    history = [{"epoch": e, "stage": s, "horizon": h, "segments": 1, "train_loss": 1.0 / e,
                "val_loss": 2.0 / e} for e, s, h in ((1, 0, 0.3), (2, 0, 0.3), (3, 1, 0.6),
                                                     (4, 2, 1.0))]
    ax = plot_losses(history).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train", "validation", "curriculum stage change"]
    assert [t.get_text() for t in ax.texts] == ["horizon 0.3", "horizon 0.6", "horizon 1"]

    figure = plot_vector_fields([("learned", lambda p: -p), ("true", lambda p: -2 * p)],
                                bounds=[(0, 1), (0, 1)], axis_names=("u", "v"),
                                points=np.random.default_rng(0).random((20, 2)))
    panels, bar = figure.axes[:2], figure.axes[2]
    assert bar.get_ylabel().startswith("speed |dy/dt|")
    assert bar.get_ylim()[1] == pytest.approx(2 * math.sqrt(2), rel=0.05)  # one shared scale
    for ax in panels:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("u", "v")
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["observations"]


# --- the page in a real browser ------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def browse(page: Path, screenshot: Path) -> tuple[list[dict], list[str]]:
    """Open `page` in headless Chromium; save a screenshot. Returns (console messages of level
    SEVERE, sources of images that did not load)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                     "--window-size=1200,3000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.get(page.resolve().as_uri())
            driver.execute_async_script(
                "const done = arguments[0]; Promise.all([...document.images].map(i => "
                "i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; }))).then(done);")
            broken = driver.execute_script(
                "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                ".map(i => i.getAttribute('src'));")
            assert driver.save_screenshot(str(screenshot))
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            driver.quit()
    return errors, broken


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and os.environ.get("CI") != "true",
    reason="headless Chromium not installed (apt-get install chromium chromium-driver); "
           "CI installs it and runs this test")


@needs_chromium
def test_report_page_loads_in_headless_chromium(tmp_path):
    if os.environ.get("CI") != "true":
        pytest.importorskip("selenium", reason="selenium is in the test extra")
    exact_run(tmp_path / "run")
    page = write_report(tmp_path / "run")
    errors, broken = browse(page, tmp_path / "shot.png")
    assert errors == [] and broken == []
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(re.findall("<img ", page.read_text())) >= 4

    # the same check catches a missing figure (so a pass above means something)
    (tmp_path / "run" / "forecast.png").unlink()
    errors, broken = browse(page, tmp_path / "shot2.png")
    assert broken == ["forecast.png"] and errors


def test_a_model_that_blows_up_in_the_forecast_gets_a_report_that_says_so(tmp_path):
    """dx = x^2 from x = 1 reaches infinity at t = 1: the data end at 0.4, the forecast to 3x
    the span does not. The report is still written; its forecast and period checks fail
    (not measurable) and a warning says the model blows up."""
    from tidal.models.polynomial import PolynomialODE

    model = PolynomialODE.from_terms({"dx": {"x^2": 1.0}}, ("x", "y")).double()
    times = np.linspace(0.0, 0.4, 5)
    exact = np.stack([1.0 / (1.0 - times), np.ones_like(times)], axis=1)  # x(0) = 1
    data = Trajectories([times, times], [exact, exact], state_names=("x", "y"))
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "y"], "system": "lotka-volterra"},
             train_config=TrainConfig().to_dict(), splits={"train": data, "test": data})
    html = write_report(tmp_path).read_text()
    metrics = evaluate_run(load_run(tmp_path))
    assert metrics["test"]["relative_rmse"][0] < 1e-3  # the data span is fitted (rtol 1e-6)
    assert None in metrics["truth"]["forecast_relative_rmse"]
    assert "cannot be solved to 3x the data" in html and "blows up" in html
    summary = read_summary(tmp_path)
    assert "FAIL" in summary and "forecast" in summary


def test_a_model_that_blows_up_within_a_test_trajectory_is_not_measured(tmp_path):
    """dx = x^2 from x = 3 reaches infinity at t = 1/3, inside a test trajectory's span [0,
    0.4] (from x = 1, the other test trajectory and the training ones are fine). The report is
    still written: the test error is not measurable (null in metrics.json, a failed check,
    "not measurable" in the summary), a warning says how many trajectories blow up, and the
    fit plot keeps the trajectory that can be solved. (y is constant in the data: its vector
    field plot's axis still has a width.)"""
    from tidal.models.polynomial import PolynomialODE

    model = PolynomialODE.from_terms({"dx": {"x^2": 1.0}}, ("x", "y")).double()
    times = np.linspace(0.0, 0.4, 5)
    exact = np.stack([1.0 / (1.0 - times), np.ones_like(times)], axis=1)  # x(0) = 1
    far = np.stack([[3.0, 4.29, 7.5, 30.0, 30.0], np.ones_like(times)], axis=1)  # x(0) = 3
    train = Trajectories([times, times], [exact, exact], state_names=("x", "y"))
    test = Trajectories([times, times], [exact, far], state_names=("x", "y"))
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "y"]}, train_config=TrainConfig().to_dict(),
             splits={"train": train, "test": test})
    html = write_report(tmp_path).read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: null, no NaN
    assert metrics["test"]["relative_rmse"] == [None, None]
    assert metrics["test"]["unsolved"] == 1 and metrics["train"]["unsolved"] == 0
    assert metrics["train"]["relative_rmse"][0] < 1e-3
    summary = read_summary(tmp_path)
    assert "test error, % of range (from the first (noisy) observations): x not measurable" \
        in summary
    assert "FAIL  held-out error" in summary
    assert "cannot be solved along 1 of 2 test trajectories" in summary and "blows up" in html
    assert (tmp_path / "fit_test_1.png").exists()


def _ensemble_run(path: Path, test_x0: float) -> None:
    """An ensemble of dx = 0.01 x^2 and dx = x^2 (y constant) on series over [0, 0.4]: the
    training series and one test series start at x = 1, the other test series at `test_x0`.
    dx = x^2 from x0 reaches infinity at t = 1 / x0: from x = 1 beyond the data (before the
    forecast's end, 1.2), from x0 = 3 within the series' span; dx = 0.01 x^2 never does."""
    from tidal.models import Ensemble
    from tidal.models.polynomial import PolynomialODE

    members = [PolynomialODE.from_terms({"dx": {"x^2": c}}, ("x", "y")).double()
               for c in (0.01, 1.0)]
    times = np.linspace(0.0, 0.4, 5)
    ones = np.ones_like(times)
    start = np.stack([1.0 / (1.0 - 0.01 * times), ones], axis=1)  # the first member's, x0 = 1
    other = np.stack([test_x0 / (1.0 - 0.01 * test_x0 * times), ones], axis=1)
    train = Trajectories([times, times], [start, start], state_names=("x", "y"))
    test = Trajectories([times, times], [start, other], state_names=("x", "y"))
    save_run(path, Ensemble(members, observation_noise=[0.01, 0.01]),
             Scaling((0.0, 0.0), (1.0, 1.0)), data={"state_names": ["x", "y"]},
             train_config=TrainConfig().to_dict(), splits={"train": train, "test": test})


def test_an_ensemble_member_that_blows_up_in_the_forecast_is_named(tmp_path):
    """The second member blows up at t = 1, beyond the data (0.4) but before the forecast's
    end: the report is written, the errors and the band's coverage are measured within the
    data, and one warning says how many members blow up in the forecast (and no second one
    for the members' mean). (The members differ within the data too: other warnings say
    so.)"""
    _ensemble_run(tmp_path, test_x0=1.5)
    html = write_report(tmp_path).read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["unsolved"] == 0 and metrics["test"]["band_coverage"] is not None
    kinds = [w["kind"] for w in metrics["warnings"]]
    assert "forecast" not in kinds and "unsolved" not in kinds
    (explodes,) = [w["message"] for w in metrics["warnings"] if w["kind"] == "band-explodes"]
    assert explodes.startswith("1 of 2 members of the ensemble cannot be solved to 3x the "
                               "data's span (it blows up)")
    assert "cannot be solved to 3x" in html and "nan" not in read_summary(tmp_path)


def test_an_ensemble_member_that_blows_up_within_a_test_series_is_not_measured(tmp_path):
    """From x = 3 the second member blows up at t = 1/3, within a test series' span [0, 0.4]:
    the test error and the band's coverage there are not measurable (null), the summary
    and the table say so, and a warning says a member blows up."""
    _ensemble_run(tmp_path, test_x0=3.0)
    html = write_report(tmp_path).read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["unsolved"] == 1 and metrics["test"]["relative_rmse"] == [None, None]
    assert metrics["test"]["band_coverage"] is None
    assert metrics["train"]["band_coverage"] is not None
    summary = read_summary(tmp_path)
    assert "x not measurable" in summary and "FAIL  held-out error" in summary
    assert "1 of 2 test trajectories within their own span (a member blows up)" in summary
    assert "not measurable" in html.split("Error against the observations")[1]


def test_a_basin_start_whose_solve_blows_up_does_not_agree(tmp_path):
    """The basin check integrates from a grid to t = 30, far past most data: a model that
    blows up there (dx = x^2) is counted as disagreeing, not as a crash or a stable state."""
    from tidal.data import SYSTEMS
    from tidal.models.polynomial import PolynomialODE
    from tidal.report.metrics import basin_agreement

    model = PolynomialODE.from_terms({"du": {"u^2": 1.0}}, ("u", "v")).double()
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["u", "v"]}, train_config=TrainConfig().to_dict())
    basin = basin_agreement(load_run(tmp_path), SYSTEMS["toggle-switch"], size=4)
    assert basin["fraction"] == 0.0
