"""The classical stiff test set: tidal's Rosenbrock methods against scipy's Radau.

Run from the repository root:

    .venv/bin/python benchmarks/bench_stiff.py            # all problems (minutes)
    .venv/bin/python benchmarks/bench_stiff.py rober hires
    .venv/bin/python benchmarks/bench_stiff.py batch      # 1024 ROBER samples vs a scipy loop
    .venv/bin/python benchmarks/bench_stiff.py auto       # tidal.Auto against Tsit5 / Rodas5P
    .venv/bin/python benchmarks/bench_stiff.py grad       # gradient accuracy, backward cost
    .venv/bin/python benchmarks/bench_stiff.py calibration rodas5p 1e-4 1e-6 1e-8
    .venv/bin/python benchmarks/bench_stiff.py max-norm 1e-4 1e-6 1e-8
    .venv/bin/python benchmarks/bench_stiff.py rober-steps

For each problem, float64, rtol 1e-6 and atol = 1e-6 times each component's scale: the error
against scipy's Radau at rtol 1e-12 (max over components of |y - ref| / (scale + |ref|)) at
the final time and over the trajectory (the largest over 41 log-spaced output times from 1e-5
to the end, which both libraries reach by their dense output; the reference is restarted at
each of them, so it is exact to ~1e-12 there), each also as a ratio to scipy Radau's at the
same tolerances, calls of f (tidal: the stages' calls, not the autodiff Jacobians'; scipy:
`nfev`, which does not count the calls of its finite-difference Jacobians either) and their
ratio to Radau's, Jacobian evaluations, steps and wall time (one thread). An explicit method
(Tsit5) is run with `max_steps` 20,000 to show where it fails.

`batch`: ROBER on [0, 1e5] for 1024 samples whose three rates are scaled by log-uniform
factors in [0.5, 2], one batched Rodas5P solve on per-sample grids against a Python loop of
scipy Radau solves (same tolerances), with the largest error of either against per-sample
Radau references at rtol 1e-10.

`auto`: what `tidal.Auto` costs where it stays explicit (non-stiff problems: calls of f and
CPU time against Tsit5, the median of 9 interleaved runs in one process, and their ratio)
and what it gives on stiff ones
(against Rodas5P, errors against Radau at rtol 1e-12).

`calibration METHOD RTOL...`: how the tolerance calibration c of a Rosenbrock method
(`tolerance_calibration`) trades accuracy for work. For each rtol and problem, scipy Radau
against the method with c = 1 (uncalibrated), 2, 3, 4 and 6 at the same rtol (atol = rtol x
scale): the error ratios method / Radau at the final time and over the trajectory (the
acceptance asks for at most 10) and the f-call ratio (at most 1). An uncalibrated Rosenbrock
method's error is about rtol (its embedded estimate has order p - 1); Radau's is often far
below rtol (scipy's estimate has order 3 for an order-5 method).

`max-norm RTOL...`: `calibration rodas5p` with the max norm (the largest scaled error
component, as MATLAB's ode suite) in place of the RMS, at c = 1, 1.5, 2 and 3.
`rober-steps`: ROBER on [0, 100] at rtol = atol = 1e-8, Rodas5P's accepted steps (the
acceptance: at most 60) for c from 1 to 4 with either norm.

`grad`: the gradient of a ROBER loss (weighted scaled states at t = 1e-3 .. 10) with respect
to the three log-rates, Rodas5P at rtol 1e-6, Backprop and Checkpoint, with the Jacobian from
autodiff and from `jac=`: relative error against central differences of Radau solves at rtol
1e-12, forward (with graph) and backward wall time.
"""

from __future__ import annotations

import itertools
import math
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


# POLLU (Verwer 1994; the IVP test set of Mazzia & Iavernaro): 20 species, 25 reactions.
# Rate constants, the reactants of each reaction and the species it changes (stoichiometry).
_POLLU_K = [0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9e3, 0.022,
            1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 0.0175, 1e8, 4.44e11, 1240.0, 2.1, 5.78,
            0.0474, 1780.0, 3.12]
