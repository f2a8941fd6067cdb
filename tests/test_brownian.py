"""`tidal.brownian.BrownianTree` against the law of Brownian motion.

Statistical tests use a fixed seed (so they are deterministic) and at least 100k samples, and
require p >= 1e-5 (Kolmogorov–Smirnov for the N(0, h) and N(0, h/12) marginals, Pearson's
test for the independence of jointly Gaussian values). Interval ends are deliberately not dyadic
points of the tree, so the leaf-level bridge formulas are exercised too.
"""

from __future__ import annotations

import itertools
import math
import os
import random

import numpy as np
import pytest
import torch
from scipy import stats

from tidal._errors import InvalidArgumentError
from tidal.brownian import BrownianTree, sample_seeds

F64 = torch.float64
MANY = 2**17  # 131072 samples
P_MIN = 1e-5


def _ks_normal(x: torch.Tensor, var: float) -> float:
    return stats.kstest((x / math.sqrt(var)).flatten().numpy(), "norm").pvalue


def _independent(x: torch.Tensor, y: torch.Tensor) -> float:
    return stats.pearsonr(x.flatten().numpy(), y.flatten().numpy()).pvalue


@pytest.fixture(scope="module")
def big_tree() -> BrownianTree:
    return BrownianTree(0.0, 1.0, sample_seeds(2024, MANY), 1, tol=1e-3, levy_area=True,
                        dtype=F64)


INTERVALS = [(0.0, 0.13), (0.13, 0.5), (0.61, 0.97)]  # disjoint, not on dyadic points


def test_increments_over_disjoint_intervals_are_independent_normals(big_tree):
    out = [big_tree.increment(s, t) for s, t in INTERVALS]
    for (s, t), inc in zip(INTERVALS, out):
        assert _ks_normal(inc.dw, t - s) >= P_MIN
        assert _ks_normal(inc.area, (t - s) / 12) >= P_MIN
        assert _independent(inc.dw, inc.area) >= P_MIN
    for a, b in itertools.combinations(out, 2):
        for x, y in itertools.product((a.dw, a.area), (b.dw, b.area)):
            assert _independent(x, y) >= P_MIN


@pytest.mark.slow
def test_per_sample_intervals_have_the_brownian_law(big_tree):
    gen = torch.Generator().manual_seed(7)
    s = torch.rand(MANY, generator=gen, dtype=F64) * 0.7
    h = torch.rand(MANY, generator=gen, dtype=F64) * 0.29 + 1e-3
    inc = big_tree.increment(s, s + h)
    assert _ks_normal(inc.dw[:, 0] / h.sqrt(), 1.0) >= P_MIN
    assert _ks_normal(inc.area[:, 0] / h.sqrt(), 1 / 12) >= P_MIN
    later = big_tree.increment(s + h, torch.full_like(s, 1.0))
    assert _independent(inc.dw, later.dw) >= P_MIN


def test_a_single_leaf_gives_the_exact_bridge_law():
    """Depth 0 (one leaf covering [0, 1]): W(0, r) and H(0, r) come only from the root and
    the leaf's conditional formulas, so their law checks those formulas directly."""
    tree = BrownianTree(0.0, 1.0, sample_seeds(5, MANY), 1, tol=1.0, levy_area=True, dtype=F64)
    assert tree.depth == 0
    for r in (0.3, 0.77):
        inc = tree.increment(0.0, r)
        assert _ks_normal(inc.dw, r) >= P_MIN
        assert _ks_normal(inc.area, r / 12) >= P_MIN
        assert _independent(inc.dw, inc.area) >= P_MIN
    first, second = tree.increment(0.0, 0.3), tree.increment(0.3, 1.0)
    assert _ks_normal(second.dw, 0.7) >= P_MIN
    assert _independent(first.dw, second.dw) >= P_MIN


