"""Accuracy of `tidal.solve` against references computed without tidal.

* Analytic solutions (exponential decay, harmonic oscillator, a linear system y' = A y with
  exact `expm(A t) y0`) for every solver, float32 and float64, forward and reverse time:
  adaptive solvers at a fixed tolerance, fixed-step solvers with a step size whose error bound
  follows the method's order.
* Tolerance proportionality: the error of the adaptive solvers falls as rtol falls.
* Nonlinear problems (Van der Pol, Lorenz, Lotka–Volterra) against scipy's DOP853 at
  rtol=1e-13, and a Kepler orbit against its exact solution from Kepler's equation (compared
  with what scipy's own RK23 / RK45 / DOP853 reach at the same tolerances).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import scipy.integrate
import torch

import tidal
from solver_db import ADAPTIVE_DB, GENERAL_DB, SolverInfo
from tidal.solvers.implicit_solver import ImplicitRungeKutta

F64 = torch.float64
F32 = torch.float32

# ---------------------------------------------------------------------------------------------
# Analytic problems. `exact` takes float64 times [T] and returns float64 states [T, D]; `f` works
# in the state's dtype.

DECAY_K = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
DECAY_Y0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
OMEGA = 1.5
_gen = torch.Generator().manual_seed(1234)
A = 0.5 * torch.randn(4, 4, generator=_gen, dtype=F64)
Y0_LINEAR = torch.randn(4, generator=_gen, dtype=F64)


@dataclass(frozen=True)
class Analytic:
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    exact: Callable[[torch.Tensor], torch.Tensor]
    t_end: float


def _oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -OMEGA**2 * y[0]])


ANALYTIC = {
    "decay": Analytic(
        f=lambda t, y: -DECAY_K.to(y.dtype) * y,
        exact=lambda t: DECAY_Y0 * torch.exp(-DECAY_K * t[:, None]),
        t_end=1.0,
    ),
    "oscillator": Analytic(
        f=_oscillator,
        exact=lambda t: torch.stack([torch.cos(OMEGA * t), -OMEGA * torch.sin(OMEGA * t)], -1),
        t_end=2.0,
    ),
    "linear": Analytic(
        f=lambda t, y: A.to(y.dtype) @ y,
        exact=lambda t: torch.linalg.matrix_exp(A * t[:, None, None]) @ Y0_LINEAR,
        t_end=1.0,
    ),
}

# Adaptive: tolerances, and the error allowed as a multiple of rtol (the global error of a
# well-behaved pair is a small multiple of rtol).
RTOL = {F64: 1e-8, F32: 1e-5}
# HeunEuler's error estimate is first order, so its steps scale like rtol^(1/2): at rtol=1e-8
# it takes 6,000 to 23,000 steps per problem here (up to 8 s each). It runs at rtol=1e-6.
# Rosenbrock23 is a method for loose tolerances: its order-2 solution under per-step error
# control has a global error growing like rtol^(2/3) (41x rtol on the oscillator at 1e-5,
# 86x at 1e-6), and at rtol=1e-8 it would take thousands of steps.
RTOL_OVERRIDE_F64 = {"adaptive_heun": 1e-6, "rosenbrock23": 1e-5}
ERROR_PER_RTOL = 10.0
# Fehlberg2 propagates the second-order solution but its error estimate belongs to the
# first-order one, whose error constant is tiny (1/512): the estimate undershoots the actual
# error by a factor of several hundred, as in torchdiffeq's `fehlberg2`.
ERROR_PER_RTOL_OVERRIDE = {"fehlberg2": 1000.0, "rosenbrock23": 100.0}
FLOAT32_FLOOR = 1e-4  # float32 errors below this are not asked for

# Fixed steps: dt per order, error allowed = FIXED_CONSTANT * dt^order.
#: Newton methods of order <= 2 take 10x the explicit methods' step here (their bound scales
#: with it): a Jacobian and an LU per step make the fine steps cost minutes of the suite, and
#: their fine-step accuracy is covered by tests/test_implicit_solve.py and test_implicit.py.
NEWTON_COARSENING = 10.0


def _fixed_dt(info: SolverInfo) -> float:
    newton = issubclass(info.cls, ImplicitRungeKutta) and info.order <= 2
    return FIXED_DT[info.order] * (NEWTON_COARSENING if newton else 1.0)


FIXED_DT = {1: 1e-3, 2: 2e-3, 3: 1e-2, 4: 2e-2, 5: 5e-2, 6: 1e-1}
FIXED_CONSTANT = 10.0


def _setup(info: SolverInfo, dtype: torch.dtype) -> tuple[object, float]:
    """(controller, allowed max-abs error) for a solver and dtype."""
    if info.adaptive:
        rtol = RTOL[dtype]
        if dtype == F64:
            rtol = RTOL_OVERRIDE_F64.get(info.id, rtol)
        bound = ERROR_PER_RTOL_OVERRIDE.get(info.id, ERROR_PER_RTOL) * rtol
        controller = tidal.PIDController(rtol=rtol, atol=rtol * 1e-2)
    else:
        dt = _fixed_dt(info)
        bound = FIXED_CONSTANT * dt**info.order
        controller = tidal.ConstantStepSize(dt)
    if dtype == F32:
        bound = max(bound, FLOAT32_FLOOR)
    return controller, bound


def test_linear_system_is_modest() -> None:
    eigenvalues = torch.linalg.eigvals(A)
    assert eigenvalues.real.abs().max() < 1.0
    assert eigenvalues.abs().max() > 0.2


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("problem_name", sorted(ANALYTIC))
@pytest.mark.parametrize("info", GENERAL_DB, ids=lambda i: i.id)
def test_analytic(info: SolverInfo, problem_name: str, dtype: torch.dtype,
                  reverse: bool) -> None:
    problem = ANALYTIC[problem_name]
    ts = torch.linspace(0.0, problem.t_end, 6, dtype=F64)
    if reverse:  # start from the exact state at t_end and integrate back to 0
        ts = ts.flip(0)
    exact = problem.exact(ts)
    controller, bound = _setup(info, dtype)
    sol = tidal.solve(problem.f, exact[0].to(dtype), ts, solver=info.cls(),
                      controller=controller, max_steps=100_000)
    assert sol.status == tidal.Status.SUCCESS
    assert sol.ys.dtype == dtype
    assert sol.ys.shape == exact.shape
    assert torch.equal(sol.ys[0], exact[0].to(dtype))
    error = float((sol.ys.double() - exact).abs().max())
    assert error < bound, (error, bound)


# ---------------------------------------------------------------------------------------------
# Tolerance proportionality.

SWEEP_PROBLEMS = {
    # Long enough that the higher-order pairs take a few dozen steps even at rtol=1e-4.
    "oscillator": Analytic(f=_oscillator, exact=ANALYTIC["oscillator"].exact,
                           t_end=2 * math.pi),
    "linear": Analytic(f=ANALYTIC["linear"].f, exact=ANALYTIC["linear"].exact, t_end=4.0),
}
# The low-order pairs on the cheaper linear problem; HeunEuler one decade looser (see above).
SWEEP = {
    "adaptive_heun": ("linear", (1e-3, 1e-5, 1e-7)),
    "fehlberg2": ("linear", (1e-4, 1e-6, 1e-8)),
    "rosenbrock23": ("linear", (1e-2, 1e-4, 1e-6)),
}
SWEEP_DEFAULT = ("oscillator", (1e-4, 1e-6, 1e-8))


@pytest.mark.parametrize("info", ADAPTIVE_DB, ids=lambda i: i.id)
def test_error_falls_with_rtol(info: SolverInfo) -> None:
    problem_name, rtols = SWEEP.get(info.id, SWEEP_DEFAULT)
    problem = SWEEP_PROBLEMS[problem_name]
    ts = torch.linspace(0.0, problem.t_end, 9, dtype=F64)
    exact = problem.exact(ts)
    errors, steps = [], []
    for rtol in rtols:
        sol = tidal.solve(problem.f, exact[0], ts, solver=info.cls(),
                          controller=tidal.PIDController(rtol=rtol, atol=rtol * 1e-2),
                          max_steps=100_000)
        errors.append(float((sol.ys - exact).abs().max()))
        steps.append(sol.stats.num_steps)
    # Each 100x tighter rtol must buy at least 10x (ideally ~100x) smaller errors, with more
    # steps, and the error must stay proportionate to the tolerance.
    for (e_loose, e_tight), (n_loose, n_tight) in zip(itertools.pairwise(errors),
                                                      itertools.pairwise(steps)):
        assert e_tight * 10 < e_loose, errors
        assert n_tight > n_loose, steps
    # Errors accumulate over the longer span, hence a larger factor than in test_analytic.
    factor = 5 * ERROR_PER_RTOL_OVERRIDE.get(info.id, ERROR_PER_RTOL)
    assert all(e < factor * r for e, r in zip(errors, rtols)), (errors, rtols)


# ---------------------------------------------------------------------------------------------
# Nonlinear problems against a tight scipy DOP853 reference.


def _van_der_pol(t, y):
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def _lorenz(t, y):
    return torch.stack([10.0 * (y[1] - y[0]), y[0] * (28.0 - y[2]) - y[1],
                        y[0] * y[1] - 8.0 / 3.0 * y[2]])


def _lotka_volterra(t, y):
    return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _np_van_der_pol(t, y):
    return np.array([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def _np_lorenz(t, y):
    return np.array([10.0 * (y[1] - y[0]), y[0] * (28.0 - y[2]) - y[1],
                     y[0] * y[1] - 8.0 / 3.0 * y[2]])


def _np_lotka_volterra(t, y):
    return np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


# name -> (torch f, numpy f, y0, t_end)
NONLINEAR = {
    "van_der_pol": (_van_der_pol, _np_van_der_pol, [2.0, 0.0], 10.0),
    "lorenz": (_lorenz, _np_lorenz, [1.0, 1.0, 1.0], 2.0),
    "lotka_volterra": (_lotka_volterra, _np_lotka_volterra, [10.0, 5.0], 10.0),
}
HIGH_ORDER = [info for info in ADAPTIVE_DB if info.id in ("bosh3", "dopri5", "tsit5", "dopri8")]
NONLINEAR_RTOL, NONLINEAR_ATOL = 1e-8, 1e-10
RELATIVE_BOUND = 1e-6


@cache
def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts, ys [T, D]) from scipy DOP853 at rtol=1e-13, atol=1e-14."""
    _, f_np, y0, t_end = NONLINEAR[name]
    ts = np.linspace(0.0, t_end, 21)
    ref = scipy.integrate.solve_ivp(f_np, (0.0, t_end), y0, method="DOP853", rtol=1e-13,
                                    atol=1e-14, t_eval=ts)
    assert ref.success
    return ts, ref.y.T


