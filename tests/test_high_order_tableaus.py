"""The 5th- and 8th-order tableaus (Dopri5, Tsit5, Dopri8) checked on their own.

Independent of tidal's solver loop: a constant-step NumPy Runge–Kutta stepper written here reads
c/a/b/b_error/dense/c_extra/a_extra straight from each tableau. Checks:

* algebraic order conditions over all rooted trees (Butcher series, so nonlinear problems are
  covered exactly), for the propagated weights, the embedded weights and the dense-output
  polynomials, and that each is no better than its stated order;
* global convergence slopes of the propagated and embedded solutions, and local-error slopes of
  the interpolant inside one step, on a random linear system (exact solution by `expm`);
* the interpolant's endpoints on that system and on a nonlinear non-autonomous equation;
* agreement with scipy's RK45 / DOP853 coefficients and with scipy's nested DOP853 interpolant;
* DOP853's combination of its two error norms.

Run with `pytest -s` to see the measured slopes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate._ivp import dop853_coefficients
from scipy.integrate._ivp.rk import RK45

from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.dopri8 import Dopri8
from tidal.solvers.tableau import ButcherTableau
from tidal.solvers.tsit5 import Tsit5

METHODS = [Dopri5(), Tsit5(), Dopri8()]
IDS = [m.name for m in METHODS]
THETAS = (0.13, 0.5, 0.77)

# ---------------------------------------------------------------------------------------------
# Rooted trees and order conditions.
# A tree is the sorted tuple of its children's trees; the one-node tree is ().


@cache
def trees_of_order(n: int) -> tuple[tuple, ...]:
    if n == 1:
        return ((),)

    def grow(t: tuple):
        yield tuple(sorted((*t, ())))
        for i, child in enumerate(t):
            for g in grow(child):
                yield tuple(sorted((*t[:i], g, *t[i + 1:])))

    return tuple(sorted({g for t in trees_of_order(n - 1) for g in grow(t)}))


def tree_order(t: tuple) -> int:
    return 1 + sum(tree_order(ch) for ch in t)


def tree_density(t: tuple) -> int:
    return tree_order(t) * math.prod(tree_density(ch) for ch in t)


def stage_weights(t: tuple, A: np.ndarray) -> np.ndarray:
    """g(t) with b . g(t) the elementary weight: g(leaf) = 1, g([t1..tm]) = prod_j A g(t_j)."""
    g = np.ones(A.shape[0])
    for ch in t:
        g = g * (A @ stage_weights(ch, A))
    return g


def stage_matrix(tab: ButcherTableau, dense: bool = False) -> np.ndarray:
    """Full (strictly lower) coefficient matrix of the stages, or of all dense stages."""
    rows = [list(r) for r in tab.a]
    if dense:
        if not tab.fsal:
            rows.append(list(tab.b))  # f(t1, y1)
        rows += [list(r) for r in tab.a_extra]
    n = len(rows)
    A = np.zeros((n, n))
    for i, r in enumerate(rows):
        A[i, : len(r)] = r
    return A


def condition_residuals(weights: np.ndarray, A: np.ndarray, order: int) -> dict[int, float]:
    """Worst relative residual of b . g(t) = 1/gamma(t) over the trees of each order."""
    out = {}
    for n in range(1, order + 1):
        worst = 0.0
        for t in trees_of_order(n):
            g = stage_weights(t, A)
            scale = max(1.0, float(np.abs(weights) @ np.abs(g)))
            worst = max(worst, abs(float(weights @ g) - 1.0 / tree_density(t)) / scale)
        out[n] = worst
    return out


def test_tree_counts():
    assert [len(trees_of_order(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def embedded(tab: ButcherTableau) -> list[tuple[np.ndarray, int]]:
    """(b_hat, order) for each error row; DOP853's rows are its order-5 and order-3 formulas."""
    b = np.array(tab.b)
    orders = [5, 3] if len(tab.b_error) == 2 else [tab.error_order]
    return [(b - np.array(e), q) for e, q in zip(tab.b_error, orders, strict=True)]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_order_conditions(method: ExplicitRungeKutta):
    tab = method.tableau
    A = stage_matrix(tab)
    cases = [(np.array(tab.b), tab.order), *embedded(tab)]
    for weights, p in cases:
        res = condition_residuals(weights, A, p + 1)
        assert all(res[n] < 1e-13 for n in range(1, p + 1)), res
        assert res[p + 1] > 1e-6, f"order is higher than {p}: {res}"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_dense_order_conditions(method: ExplicitRungeKutta):
    """w(theta) . g(t) = theta^|t| / gamma(t) as polynomials, for |t| <= dense_order."""
    tab = method.tableau
    A = stage_matrix(tab, dense=True)
    W = np.array(tab.dense_weights())  # [dense stage, power - 1]
    p = tab.dense_order
    worst = {}
    for n in range(1, p + 2):
        worst[n] = 0.0
        for t in trees_of_order(n):
            g = stage_weights(t, A)
            got = W.T @ g  # coefficients of theta^1..theta^P
            want = np.zeros(W.shape[1])
            if n <= W.shape[1]:
                want[n - 1] = 1.0 / tree_density(t)
            scale = max(1.0, float(np.abs(W).T.sum(axis=0) @ np.abs(g)))
            worst[n] = max(worst[n], float(np.max(np.abs(got - want))) / scale)
    assert all(worst[n] < 1e-13 for n in range(1, p + 1)), worst
    assert worst[p + 1] > 1e-6, f"interpolant order is higher than {p}: {worst}"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_tableau_structure(method: ExplicitRungeKutta):
    tab = method.tableau
    assert tab.fsal is (not isinstance(method, Dopri8))
    assert tab.adaptive and tab.dense is not None
    assert (tab.order, tab.error_order) == ((8, 7) if isinstance(method, Dopri8) else (5, 4))
    assert tab.dense_order == (7 if isinstance(method, Dopri8) else 4)
    assert len(tab.b_error) == (2 if isinstance(method, Dopri8) else 1)
    # w(1) = b (and 0 for the extra dense stages), w(0) = 0.
    b_full = list(tab.b) + [0.0] * (tab.num_dense_stages - tab.num_stages)
    for row, bi in zip(tab.dense, b_full, strict=True):
        assert abs(math.fsum(row) - bi) <= 1e-14 * max(1.0, sum(map(abs, row)))
        assert sum(w * 0.0 ** (k + 1) for k, w in enumerate(row)) == 0.0


