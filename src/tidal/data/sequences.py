r"""Generated irregular time series for the sequence models (`tidal.models`): the spiral
classification toy and the irregular periodic signals of the latent ODE paper.

Everything is returned time first, as the models take it: times [K] (one grid) or [K, B]
(per sample), values [K, B, D], and a bool mask [K, B, D] that is True where a value was
observed. All generators are deterministic given `seed`.

- `spirals`: two classes, a spiral turning counter-clockwise (label 1) or clockwise (label 0),
  x(t) = r(t) (cos(d t + phi), sin(d t + phi)), r(t) = 1 - 0.8 t / t_max, d = +-1, random phase
  phi and small noise, observed at each sample's own `num_points` random times in
  [0, t_max]; `drop` removes that fraction of the values at random (entry by entry).
- `periodic_signals`: the toy of Rubanova et al. 2019, section 4.1. Each series is
  a sin(2 pi f t + phi) + c + noise, sampled on `num_points` times in [0, t_max] shared by the
  batch (one random irregular grid, the first at 0); a fraction `observed` of the points of
  each series are observed. The defaults are the reference implementation's
  (github.com/YuliaRubanova/latent_ode, `--dataset periodic`): frequency f ~ U(0.4, 0.8)
  cycles per unit of time (2-4 periods in [0, 5]), amplitude a = 1, phase phi = 0, offset
  c ~ N(1, 0.1^2), noise of scale 0.01; series then differ by their frequency and offset.
  `frequency`, `amplitude` and `phase` ranges widen the family (e.g. f ~ U(0.5, 1.5),
  a ~ U(0.5, 1.5), phi ~ U(0, 2 pi), offset 0: three free parameters per series, a harder
  task than the paper's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.data.trajectories import Trajectories


@dataclass(frozen=True)
class IrregularSeries:
    """times [K] or [K, B] (float64), values [K, B, D], mask [K, B, D] (bool), and labels [B]
    (long) or None."""

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor | None = None

    def __getitem__(self, index: torch.Tensor | slice) -> IrregularSeries:
        """The samples at `index` (along the batch axis)."""
        times = self.times if self.times.dim() == 1 else self.times[:, index]
        labels = None if self.labels is None else self.labels[index]
        return IrregularSeries(times, self.values[:, index], self.mask[:, index], labels)

    @classmethod
    def from_trajectories(cls, data: Trajectories, labels: torch.Tensor | None = None,
                          dtype: torch.dtype = torch.float32) -> IrregularSeries:
        """`Trajectories` (each with its own times) as per-sample grids [K, B], K the longest
        trajectory; a shorter one is padded by repeating its last time with an empty mask."""
        k = max(len(t) for t in data.times)
        times = torch.zeros(k, len(data), dtype=torch.float64)
        values = torch.zeros(k, len(data), data.n_states, dtype=torch.float64)
        mask = torch.zeros(values.shape, dtype=torch.bool)
        for b, (t, v, m) in enumerate(zip(data.times, data.values, data.masks)):
            n = len(t)
            times[:n, b], times[n:, b] = torch.tensor(t), float(t[-1])
            values[:n, b] = torch.tensor(np.where(m, v, 0.0))
            mask[:n, b] = torch.tensor(m)
        return cls(times, values.to(dtype), mask, labels)

    def compacted(self) -> IrregularSeries:
        """Per-sample grids [K', B] of each sample's observed rows only (K' the most any sample
        has); a shorter sample is padded by repeating its last time with an empty mask. The
        alternative to the union grid: fewer rows to step through when samples are observed at
        different times."""
        times = self.times if self.times.dim() == 2 else self.times[:, None].expand(
            self.values.shape[:2])
        seen = self.mask.any(-1)  # [K, B]
        counts = seen.sum(0)
        k = int(counts.max())
        # Stable order: observed rows first, in time order, then the rest.
        order = torch.sort((~seen).to(torch.int8), dim=0, stable=True).indices[:k]
        padding = torch.arange(k)[:, None] >= counts[None, :]
        last = (counts - 1).clamp(min=0)
        order = torch.where(padding, order.gather(0, last[None, :].expand(k, -1)), order)
        gathered_times = times.gather(0, order)
        rows = order.unsqueeze(-1).expand(-1, -1, self.values.shape[-1])
        mask = self.mask.gather(0, rows) & ~padding.unsqueeze(-1)
        return IrregularSeries(gathered_times, self.values.gather(0, rows), mask, self.labels)


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise InvalidArgumentError(f"`{name}={value!r}`: must be a fraction in [0, 1).")


def spirals(n: int, *, num_points: int = 50, t_max: float = 4 * math.pi, noise: float = 0.02,
            drop: float = 0.0, seed: int = 0) -> IrregularSeries:
    """`n` spirals (half of each direction, shuffled) at per-sample irregular times."""
    _fraction("drop", drop)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % 2
    times = (torch.rand(num_points, n, generator=g, dtype=torch.float64) * t_max).sort(0).values
    phase = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    direction = 2.0 * labels - 1.0
    angle = direction * times + phase
    radius = 1 - 0.8 * times / t_max
    values = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)
    values = values + noise * torch.randn(values.shape, generator=g, dtype=torch.float64)
    mask = torch.rand(values.shape, generator=g) >= drop
    return IrregularSeries(times, values.float(), mask, labels)


def periodic_signals(n: int, *, num_points: int = 100, t_max: float = 5.0,
                     observed: float = 0.5, noise: float = 0.01,
                     frequency: tuple[float, float] = (0.4, 0.8),
                     amplitude: tuple[float, float] = (1.0, 1.0),
                     phase: tuple[float, float] = (0.0, 0.0), offset: float = 1.0,
                     offset_std: float = 0.1, seed: int = 0) -> IrregularSeries:
    """`n` noisy sine waves a sin(2 pi f t + phi) + c, with f, a and phi uniform in the given
    ranges and c ~ N(offset, offset_std^2), on one irregular grid of `num_points` times in
    [0, t_max] (the first at 0); each point of each series is observed with probability
    `observed` (the mask), but at least once per series."""
    if not 0.0 < observed <= 1.0:
        raise InvalidArgumentError(f"`observed={observed!r}`: must be a fraction in (0, 1].")
    for name, (low, high) in (("frequency", frequency), ("amplitude", amplitude),
                              ("phase", phase)):
        if not low <= high:
            raise InvalidArgumentError(f"`{name}={(low, high)!r}`: must be a range (low, high) "
                                       "with low <= high.")
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(num_points - 1, generator=g, dtype=torch.float64).sort().values * t_max
    times = torch.cat([times.new_zeros(1), times])

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)

    f, a, phi = uniform(*frequency), uniform(*amplitude), uniform(*phase)
    c = offset + offset_std * torch.randn(n, generator=g, dtype=torch.float64)
    clean = a * torch.sin(2 * math.pi * f * times[:, None] + phi) + c
    values = clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    mask = torch.rand(clean.shape, generator=g) < observed
    mask[0] |= ~mask.any(0)
    return IrregularSeries(times, values.float().unsqueeze(-1), mask.unsqueeze(-1))