_POLLU_REACTANTS = [(0,), (1, 3), (4, 1), (6,), (6,), (6, 5), (8,), (8, 5), (10, 1), (10, 0),
                    (12,), (9, 1), (13,), (0, 5), (2,), (3,), (3,), (15,), (15,), (16, 5),
                    (18,), (18,), (0, 3), (18, 0), (19,)]
_POLLU_CHANGES = [  # reaction -> {species: change}
    {0: -1, 1: 1, 2: 1}, {1: -1, 3: -1, 0: 1}, {4: -1, 1: -1, 0: 1, 5: 1},
    {6: -1, 4: 2, 7: 1}, {6: -1, 7: 1}, {6: -1, 5: -1, 4: 1, 7: 1}, {8: -1, 9: 1, 4: 1, 7: 1},
    {8: -1, 5: -1, 10: 1}, {10: -1, 1: -1, 0: 1, 9: 1, 11: 1}, {10: -1, 0: -1, 12: 1},
    {12: -1, 10: 1, 0: 1}, {9: -1, 1: -1, 13: 1, 0: 1}, {13: -1, 6: 1, 4: 1},
    {0: -1, 5: -1, 14: 1}, {2: -1, 3: 1}, {3: -1, 15: 1}, {3: -1, 2: 1}, {15: -1, 5: 2},
    {15: -1, 2: 1}, {16: -1, 5: -1, 17: 1, 4: 1}, {18: -1, 1: 1}, {18: -1, 0: 1, 2: 1},
    {0: -1, 3: -1, 18: 1}, {18: -1, 0: -1, 19: 1}, {19: -1, 0: 1, 18: 1}]
_POLLU_S = np.zeros((20, 25))
for _r, _changes in enumerate(_POLLU_CHANGES):
    for _species, _change in _changes.items():
        _POLLU_S[_species, _r] = _change
_POLLU_S_T = torch.tensor(_POLLU_S)


def pollu(t, y):
    rates = [k * math.prod(y[..., i] for i in reactants)
             for k, reactants in zip(_POLLU_K, _POLLU_REACTANTS)]
    return _stack(rates, y) @ (_POLLU_S_T if isinstance(y, torch.Tensor) else _POLLU_S).T


_POLLU_Y0 = [0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
             0.007, 0.0, 0.0, 0.0]
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
    Problem("pollu", pollu, _POLLU_Y0, 60.0, [0.1] * 20),
    Problem("linear", linear, list(_RNG.standard_normal(6)), 10.0, [1.0] * 6),
]


