"""Trajectories as solver-ready tensors, and the masked loss over observed entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tidal.data import Trajectories

#: A batch whose trajectories start together uses one solver grid, the union of their times,
#: while that union has at most this many entries (times x trajectories) or is at most
#: `UNION_GROWTH` times the longest trajectory; else each trajectory keeps its own grid. The
#: shared grid's loop is cheaper per step (measured on the toggle switch, trained model: 1.2x
#: to 1.8x faster per training step up to ~6e5 entries), but its outputs, targets and mask
#: grow as T_union x B, which for B irregular trajectories of T observations is T B^2.
UNION_GRID_ENTRIES = 2**19
UNION_GROWTH = 2


@dataclass(frozen=True)
class Batch:
    """A group of trajectories ready for `model(y0, ts)`.

    ts is [T] (float64) when the trajectories start at the same time and the union of their
    observation times is small (see `UNION_GRID_ENTRIES`): one solver grid for the batch.
    Otherwise ts is [T, B], each column a trajectory's own times, padded past its end with
    tiny extra steps that are masked out; T is then the longest trajectory's length, so a
    batch holds at most max(UNION_GROWTH T_max B, UNION_GRID_ENTRIES) entries per state.
    ys [T, B, D] holds the observations (0 where not observed) and mask [T, B, D] which are.
    """

    y0: torch.Tensor
    ts: torch.Tensor
    ys: torch.Tensor
    mask: torch.Tensor


def make_batch(trajectories: Trajectories, dtype: torch.dtype, *, per_sample: bool = False
               ) -> Batch:
    """The trajectories as one batch; `per_sample` forces per-sample grids (ts [T, B])."""
    y0 = torch.as_tensor(trajectories.initial_states(), dtype=dtype)
    if not per_sample and _union_is_small(trajectories):
        ts, ys, mask = trajectories.to_grid(dtype)
        return Batch(y0, ts, ys, mask)
    lengths = [len(times) for times in trajectories.times]
    length, count = max(lengths), len(lengths)
    span = trajectories.t_span[1] - trajectories.t_span[0]
    grid = np.empty((length, count))
    states = np.zeros((length, count, trajectories.n_states))
    observed_entries = np.zeros(states.shape, dtype=bool)
    for b, (times, values, observed) in enumerate(zip(trajectories.times, trajectories.values,
                                                      trajectories.masks)):
        n = len(times)
        grid[:n, b] = times
        grid[n:, b] = times[-1] + span * 1e-6 * np.arange(1, length - n + 1)
        states[:n, b] = np.where(observed, values, 0.0)
        observed_entries[:n, b] = observed
    return Batch(y0, torch.as_tensor(grid, dtype=torch.float64),
                 torch.as_tensor(states, dtype=dtype), torch.as_tensor(observed_entries))


def _union_is_small(trajectories: Trajectories) -> bool:
    if len({float(times[0]) for times in trajectories.times}) > 1:
        return False
    union = len(np.unique(np.concatenate(trajectories.times)))
    longest = max(len(times) for times in trajectories.times)
    return union <= UNION_GROWTH * longest or union * len(trajectories) <= UNION_GRID_ENTRIES


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
    total, count = masked_sse(prediction, batch)
    return total / count.clamp_min(1)


def masked_sse(prediction: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of squared errors over the observed entries, and their number."""
    error = torch.where(batch.mask, prediction - batch.ys, 0.0)
    return error.square().sum(), batch.mask.sum()


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
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    owner: list[int] = []
    part: list[int] = []
    links: list[tuple[int, int, int]] = []
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
    return Segments(make_batch(pieces, dtype, per_sample=True), torch.tensor(owner),
                    torch.tensor(part), link[:, 1], link[:, 0], link[:, 2])


def continuity_mse(prediction: torch.Tensor, y0: torch.Tensor, segments: Segments
                   ) -> torch.Tensor:
    """Mean squared gap between each segment's end and its successor's initial state."""
    if segments.link_row.numel() == 0:
        return prediction.new_zeros(())
    ends = prediction[segments.link_row, segments.link_from]
    return (ends - y0[segments.link_to]).square().mean()


class SampleMinibatches:
    """Minibatches of a sample set [N, d] for the objectives whose round is one optimizer step
    (flows, score models): a fresh permutation at the start of every epoch, from the trainer's
    generator, and round i takes the next `batch_size` of it. The permutation is checkpointed
    (`state`, `load_state`), so a resumed run draws the batches the uninterrupted one would.
    Under torchrun every rank draws the same global batch (the trainer's generator is seeded
    alike and advanced alike on every rank) and computes its rows of it (`World.shard`)."""

    def __init__(self, samples: torch.Tensor, batch_size: int) -> None:
        self.samples, self.batch_size = samples, batch_size
        self.per_epoch = len(samples) // batch_size
        self.order = torch.zeros(len(samples), dtype=torch.long)

    def batch(self, index: int, generator: torch.Generator) -> torch.Tensor:
        position = index % self.per_epoch
        if position == 0:
            self.order = torch.randperm(len(self.samples), generator=generator)
        chosen = self.order[position * self.batch_size:(position + 1) * self.batch_size]
        return self.samples[chosen.to(self.samples.device)]

    def state(self) -> dict[str, torch.Tensor]:
        return {"order": self.order}

    def load_state(self, state: dict[str, Any]) -> None:
        self.order = state["order"].clone()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of optimizer step `step`'s random draws (Hutchinson probes, noise levels,
    noise) in a run seeded `seed`: a function of (seed, step) only, so every rank draws the
    same numbers for the global batch (and takes its rows of them), and a resumed run draws the
    uninterrupted one's without checkpointing a generator. (numpy's `SeedSequence` mixes the
    pair, so nearby seeds and steps give unrelated streams.)"""
    state = np.random.SeedSequence((seed % 2**64, step)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
