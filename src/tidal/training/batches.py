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


@dataclass(frozen=True)
class Segments:
    """Trajectories cut into multiple-shooting segments, ready for `model(y0, ts)`.

    `batch` has one column per segment (per-sample grids). Each segment's grid ends with an
    unobserved time: its successor's start, where `model`'s prediction is compared with the
    successor's initial state (the continuity penalty). `owner[s]` is the trajectory (row of
    the trajectories given) segment s belongs to and `part[s]` its position in it (0 first);
    link l joins segment `link_from[l]`, at row `link_row[l]` of its grid, to `link_to[l]`.
    """

    batch: Batch
    owner: torch.Tensor
    part: torch.Tensor
    link_row: torch.Tensor
    link_from: torch.Tensor
    link_to: torch.Tensor


def segment_counts(trajectories: Trajectories, segments: int) -> list[int]:
    """Segments per trajectory: `segments`, fewer where a trajectory has fewer than 2 observed
    times per segment."""
    return [max(1, min(segments, int(m.any(axis=1).sum()) // 2)) for m in trajectories.masks]


def segment(trajectories: Trajectories, segments: int, dtype: torch.dtype) -> Segments:
    """Cut each trajectory into `segment_counts` contiguous segments with (nearly) equal
    numbers of observed times; a segment starts at an observed time."""
    times, values, owner, part, links = [], [], [], [], []
    counts = segment_counts(trajectories, segments)
    for i, (t, v, m, count) in enumerate(zip(trajectories.times, trajectories.values,
                                             trajectories.masks, counts)):
        observed = np.flatnonzero(m.any(axis=1))
        starts = [int(chunk[0]) for chunk in np.array_split(observed, count)] + [len(t)]
        for k in range(count):
            lo, hi = starts[k], starts[k + 1]
            seg_t, seg_v = t[lo:hi], v[lo:hi]
            if k + 1 < count:  # continue to the successor's start, unobserved
                links.append((len(times), hi - lo, len(times) + 1))
                seg_t = np.append(seg_t, t[hi])
                seg_v = np.vstack([seg_v, np.full((1, v.shape[1]), np.nan)])
            times.append(seg_t)
            values.append(seg_v)
            owner.append(i)
            part.append(k)
    pieces = Trajectories(times, values, state_names=trajectories.state_names)
    link = torch.tensor(links, dtype=torch.long).reshape(-1, 3)
    return Segments(make_batch(pieces, dtype), torch.tensor(owner), torch.tensor(part),
                    link[:, 1], link[:, 0], link[:, 2])


def continuity_mse(prediction: torch.Tensor, y0: torch.Tensor, segments: Segments
                   ) -> torch.Tensor:
    """Mean squared gap between each segment's end and its successor's initial state."""
    if segments.link_row.numel() == 0:
        return prediction.new_zeros(())
    ends = prediction[segments.link_row, segments.link_from]
    return (ends - y0[segments.link_to]).square().mean()