@pytest.mark.parametrize("name", sorted(NONLINEAR))
def test_reference_is_converged(name: str) -> None:
    """The DOP853 reference is far more accurate than the bound it checks: loosening its
    tolerance 100x moves it by much less than RELATIVE_BOUND."""
    _, f_np, y0, t_end = NONLINEAR[name]
    ts, ref = _reference(name)
    looser = scipy.integrate.solve_ivp(f_np, (0.0, t_end), y0, method="DOP853", rtol=1e-11,
                                       atol=1e-12, t_eval=ts)
    scale = np.abs(ref).max(0)
    assert (np.abs(looser.y.T - ref) / scale).max() < 1e-3 * RELATIVE_BOUND


@pytest.mark.parametrize("name", sorted(NONLINEAR))
@pytest.mark.parametrize("info", HIGH_ORDER, ids=lambda i: i.id)
def test_nonlinear_against_scipy(info: SolverInfo, name: str) -> None:
    f, _, y0, _ = NONLINEAR[name]
    ts, ref = _reference(name)
    sol = tidal.solve(f, torch.tensor(y0, dtype=F64), torch.from_numpy(ts), solver=info.cls(),
                      controller=tidal.PIDController(rtol=NONLINEAR_RTOL, atol=NONLINEAR_ATOL),
                      max_steps=100_000)
    assert sol.status == tidal.Status.SUCCESS
    scale = np.abs(ref).max(0)  # each component's size over the trajectory
    relative = (np.abs(sol.ys.numpy() - ref) / scale).max()
    assert relative < RELATIVE_BOUND, relative


