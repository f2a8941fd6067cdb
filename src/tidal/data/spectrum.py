"""`dominant_frequency`: the angular frequency at which irregularly sampled series oscillate;
`half_cycles_observed`: whether their sampling shows the cycles of such a frequency at all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

#: Frequencies tried per unit of the periodogram's resolution 2 pi / span.
OVERSAMPLING = 10


@dataclass(frozen=True)
class Peak:
    """The periodogram's highest peak: angular `frequency` and its normalized `power` in [0, 1]
    (the fraction of the series' variance a sinusoid of that frequency explains, averaged over
    the series), and `resolution`, 2 pi / span, the width of a peak."""

    frequency: float
    power: float
    resolution: float


def dominant_frequency(series: Sequence[tuple[np.ndarray, np.ndarray]], span: float,
                       highest: float) -> Peak | None:
    """The highest peak of the Lomb-Scargle periodogram (scipy.signal.lombscargle, normalized,
    with a floating mean) averaged over `series` (pairs of times [T_i] and values [T_i] with no
    NaN), on angular frequencies from 1.5 cycles per `span` up to `highest`; None when no
    series has 4 values or the range is empty. Slower components below 1.5 cycles per span
    (trends, decays) are not oscillations the span can show, so they are left out."""
    resolution = 2 * np.pi / span
    lowest = 1.5 * resolution
    if highest <= lowest:
        return None
    grid = np.arange(lowest, highest, resolution / OVERSAMPLING)
    powers = [scipy.signal.lombscargle(t, x, grid, normalize="normalize", floating_mean=True)
              for t, x in series if len(t) >= 4 and np.ptp(x) > 0]
    if not powers:
        return None
    mean = np.mean(powers, axis=0)
    best = int(np.argmax(mean))
    return Peak(float(grid[best]), float(mean[best]), float(resolution))


def half_cycles_observed(times: Sequence[np.ndarray], frequency: float, span: float) -> float:
    """The fraction of the half-periods pi / `frequency` of [t_0, t_0 + `span`] (t_0: a
    series' first time; `span` as in `dominant_frequency`) that hold at least one of a series'
    observation `times`, averaged over the series.

    A periodogram peak says little where most cycles hold no observation: a decay sampled at
    log-spaced times (most observations early, a few late; ROBER's) looks like a step, which a
    slow sinusoid fits well, though no cycle of it is seen."""
    half = np.pi / frequency
    count = max(1, math.ceil(span / half - 1e-9))
    fractions = []
    for t in times:
        t = np.asarray(t, dtype=float)
        which = np.clip(((t - t.min()) / half).astype(int), 0, count - 1)
        fractions.append(np.unique(which).size / count)
    return float(np.mean(fractions))