@pytest.mark.parametrize("levy_area", [False, True])
def test_brownian_motion_without_area_has_the_brownian_law(levy_area):
    tree = BrownianTree(0.0, 2.0, sample_seeds(11, MANY), 2, tol=1e-2, levy_area=levy_area,
                        dtype=F64)
    a, b = tree.increment(0.05, 0.9), tree.increment(0.9, 1.93)
    assert _ks_normal(a.dw, 0.85) >= P_MIN and _ks_normal(b.dw, 1.03) >= P_MIN
    assert _independent(a.dw, b.dw) >= P_MIN
    assert _independent(a.dw[:, 0], a.dw[:, 1]) >= P_MIN  # channels are independent


def _queries(n: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [tuple(sorted((rng.uniform(0, 3), rng.uniform(0, 3)))) for _ in range(n)]


@pytest.mark.parametrize("cache_size", [0, 4, 256])
def test_same_increments_whatever_the_query_order(cache_size):
    seeds = sample_seeds(3, 16)
    queries = _queries(60, 1)
    first = BrownianTree(0.0, 3.0, seeds, 3, tol=1e-3, levy_area=True, cache_size=cache_size)
    answers = {q: first.increment(*q) for q in queries}
    second = BrownianTree(0.0, 3.0, seeds, 3, tol=1e-3, levy_area=True, cache_size=cache_size)
    for q in random.Random(2).sample(queries, len(queries)):
        second.increment(*_queries(1, hash(q) % 1000)[0])  # unrelated queries in between
        again = second.increment(*q)
        assert torch.equal(again.dw, answers[q].dw) and torch.equal(again.area, answers[q].area)


def test_per_sample_queries_do_not_depend_on_order_or_on_other_samples():
    seeds = sample_seeds(3, 16)
    tree = BrownianTree(0.0, 3.0, seeds, 3, tol=1e-3, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    s, t = (torch.rand(2, 16, generator=gen, dtype=F64) * 3).sort(dim=0).values
    a = tree.increment(s, t).dw
    tree.increment(t, torch.full_like(t, 3.0))
    assert torch.equal(tree.increment(s, t).dw, a)
    shared = [tree.increment(float(s[b]), float(t[b])).dw[b] for b in range(16)]
    torch.testing.assert_close(torch.stack(shared), a, rtol=0, atol=1e-14)


def test_a_samples_path_depends_only_on_its_seed():
    seeds = sample_seeds(9, 32)
    perm = torch.randperm(32)
    full = BrownianTree(0.0, 1.0, seeds, 2, tol=1e-3, dtype=F64).increment(0.2, 0.7).dw
    permuted = BrownianTree(0.0, 1.0, seeds[perm], 2, tol=1e-3, dtype=F64).increment(0.2, 0.7)
    part = BrownianTree(0.0, 1.0, seeds[5:9], 2, tol=1e-3, dtype=F64).increment(0.2, 0.7)
    torch.testing.assert_close(permuted.dw, full[perm], rtol=0, atol=1e-15)
    torch.testing.assert_close(part.dw, full[5:9], rtol=0, atol=1e-15)
    assert torch.equal(sample_seeds(9, 8, offset=20), seeds[20:28])


@pytest.mark.parametrize("dtype,atol", [(F64, 1e-13), (torch.float32, 1e-5)])
def test_additivity_and_chens_relation(dtype, atol):
    tree = BrownianTree(-1.0, 4.0, sample_seeds(1, 64), 2, tol=1e-4, levy_area=True,
                        dtype=dtype)
    rng = random.Random(0)
    for s, t, u in (sorted(rng.uniform(-1, 4) for _ in range(3)) for _ in range(20)):
        su, st, tu = tree.increment(s, u), tree.increment(s, t), tree.increment(t, u)
        torch.testing.assert_close(st.dw + tu.dw, su.dw, rtol=0, atol=atol)
        # (u - s) H_su = (t - s) H_st + (u - t) H_tu + ((u - t) W_st - (t - s) W_tu) / 2
        rebuilt = ((t - s) * st.area + (u - t) * tu.area
                   + ((u - t) * st.dw - (t - s) * tu.dw) / 2) / (u - s)
        torch.testing.assert_close(rebuilt, su.area, rtol=0, atol=atol * 10)
        reverse = tree.increment(u, s)
        torch.testing.assert_close(reverse.dw, -su.dw, rtol=0, atol=atol)


def test_short_intervals_far_from_the_start_keep_their_precision():
    """A float32 increment over a short interval at the end of a long tree is accurate to
    float32 precision relative to its own size (the merged weights avoid cancelling W(t)
    against W(s))."""
    seeds = sample_seeds(4, 256)
    s, t = 999.9990, 1000.0
    exact = BrownianTree(0.0, 1000.0, seeds, 1, tol=1e-4, dtype=F64).increment(s, t).dw
    single = BrownianTree(0.0, 1000.0, seeds, 1, tol=1e-4, dtype=torch.float32)
    err = (single.increment(s, t).dw.double() - exact).abs().max() / exact.abs().max()
    assert err < 1e-5


def test_float32_and_float64_trees_are_the_same_path():
    seeds = sample_seeds(8, 64)
    a = BrownianTree(0.0, 1.0, seeds, 3, tol=1e-3, levy_area=True, dtype=F64)
    b = BrownianTree(0.0, 1.0, seeds, 3, tol=1e-3, levy_area=True, dtype=torch.float32)
    for s, t in INTERVALS:
        torch.testing.assert_close(b.increment(s, t).dw.double(), a.increment(s, t).dw,
                                   rtol=0, atol=1e-5)


def test_grid_increments_match_single_queries():
    tree = BrownianTree(0.0, 1.0, sample_seeds(2, 8), 2, tol=1e-3, levy_area=True, dtype=F64)
    ts = [0.0, 0.1, 0.25, 0.26, 0.9, 0.7, 1.0]  # any order
    grid = tree.increments(ts)
    assert grid.dw.shape == (6, 8, 2)
    for i in range(6):
        one = tree.increment(ts[i], ts[i + 1])
        torch.testing.assert_close(grid.dw[i], one.dw, rtol=0, atol=1e-14)
        torch.testing.assert_close(grid.area[i], one.area, rtol=0, atol=1e-13)


def test_empty_interval_gives_zeros():
    tree = BrownianTree(0.0, 1.0, sample_seeds(2, 4), 2, tol=1e-3, levy_area=True)
    inc = tree.increment(0.3, 0.3)
    assert not inc.dw.any() and not inc.area.any()
    per_sample = tree.increment(torch.full((4,), 0.3, dtype=F64), torch.full((4,), 0.3, dtype=F64))
    assert not per_sample.dw.any() and not per_sample.area.any()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_is_bounded_over_100k_queries():
    """1e5 random intervals (answered 100 per call): the cache never holds more than
    `cache_size` nodes and the process does not grow after warm-up."""
    tree = BrownianTree(0.0, 1.0, sample_seeds(0, 16), 4, tol=1e-2, cache_size=128)
    bound = 128 * 16 * 4 * 4  # cache_size * J * B * m float32 values
    rng = np.random.default_rng(0)
    rss = []
    for call in range(1000):
        tree.increments(rng.random(101))
        assert len(tree._cache) * tree._block <= 128 and tree.cached_bytes <= bound
        if call in (100, 999):
            rss.append(_rss_bytes())
    assert rss[1] - rss[0] < 16 * 2**20


BAD = [
    (lambda: BrownianTree(1.0, 1.0, sample_seeds(0, 2), 1, tol=0.1), "t0=..., t1=..."),
    (lambda: BrownianTree(0.0, 1.0, torch.zeros(2), 1, tol=0.1), "seeds=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 0, tol=0.1), "channels=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=-1.0), "tol=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=1e-300), "tol=1e-300"),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1, dtype=torch.int32),
     "dtype=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1).increment(0.0, 1.5),
     "t=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1).increment(
        torch.zeros(3, dtype=F64), 0.5), "s=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1).increment(
        torch.zeros(2, dtype=F64), torch.full((2,), 2.0, dtype=F64)), "t=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1).increments([0.5]), "ts=..."),
    (lambda: BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1).increments(
        [[0.0, 0.5], [1.0]]), "ts=..."),
]


@pytest.mark.parametrize("call,name", BAD)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InvalidArgumentError, match=name.replace("(", r"\(").replace(".", r"\.")):
        call()
