"""The classical stiff test set: tidal's Rosenbrock methods against scipy's Radau.

Run from the repository root:

    .venv/bin/python benchmarks/bench_stiff.py            # all problems (minutes)
    .venv/bin/python benchmarks/bench_stiff.py rober hires

For each problem, float64, rtol 1e-6 and atol = 1e-6 times each component's scale: the error
at the final time against scipy's Radau at rtol 1e-12 (max over components of
|y - ref| / (scale + |ref|)), calls of f (tidal: the stages' calls, not the autodiff
Jacobians'; scipy: `nfev`, which does not count the calls of its finite-difference
Jacobians either), Jacobian evaluations, steps and wall time (one thread). An explicit
method (Tsit5) is run with `max_steps` 20,000 to show where it fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import torch

import tidal

RTOL = 1e-6


def _stack(parts: list, like) -> object:
    return torch.stack(parts, -1) if isinstance(like, torch.Tensor) else np.stack(parts, -1)


def rober(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2,
                   3e7 * y2 ** 2], y)


def van_der_pol(t, y, mu=1000.0):
    x, v = y[..., 0], y[..., 1]
    return _stack([v, mu * (1 - x ** 2) * v - x], y)


def hires(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[..., i] for i in range(8))
    return _stack([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        280.0 * y6 * y8 - 1.81 * y7,
        -280.0 * y6 * y8 + 1.81 * y7], y)


def orego(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _stack([77.27 * (y2 + y1 * (1 - 8.375e-6 * y1 - y2)),
                   (y3 - (1 + y1) * y2) / 77.27, 0.161 * (y1 - y3)], y)


_RNG = np.random.default_rng(0)
_Q = np.linalg.qr(_RNG.standard_normal((6, 6)))[0]
_L = _Q @ np.diag([-1.0, -10.0, -1e2, -1e3, -1e5, -1e6]) @ _Q.T
_L_T = torch.tensor(_L)


def linear(t, y):
    return y @ (_L_T if isinstance(y, torch.Tensor) else _L).T


@dataclass
class Problem:
    name: str
    f: Callable
    y0: list[float]
    t_end: float
    scale: list[float]


PROBLEMS = [
    Problem("rober", rober, [1.0, 0.0, 0.0], 1e11, [1.0, 1e-5, 1.0]),
    Problem("vdp", van_der_pol, [2.0, 0.0], 3000.0, [1.0, 1.0]),
    Problem("hires", hires, [1.0, 0, 0, 0, 0, 0, 0, 0.0057], 321.8122, [1e-1] * 8),
    Problem("orego", orego, [1.0, 2.0, 3.0], 360.0, [1.0, 1.0, 1.0]),
    Problem("linear", linear, list(_RNG.standard_normal(6)), 10.0, [1.0] * 6),
]


def _error(y: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> float:
    return float(np.max(np.abs(y - reference) / (scale + np.abs(reference))))


def run(problem: Problem) -> list[str]:
    scale = np.asarray(problem.scale)
    reference = scipy.integrate.solve_ivp(problem.f, (0.0, problem.t_end), problem.y0,
                                          method="Radau", rtol=1e-12,
                                          atol=1e-12 * scale).y[:, -1]
    rows = []
    start = time.perf_counter()
    radau = scipy.integrate.solve_ivp(problem.f, (0.0, problem.t_end), problem.y0,
                                      method="Radau", rtol=RTOL, atol=RTOL * scale)
    wall = time.perf_counter() - start
    rows.append(f"| {problem.name} | scipy Radau | {_error(radau.y[:, -1], reference, scale):.1e}"
                f" | {radau.nfev} | {radau.njev} | {len(radau.t) - 1} | {wall:.2f} s |")
    y0, ts = torch.tensor(problem.y0), torch.tensor([0.0, problem.t_end])
    controller = tidal.PIDController(RTOL, RTOL * torch.tensor(scale))
    for solver in (tidal.Rodas5P(), tidal.Rodas4P(), tidal.Tsit5()):
        start = time.perf_counter()
        sol = tidal.solve(problem.f, y0, ts, solver=solver, controller=controller,
                          max_steps=20_000 if solver.name == "tsit5" else 100_000,
                          throw=False)
        wall = time.perf_counter() - start
        s = sol.stats
        error = (_error(sol.ys[-1].numpy(), reference, scale) if sol.status.ok
                 else sol.status.name)
        error = f"{error:.1e}" if isinstance(error, float) else error
        rows.append(f"| {problem.name} | {solver.name} | {error} | {int(s.num_fevals)} | "
                    f"{int(s.num_jacobians)} | {int(s.num_accepted)} | {wall:.2f} s |")
    return rows


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    chosen = sys.argv[1:] or [p.name for p in PROBLEMS]
    print(f"rtol {RTOL}, atol = rtol x scale; error vs Radau rtol 1e-12\n")
    print("| problem | method | error | f calls | Jacobians | steps | wall |")
    print("|---|---|---|---|---|---|---|")
    for problem in PROBLEMS:
        if problem.name in chosen:
            for row in run(problem):
                print(row, flush=True)


if __name__ == "__main__":
    main()
