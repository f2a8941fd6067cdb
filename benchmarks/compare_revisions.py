"""tidal against tidal: the same benchmark jobs timed for two source trees, interleaved.

Run from the repository root, e.g. against a checkout of main:

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/compare_revisions.py --before /tmp/before/src --after src

Only tidal's own runs of bench_solvers.py (W1, W1-long, W1-solver-only, W4; shared and
per-sample grids) and bench_gradients.py (W2 training steps with each adjoint, on W1) are timed,
so a round takes seconds, not minutes. Each round starts one process per tree (one torch
thread, PYTHONPATH pointing at that tree), alternating which goes first; every process warms
each job up and then times it `--repeats` times, interleaving the jobs. The table gives the
median over all rounds and repeats, and after/before. Differences within a few percent are
noise on a shared machine: look at the spread (`--rounds` more for a closer look).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))


def _jobs() -> dict[str, Callable[[], object]]:
    """name -> one complete run (imports tidal from whichever tree PYTHONPATH names)."""
    import torch

    sys.path.insert(0, HERE)
    import bench_gradients as bg
    import bench_solvers as bs

    jobs: dict[str, Callable[[], object]] = {}
    for name in ("W1", "W1-long", "W1-solver-only", "W4"):
        work = bs.WORKLOADS[name]()
        for per_sample in (False, True) if work.per_sample else (False,):
            runner = bs.tidal_runner(work, per_sample)

            def run(runner: bs.Runner = runner) -> object:
                with torch.no_grad():
                    return runner.run()
            jobs[f"{name} {'per-sample' if per_sample else 'shared'}"] = run
    y0 = bs._batch_y0()
    for method in ("tidal Backprop", "tidal Checkpoint", "tidal Backsolve"):
        _, f, params = bg.counted_field(rotation=False)
        jobs[f"W2 (W1) {method.split()[1]}"] = bg.make_step(bg.METHOD_BY_NAME[method], f,
                                                            params, y0, bg.W1.ts())
    return jobs


def worker(repeats: int, only: list[str], clock: Callable[[], float]) -> None:
    import torch

    torch.set_num_threads(1)
    jobs = {k: v for k, v in _jobs().items() if not only or k in only}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():
        job()
    names = list(jobs)
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            jobs[name]()
            times[name].append(clock() - start)
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="src directory of the old tree")
    parser.add_argument("--after", default="src", help="src directory of the new tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per job and round")
    parser.add_argument("--only", default="", help="comma-separated job names")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or the CPU time of the timing thread (steadier on a "
                        "loaded machine: time spent waiting for a core is not counted)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.worker:
        worker(args.repeats, only, time.perf_counter if args.clock == "wall" else time.thread_time)
        return
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for round_ in range(args.rounds):
        sides = [("before", args.before), ("after", args.after)]
        for side, src in sides if round_ % 2 == 0 else sides[::-1]:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "OMP_NUM_THREADS": "1"}
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", "--before", src,
                 "--repeats", str(args.repeats), "--only", ",".join(only), "--clock", args.clock],
                env=env, check=True, capture_output=True, text=True).stdout
            for name, values in json.loads(out.strip().splitlines()[-1]).items():
                samples[side].setdefault(name, []).extend(values)
        print(f"round {round_ + 1}/{args.rounds} done; load average {os.getloadavg()[0]:.2f}",
              file=sys.stderr)
    print(f"median of {args.rounds} rounds x {args.repeats} repeats, one thread, {args.clock} "
          f"time; load average now {os.getloadavg()[0]:.2f}")
    header = f"{'job':28s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}"
    print(header + "\n" + "-" * len(header))
    for name, before in samples["before"].items():
        after = samples["after"].get(name)
        if not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        print(f"{name:28s} {b * 1e3:10.2f} {a * 1e3:10.2f} {a / b:13.3f}")


if __name__ == "__main__":
    main()
