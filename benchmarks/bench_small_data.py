"""Learning from small, noisy data: how far off is a fit with default options?

Run from the repository root:

    .venv/bin/python benchmarks/bench_small_data.py                  # both cases, seeds 0-2
    .venv/bin/python benchmarks/bench_small_data.py --case oscillator --seeds 0
    .venv/bin/python benchmarks/bench_small_data.py --epochs 150     # quicker

Cases (issue 19's acceptance):

- oscillator: 6 trajectories of the linear damped oscillator x'' + 2 zeta w x' + w^2 x = 0
  (w = 2, zeta = 0.1: angular frequency w sqrt(1 - zeta^2) = 1.990, period 3.16) on [0, 10],
  20-40 irregular observations each, noise sd 5% of each state's range, initial states
  uniform in [-1, 1]^2. Fitted with `train_run` and default options (as `tidal fit` does).
  Reported: the learned frequency (the imaginary part of the eigenvalues of the learned
  field's Jacobian at its fixed point: the linearization, exact for a linear system) against
  the true one; the held-out RMSE as a fraction of each state's range on 20 fresh noisy
  trajectories (each predicted from its first, noisy observation; the noise floor is about
  5-7%: these are simulated on their own, so their noise, 5% of their own wider range, is
  10-40% larger than the training data's; `fresh_series` makes the coverage case's); and
  the warnings the report would show.
- lotka-volterra: one trajectory of Lotka-Volterra from (x, y) = (1.5, 1.0) observed at 16
  irregular times on [0, 10], noise 5% of range; the next 30% of the span, [10, 13], is the
  forecast window (truth compared at 50 times). Baseline: scipy least squares over the true
  model's 4 parameters and the initial state (`least_squares`, started from the truth
  perturbed by 30%, best of 5 starts), which is the best a method can expect to do.
  Reported: in-sample RMSE (against the 16 observations) and forecast RMSE (against the true
  trajectory on [10, 13]) of both, and their ratios (acceptance: <= 1.5x and <= 2x).

- coverage (with --ensemble K): the oscillator's 6 trajectories and 6 of the toggle switch
  (same sampling and noise; --coverage-systems names them), an ensemble of K
  (--workers N: members in N processes); on 20 (--fresh) new trajectories with the training data's
  noise (`fresh_series`) predicted from their first observations, the fraction of the later
  observations inside the 5-95% predictive band (target 80-98%; the start's noise in the
  band, `noisy_start=True`) as the run gives it (its calibration's scale and number of
  points, if any) and uncalibrated, the band's mean width as a fraction of the range, and
  the held-out RMSE of the members' mean.
  With bootstrap members (on resamples; by default for these 6 series held out in time,
  --bootstrap no: without; their band is not rescaled, so the first two columns agree),
  also the same members' band calibrated on the validation rows (`_val` columns).

Options --prefit, --discover, --split-by, --ensemble and --refit are passed to `train_run` (as
`tidal fit`'s flags; --refit compare prints a row without the refit and one with it, from one
training); --config sets TrainConfig fields (JSON).
Each fit runs in this process on one thread; the numbers go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.optimize
import torch

from tidal.data import SYSTEMS, System, Trajectories, simulate
from tidal.report.metrics import state_ranges, true_trajectories
from tidal.training import TrainConfig, train_run
from tidal.training.ensemble import EnsembleOptions
from tidal.training.pipeline import ModelOptions
from tidal.training.run import load_run

W, ZETA = 2.0, 0.1
TRUE_FREQUENCY = W * np.sqrt(1 - ZETA**2)


def _oscillator(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack((v, -p["w"] ** 2 * x - 2 * p["zeta"] * p["w"] * v), -1)


OSCILLATOR = System(
    "damped-oscillator", ("x", "v"), {"w": W, "zeta": ZETA}, _oscillator, (0.0, 10.0),
    ((-1.0, 1.0), (-1.0, 1.0)), ((-1.5, 1.5), (-3.0, 3.0)), 2 * np.pi / TRUE_FREQUENCY,
    "x'' + 2 zeta w x' + w^2 x = 0")


def learned_frequency(run: Any, guess: np.ndarray) -> float:
    """max |Im(eigenvalue)| of the learned field's Jacobian (user units) at its fixed point
    nearest `guess` (found by scipy's root finder); NaN when no fixed point is found."""
    def field(y: np.ndarray) -> np.ndarray:
        scaled = run.scaling.scale_values(torch.as_tensor(y[None], dtype=run.dtype))
        with torch.no_grad():
            rate = run.model.vector_field(torch.zeros((), dtype=run.dtype), scaled)
        return (rate.numpy() * run.scaling.state_scale / run.scaling.time_scale)[0]

    root = scipy.optimize.root(field, guess)
    if not root.success:
        return float("nan")
    y = torch.as_tensor(run.scaling.scale_values(root.x), dtype=run.dtype)
    jac = torch.autograd.functional.jacobian(
        lambda s: run.model.vector_field(torch.zeros((), dtype=run.dtype), s[None])[0], y)
    scale = np.asarray(run.scaling.state_scale)
    # chain rule: J_user = S J_scaled S^-1 / time_scale (similar matrices, same eigenvalues)
    user = scale[:, None] * jac.numpy() / scale[None, :] / run.scaling.time_scale
    return float(np.abs(np.linalg.eigvals(user).imag).max())


def heldout_rmse(run: Any, data: Trajectories) -> np.ndarray:
    """Per state RMSE / range of `data` predicted from each first observation."""
    squared, counts = np.zeros(data.n_states), np.zeros(data.n_states)
    for times, values, mask in zip(data.times, data.values, data.masks):
        prediction = run.predict(np.array(values[0]), times)
        squared += np.where(mask, (prediction - np.nan_to_num(values)) ** 2, 0).sum(axis=0)
        counts += mask.sum(axis=0)
    return np.sqrt(squared / counts) / state_ranges([data])


def fitted_run(data: Trajectories, folder: str, seed: int, epochs: int,
               fit_options: dict[str, Any]) -> tuple[Any, Any, float]:
    """`train_run` into folder/run: the result, the loaded run and the seconds it took."""
    started = time.perf_counter()
    config = TrainConfig(**{"epochs": epochs, "seed": seed, **CONFIG_FIELDS})
    result = train_run(data, f"{folder}/run", config=config, progress=False, **fit_options)
    return result, load_run(f"{folder}/run"), time.perf_counter() - started


def refitted_run(result: Any, folder: str) -> tuple[Any, Any, float]:
    """folder/run (trained with refit=False) refitted as `train_run` would have
    (--refit compare): the result, the loaded run and the seconds the refit took."""
    from tidal.training.pipeline import _refitted, _save_result
    from tidal.training.run_directory import RunDirectory

    started = time.perf_counter()
    run = load_run(f"{folder}/run")
    directory = RunDirectory.open(f"{folder}/run", "neural-ode")
    info = dict(run.config["data"])
    result = _refitted(directory, result, run.training_data(), run.data("val"),
                       result.scaling, info, progress=False)
    _save_result(directory, result, info)
    return result, load_run(f"{folder}/run"), time.perf_counter() - started


def measured(case: Callable[..., dict[str, Any]], seed: int, epochs: int,
             fit_options: dict[str, Any]) -> list[dict[str, Any]]:
    """The case's row; with --refit compare, one without the refit and one with it (the
    same training, then the refit)."""
    if REFIT != "compare":
        return [case(seed, epochs, {**fit_options, "refit": REFITS[REFIT]})]
    rows = case(seed, epochs, {**fit_options, "refit": False}, compare=True)
    for row, label in zip(rows, ("no refit", "refit")):
        row["seed"] = f"{seed} ({label})"
    return rows


def oscillator_case(seed: int, epochs: int, fit_options: dict[str, Any],
                    compare: bool = False) -> Any:
    data = simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05, seed=seed)
    fresh = simulate(OSCILLATOR, 20, n_obs=(20, 40), noise=0.05, seed=1000 + seed)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        result, run, seconds = fitted_run(data, folder, seed, epochs, fit_options)
        for refit in (False, True)[:1 + compare]:
            if refit:
                result, run, seconds = refitted_run(result, folder)
            frequency = learned_frequency(run, np.zeros(2))
            rmse = heldout_rmse(run, fresh)
            rows.append({
                "seed": seed, "status": result.status, "seconds": seconds,
                "frequency": frequency,
                "frequency_error": abs(frequency - TRUE_FREQUENCY) / TRUE_FREQUENCY,
                "heldout": float(rmse.max()), "val_loss": result.best_val_loss,
                "kept": _kept(run.config["data"]), "warnings": _warnings(f"{folder}/run")})
    return rows if compare else rows[0]


