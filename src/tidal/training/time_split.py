"""Holding out the last part of each series in time, for data with too few trajectories to
hold out whole ones.

With a handful of trajectories, holding out whole trajectories leaves one (or none) to
validate on and takes a large part of the little data away from training. Instead each
trajectory is cut in time: its first observations train, the next `val` fraction validates
(early stopping and the kept weights), the last `test` fraction tests. A held-out part starts
at the observation just before it (its "start", the last observation of the part before), so
it is predicted as a forecast from a noisy observed state; that start row is a training (or
validation) observation, and the report leaves it out of the held-out error.
"""

from __future__ import annotations

import numpy as np

from tidal._errors import InvalidArgumentError
from tidal.data import Trajectories

#: `split_by="auto"` holds out in time when the data have fewer trajectories than this (with
#: the default fractions of 1/8, whole-trajectory validation would then have at most one).
TIME_SPLIT_BELOW = 12
SPLITS_BY = ("auto", "trajectory", "time")


def split_kind(n_trajectories: int, split_by: str) -> str:
    """"time" or "trajectory": `split_by`, with "auto" resolved by the number of
    trajectories."""
    if split_by not in SPLITS_BY:
        raise InvalidArgumentError(f"`split_by={split_by!r}`: use one of {list(SPLITS_BY)}.")
    if split_by == "auto":
        return "time" if n_trajectories < TIME_SPLIT_BELOW else "trajectory"
    return split_by


def split_in_time(data: Trajectories, val: float, test: float
                  ) -> tuple[Trajectories, Trajectories | None, Trajectories | None]:
    """Each trajectory's observed rows cut into train / validation / test in time order.

    A held-out fraction f > 0 takes max(1, round(f n)) of a trajectory's n observed rows, and
    the part begins with the row before them (its start). Rows that observe nothing stay
    with the part they lie in.

    Raises:
        InvalidArgumentError: a trajectory would keep fewer than 2 observed rows to train on.
    """
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[], [], []]
    for name, times, values, mask in zip(data.ids, data.times, data.values, data.masks):
        observed = np.flatnonzero(mask.any(axis=1))
        n = len(observed)
        held = [max(1, round(f * n)) if f > 0 else 0 for f in (val, test)]
        kept = n - sum(held)
        if kept < 2:
            raise InvalidArgumentError(
                f"Trajectory '{name}' has {n} observed times; holding out the last "
                f"{sum(held)} in time (val={val}, test={test}) leaves {kept} to train on, "
                "fewer than 2. Lower the fractions or give longer series.")
        bounds = np.cumsum([0, kept, *held])
        for k in range(3):
            if bounds[k + 1] == bounds[k]:
                continue
            first = 0 if k == 0 else observed[bounds[k] - 1]  # a held-out part's start
            end = observed[bounds[k + 1]] if bounds[k + 1] < n else len(times)
            parts[k].append((times[first:end], values[first:end]))
    out = [Trajectories([t for t, _ in part], [v for _, v in part], ids=data.ids,
                        state_names=data.state_names) if part else None for part in parts]
    train = out[0]
    assert train is not None  # every trajectory keeps its first observations
    return train, out[1], out[2]
