"""tidal against tidal: the same solves timed for two source trees in ONE process, interleaved.

Run from the repository root, e.g. against main:

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/compare_revisions.py --before /tmp/before/src

The old tree is copied to a temporary directory as the package `tidal_before` (its `tidal`
imports rewritten), so both versions run side by side in this process: same interpreter, same
allocator, same CPU, one torch thread. The jobs are tidal's own runs of bench_solvers.py's
workloads (W1, W1-long, W1-solver-only, W4; shared and per-sample grids; W4 with a batch
of 64 starts on per-sample grids), bench_gradients.py's W2 training step (solve, mean of
squared outputs, backward) with each adjoint on the W1 problem, and two small solves where
set-up weighs most (`small_solves`). Every repeat times every job once for each version, in
an order that rotates, and the table gives medians and after/before. `--clock cpu` times
the thread's CPU time, which a busy machine distorts less than wall time (waiting for a core
is not counted).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_solvers as bs  # noqa: E402  (the workloads: f, y0, ts, tolerances)
import tidal  # noqa: E402

IMPORT = re.compile(r"^(\s*)(from|import) tidal\b", re.MULTILINE)


def load_before(src: str) -> ModuleType:
    """The tree at `src` as the package `tidal_before`."""
    target = tempfile.mkdtemp(prefix="tidal-before-")
    shutil.copytree(os.path.join(src, "tidal"), os.path.join(target, "tidal_before"))
    for root, _, files in os.walk(target):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as file:
                    text = file.read()
                with open(path, "w") as file:
                    file.write(IMPORT.sub(r"\1\2 tidal_before", text))
    sys.path.insert(0, target)
    return importlib.import_module("tidal_before")


def jobs_for(t: ModuleType) -> dict[str, Callable[[], object]]:
    """name -> one complete run with the tidal module `t`."""
    jobs: dict[str, Callable[[], object]] = {}
    for name in ("W1", "W1-long", "W1-solver-only", "W4"):
        w = bs.WORKLOADS[name]()
        controller = t.PIDController(rtol=w.rtol, atol=w.atol)
        grids = {"shared": w.ts}
        if w.per_sample:
            grids["per-sample"] = w.ts.unsqueeze(1).expand(-1, w.y0.shape[0])
        for kind, ts in grids.items():
            def solve(w: bs.Workload = w, ts: torch.Tensor = ts,
                      controller: object = controller) -> object:
                with torch.no_grad():
                    return t.solve(w.f_torch, w.y0, ts, solver=t.Dopri5(), controller=controller)
            jobs[f"{name} {kind}"] = solve
    w = bs.w4()  # Lotka-Volterra with a batch of 64 starts, each on its own grid
    y0_batch = w.y0 * (1.0 + 0.5 * torch.rand(64, 2, generator=torch.Generator().manual_seed(0)))
    ts_batch = w.ts.unsqueeze(1).expand(-1, 64)

    def lotka_volterra_batch(w: bs.Workload = w) -> object:
        with torch.no_grad():
            return t.solve(w.f_torch, y0_batch, ts_batch, solver=t.Dopri5(),
                           controller=t.PIDController(rtol=w.rtol, atol=w.atol))
    jobs["W4 batch 64 per-sample"] = lotka_volterra_batch
    mlp, y0 = bs._mlp(), bs._batch_y0()
    ts = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    adjoints = {"Backprop": t.BackpropAdjoint(), "Checkpoint": t.CheckpointAdjoint(),
                "Backsolve": t.BacksolveAdjoint(params=list(mlp.parameters()))}
    for name, adjoint in adjoints.items():
        def step(adjoint: object = adjoint) -> object:
            y = y0.clone().requires_grad_(True)
            mlp.zero_grad()
            sol = t.solve(lambda s, x: mlp(x), y, ts, solver=t.Dopri5(),
                          controller=t.PIDController(rtol=1e-5, atol=1e-6), adjoint=adjoint)
            sol.ys.pow(2).mean().backward()
            return y.grad
        jobs[f"W2 (W1) {name}"] = step
    jobs.update(small_solves(t))
    return jobs


def small_solves(t: ModuleType) -> dict[str, Callable[[], object]]:
    """Where a solve's set-up weighs most: one RK4 step of a small MLP (a sequence model's
    interval), and an ODE-RNN training step that makes 49 of them (batch 50, 50 rows)."""
    torch.manual_seed(0)
    net = t.nn.MLP(16, width=32)
    y0, unit = torch.randn(50, 16), torch.tensor([0.0, 1.0], dtype=torch.float64)
    rk4, one_step = t.RK4(), t.ConstantStepSize(1.0)

    def interval() -> object:
        with torch.no_grad():
            return t.solve(lambda s, y: net(s, y), y0, unit, solver=rk4, controller=one_step)

    rnn = t.models.ODERNN(1, 16, width=32, solver=rk4, controller=one_step)
    generator = torch.Generator().manual_seed(1)
    times = torch.sort(torch.rand(50, dtype=torch.float64, generator=generator)).values * 5
    values = torch.randn(50, 50, 1, generator=generator)
    mask = torch.rand(50, 50, 1, generator=generator) < 0.5

    def ode_rnn_step() -> object:
        rnn.zero_grad()
        rnn(times, values, mask).square().mean().backward()
        return rnn
    return {"RK4 one step": interval, "ODE-RNN step": ode_rnn_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="src directory of the old tree")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated job names")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    before = load_before(args.before)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    sides = {"before": jobs_for(before), "after": jobs_for(tidal)}
    names = [n for n in sides["after"] if n in sides["before"] and (not only or n in only)]
    runs = [(side, name) for name in names for side in sides]
    for side, name in runs:  # warm-up
        sides[side][name]()
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for rep in range(args.repeats):
        shift = rep % len(runs)
        for side, name in runs[shift:] + runs[:shift]:
            start = clock()
            sides[side][name]()
            times[side, name].append(clock() - start)
    print(f"tidal before ({args.before}) and after ({tidal.__file__}), one process, "
          f"{args.repeats} interleaved repeats, one thread, {args.clock} time, medians; load "
          f"average {os.getloadavg()[0]:.2f}")
    header = f"{'job':26s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}"
    print(header + "\n" + "-" * len(header))
    for name in names:
        b = statistics.median(times["before", name])
        a = statistics.median(times["after", name])
        print(f"{name:26s} {b * 1e3:10.2f} {a * 1e3:10.2f} {a / b:13.3f}")


if __name__ == "__main__":
    main()
