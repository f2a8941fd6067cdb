"""Per-species rate scales: the output scaling of a neural vector field for data whose species
move on time scales decades apart (stiff kinetics such as ROBER).

Kim et al. ("Stiff neural ordinary differential equations", Chaos 31, 2021) train on each
species divided by its scale and multiply the network's outputs by scale / time scale, so that
the network proper works on numbers of order one. One time scale does not serve ROBER: B
reaches half its range within ~1e-3 while A and C take ~700, so a network whose outputs are of
order one in either unit must learn outputs 1e5-1e6 times larger or smaller for the other
species (an untrained GELU field in the data's own time units even overflows before 1e5:
docs/benchmarks.md, "Stiff neural ODE on ROBER"). Here each species i gets its own rate

    r_i = range_i / T_i,

range_i its range over the training data (in the model's scaled units) and T_i the median,
over the trajectories, of the time it takes to first move half of that range away from its
first observation (the whole span for a species that never does); the field is
dy_i/dt = r_i * NN_i(y) (`MLP(output_scale=...)`). T_i is read off the observations, so noise
well below half a range does not move it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories

if TYPE_CHECKING:
    from tidal.training.pipeline import ModelOptions

#: `ModelOptions.rate_scale`'s choices.
RATE_SCALES = ("auto", "species", "off")
#: "auto" uses per-species rates when the species' time scales T_i differ by at least this
#: factor (ROBER: ~7e5; the toggle switch, Lotka-Volterra, Van der Pol with mu = 1: below 3).
SEPARATION = 100.0


def time_scales(trajectories: Trajectories) -> np.ndarray:
    """T_i [D]: for each state, the median over trajectories of the time from its first
    observation to the first observation at least half its range away (in the trajectories'
    time units); the longest trajectory's span where no trajectory moves that far."""
    observed = np.concatenate(trajectories.values)
    with np.errstate(invalid="ignore"):
        ranges = np.nanmax(observed, axis=0) - np.nanmin(observed, axis=0)
    span = max(float(t[-1] - t[0]) for t in trajectories.times)
    scales = np.full(trajectories.n_states, span)
    for i in range(trajectories.n_states):
        reached = []
        for t, v, m in zip(trajectories.times, trajectories.values, trajectories.masks):
            rows = np.flatnonzero(m[:, i])
            if rows.size < 2:
                continue
            moved = np.abs(v[rows, i] - v[rows[0], i]) >= 0.5 * ranges[i]
            if ranges[i] > 0 and moved.any():
                reached.append(t[rows[np.argmax(moved)]] - t[rows[0]])
        if reached:
            scales[i] = float(np.median(reached))
    return scales


def rate_scales(train: Trajectories, scaling: Scaling) -> tuple[float, ...]:
    """r_i = range_i / T_i of each state, in the model's units (`scaling`'s states and time).
    """
    scaled = train.scaled(scaling)
    observed = np.concatenate(scaled.values)
    ranges = np.nanmax(observed, axis=0) - np.nanmin(observed, axis=0)
    span = max(float(t[-1] - t[0]) for t in scaled.times)
    ranges = np.where(ranges > 0, ranges, 1.0)
    return tuple(float(r) for r in ranges / np.maximum(time_scales(scaled), 1e-12 * span))


def with_rate_scales(model: ModelOptions, train: Trajectories, scaling: Scaling
                     ) -> ModelOptions:
    """`model` with its `output_scale` resolved from `model.rate_scale` on the training data:
    "species" always (a neural ODE without augmented states only), "auto" when the species'
    time scales differ by `SEPARATION` or more, "off" never."""
    if model.rate_scale not in RATE_SCALES:
        raise InvalidArgumentError(f"`--rate-scale {model.rate_scale}` is not known; choose one "
                                   f"of {', '.join(RATE_SCALES)}.")
    applies = model.kind == "neural-ode" and not model.augment
    if model.rate_scale == "species" and not applies:
        raise InvalidArgumentError(
            f"`--rate-scale species` scales the outputs of a neural ODE's network, one per "
            f"state; it does not apply to --model {model.kind}"
            f"{' with --augment' if model.augment else ''}. Leave it out (auto).")
    if model.rate_scale == "off" or not applies:
        return dataclasses.replace(model, output_scale=None)
    scales = time_scales(train)
    if model.rate_scale == "auto" and scales.max() < SEPARATION * scales.min():
        return dataclasses.replace(model, output_scale=None)
    return dataclasses.replace(model, output_scale=rate_scales(train, scaling))