# ---------------------------------------------------------------------------------------------
# Kepler orbit, eccentricity 0.5 (GM = 1, semi-major axis 1, period 2 pi), from pericenter.

ECCENTRICITY = 0.5
KEPLER_T_END = 4 * math.pi  # two periods
SCIPY_TWIN = {"bosh3": "RK23", "dopri5": "RK45", "tsit5": "RK45", "dopri8": "DOP853"}


def kepler_exact(t: np.ndarray, e: float = ECCENTRICITY) -> np.ndarray:
    """[x, y, vx, vy] at times t, by Newton's method on Kepler's equation M = E - e sin E."""
    mean_anomaly = np.asarray(t, dtype=np.float64)
    ecc_anomaly = mean_anomaly + e * np.sin(mean_anomaly)
    for _ in range(50):
        step = (ecc_anomaly - e * np.sin(ecc_anomaly) - mean_anomaly) / (
            1 - e * np.cos(ecc_anomaly))
        ecc_anomaly = ecc_anomaly - step
        if np.abs(step).max() < 1e-15:
            break
    residual = ecc_anomaly - e * np.sin(ecc_anomaly) - mean_anomaly
    assert np.abs(residual).max() < 1e-13
    c, s = np.cos(ecc_anomaly), np.sin(ecc_anomaly)
    b = math.sqrt(1 - e * e)
    denominator = 1 - e * c
    return np.stack([c - e, b * s, -s / denominator, b * c / denominator], -1)


