"""`Trajectories`: multivariate time series, each with its own times and missing entries; and
`Scaling`, the affine change of units a model is trained in."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from tidal._errors import InvalidArgumentError

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


class Trajectories:
    """A set of N trajectories of D states, each observed at its own strictly increasing times.

    NaN in `values` means "not observed". The arrays are float64 copies, read-only.

    Args:
        times: N one-dimensional arrays of times, trajectory i of length T_i, strictly
            increasing and finite.
        values: N arrays of shape [T_i, D]; NaN where a state was not observed, finite
            elsewhere. Every trajectory needs at least 2 times with an observed entry.
        ids: a unique name per trajectory; default "0", "1", ...
        state_names: a unique name per state; default "x0", "x1", ...

    Raises:
        InvalidArgumentError: the message names the trajectory (its id) and the index at fault.

    Example:
        >>> data = Trajectories([[0.0, 1.0, 2.5]], [[[1.0, 0.0], [0.5, float("nan")], [0.2, 0.1]]])
        >>> data.n_trajectories, data.n_states, data.state_names
        (1, 2, ('x0', 'x1'))
    """

    __slots__ = ("_ids", "_masks", "_state_names", "_times", "_values")

    def __init__(self, times: Sequence[Any], values: Sequence[Any],
                 ids: Sequence[str] | None = None, state_names: Sequence[str] | None = None):
        if len(times) != len(values):
            raise InvalidArgumentError(
                f"`Trajectories(times, values)` need one entry per trajectory each; got "
                f"{len(times)} time arrays and {len(values)} value arrays.")
        if len(times) == 0:
            raise InvalidArgumentError("`Trajectories(times=...)` is empty; give at least one "
                                       "trajectory.")
        names = _names("ids", ids, len(times), [str(i) for i in range(len(times))])
        times = [_time_array(t, name) for t, name in zip(times, names)]
        n_states = _n_states(values[0], names[0])
        values = [_value_array(v, t.shape[0], n_states, name)
                  for v, t, name in zip(values, times, names)]
        self._adopt(np.concatenate(times), np.concatenate(values), [len(t) for t in times],
                    names, state_names)

    @classmethod
    def _from_flat(cls, times: np.ndarray, values: np.ndarray, lengths: Sequence[int],
                   ids: Sequence[str], state_names: Sequence[str]) -> Trajectories:
        """All trajectories' times [R] and values [R, D] (float64) one after another,
        `lengths[i]` rows each, checked as `__init__` checks; the arrays are taken over (made
        read-only), not copied. For readers that build them anyway."""
        out = cls.__new__(cls)
        out._adopt(times, values, lengths, _names("ids", ids, len(lengths), []), state_names)
        return out

    def _adopt(self, times: np.ndarray, values: np.ndarray, lengths: Sequence[int],
               ids: tuple[str, ...], state_names: Sequence[str] | None) -> None:
        """Check everything at once; each trajectory is a read-only view of the arrays."""
        self._ids = ids
        self._state_names = _names("state_names", state_names, values.shape[1],
                                   [f"x{j}" for j in range(values.shape[1])])
        ends = np.cumsum(lengths)
        starts = ends - np.asarray(lengths)
        all_times, all_values = _read_only(times), _read_only(values)
        all_masks = _read_only(~np.isnan(all_values))
        _check_times(all_times, starts, ends, ids)
        _check_values(all_values, all_masks, starts, ends, ids)
        pieces = list(zip(starts.tolist(), ends.tolist()))
        self._times = tuple(all_times[a:b] for a, b in pieces)
        self._values = tuple(all_values[a:b] for a, b in pieces)
        self._masks = tuple(all_masks[a:b] for a, b in pieces)

    @property
    def n_trajectories(self) -> int:
        return len(self._times)

    @property
    def n_states(self) -> int:
        return len(self._state_names)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def state_names(self) -> tuple[str, ...]:
        return self._state_names

    @property
    def times(self) -> tuple[np.ndarray, ...]:
        """N read-only float64 arrays [T_i]."""
        return self._times

    @property
    def values(self) -> tuple[np.ndarray, ...]:
        """N read-only float64 arrays [T_i, D], NaN where not observed."""
        return self._values

    @property
    def masks(self) -> tuple[np.ndarray, ...]:
        """N read-only bool arrays [T_i, D], True where observed."""
        return self._masks

    @property
    def t_span(self) -> tuple[float, float]:
        """The earliest and the latest time over all trajectories."""
        return (min(float(t[0]) for t in self._times), max(float(t[-1]) for t in self._times))

    def __len__(self) -> int:
        return self.n_trajectories

    def __getitem__(self, index: int | str | slice | Sequence[int] | Sequence[str] | np.ndarray
                    ) -> Trajectories:
        """Trajectory `index` (as a Trajectories of one), or a subset for a slice, a list of
        indices or a boolean mask; ids are kept. A string (or strings) selects by id."""
        if isinstance(index, str) or (isinstance(index, (list, tuple)) and index
                                      and all(isinstance(i, str) for i in index)):
            return self[self._positions([index] if isinstance(index, str) else list(index))]
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"Trajectory index {index} is out of range for "
                                 f"{len(self)} trajectories.")
            chosen = [int(index) % len(self)]
        elif isinstance(index, slice):
            chosen = list(range(len(self)))[index]
        else:
            picks = np.asarray(index)
            if picks.size and (picks.dtype.kind not in "iub" or (
                    picks.dtype.kind == "b" and picks.shape != (len(self),))):
                raise InvalidArgumentError(
                    f"`Trajectories[...]` takes an index, a slice, indices, a boolean mask of "
                    f"length {len(self)} or ids; got {type(index).__name__} of dtype "
                    f"{picks.dtype} and shape {picks.shape}.")
            chosen = [] if picks.size == 0 else np.arange(len(self))[picks].tolist()
        if not chosen:
            raise IndexError(f"Trajectories[{index!r}] selects no trajectory.")
        return Trajectories([self._times[i] for i in chosen], [self._values[i] for i in chosen],
                            [self._ids[i] for i in chosen], self._state_names)

    def _positions(self, ids: list[str]) -> list[int]:
        where = {name: i for i, name in enumerate(self._ids)}
        unknown = [name for name in ids if name not in where]
        if unknown:
            shown = ", ".join(repr(i) for i in self._ids[:5]) + (", ..." if len(self) > 5 else "")
            raise InvalidArgumentError(f"`Trajectories[{unknown[0]!r}]`: no trajectory has that "
                                       f"id; the ids are {shown}.")
        return [where[name] for name in ids]

    def __eq__(self, other: object) -> bool:
        """Same ids, state names, times and values (NaN equal to NaN)."""
        if not isinstance(other, Trajectories):
            return NotImplemented
        return (self._ids == other._ids and self._state_names == other._state_names
                and all(np.array_equal(a, b) for a, b in zip(self._times, other._times))
                and all(np.array_equal(a, b, equal_nan=True)
                        for a, b in zip(self._values, other._values)))

    # equal by value, so not hashable (typeshed types object.__hash__ as a method, not None)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Trajectories(n_trajectories={self.n_trajectories}, "
                f"state_names={self._state_names}, t_span={self.t_span})")

    def split(self, *parts: float | int, seed: int = 0) -> tuple[Trajectories, ...]:
        """Split by trajectory into disjoint random parts, deterministic for a seed.

        Args:
            *parts: fractions (floats in (0, 1], summing to at most 1), e.g. `0.75, 0.125,
                0.125`, or counts (ints >= 1, summing to at most N), e.g. `24, 8`. Fractions
                become counts by rounding that keeps their total; trajectories beyond the
                total are left out. Within a part, trajectories keep their order.
            seed: seed of the shuffle.

        Returns:
            One Trajectories per part.

        Raises:
            InvalidArgumentError: bad parts, or a part that would be empty.
        """
        counts = _split_counts(parts, len(self))
        order = np.random.default_rng(seed).permutation(len(self))
        bounds = np.cumsum([0, *counts])
        return tuple(self[np.sort(order[lo:hi])] for lo, hi in itertools.pairwise(bounds))

    def to_grid(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All trajectories on the union of their times, for batched training on a shared grid.

        Returns:
            `(ts, ys, mask)`: ts [T] float64, the sorted union of all observation times; ys
            [T, N, D] of `dtype`, 0 where not observed; mask [T, N, D] bool, True where
            observed.
        """
        ts = np.unique(np.concatenate(self._times))
        ys = np.zeros((ts.shape[0], len(self), self.n_states))
        mask = np.zeros(ys.shape, dtype=bool)
        for i, (t, v, m) in enumerate(zip(self._times, self._values, self._masks)):
            rows = np.searchsorted(ts, t)
            ys[rows, i] = np.where(m, v, 0.0)
            mask[rows, i] = m
        return (torch.as_tensor(ts, dtype=torch.float64, device=device),
                torch.as_tensor(ys, dtype=dtype, device=device),
                torch.as_tensor(mask, device=device))

    def initial_states(self) -> np.ndarray:
        """Each trajectory's state at its first time, [N, D] float64.

        A state not observed at the first time is filled with its first observed value in
        that trajectory; if the trajectory never observes it, with its mean over all
        trajectories; if none observes it, with 0.
        """
        counts = np.concatenate(self._masks).sum(axis=0)
        means = np.nansum(np.concatenate(self._values), axis=0) / np.maximum(counts, 1)
        out = np.empty((len(self), self.n_states))
        for i, (v, m) in enumerate(zip(self._values, self._masks)):
            first = np.argmax(m, axis=0)
            seen = m.any(axis=0)
            out[i] = np.where(seen, v[first, np.arange(self.n_states)], means)
        return out

    def scaled(self, scaling: Scaling) -> Trajectories:
        """These trajectories in the units of `scaling` (times divided by its time scale)."""
        if len(scaling.state_offset) != self.n_states:
            raise InvalidArgumentError(
                f"`Trajectories.scaled(scaling)`: the scaling is for "
                f"{len(scaling.state_offset)} states but the data have {self.n_states} "
                f"({', '.join(self._state_names)}). Fit it with Scaling.fit(data).")
        return Trajectories([scaling.scale_times(t) for t in self._times],
                            [scaling.scale_values(v) for v in self._values],
                            self._ids, self._state_names)


