"""Warnings about a fit that may look finished but should not be trusted, one line each with
what to try. They head report.html, end the terminal's summary and are kept in metrics.json.

Checks (`tidal.report.checks`) compare a run with fixed limits, and with the truth when it is
known; warnings need no truth and are about the user's own data:

- a model that cannot be solved along some trajectory within its span (it blows up), so
  that its error there cannot be measured (then the two error warnings below are not
  computed);
- held-out error well above the noise: the held-out RMSE of a state is more than
  `NOISE_FACTOR` times the observation noise estimated from the data alone
  (`tidal.data.noise.noise_level`); without held-out data, the same test on the training
  error (the model underfits);
- the training data unexplained: the training error leaves more than `UNEXPLAINED` of a
  state's variance in the training data unexplained (1 - R^2; needs no noise estimate);
- a spectral mismatch: the training data oscillate (the Lomb-Scargle periodogram, averaged
  over the trajectories, has a peak explaining at least `OSCILLATION_POWER` of the variance,
  and at least `OBSERVED_HALF_CYCLES` of its half-cycles hold an observation) but the
  model, run from the same starts over the same spans, oscillates at a frequency more than
  `FREQUENCY_TOLERANCE` (or half the periodogram's resolution) away, or not at all;
- a forecast that leaves the data: forecasts to `FORECAST_FACTOR` times the span from the
  training trajectories' (estimated) starts go non-finite or further than `FORECAST_REACH` ranges
  beyond the observed values;
- for an ensemble: members that cannot be solved along the training series or to the
  forecast's end (they blow up; the band is not known there), members that disagree within
  the data (their standard deviation, averaged over the training spans, above
  `SPREAD_FACTOR` times the noise), a band of the members (5-95%) wider than `BAND_REACH`
  ranges somewhere in the forecast, and a predictive band (5-95%) wider on average than
  `BAND_WIDTH` of the range within the data (it covers by saying little); for an ensemble
  of UDEs, a physical parameter whose members' values spread by more than
  `PARAMETER_SPREAD` of their mean (not identifiable: the
  correction can absorb it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tidal.data import Trajectories
from tidal.data.noise import noise_level
from tidal.data.spectrum import Peak, dominant_frequency, half_cycles_observed
from tidal.models import UDE
from tidal.models.augmented import extra_states
from tidal.models.ensemble import Ensemble
from tidal.report.checks import significant
from tidal.report.metrics import FORECAST_FACTOR, learned_initial_states, predicted
from tidal.training.ensemble import member_states, predictive_quantiles
from tidal.training.run import SPLITS, Run

NOISE_FACTOR = 2.5
NOISE_FLOOR = 0.01  # of the range: below this, noise estimates are not trusted
UNEXPLAINED = 0.25  # of a state's variance in the training data
OSCILLATION_POWER = 0.4
MODEL_OSCILLATION_POWER = 0.2
OBSERVED_HALF_CYCLES = 0.6  # log-spaced kinetics: ~0.4; 8 uniform times over 3 cycles: ~0.8
FREQUENCY_TOLERANCE = 0.2
FORECAST_REACH = 1.0
SPREAD_FACTOR = 1.0
BAND_REACH = 1.0
BAND_WIDTH = 0.75  # of the range, the predictive band's mean width within the data
PARAMETER_SPREAD = 0.1
MODEL_POINTS = 400  # per trajectory, for the model's periodogram
MAX_TRAJECTORIES = 16  # of each split, for the spectral and forecast checks


@dataclass(frozen=True)
class FitWarning:
    """One warning: its `kind` (a stable name), what was seen and what to try."""

    kind: str
    message: str
    advice: str

    @property
    def line(self) -> str:
        return f"warning: {self.message}; try {self.advice}"


def fit_warnings(run: Run, metrics: dict[str, Any]) -> list[FitWarning]:
    """Every warning that applies to `run`, given its metrics (`evaluate_run`'s result)."""
    splits = {name: run.data(name) for name in SPLITS}
    present = [data for data in splits.values() if data is not None]
    ranges = np.asarray(metrics["state_range"])
    noise = _relative_noise(present, ranges)
    train = splits["train"]
    assert train is not None  # a run always has training data (read_split refuses otherwise)
    ensemble = isinstance(run.model, Ensemble)
    found = _unsolved(metrics, ensemble)
    if not found:  # else the errors cannot be measured
        found += _error_against_noise(metrics, noise)
        if not any(w.kind == "underfit" for w in found):
            found += _unexplained(metrics, train)
    found += _spectral(run, train)
    found += _forecast(run, train, present, ranges, ensemble)
    if isinstance(run.model, Ensemble):
        found += _members(run, run.model, train, ranges, noise)
        found += _identifiability(run.model)
    return found


def warnings_json(found: list[FitWarning]) -> list[dict[str, str]]:
    return [{**asdict(w), "line": w.line} for w in found]


def _relative_noise(datasets: list[Trajectories], ranges: np.ndarray) -> np.ndarray:
    pooled = Trajectories([t for d in datasets for t in d.times],
                          [v for d in datasets for v in d.values],
                          state_names=datasets[0].state_names)
    return np.maximum(noise_level(pooled) / ranges, NOISE_FLOOR)


def _unsolved(metrics: dict[str, Any], ensemble: bool) -> list[FitWarning]:
    """Splits with trajectories the model (for an ensemble: some member) cannot be solved
    along within their own span."""
    failing = [f"{metrics[split]['unsolved']} of {metrics[split]['trajectories']} {split}"
               for split in SPLITS if metrics.get(split, {}).get("unsolved")]
    if not failing:
        return []
    return [FitWarning(
        "unsolved", f"the model cannot be solved along {', '.join(failing)} trajectories "
        f"within their own span ({'a member' if ensemble else 'it'} blows up): their error "
        "cannot be measured", ("a fit with other seeds (--seed) or more data" if ensemble
                               else "--ensemble 5 to see whether other seeds fit, or, where "
                               "--discover kept a formula, the same fit without --discover "
                               "(the network)"))]


def _error_against_noise(metrics: dict[str, Any], noise: np.ndarray) -> list[FitWarning]:
    held_out = next((split for split in ("test", "val") if split in metrics), None)
    split = held_out or "train"
    errors = np.asarray(metrics[split]["relative_rmse"])
    ratio = errors / np.where(np.isnan(noise), np.inf, noise)
    worst = int(np.argmax(ratio))
    if not ratio[worst] > NOISE_FACTOR:
        return []
    name = metrics["states"][worst]
    seen = (f"{'held-out' if held_out else 'in-sample'} error of {name} is "
            f"{significant(100 * errors[worst])}% of its range, {significant(ratio[worst])}x "
            f"the noise estimated from the data ({significant(100 * noise[worst])}%)")
    if held_out:
        return [FitWarning("held-out-error", f"{seen}: the model does not generalize",
                           "more trajectories, --ensemble 5 to see how much the fit varies, "
                           "or a smaller --width")]
    return [FitWarning("underfit", f"{seen}: the model underfits",
                       "more --epochs, a higher --lr or --shooting-segments 4")]


def _unexplained(metrics: dict[str, Any], train: Trajectories) -> list[FitWarning]:
    """The training error against the spread of the training data itself (no noise estimate
    needed: on sparse samples of a curve the noise estimate errs high and hides a poor fit)."""
    variance = np.nanvar(np.concatenate(train.values), axis=0)
    left = np.asarray(metrics["train"]["rmse"]) ** 2 / np.where(variance > 0, variance, np.inf)
    worst = int(np.argmax(left))
    if not left[worst] > UNEXPLAINED:
        return []
    return [FitWarning(
        "unexplained", f"the model leaves {significant(100 * left[worst])}% of the variance of "
        f"{metrics['states'][worst]} in the training data unexplained: it has not fitted the "
        "data it was trained on", "more --epochs, --shooting-segments 4, --ensemble 5 to see "
        "whether other seeds fit, or more observations per cycle")]


def _spectral(run: Run, train: Trajectories) -> list[FitWarning]:
    """The training series' dominant frequencies against the model's from the same starts
    over the same spans (the held-out parts of a split in time are too short to show one)."""
    train = train[list(range(min(len(train), MAX_TRAJECTORIES)))]
    t0, t1 = train.t_span
    span = t1 - t0
    counts = [m.any(axis=1).sum() for m in train.masks]
    highest = np.pi * float(np.median(counts)) / span  # the typical sampling's Nyquist
    starts = learned_initial_states(run, train)
    # contiguous rows: the solver's error norm needs them (a non-contiguous y0 fails there)
    starts = train.initial_states() if starts is None else np.ascontiguousarray(starts)
    grids = [np.linspace(t[0], t[-1], MODEL_POINTS) for t in train.times]
    predictions = [predicted(run, y0, ts) for y0, ts in zip(starts, grids)]
    if not all(np.isfinite(p).all() for p in predictions):
        return []  # a model that blows up along its own training data: `_unsolved` says so
    found = []
    for j, name in enumerate(run.state_names):
        observed = [(t[m[:, j]], v[m[:, j], j])
                    for t, v, m in zip(train.times, train.values, train.masks)]
        data_peak = dominant_frequency(observed, span, highest)
        if data_peak is None or data_peak.power < OSCILLATION_POWER or half_cycles_observed(
                [t for t, _ in observed], data_peak.frequency, span) < OBSERVED_HALF_CYCLES:
            continue  # no oscillation, or one the sampling does not show (log-spaced times)
        model_peak = dominant_frequency([(ts, p[:, j]) for ts, p in zip(grids, predictions)],
                                        span, 4 * highest)
        if _mismatch(data_peak, model_peak):
            learned = ("does not oscillate" if model_peak is None
                       or model_peak.power < MODEL_OSCILLATION_POWER
                       else f"oscillates at {significant(model_peak.frequency)}")
            alone = len(run.state_names) == 1 and not extra_states(run.model)
            found.append(FitWarning(
                "frequency", f"{name} oscillates at angular frequency "
                f"{significant(data_peak.frequency)} in the data (period "
                f"{significant(2 * np.pi / data_peak.frequency)}, Lomb-Scargle periodogram) "
                f"but the model {learned}: its period is wrong",
                "--augment 1 (an ODE in one state cannot oscillate)" if alone else
                "--shooting-segments 4, more --epochs, or --horizons 0.1,0.3,0.6,1.0"))
    return found


def _mismatch(data: Peak, model: Peak | None) -> bool:
    if model is None or model.power < MODEL_OSCILLATION_POWER:
        return True
    tolerance = max(FREQUENCY_TOLERANCE * data.frequency, data.resolution / 2)
    return abs(model.frequency - data.frequency) > tolerance


def _forecast(run: Run, data: Trajectories, datasets: list[Trajectories], ranges: np.ndarray,
              ensemble: bool) -> list[FitWarning]:
    data = data[list(range(min(len(data), MAX_TRAJECTORIES)))]
    t0, t1 = data.t_span
    ts = np.linspace(t0, t0 + FORECAST_FACTOR * (t1 - t0), 300)
    starts = learned_initial_states(run, data)
    forecast = predicted(run, data.initial_states() if starts is None
                         else np.ascontiguousarray(starts), ts)
    if np.isnan(forecast).all():
        if ensemble:  # some member blows up: `_members` says how many
            return []
        return [FitWarning(
            "forecast", f"the model cannot be solved to {FORECAST_FACTOR:g}x the data's span: "
            "it blows up", "to trust the model only within the data, or --ensemble 5 to see "
            "the spread")]
    observed = np.concatenate([np.concatenate(d.values) for d in datasets])
    low = np.nanmin(observed, axis=0) - FORECAST_REACH * ranges
    high = np.nanmax(observed, axis=0) + FORECAST_REACH * ranges
    outside = ~np.isfinite(forecast) | (forecast < low) | (forecast > high)
    if not outside.any():
        return []
    j = int(np.argmax(outside.any(axis=(0, 1))))
    row = int(np.argmax(outside[..., j].any(axis=1)))
    value = forecast[row][outside[row, :, j], j][0]
    return [FitWarning(
        "forecast", f"the forecast to {FORECAST_FACTOR:g}x the data's span leaves the data: "
        f"{run.state_names[j]} reaches {significant(value)} at t = {significant(ts[row])} "
        f"(observed {significant(low[j] + ranges[j])} to {significant(high[j] - ranges[j])})",
        "to trust the model only within the data, "
        + ("" if ensemble else "--ensemble 5 to see the spread, ") + "or data that cover the "
        "region")]


def _members(run: Run, model: Ensemble, train: Trajectories, ranges: np.ndarray,
             noise: np.ndarray) -> list[FitWarning]:
    train = train[list(range(min(len(train), MAX_TRAJECTORIES)))]
    starts = learned_initial_states(run, train)
    starts = train.initial_states() if starts is None else np.ascontiguousarray(starts)
    t0, t1 = train.t_span
    inside = np.linspace(t0, t1, 100)
    members = member_states(model, run.scaling, run.dtype, starts, inside)
    unsolved = ~np.isfinite(members).all(axis=(1, 2, 3))  # [K]: blows up within the data
    if unsolved.any():
        where = "along the training series within their span"
        return [FitWarning(
            "members-unsolved", f"{_members_blowing_up(unsolved, where)}: the mean and the "
            "band are not known there", "a fit with other seeds (--seed) or more data")]
    found = []
    spread = members.std(axis=0).mean(axis=(0, 1)) / ranges
    j = int(np.argmax(spread / noise))
    if spread[j] > SPREAD_FACTOR * noise[j]:
        found.append(FitWarning(
            "members-disagree", f"the ensemble's members disagree within the data: their "
            f"spread in {run.state_names[j]} is {significant(100 * spread[j])}% of its range, "
            f"above the noise ({significant(100 * noise[j])}%)",
            "more data, or read the forecasts with their bands"))
    ahead = np.linspace(t0, t0 + FORECAST_FACTOR * (t1 - t0), 100)
    forecasts = member_states(model, run.scaling, run.dtype, starts, ahead)
    unsolved = ~np.isfinite(forecasts).all(axis=(1, 2, 3))
    if unsolved.any():
        where = f"to {FORECAST_FACTOR:g}x the data's span"
        found.append(FitWarning(
            "band-explodes", f"{_members_blowing_up(unsolved, where)}: the forecast is not "
            "determined by the data", "to trust the model only within the data, or data that "
            "reach further"))
        return found + _wide_band(run, model, starts, inside, ranges)
    low, high = np.quantile(forecasts, (0.05, 0.95), axis=0)  # the members' own band
    width = (high - low) / ranges
    j = int(np.argmax(width.max(axis=(0, 1))))
    if width[..., j].max() > BAND_REACH:
        row = int(np.argmax(width[..., j].max(axis=1)))
        found.append(FitWarning(
            "band-explodes", f"the members' 5-95% band of {run.state_names[j]} grows to "
            f"{significant(100 * width[row, :, j].max())}% of its range by t = "
            f"{significant(ahead[row])} in the forecast: the forecast is not determined by "
            "the data", "to trust the model only within the data, or data that reach further"))
    return found + _wide_band(run, model, starts, inside, ranges)


def _members_blowing_up(unsolved: np.ndarray, where: str) -> str:
    """"k of K members of the ensemble cannot be solved WHERE (they blow up)" for `unsolved`
    [K] (bool)."""
    k = int(unsolved.sum())
    return (f"{k} of {len(unsolved)} members of the ensemble cannot be solved {where} "
            f"({'it blows' if k == 1 else 'they blow'} up)")


def _wide_band(run: Run, model: Ensemble, starts: np.ndarray, inside: np.ndarray,
               ranges: np.ndarray) -> list[FitWarning]:
    """The predictive band (the one predict and the report show, calibrated or not) from the
    training series' starts, each as noisy as an observation, across the data's span: a band
    wider on average than `BAND_WIDTH` of a state's range covers by saying little."""
    low, high = predictive_quantiles(run, starts, inside, (0.05, 0.95), noisy_start=True)
    width = (high - low) / ranges  # NaN from a start a member blows up from: left out
    known = np.isfinite(width)
    if not known.any():
        return []
    width = np.where(known, width, 0.0).sum(axis=(0, 1)) / np.maximum(known.sum(axis=(0, 1)), 1)
    j = int(np.argmax(width))
    if not width[j] > BAND_WIDTH:
        return []
    calibration = model.band_calibration
    factor = ("" if calibration is None
              else f" (calibration factor {significant(calibration['scale'])})")
    return [FitWarning(
        "band-uninformative", f"the 90% band of {run.state_names[j]} is on average "
        f"{significant(100 * width[j])}% of its range wide within the data{factor}: it covers "
        "by saying little; the members predict new series poorly", "more trajectories, "
        "--shooting-segments 4 or more --epochs for a better fit, and read the held-out error "
        "before the band")]


def _identifiability(model: Ensemble) -> list[FitWarning]:
    values = [m.physical_parameters() for m in model.members if isinstance(m, UDE)]
    found = []
    for name in (values[0] if len(values) > 1 else {}):
        each = np.array([v[name] for v in values])
        spread = each.std() / max(abs(each.mean()), 1e-12)
        if spread > PARAMETER_SPREAD:
            found.append(FitWarning(
                "identifiability", f"the physical parameter {name} differs between members "
                f"by {significant(100 * spread)}% of its mean ({significant(each.min())} to "
                f"{significant(each.max())}): the data do not determine it, the correction "
                "can absorb it", "a correction that cannot represent that term (fewer "
                "inputs, a smaller --width), or fix the parameter"))
    return found