def _kepler(t, y):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])


def _np_kepler(t, y):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return np.array([y[2], y[3], -y[0] / r3, -y[1] / r3])


def test_kepler_exact_solution() -> None:
    """The exact solution itself: pericenter at t = 0 and 2 pi, apocenter at pi, conserved
    energy -1/2 and angular momentum sqrt(1 - e^2), and it satisfies the ODE."""
    ts = np.linspace(0.0, KEPLER_T_END, 101)
    states = kepler_exact(ts)
    np.testing.assert_allclose(kepler_exact(np.array([0.0, 2 * math.pi]))[:, :2],
                               [[0.5, 0.0], [0.5, 0.0]], atol=1e-14)
    np.testing.assert_allclose(kepler_exact(np.array([math.pi]))[0, :2], [-1.5, 0.0],
                               atol=1e-14)
    x, y, vx, vy = states.T
    energy = 0.5 * (vx**2 + vy**2) - 1 / np.hypot(x, y)
    np.testing.assert_allclose(energy, -0.5, atol=1e-14)
    np.testing.assert_allclose(x * vy - y * vx, math.sqrt(1 - ECCENTRICITY**2), atol=1e-14)
    h = 1e-5
    derivative = (kepler_exact(ts + h) - kepler_exact(ts - h)) / (2 * h)
    rhs = np.array([_np_kepler(0.0, s) for s in states])
    np.testing.assert_allclose(derivative, rhs, atol=1e-8)


@pytest.mark.parametrize("info", HIGH_ORDER, ids=lambda i: i.id)
def test_kepler_orbit(info: SolverInfo) -> None:
    ts = np.linspace(0.0, KEPLER_T_END, 25)
    exact = kepler_exact(ts)
    scale = np.abs(exact).max(0)
    sol = tidal.solve(_kepler, torch.from_numpy(exact[0].copy()), torch.from_numpy(ts),
                      solver=info.cls(),
                      controller=tidal.PIDController(rtol=NONLINEAR_RTOL, atol=NONLINEAR_ATOL),
                      max_steps=100_000)
    assert sol.status == tidal.Status.SUCCESS
    error = (np.abs(sol.ys.numpy() - exact) / scale).max()
    twin = scipy.integrate.solve_ivp(_np_kepler, (0.0, KEPLER_T_END), exact[0],
                                     method=SCIPY_TWIN[info.id], rtol=NONLINEAR_RTOL,
                                     atol=NONLINEAR_ATOL, t_eval=ts)
    scipy_error = (np.abs(twin.y.T - exact) / scale).max()
    bound = max(RELATIVE_BOUND, 10 * scipy_error)
    assert error < bound, (error, scipy_error)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_non_contiguous_initial_state(per_sample: bool) -> None:
    """A transposed y0 (a view with swapped strides) solves like any other: y = y0 e^{-t}."""
    y0 = torch.arange(12, dtype=torch.float64).reshape(3, 4).t()
    assert not y0.is_contiguous()
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    if per_sample:
        ts = ts[:, None].expand(5, 4).contiguous()
    solution = tidal.solve(lambda t, y: -y, y0, ts, controller=tidal.PIDController(1e-10, 1e-12))
    exact = y0 * math.exp(-1.0)
    torch.testing.assert_close(solution.ys[-1], exact, rtol=1e-8, atol=1e-10)