def lotka_volterra_data(seed: int) -> tuple[Trajectories, np.ndarray, np.ndarray]:
    """16 noisy observations on [0, 10] and the true trajectory at 50 times on [10, 13]."""
    system = SYSTEMS["lotka-volterra"]
    rng = np.random.default_rng(seed)
    times = np.concatenate(([0.0], np.sort(rng.uniform(0.0, 10.0, 15))))
    y0 = np.array([[1.5, 1.0]])
    clean = true_trajectories(system, y0, times)[:, 0]
    spread = np.ptp(true_trajectories(system, y0, np.linspace(0, 10, 400))[:, 0], axis=0)
    noisy = clean + rng.normal(0.0, 0.05 * spread, clean.shape)
    future = np.linspace(10.0, 13.0, 50)
    truth = true_trajectories(system, y0, np.concatenate(([0.0], future)))[1:, 0]
    return Trajectories([times], [noisy], state_names=system.state_names), future, truth


def least_squares_baseline(data: Trajectories, future: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fit (alpha, beta, gamma, delta, x0, y0) of the true model by least squares; returns its
    predictions at the observation times and at `future`."""
    system = SYSTEMS["lotka-volterra"]
    times, values = data.times[0], data.values[0]
    names = ("alpha", "beta", "gamma", "delta")

    def simulate_with(theta: np.ndarray, ts: np.ndarray) -> np.ndarray:
        variant = dataclasses.replace(system, params=dict(zip(names, theta[:4])))
        return true_trajectories(variant, theta[None, 4:], ts)[:, 0]

    def residuals(theta: np.ndarray) -> np.ndarray:
        if np.any(theta <= 0):
            return np.full(values.size, 1e3)
        return (simulate_with(theta, times) - values).ravel()

    truth = np.array([*(system.params[n] for n in names), *values[0]])
    rng = np.random.default_rng(0)
    best = None
    for _ in range(5):
        start = truth * rng.uniform(0.7, 1.3, truth.shape)
        fitted = scipy.optimize.least_squares(residuals, start, method="lm")
        if best is None or fitted.cost < best.cost:
            best = fitted
    return simulate_with(best.x, times), simulate_with(best.x, np.concatenate(([0.0], future))
                                                       )[1:]


def lotka_volterra_case(seed: int, epochs: int, fit_options: dict[str, Any],
                        compare: bool = False) -> Any:
    data, future, truth = lotka_volterra_data(seed)
    fitted, forecast = least_squares_baseline(data, future)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        result, run, seconds = fitted_run(data, folder, seed, epochs, fit_options)
        for refit in (False, True)[:1 + compare]:
            if refit:
                result, run, seconds = refitted_run(result, folder)
            rows.append(_lotka_volterra_row(seed, data, future, truth, fitted, forecast,
                                            result, run, seconds, folder))
    return rows if compare else rows[0]


def _lotka_volterra_row(seed: int, data: Trajectories, future: np.ndarray, truth: np.ndarray,
                        fitted: np.ndarray, forecast: np.ndarray, result: Any, run: Any,
                        seconds: float, folder: str) -> dict[str, Any]:
    values = data.values[0]
    baseline_in = float(np.sqrt(np.mean((fitted - values) ** 2)))
    baseline_out = float(np.sqrt(np.mean((forecast - truth) ** 2)))
    y0 = result.initial_states[0]
    inside = run.predict(y0, data.times[0])
    ahead = run.predict(y0, np.concatenate(([data.times[0][0]], future)))[1:]
    warnings = _warnings(f"{folder}/run")
    trained = len(run.data("train").times[0])  # the first observations (all, unsplit)
    model_in = float(np.sqrt(np.mean((inside - values) ** 2)))
    model_out = float(np.sqrt(np.mean((ahead - truth) ** 2)))
    model_train = float(np.sqrt(np.mean((inside - values)[:trained] ** 2)))
    baseline_train = float(np.sqrt(np.mean((fitted - values)[:trained] ** 2)))
    return {"seed": seed, "status": result.status, "seconds": seconds,
            "baseline_in": baseline_in, "model_in": model_in, "in_ratio": model_in / baseline_in,
            "trained": trained, "train_ratio": model_train / baseline_train,
            "baseline_forecast": baseline_out, "model_forecast": model_out,
            "forecast_ratio": model_out / baseline_out, "val_loss": result.best_val_loss,
            "kept": _kept(run.config["data"]),
            "warnings": warnings}


def _kept(info: dict[str, Any]) -> str:
    """With --discover: the model kept, and the validation losses (network; each candidate
    formula's, with its number of terms)."""
    found = info.get("discover")
    if found is None:
        return "-"
    formulas = ", ".join(f"{c['terms']} terms: " + (c["status"] if c["val_loss"] is None
                                                     else f"{c['val_loss']:.4g}")
                         for c in found["candidates"])
    return f"{found['kept']} (network {found.get('network_val_loss', math.nan):.4g}; {formulas})"


def _warnings(run_dir: str) -> list[str]:
    """The report's warnings (none when the report has no warnings yet)."""
    from pathlib import Path

    from tidal.report import write_report

    write_report(run_dir)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return [w["kind"] for w in metrics.get("warnings", [])]


def fresh_series(system: System, seed: int, n: int = 20) -> Trajectories:
    """`n` fresh noisy trajectories (seed 1000 + `seed`) measured as the 6 training series of
    `seed` are: noise sd 5% of the training set's clean range per state. (`simulate` scales
    its noise by the range of the set it makes; 20 trajectories span 4-37% more than 6 on
    these systems, so fresh series simulated on their own were noisier than the data a band
    learns its noise from.)"""
    train = simulate(system, 6, n_obs=(20, 40), noise=0.0, seed=seed)
    sd = 0.05 * np.ptp(np.concatenate(train.values), axis=0)
    clean = simulate(system, n, n_obs=(20, 40), noise=0.0, seed=1000 + seed)
    rng = np.random.default_rng(2000 + seed)
    return Trajectories(clean.times, [v + rng.normal(0.0, sd, v.shape) for v in clean.values],
                        ids=clean.ids, state_names=clean.state_names)


def coverage_case(seed: int, epochs: int, fit_options: dict[str, Any]) -> dict[str, Any]:
    from tidal.training.ensemble import calibrate_band, predictive_quantiles

    row: dict[str, Any] = {"seed": seed}
    systems = (("oscillator", OSCILLATOR), ("toggle", SYSTEMS["toggle-switch"]))
    for name, system in (s for s in systems if s[0] in COVERAGE_SYSTEMS):
        data = simulate(system, 6, n_obs=(20, 40), noise=0.05, seed=seed)
        fresh = fresh_series(system, seed, FRESH)
        with tempfile.TemporaryDirectory() as temporary:
            folder = f"{KEEP}/{name}_{seed}" if KEEP else temporary
            _, run, _ = fitted_run(data, folder, seed, epochs, fit_options)
            row[f"{name}_heldout"] = float(heldout_rmse(run, fresh).max())
            calibration = run.model.band_calibration or {}
            row[f"{name}_scale"] = calibration.get("scale", math.nan)
            row[f"{name}_points"] = calibration.get("points", 0)
            variants: list[tuple[Any, str]] = [(calibration or None, ""),
                                               (None, "_uncalibrated")]
            if run.model.bootstrap:  # the same members calibrated on the validation rows
                on_val = calibrate_band(run.model, run.scaling, run.data("train"),
                                        run.data("val"), run.dtype)
                row[f"{name}_val_scale"] = (on_val or {}).get("scale", math.nan)
                variants.append((on_val, "_val"))
            for variant, key in variants:
                run.model.band_calibration = variant
                inside, total, widths = 0, 0, []
                for times, values, mask in zip(fresh.times, fresh.values, fresh.masks):
                    low, high = predictive_quantiles(run, np.array(values[0]), times,
                                                     (0.05, 0.95), noisy_start=True)
                    later = mask[1:]
                    inside += int(((values[1:] >= low[1:]) & (values[1:] <= high[1:]))[later]
                                  .sum())
                    total += int(later.sum())
                    widths.append(((high - low)[1:] / state_ranges([fresh]))[later])
                row[f"{name}_coverage{key}"] = inside / total
                row[f"{name}_width{key}"] = float(np.mean(np.concatenate(widths)))
    return row


#: TrainConfig fields of every fit (--config).
CONFIG_FIELDS: dict[str, Any] = {}

#: Where the coverage case keeps its runs, KEEP/<system>_<seed>/run (--keep; "": nowhere).
KEEP = ""

#: --refit: "default" (train_run's: for one series), "on", "off", or "compare" (a row
#: without and one with it, from one training).
REFIT = "default"
REFITS = {"default": None, "on": True, "off": False}

#: The coverage case's systems (--coverage-systems) and fresh series per system (--fresh).
COVERAGE_SYSTEMS = ("oscillator", "toggle")
FRESH = 20


CASES: dict[str, Callable[..., Any]] = {
    "oscillator": oscillator_case, "lotka-volterra": lotka_volterra_case,
    "coverage": coverage_case}
COLUMNS = {
    "oscillator": [("seed", "{}"), ("status", "{}"), ("frequency", "{:.3f}"),
                   ("frequency_error", "{:.1%}"), ("heldout", "{:.1%}"), ("val_loss", "{:.4g}"),
                   ("kept", "{}"), ("seconds", "{:.0f}"), ("warnings", "{}")],
    "lotka-volterra": [("seed", "{}"), ("status", "{}"), ("baseline_in", "{:.3f}"),
                       ("model_in", "{:.3f}"), ("in_ratio", "{:.2f}"),
                       ("train_ratio", "{:.2f}"),
                       ("baseline_forecast", "{:.3f}"), ("model_forecast", "{:.3f}"),
                       ("forecast_ratio", "{:.2f}"), ("val_loss", "{:.4g}"),
                       ("kept", "{}"), ("seconds", "{:.0f}"),
                       ("warnings", "{}")],
    "coverage": [("seed", "{}")] + [
        (f"{system}_{column}", fmt) for system in ("oscillator", "toggle")
        for column, fmt in (("coverage", "{:.1%}"), ("width", "{:.1%}"), ("scale", "{:.3g}"),
                            ("points", "{}"), ("coverage_uncalibrated", "{:.1%}"),
                            ("width_uncalibrated", "{:.1%}"), ("val_scale", "{:.3g}"),
                            ("coverage_val", "{:.1%}"), ("width_val", "{:.1%}"),
                            ("heldout", "{:.1%}"))]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all",
                        help="all: oscillator and lotka-volterra")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--prefit", action="store_true")
    parser.add_argument("--discover", action="store_true",
                        help="train_run(discover=True): a refitted formula where it validates "
                             "better (tidal.training.discovery)")
    parser.add_argument("--split-by", default="auto", choices=["auto", "trajectory", "time"])
    parser.add_argument("--test", type=float, default=0.125,
                        help="the fraction held out for testing (train_run's split; the "
                             "validation fraction stays 0.125); 0: the fit sees every "
                             "observation, as the Lotka-Volterra case's least-squares baseline")
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="with --ensemble")
    parser.add_argument("--bootstrap", choices=["auto", "yes", "no"], default="auto",
                        help="with --ensemble: members on bootstrap resamples (auto: as "
                             "tidal fit, when held out in time)")
    parser.add_argument("--coverage-systems", default="oscillator,toggle",
                        help="the coverage case's systems, comma-separated")
    parser.add_argument("--fresh", type=int, default=20,
                        help="the coverage case's fresh series per system")
    parser.add_argument("--config", default="{}",
                        help='TrainConfig fields as JSON, e.g. \'{"shooting_segments": 4}\'')
    parser.add_argument("--model", default="{}",
                        help='ModelOptions fields as JSON, e.g. \'{"linear_term": true}\'')
    parser.add_argument("--keep", default="",
                        help="the coverage case keeps its runs in KEEP/<system>_<seed>/run")
    parser.add_argument("--refit", default="default",
                        choices=["default", "on", "off", "compare"],
                        help="train_run's refit after a split in time; compare: a row "
                             "without it and one with it, from the same training")
    args = parser.parse_args(argv)
    CONFIG_FIELDS.update(json.loads(args.config))
    global COVERAGE_SYSTEMS, FRESH, KEEP, REFIT
    REFIT = args.refit
    FRESH = args.fresh
    COVERAGE_SYSTEMS = tuple(args.coverage_systems.split(","))
    KEEP = args.keep
    options: dict[str, Any] = {"prefit": args.prefit, "split_by": args.split_by,
                               "discover": args.discover, "split": (0.125, args.test)}
    if args.model != "{}":
        options["model"] = ModelOptions(**json.loads(args.model))
    if args.ensemble > 1:
        bootstrap = {"auto": None, "yes": True, "no": False}[args.bootstrap]
        options["ensemble"] = EnsembleOptions(args.ensemble, bootstrap, args.workers)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    for case in (["oscillator", "lotka-volterra"] if args.case == "all" else [args.case]):
        print(f"\n{case} (true frequency {TRUE_FREQUENCY:.3f})" if case == "oscillator"
              else f"\n{case}")
        header = [name for name, _ in COLUMNS[case]]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for seed in seeds:
            for row in (measured(CASES[case], seed, args.epochs, options)
                        if case != "coverage" else [CASES[case](seed, args.epochs, options)]):
                print("| " + " | ".join(fmt.format(row.get(name, math.nan))
                                        for name, fmt in COLUMNS[case])
                      + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
