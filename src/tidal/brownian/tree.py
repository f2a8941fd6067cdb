r"""`BrownianTree`: a seeded Brownian motion that answers W(s, t) (and the space-time Lévy area
H(s, t)) for any interval, in any order, with the same answer every time.

Nothing is stored that the answers depend on: an increment is a fixed linear combination of
counter-based normals (`tidal.brownian.random`) over the nodes of a dyadic tree whose
branches hold s and t (`tidal.brownian.basis`). So a rejected step, a replayed segment
(Checkpoint) or a backward pass that asks again gets the same numbers, and queries are
consistent with each other: W(s, u) = W(s, t) + W(t, u) and Chen's relation for H hold to
round-off.

The weights of the combination are computed in float64 from float64 time, with the terms of a
node shared by s and t merged before multiplying, so a short increment far from t0 is not the
difference of two large values and keeps full relative precision in float32 too. The normals
and the product are in the tree's dtype; float32 and float64 trees with the same seeds are the
same path up to float32 rounding.

Three ways to ask:

* `increment(s, t)` with Python numbers: one interval for the whole batch;
* `increments(ts)`: the N consecutive intervals of a shared grid in one call (a fixed-step
  loop fetches a chunk of steps at once and pays the per-call cost once per chunk);
* `increment(s, t)` with float64 tensors [B]: one interval per sample (per-sample grids and
  per-sample adaptive steps).

Shared times are located in the tree on the host (numpy); the nodes' normals [J, B, m] are
kept in an LRU cache of `cache_size` nodes, filled a block of neighbouring nodes at a time, so
stepping along a grid generates normals about once every 16 steps per level (for small
batches), and one matrix product combines them. Per-sample times are tensor work on the
seeds' device with no host synchronisation; the normals of all 2 (L + 2) nodes on the two
branches are generated afresh for each query (which nodes a query needs is only known on the
device, so there is no cache). All ways give the same values up to the order of float sums.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.brownian import basis
from tidal.brownian.random import gaussians, node_keys, sample_keys

MAX_DEPTH = 48
SHARED_CHUNK = 32  # intervals per matrix product in shared-time queries
PREFETCH_VALUES = 2**16  # prefetch up to 16 neighbouring nodes while a node is this small


class Increment(NamedTuple):
    """The Brownian increment over [s, t] and, when the tree has `levy_area=True`, the
    space-time Lévy area H(s, t) = (1/h) int_s^t (W_r - W_s - (r - s)/h W(s, t)) dr. Shapes
    [B, m] ([N, B, m] from `BrownianTree.increments`). For h = t - s: W ~ N(0, h) and
    H ~ N(0, h/12), independent of each other."""

    dw: torch.Tensor
    area: torch.Tensor | None


class BrownianTree:
    r"""A Brownian motion on [t0, t1] with one independent path per sample seed.

    Args:
        t0, t1: the interval the tree covers (t0 < t1); queries must lie inside it.
        seeds: int64 tensor [B], one seed per sample (e.g. `tidal.brownian.sample_seeds`). A
            sample's path depends only on its seed, never on its batch position or the batch
            size, so a shard of an ensemble reproduces its part of the whole. The seeds'
            device is the tree's device.
        channels: m, the dimension of each sample's Brownian motion.
        tol: time resolution, required (there is no scale-free default). The joint law of the
            answers is exact for query times at least `tol` apart (each point falls in its own
            leaf, of width <= tol); two points closer than that share a leaf and their joint
            law is approximate. Marginals are exact at any time. Use the smallest step (or
            `dt_min`) of the solve. The tree has L = ceil(log2((t1 - t0) / tol)) split levels.
        levy_area: also answer the space-time Lévy area H (needed by order-1.5 methods such as
            SRA1). The path depends on this flag: a tree with area is a different path.
        dtype: dtype of the answers (float32 or float64; default: torch's default dtype).
        cache_size: how many nodes' normals shared-time queries keep (LRU, in blocks of up to
            16 neighbouring nodes while J B m <= 2^16); memory is at most
            `max(cache_size, block) * J * B * m` values of `dtype` (J = 2 with Lévy area).
    """

    def __init__(self, t0: float, t1: float, seeds: torch.Tensor, channels: int, *,
                 tol: float, levy_area: bool = False, dtype: torch.dtype | None = None,
                 cache_size: int = 256):
        _check_interval(t0, t1)
        _check_seeds(seeds)
        _check_count("channels", channels, 1, "the Brownian motion's dimension")
        _check_count("cache_size", cache_size, 0, "a number of tree nodes")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64):
            raise InvalidArgumentError(f"`BrownianTree(dtype=...)` must be torch.float32 or "
                                       f"torch.float64; got {dtype}.")
        self.t0, self.t1 = float(t0), float(t1)
        self.span = self.t1 - self.t0
        self.depth = _depth(self.span, tol)
        self.batch, self.channels = seeds.shape[0], channels
        self.levy_area, self.dtype, self.device = bool(levy_area), dtype, seeds.device
        self.cache_size = cache_size
        self._samples = sample_keys(seeds)
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        normals_per_node = 2 if self.levy_area else 1
        node_size = normals_per_node * self.batch * channels
        self._block = 1 << max(0, min(4, (PREFETCH_VALUES // node_size).bit_length() - 1))
        # Levels: the root, split levels 0 .. L-1, the leaf level L (see `basis`).
        widths = [1.0] + [2.0**-n for n in range(self.depth)] + [2.0**-self.depth]
        roles = [[0, 1]] + [[2, 3]] * self.depth + [[4, 5]]
        self._widths_host = np.array(widths)
        self._widths = torch.tensor(widths, dtype=torch.float64, device=self.device)
        self._roles = torch.tensor([r[:normals_per_node] for r in roles], dtype=torch.int64,
                                   device=self.device)

    def __repr__(self) -> str:
        return (f"BrownianTree(t0={self.t0}, t1={self.t1}, batch={self.batch}, "
                f"channels={self.channels}, depth={self.depth}, levy_area={self.levy_area}, "
                f"dtype={self.dtype})")

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the node cache (at most `max(cache_size, block)` nodes)."""
        return sum(x.numel() * x.element_size() for x in self._cache.values())

    def increment(self, s: float | torch.Tensor, t: float | torch.Tensor) -> Increment:
        """W(s, t) = W(t) - W(s) and, with `levy_area=True`, H(s, t); both [B, m].

        `s` and `t` are Python numbers (one interval for the whole batch) or float tensors of
        shape [B] (one interval per sample), inside [t0, t1]. s > t gives W(s, t) = -W(t, s);
        s = t gives zeros.
        """
        if isinstance(s, torch.Tensor) or isinstance(t, torch.Tensor):
            tau_s, tau_t = (self._tree_times_tensor(name, x) for name, x in (("s", s), ("t", t)))
            values = self._per_sample(tau_s, tau_t)  # [C, B, m]
            return self._finish(values, (tau_t - tau_s).unsqueeze(-1))
        host_s, host_t = self._tree_times_host("increment", {"s": s, "t": t})
        values = self._shared(np.stack((host_t, host_s), axis=-1))  # [C, 1, B, m]
        return self._finish(values[:, 0], float(host_t[0] - host_s[0]))

    def increments(self, ts: Sequence[float] | np.ndarray | torch.Tensor) -> Increment:
        """The increments (and areas) over the N consecutive intervals of a shared grid
        `ts` = (t_0, ..., t_N), as [N, B, m]: one call instead of N. The grid may be in any
        order (each interval is [ts[i], ts[i + 1]])."""
        (tau,) = self._tree_times_host("increments", {"ts": ts})
        values = self._shared(np.stack((tau[1:], tau[:-1]), axis=-1))  # [C, N, B, m]
        hq = self._to_device(tau[1:] - tau[:-1], torch.float64).view(-1, 1, 1)
        return self._finish(values, hq)

    # ---- shared and per-sample queries ----------------------------------------------------------

    def _finish(self, values: torch.Tensor, hq: float | torch.Tensor) -> Increment:
        """Scale tree units to time units: W = sqrt(span) w; H = sqrt(span) (h_q H) / h_q."""
        root_span = math.sqrt(self.span)
        dw = (values[0] * root_span).to(self.dtype)
        if not self.levy_area:
            return Increment(dw, None)
        if isinstance(hq, float):
            hq = hq if hq != 0 else math.inf  # the area of an empty interval is 0
        else:
            hq = torch.where(hq == 0, math.inf, hq)
        return Increment(dw, (values[1] * root_span / hq).to(self.dtype))

    def _shared(self, taus: np.ndarray) -> torch.Tensor:
        """Intervals shared by the batch, taus [N, 2] = (tau_t, tau_s). Returns [C, N, B, m]."""
        chunks = [self._shared_chunk(taus[i:i + SHARED_CHUNK])
                  for i in range(0, taus.shape[0], SHARED_CHUNK)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)

    def _shared_chunk(self, taus: np.ndarray) -> torch.Tensor:
        """Weights on the host, one column per distinct node with a nonzero weight, one matrix
        product (dense: a chunk's intervals share most of their nodes)."""
        ids, weights = basis.interval_weights(taus, self._widths_host, self.levy_area, np)
        levels = len(self._widths_host)
        codes = ids.astype(np.int64) * levels + np.arange(levels)  # (node, level) -> one int
        nodes, column = np.unique(codes, return_inverse=True)
        column = column.reshape(codes.shape)  # numpy 1 returns it flat, numpy 2 shaped
        n, c, j = taus.shape[0], weights.shape[-1], weights.shape[-2]
        matrix = np.zeros((n, c, len(nodes), j))
        rows = np.broadcast_to(np.arange(n)[:, None, None], column.shape)
        by_node = matrix.transpose(0, 2, 1, 3)  # a view [n, nodes, c, j]
        np.add.at(by_node, (rows, column.reshape(rows.shape)), weights.transpose(0, 1, 2, 4, 3))
        used = matrix.any(axis=(0, 1, 3))  # a point on a node's boundary needs no normals there
        if not used.any():  # only empty intervals
            return torch.zeros(c, n, self.batch, self.channels, dtype=self.dtype,
                               device=self.device)
        normals = torch.stack(self._node_normals(nodes[used].tolist()))  # [nodes, J, B, m]
        matrix_t = self._to_device(matrix[:, :, used].reshape(n * c, -1), self.dtype)
        out = torch.matmul(matrix_t, normals.flatten(0, 1).flatten(1, 2))  # [N C, B m]
        return out.view(n, c, self.batch, self.channels).transpose(0, 1)

    def _per_sample(self, tau_s: torch.Tensor, tau_t: torch.Tensor) -> torch.Tensor:
        """One interval per sample: everything on the device, nothing cached. Returns
        [C, B, m]."""
        taus = torch.stack((tau_t, tau_s), dim=1)
        ids, weights = basis.interval_weights(taus, self._widths, self.levy_area, torch)
        keys = node_keys(ids.to(torch.int64).unsqueeze(-1), self._roles)  # [B, 2, levels, J]
        # normals [B, 2, levels, J, m]
        normals = gaussians(keys, self._samples, self.channels, self.dtype)
        w = weights.flatten(1, 3).transpose(1, 2).to(self.dtype)  # [B, C, 2 levels J]
        return torch.matmul(w, normals.flatten(1, 3)).transpose(0, 1)

    def _node_normals(self, codes: list[int]) -> list[torch.Tensor]:
        """Normals [J, B, m] of each node (code = id * levels + level), from the cache.

        The cache holds blocks of `self._block` consecutive nodes of one level: a missing node
        brings its block in (all missing blocks in one call), so stepping along a grid
        generates normals once every `block` steps per level instead of every step.
        """
        levels = len(self._widths_host)
        where = [((code % levels, (code // levels) // self._block), (code // levels) % self._block)
                 for code in codes]
        missing = list(dict.fromkeys(key for key, _ in where if key not in self._cache))
        fresh = dict(zip(missing, self._generate_blocks(missing))) if missing else {}
        out = [(fresh[key] if key in fresh else self._cache[key])[offset]
               for key, offset in where]
        for key in dict.fromkeys(key for key, _ in where):
            self._cache[key] = fresh[key] if key in fresh else self._cache[key]
            self._cache.move_to_end(key)
        while len(self._cache) > max(1, self.cache_size // self._block):
            self._cache.popitem(last=False)
        return out

    def _generate_blocks(self, blocks: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Normals [block, J, B, m] of each (level, block index), from one `gaussians` call."""
        first = self._to_device(np.array([index * self._block for _, index in blocks]),
                                torch.int64)
        ids = (first.unsqueeze(-1) + torch.arange(self._block, device=self.device)).view(-1, 1)
        roles = self._roles[self._to_device(np.array([level for level, _ in blocks]),
                                            torch.int64)]
        keys = node_keys(ids, roles.repeat_interleave(self._block, dim=0))  # [n block, J]
        normals = gaussians(keys.unsqueeze(0), self._samples, self.channels, self.dtype)
        normals = normals.permute(1, 2, 0, 3).unflatten(0, (len(blocks), self._block))
        # separate storage per block, so that evicting a block frees it
        return [x.clone() for x in normals] if len(blocks) > 1 else [normals[0].contiguous()]

    def _to_device(self, x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """A host array on the tree's device, without waiting for queued device work: a copy
        from pageable memory would synchronise the stream first, so the array is staged in
        pinned memory (kept alive by torch's caching host allocator until the copy is done)."""
        host = torch.from_numpy(x).to(dtype)
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    # ---- argument checks -------------------------------------------------------------------------

    def _tree_times_host(self, method: str, times: dict[str, object]) -> list[np.ndarray]:
        """Tree times (in [0, 1]) of shared times given as numbers or 1-D sequences."""
        out = []
        for name, x in times.items():
            if isinstance(x, torch.Tensor):
                x = x.detach().cpu()
            try:
                given = np.asarray(x, dtype=np.float64)
            except (TypeError, ValueError):
                given = np.array(np.nan)
            arr = given.reshape(-1)
            if name == "ts" and (given.ndim != 1 or arr.size < 2):
                raise InvalidArgumentError(
                    f"`BrownianTree.increments(ts=...)` must be a 1-D sequence of at least two "
                    f"times; got {x!r}.")
            if isinstance(x, bool) or not np.all((arr >= self.t0) & (arr <= self.t1)):
                raise InvalidArgumentError(
                    f"`BrownianTree.{method}({name}=...)` must hold times in the tree's "
                    f"interval [{self.t0}, {self.t1}] (numbers; or, for `increment`, float "
                    f"tensors [B] for per-sample times); got {x!r}. Build the tree over the "
                    f"whole interval the solve covers.")
            out.append((arr - self.t0) / self.span)
        return out

    def _tree_times_tensor(self, name: str, x: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            (host,) = self._tree_times_host("increment", {name: x})
            return self._to_device(host, torch.float64).expand(self.batch)
        if x.shape != (self.batch,) or not x.is_floating_point():
            raise InvalidArgumentError(
                f"`BrownianTree.increment({name}=...)` as a tensor must be a float tensor of "
                f"shape [{self.batch}] (one time per sample); got dtype {x.dtype} and shape "
                f"{tuple(x.shape)}.")
        tau = (x.to(device=self.device, dtype=torch.float64) - self.t0) / self.span
        inside = ((tau >= 0) & (tau <= 1)).all()
        message = (f"`BrownianTree.increment({name}=...)` has times outside the tree's interval "
                   f"[{self.t0}, {self.t1}]. Build the tree over the whole interval the solve "
                   f"covers.")
        if tau.device.type == "cpu":
            if not inside:
                raise InvalidArgumentError(message)
        else:  # checked on the device: no host synchronisation
            torch._assert_async(inside, message)
        return tau


def _depth(span: float, tol: float) -> int:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise InvalidArgumentError(f"`BrownianTree(tol=...)` must be a positive number (a time "
                                   f"resolution, e.g. the smallest step); got {tol!r}.")
    depth = max(0, math.ceil(math.log2(span / tol)))
    if depth > MAX_DEPTH:
        raise InvalidArgumentError(
            f"`BrownianTree(tol={tol!r})` asks for {depth} levels over an interval of length "
            f"{span}; at most {MAX_DEPTH} are possible in float64 time. Use a larger `tol`.")
    return depth


def _check_count(name: str, value: int, least: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidArgumentError(f"`BrownianTree({name}=...)` must be an int >= {least} "
                                   f"({what}); got {value!r}.")


def _check_interval(t0: float, t1: float) -> None:
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
             for x in (t0, t1))
    if not ok or not t0 < t1:
        raise InvalidArgumentError(f"`BrownianTree(t0=..., t1=...)` must be finite numbers with "
                                   f"t0 < t1; got t0={t0!r}, t1={t1!r}.")


def _check_seeds(seeds: torch.Tensor) -> None:
    if (not isinstance(seeds, torch.Tensor) or seeds.dim() != 1 or seeds.numel() == 0
            or seeds.dtype.is_floating_point or seeds.dtype.is_complex
            or seeds.dtype == torch.bool):
        got = (f"dtype {seeds.dtype} and shape {tuple(seeds.shape)}"
               if isinstance(seeds, torch.Tensor) else type(seeds).__name__)
        raise InvalidArgumentError(
            f"`BrownianTree(seeds=...)` must be a non-empty 1-D integer tensor, one seed per "
            f"sample; got {got}. Use `tidal.brownian.sample_seeds(seed, batch)`.")
