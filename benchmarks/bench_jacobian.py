"""Cost of a batched Jacobian (`tidal.solvers.jacobian.BatchedJacobian`) in each of its modes,
and of one Rodas5P step, in units of one call of f.

Run from the repository root:

    .venv/bin/python benchmarks/bench_jacobian.py           # ~1 minute
    .venv/bin/python benchmarks/bench_jacobian.py --quick   # fewer repeats

Fields: ROBER (D = 3, per-sample rates) and a tanh MLP (D = 16, width 64). Batch 1 and 1024,
float64, one CPU thread, no autograd graph (inference). Each number is the median of the
repeats after one untimed warm-up call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from tidal.solvers.jacobian import MODES, BatchedJacobian
from tidal.solvers.rosenbrock_methods import RODAS5P
from tidal.solvers.rosenbrock_step import rosenbrock_step

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from stiff_problems import rober


def _mlp_field(dim: int):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, dim)).double()
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda t, y: net(torch.cat([y, t[:, None]], -1))


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _row(name: str, field, dim: int, batch: int, repeats: int) -> list[str]:
    y = torch.rand(batch, dim, dtype=torch.float64) * 1e-2 + torch.eye(dim)[0]
    t = torch.zeros(batch, dtype=torch.float64)
    with torch.no_grad():
        f_ms = _median_ms(lambda: field(t, y), repeats)
        cells = [name, str(batch), f"{f_ms:.3f}"]
        for mode in MODES:
            jacobian = BatchedJacobian(field)
            jacobian.mode = mode
            ms = _median_ms(lambda jacobian=jacobian: jacobian(t, y), repeats)
            cells.append(f"{ms:.2f} ({ms / f_ms:.0f}x)")
        J, dfdt = BatchedJacobian(field)(t, y)
        f0, dt = field(t, y), torch.full((batch,), 1e-3, dtype=torch.float64)
        ms = _median_ms(lambda: rosenbrock_step(field, t, y, f0, dt, RODAS5P, J, dfdt), repeats)
        cells.append(f"{ms:.2f} ({ms / f_ms:.0f}x)")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    repeats = 5 if parser.parse_args().quick else 30
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {repeats} repeats, ms per call (x = multiples of one f)")
    header = ["field", "batch", "f", *MODES, "Rodas5P step"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for batch in (1, 1024):
        scale = torch.linspace(0.5, 2.0, batch, dtype=torch.float64)
        print(" | ".join(_row("ROBER", rober(scale)[0], 3, batch, repeats)))
        print(" | ".join(_row("MLP", _mlp_field(16), 16, batch, repeats)))


if __name__ == "__main__":
    main()
