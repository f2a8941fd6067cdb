"""Trajectories as solver-ready tensors, and the masked loss over observed entries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tidal.data import Trajectories


@dataclass(frozen=True)
class Batch:
    """A group of trajectories ready for `model(y0, ts)`.

    ts is [T] (float64) when the trajectories start at the same time: the union of their
    observation times, one solver grid for the batch. Otherwise ts is [T, B], each column a
    trajectory's own times, padded past its end with tiny extra steps that are masked out.
    ys [T, B, D] holds the observations (0 where not observed) and mask [T, B, D] which are.
    """

    y0: torch.Tensor
    ts: torch.Tensor
    ys: torch.Tensor
    mask: torch.Tensor


def make_batch(trajectories: Trajectories, dtype: torch.dtype) -> Batch:
    y0 = torch.as_tensor(trajectories.initial_states(), dtype=dtype)
    starts = {float(times[0]) for times in trajectories.times}
    if len(starts) == 1:
        ts, ys, mask = trajectories.to_grid(dtype)
        return Batch(y0, ts, ys, mask)
    length = max(len(times) for times in trajectories.times)
    span = trajectories.t_span[1] - trajectories.t_span[0]
    columns, values, masks = [], [], []
    for times, vals, observed in zip(trajectories.times, trajectories.values,
                                     trajectories.masks):
        pad = length - len(times)
        columns.append(np.concatenate([times, times[-1] + span * 1e-6 * np.arange(1, pad + 1)]))
        values.append(np.pad(np.nan_to_num(vals), ((0, pad), (0, 0))))
        masks.append(np.pad(observed, ((0, pad), (0, 0))))
    return Batch(y0, torch.as_tensor(np.stack(columns, axis=1), dtype=torch.float64),
                 torch.as_tensor(np.stack(values, axis=1), dtype=dtype),
                 torch.as_tensor(np.stack(masks, axis=1)))


def window(trajectories: Trajectories, fraction: float) -> Trajectories:
    """Each trajectory cut to the first `fraction` of its time span (at least 2 observed times).
    """
    if fraction >= 1.0:
        return trajectories
    times, values = [], []
    for t, v, observed in zip(trajectories.times, trajectories.values, trajectories.masks):
        keep = t <= t[0] + fraction * (t[-1] - t[0])
        observed_rows = np.flatnonzero(observed.any(axis=1))
        keep[: observed_rows[1] + 1] = True
        times.append(t[keep])
        values.append(v[keep])
    return Trajectories(times, values, ids=trajectories.ids,
                        state_names=trajectories.state_names)


def masked_mse(prediction: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean squared error over the observed entries only."""
    error = torch.where(batch.mask, prediction - batch.ys, 0.0)
    return error.square().sum() / batch.mask.sum().clamp_min(1)
