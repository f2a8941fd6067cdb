"""Solve a few classic problems with tidal and compare with scipy.

For each problem and method this prints the largest error relative to each component's size,
measured against scipy's DOP853 at rtol=1e-13 (the reference), the work done (function
evaluations, steps) and the median wall time of one solve, beside scipy's own RK45 and DOP853
at the same tolerances.

    python examples/solve_builtin.py
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

import tidal

RTOL, ATOL = 1e-8, 1e-10


@dataclass
class Problem:
    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: list[float]
    t_end: float


def van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, v = y.unbind(-1)
    return torch.stack([v, (1 - x**2) * v - x], -1)


def lorenz(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, v, z = y.unbind(-1)
    return torch.stack([10 * (v - x), x * (28 - z) - v, x * v - 8 / 3 * z], -1)


def lotka_volterra(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    prey, predator = y.unbind(-1)
    return torch.stack([1.5 * prey - prey * predator, -3 * predator + prey * predator], -1)


def kepler(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., :2], y[..., 2:]
    r3 = (q**2).sum(-1, keepdim=True) ** 1.5
    return torch.cat([p, -q / r3], -1)


E = 0.5  # Kepler orbit: eccentricity 0.5, starting at perihelion
PROBLEMS = [
    Problem("Van der Pol (mu=1)", van_der_pol, [2.0, 0.0], 10.0),
    Problem("Lorenz", lorenz, [1.0, 1.0, 1.0], 2.0),
    Problem("Lotka-Volterra", lotka_volterra, [1.0, 1.0], 10.0),
    Problem("Kepler (e=0.5)", kepler, [1 - E, 0.0, 0.0, math.sqrt((1 + E) / (1 - E))],
            2 * math.pi),
]
METHODS = [tidal.Dopri5(), tidal.Tsit5(), tidal.Dopri8()]


def median_time(run: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scipy_solve(problem: Problem, ts: np.ndarray, method: str, rtol: float, atol: float):
    def f(t: float, y: np.ndarray) -> np.ndarray:
        return problem.f(torch.tensor(t), torch.from_numpy(y)).numpy()

    return solve_ivp(f, (0.0, problem.t_end), problem.y0, method=method, t_eval=ts, rtol=rtol,
                     atol=atol)


def relative_error(ys: np.ndarray, reference: np.ndarray) -> float:
    size = np.abs(reference).max(axis=0)
    return float((np.abs(ys - reference) / size).max())


def main() -> None:
    torch.set_num_threads(1)
    print(f"tidal {tidal.__version__}: rtol={RTOL}, atol={ATOL}, float64, one thread.")
    print("error = max |y - reference| / max |reference component|; reference = scipy DOP853 "
          "at rtol=1e-13.\n")
    header = f"{'problem':<20} {'method':<14} {'error':>9} {'fevals':>7} {'steps':>6} {'ms':>8}"
    print(header)
    print("-" * len(header))
    for problem in PROBLEMS:
        report(problem)
        print()


def report(problem: Problem) -> None:
    """One row per tidal method and per scipy method for `problem`."""
    ts_np = np.linspace(0.0, problem.t_end, 101)
    reference = scipy_solve(problem, ts_np, "DOP853", 1e-13, 1e-14).y.T
    ts = torch.from_numpy(ts_np)
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    controller = tidal.PIDController(rtol=RTOL, atol=ATOL)
    for method in METHODS:
        def run(method=method):
            return tidal.solve(problem.f, y0, ts, solver=method, controller=controller)

        sol = run()
        error = relative_error(sol.ys.numpy(), reference)
        ms = 1e3 * median_time(run)
        print(f"{problem.name:<20} {'tidal ' + type(method).__name__:<14} {error:9.2e} "
              f"{sol.stats.num_fevals:7d} {sol.stats.num_steps:6d} {ms:8.2f}")
    for name in ("RK45", "DOP853"):
        out = scipy_solve(problem, ts_np, name, RTOL, ATOL)
        ms = 1e3 * median_time(lambda name=name: scipy_solve(problem, ts_np, name, RTOL, ATOL))
        print(f"{problem.name:<20} {'scipy ' + name:<14} "
              f"{relative_error(out.y.T, reference):9.2e} {out.nfev:7d} {'':>6} {ms:8.2f}")


if __name__ == "__main__":
    main()
