"""How well a run fits: errors on each split, and checks against the true system when known.

All errors are in the user's units. "relative" divides by each state's observed range (max -
min over every split), so 0.1 means "10% of the range".

Each trajectory is predicted from one initial state: a training trajectory from the initial
state `fit` estimated for it (data/initial_states.csv), a held-out trajectory from its first
observation, which carries the noise of every observation. The held-out error therefore
includes the effect of a noisy start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.controllers import PIDController
from tidal.data import System, Trajectories
from tidal.integrate import solve
from tidal.models import UDE, HamiltonianNN
from tidal.models.ensemble import Ensemble
from tidal.solvers import Rodas5P
from tidal.training.discovery import observed_states
from tidal.training.ensemble import predictive_quantiles
from tidal.training.fit import INITIAL_STATES
from tidal.training.run import SPLITS, Run

FORECAST_FACTOR = 3.0  # forecasts run to this multiple of the data's span
PERIOD_STARTS = 16  # initial states for the period check


def evaluate_run(run: Run) -> dict[str, Any]:
    """metrics.json's content: per split RMSE (absolute and relative; null where the model
    cannot be solved along some trajectory, counted in `unsolved`), the fit's outcome and,
    for built-in systems, how the learned dynamics compare with the true ones."""
    splits = {name: data for name in SPLITS if (data := run.data(name)) is not None}
    ranges = state_ranges(list(splits.values()))
    metrics: dict[str, Any] = {"states": run.state_names, "state_range": ranges.tolist(),
                               "fit": run.config.get("fit", {})}
    in_time = run.config["data"].get("split") == "time"  # tidal.training.time_split
    for name, data in splits.items():
        starts = learned_initial_states(run, data) if name == "train" else None
        rmse, unsolved = observation_rmse(run, data, starts,
                                          skip_start=in_time and name != "train")
        metrics[name] = {"trajectories": len(data), "rmse": _json_list(rmse),
                         "relative_rmse": _json_list(rmse / ranges), "unsolved": unsolved,
                         "start": "first observation" if starts is None else "learned"}
        if isinstance(run.model, Ensemble):
            metrics[name]["band_coverage"] = band_coverage(
                run, data, starts, skip_start=in_time and name != "train")
    system = run.system
    if system is not None and "test" in splits:
        metrics["truth"] = truth_checks(run, system, splits["test"], ranges)
    if isinstance(run.model, UDE):
        metrics["ude"] = ude_summary(run, list(splits.values()))
    if isinstance(run.model, HamiltonianNN):
        metrics["energy"] = energy_summary(run, list(splits.values()),
                                           splits.get("test", splits["train"]))
    return metrics


def learned_initial_states(run: Run, data: Trajectories) -> np.ndarray | None:
    """The initial states [N, D] that `fit` estimated for the trajectories of `data` (user
    units, in `data`'s order), from the run's data/initial_states.csv; None for a run written
    before that file existed.

    Raises:
        InvalidArgumentError: the file does not match the run's training trajectories.
    """
    path = run.path / INITIAL_STATES
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"id": str}).set_index("id")
        states = table.loc[list(data.ids), run.state_names].to_numpy(dtype=np.float64)
    except (KeyError, ValueError, pd.errors.ParserError) as error:
        raise InvalidArgumentError(
            f"{path} does not hold an initial state for every training trajectory (columns id, "
            f"t, {', '.join(run.state_names)}): {str(error).splitlines()[0]}. Rerun `tidal fit` "
            "to rewrite it.") from error
    if not np.isfinite(states).all():
        raise InvalidArgumentError(f"{path} holds non-finite initial states; rerun `tidal fit` "
                                   "to rewrite it.")
    return states


def ude_summary(run: Run, datasets: list[Trajectories]) -> dict[str, Any]:
    """The learned physical parameters (and the true ones, for data simulated from a built-in
    system that has parameters of the same names), the sparsest formula (SINDy) that explains
    the learned correction over the observed states, and the sparsest formula for the whole
    learned field (known terms + correction).

    Only the whole field is identifiable from data: a correction flexible enough to absorb
    part of a known term (say c y) gives the same dynamics for any split between them."""
    from tidal.models.symbolic import sparsest

    model = run.model
    assert isinstance(model, UDE)
    region = observed_states(datasets)
    summary: dict[str, Any] = {"physical_parameters": model.physical_parameters()}
    system = run.system
    if system is not None:
        summary["true_parameters"] = {name: system.params[name]
                                      for name in summary["physical_parameters"]
                                      if name in system.params}
    for key, function in (("correction", model.correction), ("field", model.vector_field)):
        found = None if function is None else sparsest(function, region,
                                                       state_names=run.state_names)
        summary[key] = None if found is None else {
            "threshold": found[0], "formula": found[1].formula, "terms": found[1].terms()}
    return summary


def energy_summary(run: Run, datasets: list[Trajectories], data: Trajectories
                   ) -> dict[str, Any]:
    """How well a Hamiltonian model keeps its learned energy along forecasts from `data`: the
    largest |H(t) - H(0)| as a fraction of the learned energy's range over the observed states
    (H is only defined up to a constant, so its own value is no scale), and the true energy's
    drift along the same forecasts when the system is known."""
    ts, learned, true = energy_along_forecasts(run, data)
    model = run.model
    assert isinstance(model, HamiltonianNN)
    region = torch.as_tensor(observed_states(datasets), dtype=run.dtype)
    with torch.enable_grad():
        over_data = model.energy(run.scaling.scale_values(region)).detach().numpy()
    spread = max(float(np.ptp(over_data)), 1e-12)
    drift = np.abs(learned - learned[:1]).max(axis=0)
    summary = {"t_end": float(ts[-1]), "learned_absolute_drift": drift.tolist(),
               "learned_relative_drift": _relative_drift(learned).tolist(),
               "learned_drift_of_range": (drift / spread).tolist()}
    if true is not None:
        summary["true_absolute_drift"] = np.abs(true - true[:1]).max(axis=0).tolist()
    return summary


def energy_along_forecasts(run: Run, data: Trajectories, *, count: int = 4
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Learned energy (in the model's units) and, when known, the true energy [T, B] along
    forecasts to 3x the data's span from the first `count` trajectories' initial states."""
    t0, t1 = data.t_span
    ts = np.linspace(t0, t0 + FORECAST_FACTOR * (t1 - t0), 300)
    y0 = data.initial_states()[:count]
    states = run.predict(y0, ts)
    dtype = run.dtype
    scaled = run.scaling.scale_values(torch.as_tensor(states, dtype=dtype))
    model = run.model
    assert isinstance(model, HamiltonianNN)
    with torch.enable_grad():
        learned = model.energy(scaled).detach().numpy()
    system = run.system
    true = None
    if system is not None and system.hamiltonian is not None:
        true = system.energy(torch.as_tensor(states, dtype=torch.float64)).numpy()
    return ts, learned, true


def _relative_drift(energy: np.ndarray) -> np.ndarray:
    """max_t |H(t) - H(0)| / |H(0)| per trajectory."""
    return np.abs(energy - energy[:1]).max(axis=0) / np.maximum(np.abs(energy[0]), 1e-12)


def state_ranges(datasets: list[Trajectories]) -> np.ndarray:
    values = np.concatenate([np.concatenate(data.values) for data in datasets])
    spread = np.nanmax(values, axis=0) - np.nanmin(values, axis=0)
    return np.where(spread > 0, spread, 1.0)


def observation_rmse(run: Run, data: Trajectories, initial_states: np.ndarray | None = None,
                     *, skip_start: bool = False) -> tuple[np.ndarray, int]:
    """Per state RMSE between the model and the observed entries, each trajectory predicted
    from its row of `initial_states` [N, D] (default: its first observation), and how many
    trajectories the model cannot be solved along (`predicted`: it blows up within their
    span); the RMSE is NaN (not measurable) when any cannot. `skip_start` leaves each
    trajectory's first row out (a part held out in time starts from a training
    observation)."""
    squared, counts = np.zeros(data.n_states), np.zeros(data.n_states)
    starts = data.initial_states() if initial_states is None else initial_states
    unsolved = 0
    for times, values, mask, y0 in zip(data.times, data.values, data.masks, starts):
        if skip_start:
            mask = np.concatenate([np.zeros_like(mask[:1]), mask[1:]])
        prediction = predicted(run, y0, times)
        if not np.isfinite(prediction).all():
            unsolved += 1
            continue
        squared += np.where(mask, (prediction - np.nan_to_num(values)) ** 2, 0).sum(axis=0)
        counts += mask.sum(axis=0)
    rmse = np.sqrt(squared / np.maximum(counts, 1))
    return (np.full_like(rmse, np.nan) if unsolved else rmse), unsolved


def band_coverage(run: Run, data: Trajectories, initial_states: np.ndarray | None = None,
                  *, skip_start: bool = False) -> float | None:
    """The fraction of `data`'s observed entries inside an ensemble's 90% (5-95%) predictive
    band, each trajectory predicted as in `observation_rmse` (from a first observation, the
    band includes that start's noise); a calibrated band covers about 90% of observations it
    was not trained on. None (not measurable) where a member blows up along a trajectory, as
    the RMSE."""
    inside, count = 0, 0
    starts = data.initial_states() if initial_states is None else initial_states
    for times, values, mask, y0 in zip(data.times, data.values, data.masks, starts):
        if skip_start:
            mask = np.concatenate([np.zeros_like(mask[:1]), mask[1:]])
        low, high = predictive_quantiles(run, np.ascontiguousarray(y0), times, (0.05, 0.95),
                                         noisy_start=initial_states is None)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            return None
        inside += int(((values >= low) & (values <= high) & mask).sum())
        count += int(mask.sum())
    return inside / max(count, 1)


def true_trajectories(system: System, y0: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The true system from initial states y0 [B, D] at times ts [T]: [T, B, D] (with Rodas5P
    for a stiff system, as `simulate` does: Dopri5 ran into the step limit on ROBER, for
    minutes)."""
    solution = solve(system.vector_field, torch.tensor(y0, dtype=torch.float64),
                     torch.tensor(ts, dtype=torch.float64),
                     solver=Rodas5P() if system.first_obs is not None else None,
                     controller=PIDController(rtol=1e-8, atol=1e-10), max_steps=200_000)
    return solution.ys.numpy()


def truth_checks(run: Run, system: System, test: Trajectories, ranges: np.ndarray
                 ) -> dict[str, Any]:
    """Compare learned and true dynamics from the test trajectories' initial states: RMSE
    over the data's span, and over a forecast to 3x the span; plus the system's own check."""
    t0, t1 = test.t_span
    y0 = test.initial_states()
    checks: dict[str, Any] = {}
    for name, end in (("data_span", t1), ("forecast", t0 + FORECAST_FACTOR * (t1 - t0))):
        ts = np.linspace(t0, end, 200)
        error = predicted(run, y0, ts) - true_trajectories(system, y0, ts)
        rmse = np.sqrt(np.mean(error ** 2, axis=(0, 1)))  # NaN (None) where it blew up
        checks[f"{name}_rmse"] = _json_list(rmse)
        checks[f"{name}_relative_rmse"] = _json_list(rmse / ranges)
        checks[f"{name}_t_end"] = float(end)
    if system.name == "toggle-switch":
        checks["basin_agreement"] = basin_agreement(run, system)
    if system.period is not None or system.name == "lotka-volterra":
        # Noise-free starts from the system's initial box: a noisy first observation can put
        # an orbit outside the data (LV orbits neither grow nor decay), which would test
        # extrapolation to unseen amplitudes rather than the learned dynamics.
        starts = system.sample_initial_states(PERIOD_STARTS, np.random.default_rng(0))
        checks["period"] = period_check(run, system, starts, t0, t1)
    return checks


def basin_agreement(run: Run, system: System, *, size: int = 20, box: float = 5.0,
                    t_end: float = 30.0) -> dict[str, Any]:
    """Fraction of a size x size grid of initial states on [0, box]^2 from which the learned
    model ends (at t_end) in the same stable state as the true system. Each end state is
    assigned to the nearer of the two stable states."""
    from tidal.data.systems import toggle_switch_stable_states

    axis = np.linspace(0.0, box, size)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    ts = np.array([0.0, t_end])
    stable = np.asarray(toggle_switch_stable_states())
    learned_end = predicted(run, grid, ts)[-1]  # NaN where it blew up: no agreement
    true_end = true_trajectories(system, grid, ts)[-1]

    def nearest(points: np.ndarray) -> np.ndarray:
        return np.argmin(((points[:, None, :] - stable[None]) ** 2).sum(-1), axis=1)

    agree = (nearest(learned_end) == nearest(true_end)) & np.isfinite(learned_end).all(-1)
    return {"fraction": float(agree.mean()), "grid": f"{size}x{size} on [0, {box}]^2",
            "t_end": t_end}


def period_check(run: Run, system: System, y0: np.ndarray, t0: float, t1: float
                 ) -> dict[str, Any]:
    """Oscillation period of the first state, learned vs true, from the initial states y0,
    measured between upward crossings of its mean over [t1, t0 + 4 (t1 - t0)] (beyond the
    training window)."""
    ts = np.linspace(t0, t0 + 4 * (t1 - t0), 4000)
    beyond = ts >= t1
    learned = _periods(ts[beyond], predicted(run, y0, ts)[beyond, :, 0])
    true = _periods(ts[beyond], true_trajectories(system, y0, ts)[beyond, :, 0])
    relative = np.abs(learned - true) / true
    return {"learned": _json_list(learned), "true": _json_list(true),
            "relative_error": _json_list(relative),
            # a learned model that stopped oscillating has no period: its error is None
            "max_relative_error": None if np.isnan(relative).any() else float(relative.max()),
            "median_relative_error": None if np.isnan(relative).any()
            else float(np.median(relative)), "starts": "uniform in the system's initial box"}


def predicted(run: Run, y0: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """`run.predict(y0, ts)`, or NaN everywhere when the model's solve fails (a learned model,
    a polynomial above all, can blow up in a forecast): the report's checks then fail and its
    warnings say so, instead of the report failing."""
    try:
        return run.predict(y0, ts)
    except SolveFailedError:
        return np.full((len(ts), *np.shape(y0)[:-1], len(run.state_names)), np.nan)


def _json_list(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _periods(ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    periods = []
    for column in x.T:
        centred = column - column.mean()
        up = np.flatnonzero((centred[:-1] < 0) & (centred[1:] >= 0))
        if len(up) < 2:
            periods.append(np.nan)
            continue
        # linear interpolation of each crossing time
        frac = -centred[up] / (centred[up + 1] - centred[up])
        crossings = ts[up] + frac * (ts[up + 1] - ts[up])
        periods.append(float(np.mean(np.diff(crossings))))
    return np.array(periods)
