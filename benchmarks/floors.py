"""tidal against its floor: each solve beside as many bare calls of f as it made, CPU time.

    .venv/bin/python benchmarks/floors.py [REPEATS]

W1, W1-long and W1-solver-only (bench_solvers.py) on shared and per-sample grids, and the W2
training step (compare_revisions.py's: the W1 MLP, Backprop and Checkpoint). Each repeat times
the solve and then its floor, one thread, `time.thread_time` (a busy machine distorts CPU time
less than wall time). The floor of a training step is its calls of f without a graph plus its
calls of f with one, each followed by a VJP (as bench_gradients.py counts them). The last
column is (solve - floor) / steps: the loop's bookkeeping per step.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_solvers as bs
import tidal

Row = tuple[str, float, float, str, str]


def interleaved(run: Callable[[], object], floor: Callable[[], object], repeats: int
                ) -> tuple[float, float]:
    """Median CPU seconds of run() and of floor(), timed one after the other each repeat."""
    runs: list[float] = []
    floors: list[float] = []
    for _ in range(repeats):
        for job, times in ((run, runs), (floor, floors)):
            start = time.thread_time()
            job()
            times.append(time.thread_time() - start)
    return statistics.median(runs), statistics.median(floors)


def solves(repeats: int) -> list[Row]:
    rows: list[Row] = []
    for name in ("W1", "W1-long", "W1-solver-only"):
        w = bs.WORKLOADS[name]()
        controller = tidal.PIDController(rtol=w.rtol, atol=w.atol)
        grids = {"shared": w.ts, "per-sample": w.ts.unsqueeze(1).expand(-1, w.y0.shape[0])}
        for kind, ts in grids.items():
            calls = [0]

            def f(t: torch.Tensor, y: torch.Tensor, w: bs.Workload = w,
                  calls: list[int] = calls) -> torch.Tensor:
                calls[0] += 1
                return w.f_torch(t, y)

            def run(ts: torch.Tensor = ts, f: Callable = f, w: bs.Workload = w,
                    controller: tidal.PIDController = controller) -> tidal.Solution:
                with torch.no_grad():
                    return tidal.solve(f, w.y0, ts, solver=tidal.Dopri5(), controller=controller)

            steps, n, t0 = int(run().stats.num_steps.max()), calls[0], ts[0].clone()

            def bare(n: int = n, t0: torch.Tensor = t0, w: bs.Workload = w) -> None:
                with torch.no_grad():
                    for _ in range(n):
                        w.f_torch(t0, w.y0)

            solve_s, floor_s = interleaved(run, bare, repeats)
            rows.append((f"{name} {kind}", solve_s, floor_s, str(n),
                         f"{steps:6d} {(solve_s - floor_s) / steps * 1e6:8.1f}"))
    return rows


def training_steps(repeats: int) -> list[Row]:
    mlp, y0 = bs._mlp(), bs._batch_y0()
    ts = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    params = list(mlp.parameters())
    v = torch.randn_like(y0)
    rows: list[Row] = []
    for adjoint in (tidal.CheckpointAdjoint(), tidal.BackpropAdjoint()):
        counts = {"plain": 0, "graph": 0}

        def f(s: torch.Tensor, x: torch.Tensor, counts: dict[str, int] = counts
              ) -> torch.Tensor:
            counts["graph" if torch.is_grad_enabled() else "plain"] += 1
            return mlp(x)

        def step(f: Callable = f, adjoint: object = adjoint) -> None:
            y = y0.clone().requires_grad_(True)
            mlp.zero_grad()
            sol = tidal.solve(f, y, ts, solver=tidal.Dopri5(), adjoint=adjoint,
                              controller=tidal.PIDController(rtol=1e-5, atol=1e-6))
            sol.ys.pow(2).mean().backward()

        step()
        plain, graph = counts["plain"], counts["graph"]

        def bare(plain: int = plain, graph: int = graph) -> None:
            with torch.no_grad():
                for _ in range(plain):
                    mlp(y0)
            for _ in range(graph):
                y = y0.detach().requires_grad_(True)
                torch.autograd.grad(mlp(y), (y, *params), v)

        step_s, floor_s = interleaved(step, bare, repeats)
        rows.append((f"W2 (W1) {type(adjoint).__name__.removesuffix('Adjoint')}", step_s, floor_s,
                     f"{plain}+{graph}vjp", ""))
    return rows


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    torch.set_num_threads(1)
    rows = solves(repeats) + training_steps(repeats)
    print(f"CPU time, one thread, medians of {repeats} interleaved repeats; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'job':28s} {'tidal ms':>9s} {'floor ms':>9s} {'x floor':>8s} {'f calls':>12s} "
          f"{'steps':>6s} {'us/step':>8s}")
    for name, solve_s, floor_s, calls, per_step in rows:
        print(f"{name:28s} {solve_s * 1e3:9.2f} {floor_s * 1e3:9.2f} {solve_s / floor_s:8.2f} "
              f"{calls:>12s} {per_step}")


if __name__ == "__main__":
    main()