def _error(y: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> float:
    return float(np.max(np.abs(y - reference) / (scale + np.abs(reference))))


def output_times(problem: Problem) -> np.ndarray:
    """0 and 41 log-spaced times from 1e-5 to the end (the last is the end itself)."""
    times = np.logspace(-5.0, math.log10(problem.t_end), 41)
    times[-1] = problem.t_end
    return np.concatenate([[0.0], times])


_REFERENCES: dict[str, np.ndarray] = {}


def reference(problem: Problem) -> np.ndarray:
    """[T, D] scipy Radau at rtol 1e-12 at `output_times`, restarted at each of them (so that
    each is a step end, not a point of the dense output)."""
    if problem.name not in _REFERENCES:
        times, scale = output_times(problem), np.asarray(problem.scale)
        ys = [np.asarray(problem.y0, dtype=float)]
        for t0, t1 in itertools.pairwise(times):
            ys.append(scipy.integrate.solve_ivp(problem.f, (t0, t1), ys[-1], method="Radau",
                                                rtol=1e-12, atol=1e-12 * scale).y[:, -1])
        _REFERENCES[problem.name] = np.stack(ys)
    return _REFERENCES[problem.name]


@dataclass
class Result:
    """One solve at `output_times`: errors at the final time and over the trajectory."""

    final: float
    trajectory: float
    fevals: int
    jacobians: int
    steps: int
    wall: float
    status: str = "ok"


def radau(problem: Problem, rtol: float) -> Result:
    scale = np.asarray(problem.scale)
    times = output_times(problem)
    start = time.perf_counter()
    sol = scipy.integrate.solve_ivp(problem.f, (0.0, problem.t_end), problem.y0,
                                    method="Radau", rtol=rtol, atol=rtol * scale,
                                    dense_output=True)
    wall = time.perf_counter() - start
    errors = [_error(y, ref, scale) for y, ref in zip(sol.sol(times).T, reference(problem))]
    return Result(errors[-1], max(errors), sol.nfev, sol.njev, len(sol.t) - 1, wall)


def max_norm(scaled_error: torch.Tensor) -> torch.Tensor:
    """The largest scaled error component (MATLAB's ode suite's norm), in place of the RMS."""
    return scaled_error.abs().amax()


def run_tidal(problem: Problem, solver: tidal.solvers.StepMethod, rtol: float,
              max_steps: int = 100_000, norm: Callable | None = None) -> Result:
    scale = np.asarray(problem.scale)
    controller = tidal.PIDController(rtol, rtol * torch.tensor(scale), norm=norm)
    start = time.perf_counter()
    sol = tidal.solve(problem.f, torch.tensor(problem.y0),
                      torch.tensor(output_times(problem)), solver=solver,
                      controller=controller, max_steps=max_steps, throw=False)
    wall = time.perf_counter() - start
    s = sol.stats
    counts = (int(s.num_fevals), int(s.num_jacobians), int(s.num_accepted), wall)
    if not sol.status.ok:
        return Result(math.nan, math.nan, *counts, status=sol.status.name)
    errors = [_error(y, ref, scale) for y, ref in zip(sol.ys.numpy(), reference(problem))]
    return Result(errors[-1], max(errors), *counts)


def _row(problem: Problem, method: str, result: Result, base: Result, *extra: str) -> str:
    """A table row: errors and f calls with their ratios to `base` (scipy Radau's)."""
    if result.status != "ok":
        errors = f"{result.status} | - | - | -"
    else:
        errors = (f"{result.final:.1e} | {result.final / base.final:.1f} | "
                  f"{result.trajectory:.1e} | {result.trajectory / base.trajectory:.1f}")
    return (f"| {problem.name} | {method} | {' | '.join(extra)}{' | ' if extra else ''}"
            f"{errors} | {result.fevals} | {result.fevals / base.fevals:.2f}")


def run(problem: Problem) -> list[str]:
    base = radau(problem, RTOL)
    rows = [_row(problem, "scipy Radau", base, base)
            + f" | {base.jacobians} | {base.steps} | {base.wall:.2f} s |"]
    for solver in (tidal.Rodas5P(), tidal.Rodas5P(tolerance_calibration=4.0), tidal.Rodas4P(),
                   tidal.Tsit5()):
        result = run_tidal(problem, solver, RTOL, 20_000 if solver.name == "tsit5" else 100_000)
        calibrated = getattr(solver, "tolerance_calibration", 1.0)
        name = solver.name + (f" (c = {calibrated:g})" if calibrated != 1 else "")
        rows.append(_row(problem, name, result, base)
                    + f" | {result.jacobians} | {result.steps} | {result.wall:.2f} s |")
    return rows


def batch(size: int = 1024, t_end: float = 1e5) -> None:
    """One batched Rodas5P solve of `size` ROBER samples against a loop of scipy Radau."""
    factors = np.exp(np.random.default_rng(1).uniform(np.log(0.5), np.log(2.0), (size, 3)))
    rates = np.array([0.04, 3e7, 1e4]) * factors
    scale = np.array([1.0, 1e-5, 1.0])
    k = torch.tensor(rates)

    def field(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k[:, 0] * y1 + k[:, 2] * y2 * y3,
                            k[:, 0] * y1 - k[:, 2] * y2 * y3 - k[:, 1] * y2 ** 2,
                            k[:, 1] * y2 ** 2], -1)

    def numpy_field(rate):
        return lambda t, y: [-rate[0] * y[0] + rate[2] * y[1] * y[2],
                             rate[0] * y[0] - rate[2] * y[1] * y[2] - rate[1] * y[1] ** 2,
                             rate[1] * y[1] ** 2]

    y0 = torch.tensor([1.0, 0.0, 0.0]).expand(size, 3)
    ts = torch.tensor([0.0, t_end])[:, None].expand(2, size)
    controller = tidal.PIDController(RTOL, RTOL * torch.tensor(scale))
    start = time.perf_counter()
    sol = tidal.solve(field, y0, ts, solver=tidal.Rodas5P(), controller=controller)
    tidal_wall = time.perf_counter() - start
    start = time.perf_counter()
    radau = [scipy.integrate.solve_ivp(numpy_field(r), (0.0, t_end), [1.0, 0.0, 0.0],
                                       method="Radau", rtol=RTOL, atol=RTOL * scale).y[:, -1]
             for r in rates]
    scipy_wall = time.perf_counter() - start
    check = range(0, size, size // 16)  # references for 16 samples
    references = {b: scipy.integrate.solve_ivp(
        numpy_field(rates[b]), (0.0, t_end), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10,
        atol=1e-10 * scale).y[:, -1] for b in check}
    tidal_error = max(_error(sol.ys[-1, b].numpy(), references[b], scale) for b in check)
    scipy_error = max(_error(radau[b], references[b], scale) for b in check)
    steps = sol.stats.num_accepted
    print(f"ROBER to {t_end:g}, {size} samples, rates x [0.5, 2], rtol {RTOL}, one thread\n")
    print("| method | wall | per sample | largest error (16 samples vs Radau 1e-10) |")
    print("|---|---|---|---|")
    print(f"| tidal Rodas5P, one batched solve | {tidal_wall:.2f} s | "
          f"{1e3 * tidal_wall / size:.2f} ms | {tidal_error:.1e} |")
    print(f"| scipy Radau, Python loop | {scipy_wall:.2f} s | {1e3 * scipy_wall / size:.2f} ms"
          f" | {scipy_error:.1e} |")
    print(f"\nratio scipy / tidal: {scipy_wall / tidal_wall:.1f}; tidal accepted steps per "
          f"sample {int(steps.min())}..{int(steps.max())}, loop iterations "
          f"{int(sol.stats.num_steps.max())}")


def lorenz(t, y):
    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return _stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z], y)