# ---------------------------------------------------------------------------------------------
# A tiny constant-step stepper.

Rhs = Callable[[float, np.ndarray], np.ndarray]


def rk_stages(tab: ButcherTableau, f: Rhs, t0: float, y0: np.ndarray, h: float) -> list:
    K: list[np.ndarray] = []
    for ci, row in zip(tab.c, tab.a, strict=True):
        yi = y0 + h * sum((aij * kj for aij, kj in zip(row, K, strict=True)), np.zeros_like(y0))
        K.append(f(t0 + ci * h, yi))
    return K


def combine(weights, K, y0: np.ndarray, h: float) -> np.ndarray:
    return y0 + h * sum((w * k for w, k in zip(weights, K, strict=True)), np.zeros_like(y0))


def integrate(tab, weights, f: Rhs, y0, t0: float, t1: float, n: int) -> np.ndarray:
    h = (t1 - t0) / n
    y = y0
    for j in range(n):
        y = combine(weights, rk_stages(tab, f, t0 + j * h, y, h), y, h)
    return y


def dense_step(tab: ButcherTableau, f: Rhs, t0: float, y0, h: float):
    """One step; returns y1 and the interpolant theta -> y(t0 + theta h)."""
    K = rk_stages(tab, f, t0, y0, h)
    y1 = combine(tab.b, K, y0, h)
    if not tab.fsal:
        K.append(f(t0 + h, y1))
    for cr, row in zip(tab.c_extra, tab.a_extra, strict=True):
        K.append(f(t0 + cr * h, combine(row, K, y0, h)))
    W = np.array(tab.dense_weights())

    def interp(theta: float) -> np.ndarray:
        w = W @ theta ** np.arange(1, W.shape[1] + 1)
        return combine(w, K, y0, h)

    return y1, K, interp


def assert_endpoints(tab: ButcherTableau, interp, y0, y1, K, h: float) -> None:
    """interp(0) = y0 exactly; interp(1) = y1 up to the round-off of summing the expanded
    weights (coefficients of size up to ~550 for DOP853, cancelling to b_i)."""
    np.testing.assert_array_equal(interp(0.0), y0)
    coef = float(np.abs(np.array(tab.dense_weights())).sum())
    tol = 2 * np.finfo(float).eps * (coef * h * float(np.abs(np.array(K)).max())
                                     + float(np.abs(y1).max()))
    np.testing.assert_allclose(interp(1.0), y1, rtol=0.0, atol=tol)


# The linear test problem y' = M y on [0, 1]: a random 3x3 matrix, |eigenvalues| about 1.6-2.2.
_M = np.random.default_rng(1234).standard_normal((3, 3))
_Y0 = np.array([1.0, -0.5, 0.25])


def _linear() -> tuple:
    return (lambda t, y: _M @ y, lambda t: scipy.linalg.expm(_M * t) @ _Y0, 0.0, 1.0)


