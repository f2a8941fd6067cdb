"""Training an `Ensemble`: K members from different seeds (optionally on bootstrap resamples
of the trajectories), each fitted by `fit` exactly as a single model would be; and the
predictive bands of a run whose model is an ensemble."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import scipy.special
import torch

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.data.noise import noise_level
from tidal.models import NeuralODE
from tidal.models.ensemble import MAX_MEMBERS, Ensemble, check_quantiles, mixture_quantiles
from tidal.training.band_calibration import (
    BAND,
    BAND_LEVEL,
    band_scores,
    conformal_scale,
    exchangeable,
    scale_about_mean,
)
from tidal.training.config import TrainConfig
from tidal.training.fit import (
    FitResult,
    TrajectoryObjective,
    continuations,
    fit,
    write_initial_states,
)
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import write_history

#: The seed of member k is `config.seed + SEED_STRIDE * k`.
SEED_STRIDE = 1000
#: The largest band calibration factor stored (config.json's bound); larger: uncalibrated.
MAX_SCALE = 1e300
#: Starts drawn per member around a noisy observed start (`predictive_quantiles`).
START_DRAWS = 16


@dataclass(frozen=True)
class EnsembleOptions:
    """members: how many models (>= 2); bootstrap: train each on a resample, with
    replacement, of the training trajectories (True needs >= 2 of them), so that the members'
    spread carries the uncertainty of a fit to so few series; None: when the validation data
    continue the training series (a split in time, few series) and there are >= 2 of them;
    workers: processes that train members at once (1: one after another in this process)."""

    members: int = 5
    bootstrap: bool | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.members, bool) or not isinstance(self.members, int) \
                or not 2 <= self.members <= MAX_MEMBERS:
            raise InvalidArgumentError(f"`ensemble={self.members!r}`: give 2 to {MAX_MEMBERS} "
                                       "members.")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise InvalidArgumentError(f"`workers={self.workers!r}`: must be an integer >= 1.")


def fit_ensemble(build: Callable[[int], NeuralODE], train: Trajectories, *,
                 val: Trajectories | None = None, config: TrainConfig | None = None,
                 scaling: Scaling | None = None, options: EnsembleOptions | None = None,
                 run_dir: RunDirectory | None = None, progress: bool = True) -> FitResult:
    """Train `options.members` models, `build(seed)` each, and return them as one `Ensemble`.

    Member k trains with seed `config.seed + 1000 k` (its initial weights, when `build` seeds
    them, and its batch order) on `train`, or on a bootstrap resample of `train`'s
    trajectories. Members write nothing; with `run_dir`, the ensemble writes metrics.csv (the
    first member's loss curve) and the initial states (the members' mean). The predictive
    band is calibrated on `val` (`calibrate_band`) and the calibration stored in the
    ensemble, except for bootstrap members in a split in time, whose band is their spread
    (widened for their number by `predictive_quantiles`) and the noise. The result's
    status is the worst member's ("diverged" before "interrupted" before "finished"), its
    message counts the members' outcomes, and `initial_states` is the members' mean (with
    bootstrap, the first observations: members saw different trajectories). An interrupted
    member (Ctrl-C) ends the fit: the ensemble holds the members trained until then.
    """
    config = config or TrainConfig()
    options = options or EnsembleOptions()
    scaling = scaling or Scaling.fit(train)
    in_time = continuations(train, val) is not None  # val continues the training series
    bootstrap = options.bootstrap
    if bootstrap is None:
        bootstrap = len(train) >= 2 and in_time
    if bootstrap and len(train) < 2:
        raise InvalidArgumentError("`bootstrap=True` resamples training trajectories; there is "
                                   "only one. Train without bootstrap (members differ by seed).")
    seeds = [config.seed + SEED_STRIDE * k for k in range(options.members)]
    picks = ([bootstrap_picks(len(train), seed) for seed in seeds] if bootstrap
             else None)
    jobs = [(build, *_member_data(train, val, None if picks is None else picks[k]),
             dataclasses.replace(config, seed=seed), scaling, progress and k == 0)
            for k, seed in enumerate(seeds)]
    if options.workers > 1:
        with ProcessPoolExecutor(min(options.workers, len(jobs)), mp_context=get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            results = list(pool.map(_fit_member, jobs))
    else:
        results = []
        for job in jobs:
            results.append(_fit_member(job))
            if results[-1].status == "interrupted":  # Ctrl-C: the rest are not started
                break
        seeds = seeds[:len(results)]
    noise = noise_level(train)
    ensemble = Ensemble([r.model for r in results], seeds=seeds, bootstrap=bootstrap,
                        observation_noise=np.nan_to_num(noise).tolist())
    # Bootstrap members held out in time: the band is their spread (widened for their
    # number) and the noise. Rescaled on the series each member left out (members that saw
    # about 4 of 6 series) or on the validation rows (later rows of series they fitted) it
    # covered worse: design.md, "Small data, eighth session".
    if not (bootstrap and in_time):
        ensemble.band_calibration = calibrate_band(ensemble, scaling, train, val,
                                                   getattr(torch, config.dtype))
    initial = (np.mean([np.asarray(r.initial_states) for r in results], axis=0)
               if not bootstrap else train.initial_states())
    if run_dir is not None:
        write_history(run_dir, results[0].history,
                      (TrajectoryObjective.unit, *TrajectoryObjective.columns))
        write_initial_states(run_dir, train, initial)
    return FitResult(ensemble, scaling, results[0].history, _worst(results),
                     _summary(results), results[0].best_epoch,
                     float(np.mean([r.best_val_loss for r in results])), config, initial)


def start_draws(shape: tuple[int, ...]) -> np.ndarray:
    """[START_DRAWS, *shape] standard normal draws, stratified: each entry's draws are the
    normal's quantiles at (i + 1/2) / START_DRAWS, in a fixed random order per entry (a Latin
    hypercube), scaled to unit variance: mean exactly 0, so the band is not shifted."""
    z = scipy.special.ndtri((np.arange(START_DRAWS) + 0.5) / START_DRAWS)
    z = z / np.sqrt(np.mean(z**2))
    order = np.random.default_rng(0).random((START_DRAWS, *shape)).argsort(axis=0)
    return z[order]


def _fit_member(job: tuple[Any, ...]) -> FitResult:
    build, train, val, config, scaling, progress = job
    return fit(build(config.seed), train, val=val, config=config, scaling=scaling,
               progress=progress)


def bootstrap_picks(n: int, seed: int) -> np.ndarray:
    """The trajectories (indices) of a bootstrap resample of `n`, drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, n)


