"""Cost of Brownian increments per step: `tidal.brownian.BrownianTree` against torch.randn
(no consistency: the floor) and torchsde's BrownianInterval (when installed).

Run from the repository root (one CPU thread):

    .venv/bin/python benchmarks/bench_brownian.py [--steps 1000] [--batch 256] [--channels 8]

Each row draws the increments of `steps` consecutive steps of dt = 1/steps over [0, 1] for a
batch of `batch` samples with `channels` Brownian channels, in float32, and prints the median
over three runs (after one untimed warm-up) in microseconds per step. "aligned" trees cover
[0, dt 2^L] with tol = dt, so every step end is a tree node (the recipe for fixed steps in
docs/design.md); "chunked" fetches 64 steps per `increments` call.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Callable

import numpy as np
import torch

from tidal.brownian import BrownianTree, sample_seeds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_solvers import _timed


def _median_time(run: Callable[[], object], repeats: int = 3) -> float:
    run()
    return statistics.median(_timed(run) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, b, m = args.steps, args.batch, args.channels
    dt = 1.0 / n
    ts = np.arange(n + 1) * dt
    seeds = sample_seeds(0, b)
    aligned_end = dt * 2 ** math.ceil(math.log2(n))

    def tree(**kw) -> BrownianTree:
        end = kw.pop("t1", 1.0)
        return BrownianTree(0.0, end, seeds, m, tol=dt, dtype=torch.float32, **kw)

    def single(make: Callable[[], BrownianTree]) -> Callable[[], None]:
        def run() -> None:
            t = make()
            for i in range(n):
                t.increment(ts[i], ts[i + 1])
        return run

    def chunked(make: Callable[[], BrownianTree]) -> Callable[[], None]:
        def run() -> None:
            t = make()
            for i in range(0, n, 64):
                t.increments(ts[i:i + 65])
        return run

    def per_sample() -> None:
        t = tree()
        zero = torch.zeros(b, dtype=torch.float64)
        for i in range(n):
            t.increment(zero + ts[i], zero + ts[i + 1])

    rows: list[tuple[str, Callable[[], None]]] = [
        ("torch.randn (floor, not reproducible by interval)",
         lambda: [torch.randn(b, m) for _ in range(n)]),
        ("BrownianTree, one query per step", single(tree)),
        ("BrownianTree aligned, one query per step", single(lambda: tree(t1=aligned_end))),
        ("BrownianTree aligned, chunked", chunked(lambda: tree(t1=aligned_end))),
        ("BrownianTree aligned + Levy area, chunked",
         chunked(lambda: tree(t1=aligned_end, levy_area=True))),
        ("BrownianTree, per-sample times", per_sample),
    ]
    try:
        import torchsde

        def interval() -> None:
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(b, m), dtype=torch.float32,
                                           entropy=0)
            for i in range(n):
                bm(float(ts[i]), float(ts[i + 1]))

        rows.append((f"torchsde {torchsde.__version__} BrownianInterval", interval))
    except ImportError:
        pass
    print(f"steps={n} batch={b} channels={m} float32, 1 thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':52s} {'us/step':>9s}")
    for name, run in rows:
        print(f"{name:52s} {_median_time(run) / n * 1e6:9.1f}")


if __name__ == "__main__":
    main()