@dataclasses.dataclass(frozen=True)
class Scaling:
    """An affine change of units: scaled state = (state - state_offset) / state_scale and
    scaled time = time / time_scale.

    Args:
        state_offset: D offsets (what `fit` takes as each state's mean).
        state_scale: D positive scales (each state's standard deviation in `fit`).
        time_scale: positive; 1 keeps time in the data's own units.
    """

    state_offset: tuple[float, ...]
    state_scale: tuple[float, ...]
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        offset = tuple(float(x) for x in self.state_offset)
        scale = tuple(float(x) for x in self.state_scale)
        if len(offset) != len(scale) or not offset:
            raise InvalidArgumentError(
                f"`Scaling(state_offset, state_scale)` need the same number (>= 1) of entries; "
                f"got {len(offset)} and {len(scale)}.")
        if not all(math.isfinite(x) for x in offset):
            raise InvalidArgumentError(f"`Scaling(state_offset=...)` must be finite; got "
                                       f"{offset}.")
        if not all(math.isfinite(x) and x > 0 for x in (*scale, float(self.time_scale))):
            raise InvalidArgumentError(
                f"`Scaling(state_scale=..., time_scale=...)` must be finite and > 0; got "
                f"state_scale={scale}, time_scale={self.time_scale}.")
        object.__setattr__(self, "state_offset", offset)
        object.__setattr__(self, "state_scale", scale)
        object.__setattr__(self, "time_scale", float(self.time_scale))

    @classmethod
    def fit(cls, trajectories: Trajectories, *, time_scale: float = 1.0) -> Scaling:
        """Mean and standard deviation of each state's observed entries, over all trajectories.

        A standard deviation below 1e-8 max(1, |mean|) (a state that barely varies) is raised
        to that floor, so scaling never divides by zero. `time_scale` is kept as given.

        Raises:
            InvalidArgumentError: a state that no trajectory observes, or one whose mean or
                spread overflows float64.
        """
        never = ~np.concatenate(trajectories.masks).any(axis=0)
        if never.any():
            name = trajectories.state_names[int(np.argmax(never))]
            raise InvalidArgumentError(
                f"`Scaling.fit(trajectories)`: state '{name}' is never observed, so it has no "
                "mean or spread; drop that state.")
        pooled = np.concatenate(trajectories.values)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = np.nanmean(pooled, axis=0)
            spread = np.nanstd(pooled, axis=0)
        overflow = ~np.isfinite(spread)
        if overflow.any():
            j = int(np.argmax(overflow))
            raise InvalidArgumentError(
                f"`Scaling.fit(trajectories)`: state '{trajectories.state_names[j]}' has values "
                f"up to {np.nanmax(np.abs(pooled[:, j])):.3g} in magnitude, so its mean or "
                "spread overflows float64; express it in a larger unit (values within 1e150 "
                "always work).")
        floor = 1e-8 * np.maximum(1.0, np.abs(mean))
        return cls(tuple(mean), tuple(np.maximum(spread, floor)), time_scale)

    def scale_values(self, x: ArrayOrTensor) -> ArrayOrTensor:
        """States [..., D] in data units to scaled units (numpy array or tensor)."""
        offset, scale = self._as(x)
        return (x - offset) / scale

    def unscale_values(self, x: ArrayOrTensor) -> ArrayOrTensor:
        """States [..., D] in scaled units back to data units (numpy array or tensor)."""
        offset, scale = self._as(x)
        return x * scale + offset

    def scale_rates(self, dy: ArrayOrTensor) -> ArrayOrTensor:
        """Rates dy/dt [..., D] in data units to scaled units (the chain rule of the affine
        change: dy_scaled/dt_scaled = dy/dt time_scale / state_scale)."""
        _, scale = self._as(dy)
        return dy * (self.time_scale / scale)

    def unscale_rates(self, dy: ArrayOrTensor) -> ArrayOrTensor:
        """Rates [..., D] in scaled units back to data units (`scale_rates`' inverse)."""
        _, scale = self._as(dy)
        return dy * (scale / self.time_scale)

    def scale_times(self, t: ArrayOrTensor) -> ArrayOrTensor:
        return t / self.time_scale

    def unscale_times(self, t: ArrayOrTensor) -> ArrayOrTensor:
        return t * self.time_scale

    def to_dict(self) -> dict[str, Any]:
        """Plain floats and lists, ready for JSON."""
        return {"state_offset": list(self.state_offset), "state_scale": list(self.state_scale),
                "time_scale": self.time_scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaling:
        """The inverse of `to_dict`."""
        expected = {"state_offset", "state_scale", "time_scale"}
        if set(data) != expected:
            raise InvalidArgumentError(
                f"`Scaling.from_dict(...)` needs exactly the keys {sorted(expected)}; got "
                f"{sorted(data)}.")
        return cls(tuple(data["state_offset"]), tuple(data["state_scale"]), data["time_scale"])

    def _as(self, x: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
        if x.shape[-1:] != (len(self.state_offset),):
            raise InvalidArgumentError(
                f"`Scaling` is for {len(self.state_offset)} states; got an array of shape "
                f"{tuple(x.shape)} (the states must be the last dimension).")
        if isinstance(x, torch.Tensor):
            return (torch.tensor(self.state_offset, dtype=x.dtype, device=x.device),
                    torch.tensor(self.state_scale, dtype=x.dtype, device=x.device))
        return np.asarray(self.state_offset), np.asarray(self.state_scale)


def _names(argument: str, names: Sequence[Any] | None, count: int,
           default: list[str]) -> tuple[str, ...]:
    for i, name in enumerate(() if names is None else names):  # str(): "None", "nan"
        if name is None or (isinstance(name, float) and name != name):
            raise InvalidArgumentError(f"`Trajectories({argument}=...)`: entry {i} is "
                                       f"{name!r}; give every one a name.")
    out = tuple(default if names is None else (str(n) for n in names))
    if len(out) != count:
        raise InvalidArgumentError(f"`Trajectories({argument}=...)` needs {count} names; got "
                                   f"{len(out)}.")
    if len(set(out)) != len(out) or "" in out:
        raise InvalidArgumentError(f"`Trajectories({argument}=...)` must be distinct and "
                                   f"non-empty; got {out}.")
    return out


def any_per_row(mask: np.ndarray) -> np.ndarray:
    """[R, D] bool -> [R]: True where the row has a True. Column by column: for a few columns
    numpy's `mask.any(axis=1)` is about 50x slower (a strided reduction per row)."""
    return np.logical_or.reduce([mask[:, j] for j in range(mask.shape[1])])


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _time_array(t: Any, name: str) -> np.ndarray:
    out = np.asarray(t, dtype=np.float64)
    if out.ndim != 1:
        raise InvalidArgumentError(f"Trajectory '{name}': times must be one-dimensional; got "
                                   f"shape {out.shape}.")
    return out


def _n_states(values: Any, name: str) -> int:
    shape = np.shape(values)
    if len(shape) != 2 or shape[1] == 0:
        raise InvalidArgumentError(f"Trajectory '{name}': values must have shape [T, D] with "
                                   f"D >= 1 states; got shape {shape}.")
    return shape[1]


def _value_array(v: Any, length: int, n_states: int, name: str) -> np.ndarray:
    out = np.asarray(v, dtype=np.float64)
    if out.shape != (length, n_states):
        raise InvalidArgumentError(
            f"Trajectory '{name}': values must have shape [{length}, {n_states}] (one row per "
            f"time, the same states as the first trajectory); got shape {out.shape}.")
    return out


def _check_times(times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 ids: tuple[str, ...]) -> None:
    """All trajectories' times, concatenated: finite and strictly increasing within each. The
    first trajectory at fault is named (a non-finite time before an unsorted one)."""
    step_bad = np.diff(times) <= 0
    inner = starts[(starts > 0) & (starts < len(times))]
    step_bad[inner - 1] = False  # the step from one trajectory to the next
    non_finite = np.flatnonzero(~np.isfinite(times))
    unsorted = np.flatnonzero(step_bad) + 1
    first = [np.searchsorted(ends, bad[0], side="right") if bad.size else len(ends)
             for bad in (non_finite, unsorted)]
    if min(first) == len(ends):
        return
    k = min(first)
    name, start = ids[k], starts[k]
    if first[0] == k:
        i = non_finite[0] - start
        raise InvalidArgumentError(f"Trajectory '{name}': time at index {i} is "
                                   f"{times[start + i]}; times must be finite.")
    i = unsorted[0] - start
    raise InvalidArgumentError(
        f"Trajectory '{name}': times must be strictly increasing, but time at index {i} "
        f"({times[start + i]}) is not after index {i - 1} ({times[start + i - 1]}). Sort the "
        "times and merge duplicates.")


def _check_values(values: np.ndarray, masks: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  ids: tuple[str, ...]) -> None:
    """All trajectories' values, concatenated: none infinite, and each trajectory with at
    least 2 times that observe something."""
    bad = np.argwhere(np.isinf(values))
    if bad.size:
        row, column = bad[0].tolist()
        k = np.searchsorted(ends, row, side="right")
        raise InvalidArgumentError(f"Trajectory '{ids[k]}': value at index ({row - starts[k]}, "
                                   f"{column}) is infinite; use NaN for entries that were not "
                                   "observed.")
    observed_rows = np.concatenate([[0], np.cumsum(any_per_row(masks))])
    counts = observed_rows[ends] - observed_rows[starts]
    few = np.flatnonzero(counts < 2)
    if few.size:
        raise InvalidArgumentError(
            f"Trajectory '{ids[few[0]]}' has {int(counts[few[0]])} observed time(s); each "
            "trajectory needs at least 2 times with an observed entry. Drop it or add "
            "observations.")


def _split_counts(parts: Sequence[Any], total: int) -> list[int]:
    if not parts:
        raise InvalidArgumentError("`Trajectories.split()` needs at least one fraction or count.")
    if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts):
        given = [int(p) for p in parts]
        if min(given) < 1 or sum(given) > total:
            raise InvalidArgumentError(
                f"`Trajectories.split{tuple(given)}`: counts must be >= 1 and sum to at most "
                f"the {total} trajectories.")
        return given
    if not all(isinstance(p, (float, np.floating)) for p in parts):
        raise InvalidArgumentError(
            f"`Trajectories.split{tuple(parts)}`: give all fractions (floats) or all counts "
            "(ints), not a mix.")
    fractions = np.asarray(parts, dtype=np.float64)
    if not (np.all(fractions > 0) and np.all(fractions <= 1) and fractions.sum() <= 1 + 1e-9):
        raise InvalidArgumentError(
            f"`Trajectories.split{tuple(parts)}`: fractions must be in (0, 1] and sum to at "
            "most 1.")
    exact = fractions * total
    counts = np.floor(exact).astype(int)
    short = min(round(fractions.sum() * total), total) - counts.sum()
    counts[np.argsort(counts - exact, kind="stable")[:short]] += 1
    if counts.min() < 1:
        raise InvalidArgumentError(
            f"`Trajectories.split{tuple(parts)}` of {total} trajectories gives counts "
            f"{tuple(counts.tolist())}, with an empty part; use larger fractions or fewer parts.")
    return counts.tolist()