def _riccati() -> tuple:
    # y' = -2 t y^2, y(0) = 1: y = 1 / (1 + t^2). Nonlinear and non-autonomous.
    return (lambda t, y: -2.0 * t * y**2, lambda t: np.array([1.0 / (1.0 + t * t)]), 0.0, 1.0)


PROBLEMS = {"linear": _linear, "riccati": _riccati}


def test_eigenvalues_modest():
    assert 1.0 < np.max(np.abs(np.linalg.eigvals(_M))) < 3.0


def fitted_slope(hs, errs, floor: float, span: float = 3.0, need: int = 5) -> float:
    """Log-log slope of error against step size over the asymptotic range.

    That range is the smallest steps whose error is still above `floor` (well above round-off),
    up to `span` times the smallest such step. Fitting at larger steps instead would measure
    the pre-asymptotic regime: Tsit5 in particular is tuned for a small leading error term, so
    the next term dominates until the error is ~1e-11 (its apparent slope is then ~5.3-5.5).
    """
    above = [(h, e) for h, e in zip(hs, errs, strict=True) if e > floor]
    assert above, "no error above the round-off floor"
    h0 = min(h for h, _ in above)
    pts = [(h, e) for h, e in above if h <= span * h0 * (1 + 1e-9)]
    assert len(pts) >= need, f"too few usable points: {list(zip(hs, errs, strict=True))}"
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


