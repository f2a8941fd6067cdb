"""`noise_level`: the observation noise of each state, estimated from the data alone."""

from __future__ import annotations

import numpy as np

from tidal.data.trajectories import Trajectories


def noise_level(data: Trajectories) -> np.ndarray:
    """The standard deviation of each state's observation noise [D], in the data's units,
    without a model: Gasser, Sroka and Jennen-Steinmetz's pseudo-residuals (Biometrika 1986).

    For three consecutive observations of a state at t_{i-1} < t_i < t_{i+1}, the residual of
    x_i from the straight line through its neighbours, e_i = (a x_{i-1} + b x_{i+1} - x_i) /
    sqrt(a^2 + b^2 + 1) with a = (t_{i+1} - t_i) / (t_{i+1} - t_{i-1}) and b = 1 - a, has
    variance sigma^2 when the signal is locally linear; the estimate is sqrt(mean e_i^2) over
    all triples of all trajectories. Curvature between samples adds to it, so on sparsely
    sampled oscillations it errs high (never low). NaN for a state with no triple.
    """
    squares: list[list[np.ndarray]] = [[] for _ in range(data.n_states)]
    for times, values, masks in zip(data.times, data.values, data.masks):
        for j in range(data.n_states):
            t, x = times[masks[:, j]], values[masks[:, j], j]
            if len(t) < 3:
                continue
            a = (t[2:] - t[1:-1]) / (t[2:] - t[:-2])
            b = 1.0 - a
            residual = (a * x[:-2] + b * x[2:] - x[1:-1]) / np.sqrt(a * a + b * b + 1.0)
            squares[j].append(residual * residual)
    return np.array([np.sqrt(np.mean(np.concatenate(s))) if s else np.nan for s in squares])