def _mlp_field() -> Callable:
    """A fixed random tanh network (16 -> 64 -> 16) as a non-stiff neural vector field."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 16))
    with torch.no_grad():
        net[2].weight.mul_(0.3)
    return lambda t, y: net(y)


def auto() -> None:
    """tidal.Auto on non-stiff problems (against Tsit5) and stiff ones (against Rodas5P)."""
    print(f"rtol {RTOL}, atol = rtol x scale; CPU time, median of 9 interleaved runs "
          "(non-stiff)\n")
    print("| problem | method | error | f calls | Jacobians | switches | steps | CPU time |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [Problem("vdp mu=1", lambda t, y: van_der_pol(t, y, 1.0), [2.0, 0.0], 20.0,
                     [1.0, 1.0]),
             Problem("lorenz", lorenz, [1.0, 1.0, 1.0], 10.0, [10.0, 10.0, 10.0]),
             Problem("MLP, batch 1024 x 16", _mlp_field(),
                     torch.randn(1024, 16, generator=torch.Generator().manual_seed(1)).tolist(),
                     100.0, [1.0]),
             *(p for p in PROBLEMS if p.name in ("rober", "vdp", "hires"))]
    for problem in cases:
        scale = np.asarray(problem.scale)
        reference = (np.full(1, np.nan) if problem.name.startswith("MLP") else
                     scipy.integrate.solve_ivp(problem.f, (0.0, problem.t_end), problem.y0,
                                               method="Radau", rtol=1e-12,
                                               atol=1e-12 * scale).y[:, -1])
        stiff = problem in PROBLEMS
        methods = (tidal.Rodas5P(), tidal.Auto()) if stiff else (tidal.Tsit5(), tidal.Auto())
        walls: dict[str, list[float]] = {}
        solutions = {}
        for _ in range(1 if stiff else 9):
            for solver in methods:
                controller = tidal.PIDController(RTOL, RTOL * torch.tensor(scale))
                start = time.process_time()
                with torch.no_grad():
                    solutions[solver.name] = tidal.solve(
                        problem.f, torch.tensor(problem.y0), torch.tensor([0.0, problem.t_end]),
                        solver=solver, controller=controller, max_steps=100_000)
                walls.setdefault(solver.name, []).append(time.process_time() - start)
        median = {name: float(np.median(times)) for name, times in walls.items()}
        for name, sol in solutions.items():
            s = sol.stats
            error = (_error(sol.ys[-1].numpy(), reference, scale) if reference.size > 1
                     else math.nan)  # no reference for the network
            print(f"| {problem.name} | {name} | {error:.1e} | {int(s.num_fevals)} | "
                  f"{int(s.num_jacobians)} | {int(s.num_switches)} | {int(s.num_accepted)} | "
                  f"{median[name]:.3f} s |", flush=True)
        if not stiff:
            print(f"| | auto / tsit5 CPU time | | | | | | {median['auto'] / median['tsit5']:.3f} |")


GRAD_TS = [0.0, 1e-3, 1e-1, 1.0, 10.0]
GRAD_WEIGHTS = np.array([1.0, 2.0, 3.0])
ROBER_SCALE = np.array([1.0, 1e-5, 1.0])


def _grad_loss(log_rates: torch.Tensor, use_jac: bool, adjoint) -> torch.Tensor:
    k1, k2, k3 = (torch.tensor([0.04, 3e7, 1e4]) * torch.exp(log_rates)).unbind()

    def field(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2,
                            k2 * y2 ** 2], -1)

    def jac(t, y):
        y1, y2, y3 = y.unbind(-1)
        zero = torch.zeros_like(y1)
        return torch.stack([torch.stack([zero - k1, k3 * y3, k3 * y2], -1),
                            torch.stack([zero + k1, -k3 * y3 - 2 * k2 * y2, -k3 * y2], -1),
                            torch.stack([zero, 2 * k2 * y2, zero], -1)], -2)

    sol = tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor(GRAD_TS),
                      solver=tidal.Rodas5P(jac=jac if use_jac else None), adjoint=adjoint,
                      controller=tidal.PIDController(RTOL, RTOL * torch.tensor(ROBER_SCALE)))
    return ((sol.ys[1:] / torch.tensor(ROBER_SCALE)) * torch.tensor(GRAD_WEIGHTS)).sum()


def _radau_grad_loss(log_rates: np.ndarray) -> float:
    k1, k2, k3 = np.array([0.04, 3e7, 1e4]) * np.exp(log_rates)
    ys = scipy.integrate.solve_ivp(
        lambda t, y: [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k3 * y[1] * y[2]
                      - k2 * y[1] ** 2, k2 * y[1] ** 2], (0.0, GRAD_TS[-1]), [1.0, 0.0, 0.0],
        method="Radau", rtol=1e-12, atol=1e-14, t_eval=GRAD_TS[1:]).y.T
    return float(((ys / ROBER_SCALE) * GRAD_WEIGHTS).sum())


def grad() -> None:
    """Gradient accuracy and backward cost on ROBER (see the module docstring)."""
    eps = 1e-5
    reference = np.array([(_radau_grad_loss(eps * e) - _radau_grad_loss(-eps * e)) / (2 * eps)
                          for e in np.eye(3)])
    print(f"ROBER on [0, 10], Rodas5P at rtol {RTOL}; reference: central differences "
          f"(eps {eps}) of Radau at rtol 1e-12\n")
    print("| adjoint | Jacobian | relative error | forward | backward | backward / forward |")
    print("|---|---|---|---|---|---|")
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(4)):
        for use_jac in (False, True):
            p = torch.zeros(3, requires_grad=True)
            start = time.perf_counter()
            loss = _grad_loss(p, use_jac, adjoint)
            forward = time.perf_counter() - start
            start = time.perf_counter()
            (g,) = torch.autograd.grad(loss, p)
            backward = time.perf_counter() - start
            error = np.abs(g.numpy() - reference).max() / np.abs(reference).max()
            print(f"| {adjoint.name} | {'jac=' if use_jac else 'autodiff'} | {error:.1e} | "
                  f"{forward:.2f} s | {backward:.2f} s | {backward / forward:.1f} |", flush=True)


CALIBRATIONS = (1.0, 2.0, 3.0, 4.0, 6.0)
ROSENBROCKS = {cls.name: cls for cls in (tidal.Rodas5P, tidal.Rodas4P, tidal.Rosenbrock23)}


def calibration(method: str, rtols: list[float], norm: Callable | None = None,
                calibrations: tuple[float, ...] = CALIBRATIONS) -> None:
    """`method` with each of `calibrations` against scipy Radau at each rtol (module
    docstring); `norm` replaces the RMS error norm."""
    cls = ROSENBROCKS[method]
    print(f"{method} (default calibration {cls.default_calibration:g}), "
          f"{'RMS' if norm is None else norm.__name__} error norm; errors vs Radau at "
          "rtol 1e-12, ratios against scipy Radau at the same rtol\n")
    print("| problem | method | rtol | c | error | / Radau's | error over the trajectory | "
          "/ Radau's | f calls | / Radau's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rtol in rtols:
        for problem in PROBLEMS:
            base = radau(problem, rtol)
            print(_row(problem, "scipy Radau", base, base, f"{rtol:g}", "-") + " |", flush=True)
            for c in calibrations:
                result = run_tidal(problem, cls(tolerance_calibration=c), rtol, norm=norm)
                print(_row(problem, method, result, base, f"{rtol:g}", f"{c:g}") + " |",
                      flush=True)


def rober_steps() -> None:
    """ROBER on [0, 100] at rtol = atol = 1e-8 (the acceptance item: at most 60 accepted
    steps): Rodas5P's accepted steps and final error against Radau at rtol 1e-12, for
    calibrations c with the RMS and the max norm."""
    y0, ts = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 100.0])
    ref = scipy.integrate.solve_ivp(rober, (0.0, 100.0), y0.numpy(), method="Radau",
                                    rtol=1e-12, atol=1e-14).y[:, -1]
    print("| norm | c | accepted steps | f calls | max error at t = 100 |")
    print("|---|---|---|---|---|")
    for norm in (None, max_norm):
        for c in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
            sol = tidal.solve(rober, y0, ts, solver=tidal.Rodas5P(tolerance_calibration=c),
                              controller=tidal.PIDController(1e-8, 1e-8, norm=norm))
            error = float(np.max(np.abs(sol.ys[-1].numpy() - ref)))
            print(f"| {'RMS' if norm is None else 'max'} | {c:g} | "
                  f"{int(sol.stats.num_accepted)} | {int(sol.stats.num_fevals)} | "
                  f"{error:.1e} |", flush=True)


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    if sys.argv[1:] == ["batch"]:
        batch()
        return
    if sys.argv[1:] == ["auto"]:
        auto()
        return
    if sys.argv[1:2] == ["calibration"]:
        calibration(sys.argv[2], [float(rtol) for rtol in sys.argv[3:]] or [RTOL])
        return
    if sys.argv[1:2] == ["max-norm"]:  # Rodas5P with the max norm (eleventh session)
        calibration("rodas5p", [float(rtol) for rtol in sys.argv[2:]] or [RTOL],
                    norm=max_norm, calibrations=(1.0, 1.5, 2.0, 3.0))
        return
    if sys.argv[1:] == ["rober-steps"]:
        rober_steps()
        return
    if sys.argv[1:] == ["grad"]:
        grad()
        return
    chosen = sys.argv[1:] or [p.name for p in PROBLEMS]
    print(f"rtol {RTOL}, atol = rtol x scale; errors vs Radau at rtol 1e-12, ratios against "
          "scipy Radau\n")
    print("| problem | method | error | / Radau's | error over the trajectory | / Radau's | "
          "f calls | / Radau's | Jacobians | steps | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for problem in PROBLEMS:
        if problem.name in chosen:
            for row in run(problem):
                print(row, flush=True)


if __name__ == "__main__":
    main()