GLOBAL_FLOOR = 1e-13  # global error at t = 1: round-off accumulates over up to ~100 steps
LOCAL_FLOOR = 1e-14  # interpolation error inside one step: round-off ~1e-16
STEP_COUNTS = sorted({round(2 * 1.1**j) for j in range(60)})  # 2 .. ~550 steps on [0, 1]
DENSE_STEPS = [0.9**j for j in range(90)]  # h from 1 down to ~1e-4


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_convergence_order(method: ExplicitRungeKutta):
    """Global error at t = 1 scales like h^order (propagated) and h^q (each embedded formula)."""
    tab = method.tableau
    f, exact, t0, t1 = _linear()
    y0, y_end = exact(t0), exact(t1)
    cases = [("b", np.array(tab.b), tab.order), *((f"b_hat{q}", w, q) for w, q in embedded(tab))]
    for label, weights, p in cases:
        hs, errs = [], []
        for n in STEP_COUNTS:
            hs.append((t1 - t0) / n)
            errs.append(float(np.max(np.abs(integrate(tab, weights, f, y0, t0, t1, n) - y_end))))
            if errs[-1] < 0.01 * GLOBAL_FLOOR:
                break
        slope = fitted_slope(hs, errs, GLOBAL_FLOOR)
        print(f"{method.name} {label}: slope {slope:.3f} (order {p})")
        assert abs(slope - p) < 0.3, (label, slope, p)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_dense_output_order(method: ExplicitRungeKutta):
    """Inside one step from the exact y0, the interpolant's error scales like h^(dense_order+1)."""
    tab = method.tableau
    f, exact, _, _ = _linear()
    t0 = 0.3
    y0 = exact(t0)
    hs: list[float] = []
    errs: dict[float, list[float]] = {th: [] for th in THETAS}
    for h in DENSE_STEPS:
        y1, K, interp = dense_step(tab, f, t0, y0, h)
        assert_endpoints(tab, interp, y0, y1, K, h)
        hs.append(h)
        for th in THETAS:
            errs[th].append(float(np.max(np.abs(interp(th) - exact(t0 + th * h)))))
        if max(e[-1] for e in errs.values()) < 0.01 * LOCAL_FLOOR:
            break
    for th in THETAS:
        slope = fitted_slope(hs, errs[th], LOCAL_FLOOR)
        print(f"{method.name} dense theta={th}: slope {slope:.3f} "
              f"(local order {tab.dense_order + 1})")
        assert abs(slope - (tab.dense_order + 1)) < 0.3, (th, slope)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_dense_output_endpoints(method: ExplicitRungeKutta, problem: str):
    """w(0) = 0 and w(1) = b on an actual step, including a nonlinear non-autonomous one."""
    tab = method.tableau
    f, exact, _, _ = PROBLEMS[problem]()
    t0, h = 0.3, 0.4
    y0 = exact(t0)
    y1, K, interp = dense_step(tab, f, t0, y0, h)
    assert_endpoints(tab, interp, y0, y1, K, h)
    if not isinstance(method, Dopri8):  # small coefficients: w(1) = b to a few ulps
        np.testing.assert_allclose(interp(1.0), y1, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Against scipy.


def test_dopri5_matches_scipy_rk45():
    tab = Dopri5.tableau
    np.testing.assert_array_equal(np.array(tab.c[:6]), RK45.C)
    for i in range(6):
        np.testing.assert_array_equal(np.array(tab.a[i]), RK45.A[i, :i])
    np.testing.assert_array_equal(np.array(tab.b[:6]), RK45.B)
    np.testing.assert_array_equal(np.array(tab.b_error[0]), -RK45.E)  # scipy: b_hat - b
    np.testing.assert_array_equal(np.array(tab.dense), RK45.P)


def test_dopri8_matches_scipy_dop853():
    d = dop853_coefficients
    tab = Dopri8.tableau
    s = d.N_STAGES
    np.testing.assert_array_equal(np.array(tab.c), d.C[:s])
    for i in range(s):
        np.testing.assert_array_equal(np.array(tab.a[i]), d.A[i, :i])
    np.testing.assert_array_equal(np.array(tab.b), d.B)
    np.testing.assert_array_equal(np.array(tab.b_error), np.stack([d.E5[:s], d.E3[:s]]))
    assert d.E5[s] == 0 and d.E3[s] == 0
    np.testing.assert_array_equal(np.array(tab.c_extra), d.C[s + 1:])
    for r, row in enumerate(tab.a_extra):
        np.testing.assert_array_equal(np.array(row), d.A[s + 1 + r, : s + 1 + r])


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_dopri8_dense_matches_scipy_nested_form(problem: str):
    """Our expanded weights against scipy's nested DOP853 interpolant on the same stages."""
    tab = Dopri8.tableau
    f, exact, _, _ = PROBLEMS[problem]()
    t0, h = 0.3, 0.4
    y0 = exact(t0)
    y1, K, interp = dense_step(tab, f, t0, y0, h)
    K = np.array(K)  # [16, n]
    dy = y1 - y0
    F = [dy, h * K[0] - dy, 2 * dy - h * (K[12] + K[0]), *(h * dop853_coefficients.D @ K)]
    # The expanded weights have coefficients up to ~550 that cancel to O(1), so evaluating them
    # costs a few digits against the nested form: allow ~1e-12 relative to the step's increment.
    scale = h * float(np.abs(K).max())
    for th in (0.0, *THETAS, 1.0):
        y = np.zeros_like(y0)
        for i, Fi in enumerate(reversed(F)):
            y = (y + Fi) * (th if i % 2 == 0 else 1 - th)
        np.testing.assert_allclose(interp(th), y0 + y, rtol=0.0, atol=5e-12 * scale)


# ---------------------------------------------------------------------------------------------
# DOP853's error combination.


def test_dopri8_combine_error_norms_floats():
    m = Dopri8()
    assert m.combine_error_norms([0.0, 0.0]) == 0.0
    for n5, n3 in [(1.0, 2.0), (0.3, 0.0), (0.0, 5.0), (2.5, 40.0), (1e-3, 7e-2)]:
        want = n5 * n5 / math.sqrt(n5 * n5 + 0.01 * n3 * n3) if n5 else 0.0
        assert m.combine_error_norms([n5, n3]) == pytest.approx(want, rel=1e-14, abs=0.0)
    # No overflow or underflow from squaring.
    assert m.combine_error_norms([1e300, 1e300]) == pytest.approx(1e300 / math.sqrt(1.01))
    assert m.combine_error_norms([1e-200, 1e-200]) == pytest.approx(1e-200 / math.sqrt(1.01))
    assert m.combine_error_norms([math.inf, 1.0]) == math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dopri8_combine_error_norms_tensors(dtype: torch.dtype):
    m = Dopri8()
    n5 = torch.tensor([0.0, 1.0, 0.0, 2.5, 0.3], dtype=dtype)
    n3 = torch.tensor([0.0, 2.0, 5.0, 40.0, 0.0], dtype=dtype)
    got = m.combine_error_norms([n5, n3])
    assert got.shape == (5,) and got.dtype == dtype
    n5d, n3d = n5.double(), n3.double()
    denom = torch.sqrt(n5d**2 + 0.01 * n3d**2)
    want = torch.where(denom > 0, n5d**2 / torch.where(denom > 0, denom, 1.0), 0.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0.0)
    assert torch.isfinite(got).all()
    # Gradients stay finite at 0 (torch.where with a safe denominator).
    n5g = n5.clone().requires_grad_(True)
    m.combine_error_norms([n5g, n3]).sum().backward()
    assert n5g.grad is not None and torch.isfinite(n5g.grad).all()


def test_default_combination_is_first_norm():
    assert Dopri5().combine_error_norms([0.25]) == 0.25
    assert Tsit5().combine_error_norms([0.5]) == 0.5
