"""`derivative_estimates`: states and their rates of change estimated from noisy series by
smoothing splines, for collocation (fitting a vector field to (state, rate) pairs, with no
ODE solve)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import make_smoothing_spline

from tidal.data.trajectories import Trajectories

#: Points per observation on which the splines are evaluated.
DENSITY = 4
#: make_smoothing_spline needs at least this many points.
MIN_POINTS = 5


def derivative_estimates(data: Trajectories) -> tuple[np.ndarray, np.ndarray]:
    """(states [M, D], rates [M, D]) in the data's units.

    Each state of each trajectory gets a cubic smoothing spline through its observations
    (scipy's `make_smoothing_spline`, the penalty chosen by generalized cross-validation); the
    splines and their derivatives are evaluated on `DENSITY` points per observation, evenly
    over the trajectory's observed span. A trajectory with a state observed fewer than
    `MIN_POINTS` times contributes nothing (no spline can be chosen by cross-validation).
    """
    states, rates = [], []
    for times, values, masks in zip(data.times, data.values, data.masks):
        if masks.sum(axis=0).min() < MIN_POINTS:
            continue
        grid = np.linspace(times[0], times[-1], DENSITY * len(times))
        splines = [make_smoothing_spline(times[masks[:, j]], values[masks[:, j], j])
                   for j in range(data.n_states)]
        states.append(np.stack([s(grid) for s in splines], axis=1))
        rates.append(np.stack([s.derivative()(grid) for s in splines], axis=1))
    if not states:
        return np.empty((0, data.n_states)), np.empty((0, data.n_states))
    return np.concatenate(states), np.concatenate(rates)

