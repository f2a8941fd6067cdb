"""Would one traceable attempt serve the eager loop too? Times the eager loop against the loop
driven by `tidal.compiled._attempt` run uncompiled (the per-step function, `_steps`, without
torch.compile), interleaved, CPU time, one thread (issue 17's review point; docs/benchmarks.md).

    .venv/bin/python benchmarks/traced_attempt_eager.py [repeats]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import tidal
import tidal.compiled
from bench_solvers import _load, w1_solver_only, w4


def main() -> None:
    torch.set_num_threads(1)
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    tidal.compiled._compiled_steps = tidal.compiled._steps  # the traced attempt, uncompiled
    print(_load())
    for work in (w1_solver_only(), w4()):
        tidal.compiled._not_whole.add(work.f_torch)  # the per-step function, not the loop
        controller = tidal.PIDController(rtol=work.rtol, atol=work.atol)
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.no_grad():
            for _ in range(repeats):
                for traced in (False, True):
                    start = time.process_time()
                    tidal.solve(work.f_torch, work.y0, work.ts, controller=controller,
                                compile=traced)
                    times[traced].append(time.process_time() - start)
        eager, traced = (statistics.median(times[k]) * 1e3 for k in (False, True))
        print(f"{work.name}: eager loop {eager:.1f} ms, traced attempt uncompiled "
              f"{traced:.1f} ms ({traced / eager:.2f}x), median of {repeats}")
    print(_load())


if __name__ == "__main__":
    main()