def _member_data(train: Trajectories, val: Trajectories | None, picks: np.ndarray | None
                 ) -> tuple[Trajectories, Trajectories | None]:
    """A member's training and validation data: all of it, or the trajectories `picks` of
    `train`, and of `val` too when it continues `train`'s series (a split in time: the
    member validates on its own series' later rows, never on an out-of-bag one's)."""
    if picks is None:
        return train, val
    if val is not None and continuations(train, val) is not None:
        return _resample(train, picks), _resample(val, picks)
    return _resample(train, picks), val


def _resample(data: Trajectories, picks: np.ndarray) -> Trajectories:
    """The trajectories `picks` of `data` (repeated ones renamed)."""
    return Trajectories([data.times[i] for i in picks], [data.values[i] for i in picks],
                        ids=[f"{data.ids[i]}#{k}" for k, i in enumerate(picks)],
                        state_names=data.state_names)


_SEVERITY = ("finished", "early-stopped", "interrupted", "diverged")


def _worst(results: Sequence[FitResult]) -> str:
    return max((r.status for r in results), key=_SEVERITY.index)


def _summary(results: Sequence[FitResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    told = ", ".join(f"{n} {status}" for status, n in counts.items())
    worst = next(r for r in results if r.status == _worst(results))
    return f"ensemble of {len(results)} members ({told}); e.g. {worst.message}"


def predictive_quantiles(run: Any, y0: np.ndarray, ts: np.ndarray,
                         quantiles: Sequence[float] = (0.05, 0.5, 0.95), *,
                         noise: bool = True, noisy_start: bool = False,
                         calibrated: bool = True) -> np.ndarray:
    """Quantiles [Q, T, (B,) D] of the ensemble's predictive distribution of the states
    (user units) from initial states `y0` [D] or [B, D] at times `ts`: the mixture over
    members of normals around each member's trajectory with the run's observation noise
    (`noise=False`: the members' spread alone, the uncertainty of the model).

    `noisy_start`: `y0` is an observation, as noisy as the others; each member is then run
    from `START_DRAWS` starts y0 + sigma z (`start_draws`), so the band also
    carries the start's error along the trajectory (a held-out series predicted from its first
    observation needs it).

    `calibrated`: scale the mixture about its mean by the ensemble's band calibration (its
    `band_calibration["scale"]`, chosen on validation data by `calibrate_band`), when it has
    one, else widen the members' spread for their number (`band_calibration.exchangeable`:
    the truth as one more member); False: the members and the noise as they are.

    Where a member cannot be solved (it blows up within `ts`) the quantiles are NaN: the band
    is not known (`run.predict`, the members' mean, raises)."""
    model = run.model
    if not isinstance(model, Ensemble):
        raise InvalidArgumentError(f"{run.path} holds a single model, not an ensemble; fit "
                                   "with --ensemble K to get predictive bands.")
    quantiles = check_quantiles("predictive_quantiles", quantiles)
    members, sd = _mixture(model, run.scaling, run.dtype, y0, ts, noisy_start)
    if calibrated and model.band_calibration is not None:
        members, sd = scale_about_mean(members, sd, model.band_calibration["scale"])
    elif calibrated:
        members = exchangeable(members, len(model.members))
    return mixture_quantiles(members, sd if noise else np.zeros_like(sd), quantiles)


def _mixture(model: Ensemble, scaling: Scaling, dtype: torch.dtype, y0: np.ndarray,
             ts: np.ndarray, noisy_start: bool) -> tuple[np.ndarray, np.ndarray]:
    """The predictive mixture from `y0` at `ts` (user units): its centres [K (x draws), T,
    (B,) D] and the observation noise sd [D]."""
    y = np.array(y0, dtype=float)
    sd = np.asarray(model.observation_noise or 0.0) * np.ones(y.shape[-1])
    draws = 1
    if noisy_start and np.any(sd > 0):
        y, draws = (y + sd * start_draws(y.shape)).reshape(-1, y.shape[-1]), START_DRAWS
    members = member_states(model, scaling, dtype, y, ts)  # [K, T, (draws x B,) D]
    if draws > 1:  # the draws join the members in the mixture: [K x draws, T, (B,) D]
        k, t = members.shape[:2]
        members = np.moveaxis(members.reshape(k, t, draws, *np.shape(y0)), 2, 1)
        members = members.reshape(k * draws, t, *np.shape(y0))
    return members, sd


def member_states(model: Ensemble, scaling: Scaling, dtype: torch.dtype, y0: np.ndarray,
                  ts: np.ndarray) -> np.ndarray:
    """Every member's states from `y0` [(B,) D] at `ts` (user units in and out), [K, T, (B,)
    D]; NaN for a member that cannot be solved from them (it blows up)."""
    with torch.no_grad():
        scaled = model.member_predictions(
            scaling.scale_values(torch.tensor(y0, dtype=dtype)),  # a copy: y0 may be read-only
            torch.as_tensor(scaling.scale_times(np.asarray(ts, dtype=float))),
            unsolved_as_nan=True)
    return scaling.unscale_values(scaled).numpy()


def calibrate_band(model: Ensemble, scaling: Scaling, train: Trajectories,
                   val: Trajectories | None, dtype: torch.dtype = torch.float64
                   ) -> dict[str, Any] | None:
    """The band calibration (`tidal.training.band_calibration`) of `model` on the validation
    observations, each series predicted as a held-out one is, from its first (noisy)
    observation with the start's noise in the band: in a split in time (`val` continuing
    `train`'s series) from each training series' first observation through its validation
    rows, scoring those rows; else each validation trajectory from its first observation,
    scoring the later ones.

    None without such observations, or when no finite factor covers 90% of them (members
    that fail to solve, or a band of no width)."""
    if val is None:
        return None
    continued = continuations(train, val)
    if continued is not None:
        points = _scores(model, scaling, dtype, continued, [t[-1] for t in train.times])
        return _calibration(points, "validation", "the validation rows of each series, "
                            "carried on from its first observation")
    points = _scores(model, scaling, dtype, val, [t[0] for t in val.times])
    return _calibration(points, "validation", "the validation trajectories after their first "
                        "observations")


def _scores(model: Ensemble, scaling: Scaling, dtype: torch.dtype, data: Trajectories,
            ends: Sequence[float]) -> np.ndarray:
    """The band scores of `data`'s observations after `ends` (one per series), each series
    predicted from its first observation (NaN, a failed member: inf)."""
    scores = []
    for times, values, mask, end in zip(data.times, data.values, data.masks, ends):
        members, sd = _mixture(model, scaling, dtype, values[0], times, noisy_start=True)
        low, high = mixture_quantiles(members, sd, BAND)
        score = band_scores(np.nan_to_num(values), members.mean(axis=0), low, high)
        scores.append(score[mask & (times > end)[:, None]])
    points = np.concatenate(scores)
    return np.where(np.isnan(points), np.inf, points)


def _calibration(points: np.ndarray, source: str, where: str) -> dict[str, Any] | None:
    """The stored calibration, or None when no finite positive factor holds 90% of `points`."""
    scale = conformal_scale(points, BAND_LEVEL) if points.size else np.inf
    if not 0 < scale <= MAX_SCALE:
        return None
    return {"scale": scale, "points": int(points.size), "data": where, "source": source}
