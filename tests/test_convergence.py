"""Observed convergence orders of every solver, through `tidal.solve` with constant steps.

For each solver in `GENERAL_DB` (adaptive ones too, with `ConstantStepSize`, which ignores the
error estimate) the global error is measured against exact solutions for a geometric range of
step sizes h, and the slope of log(error) against log(h) is fitted:

* at the final time (a step end): the slope must be the method's order p, within 0.3;
* at output times strictly inside steps (offset 0.37 h into each step), where the value comes
  from the interpolant: the error is the global error at the step ends, O(h^p), plus the local
  interpolation error, O(h^(q+1)) for an interpolant of order q (`dense_order`), so the slope
  must be at least min(p, q + 1) - 0.3.

Problems (float64, exact solutions computed independently of tidal):

* "linear": y' = A y with a fixed random 4x4 matrix A (eigenvalues of modest size), exact
  y(t) = expm(A t) y0 by `torch.linalg.matrix_exp`;
* "riccati": y' = -2 t y^2, y(0) = 1, exact y = 1 / (1 + t^2): nonlinear and non-autonomous,
  so it also checks that the stage times c_i are passed to f correctly.

The step counts are chosen per problem and order so that every error lies well above round-off
(>= 1e-12) and in the asymptotic regime; the tests assert that window too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import tidal
from solver_db import GENERAL_DB, SolverInfo

F64 = torch.float64
_gen = torch.Generator().manual_seed(1234)
A = torch.randn(4, 4, generator=_gen, dtype=F64)
Y0_LINEAR = torch.randn(4, generator=_gen, dtype=F64)


@dataclass(frozen=True)
class Problem:
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    exact: Callable[[torch.Tensor], torch.Tensor]  # times [T] (float64) -> states [T, D]
    t_end: float
    # order -> (fewest, most) steps over [0, t_end], for the error at the final time and at
    # interpolated times; the counts in between are geometric.
    steps: dict[int, tuple[int, int]]
    dense_steps: dict[int, tuple[int, int]]
    # Solvers whose fitted slope may exceed the order by more than SLOPE_TOL (see below).
    slope_above: dict[str, float] = field(default_factory=dict)
    # Solvers far more accurate than their order's step range allows: (steps, dense_steps).
    solver_steps: dict[str, tuple[tuple[int, int], tuple[int, int]]] = field(
        default_factory=dict)

    def step_range(self, info: SolverInfo, dense: bool) -> tuple[int, int]:
        if info.id in self.solver_steps:
            return self.solver_steps[info.id][dense]
        fewest, most = (self.dense_steps if dense else self.steps)[info.order]
        if info.id in NEWTON_LOW_ORDER:  # a Jacobian and an LU per step: a quarter as many
            return max(fewest // 4, 8), most // 4
        return fewest, most


#: Newton methods whose order's step ranges (set by the explicit methods) cost minutes of the
#: suite; their slopes hold over a quarter of the range (and tests/test_implicit.py checks them
#: on coarser grids too).
NEWTON_LOW_ORDER = frozenset({"trapezoid", "sdirk2", "trbdf2"})


def _linear_exact(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp(A * t[:, None, None]) @ Y0_LINEAR


Y0_RICCATI = torch.tensor([1.0, 0.5, 2.0], dtype=F64)

PROBLEMS = {
    "linear": Problem(
        f=lambda t, y: A @ y,
        exact=_linear_exact,
        t_end=4.0,
        steps={1: (100, 800), 2: (24, 400), 3: (16, 200), 4: (12, 140), 5: (8, 64),
               6: (8, 40), 8: (2, 8)},
        dense_steps={1: (100, 800), 2: (24, 400), 3: (24, 256), 4: (32, 256), 5: (24, 180),
                     6: (24, 180), 8: (4, 16)},
        # Rodas5P's error on this linear problem reaches 1e-12 from 64 steps on: its
        # stability function matches exp(z) to O(z^7) (1.3e-12 at z = 0.1, 8.9e-15 at 0.05),
        # so on a linear constant-coefficient problem it converges with order 6.
        solver_steps={"rodas5p": ((4, 32), (12, 90))},
        slope_above={"rodas5p": 1.3},
    ),
    # y' = -2 t y^2 componentwise: y = 1 / (1 / y0 + t^2).
    "riccati": Problem(
        f=lambda t, y: -2.0 * t * y**2,
        exact=lambda t: 1.0 / (1.0 / Y0_RICCATI + t[:, None] ** 2),
        t_end=1.0,
        steps={1: (32, 400), 2: (24, 400), 3: (16, 256), 4: (23, 180), 5: (11, 64),
               6: (4, 24)},
        dense_steps={1: (32, 400), 2: (24, 400), 3: (23, 256), 4: (16, 128), 5: (16, 90),
                     6: (16, 90),
                     8: (4, 11)},
        # The fifth-order pairs reach the asymptotic regime here only at errors near round-off:
        # over the usable range the local slopes fall steadily (about 5.8, 5.6, 5.4, 5.3, 5.2)
        # towards 5 as the h^6 term fades. Tsit5 in particular minimises its leading error
        # coefficients, so its h^6 term matters longest.
        slope_above={"dopri5": 0.7, "tsit5": 0.7, "auto": 0.7},  # auto: Tsit5 here
    ),
}
ERROR_WINDOW = (1e-12, 0.5)  # every measured error must lie here: above round-off
SLOPE_TOL = 0.3
OFFSET = 0.37  # output times sit this fraction of a step past each step start


def step_counts(low: int, high: int, num: int = 5) -> list[int]:
    return sorted({round(low * (high / low) ** (j / (num - 1))) for j in range(num)})


def fitted_slope(hs: list[float], errors: list[float]) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def check_window(errors: list[float]) -> None:
    low, high = ERROR_WINDOW
    assert all(low < e < high for e in errors), (
        f"errors {errors} leave the window {ERROR_WINDOW}: the step sizes are not in the "
        "asymptotic, round-off-free regime")


def test_linear_problem_is_modest() -> None:
    eigenvalues = torch.linalg.eigvals(A)
    assert eigenvalues.real.abs().max() < 1.5
    assert 0.5 < eigenvalues.abs().max() < 2.0


def test_step_counts_are_geometric() -> None:
    assert step_counts(2, 32) == [2, 4, 8, 16, 32]


# Dopri8 on the Riccati problem: its error at t = 1 goes from pre-asymptotic (local slopes
# above 10) straight to round-off (< 1e-12 from 11 steps on), so no step range measures its
# order there. Its nonlinear order is still checked through the dense test below (whose error
# contains the global error) and by test_high_order_tableaus.py.
FINAL_TIME_CASES = [
    pytest.param(info, name, id=f"{info.id}-{name}")
    for name in sorted(PROBLEMS) for info in GENERAL_DB
    if not (info.id == "dopri8" and name == "riccati")
]


@pytest.mark.parametrize(("info", "problem_name"), FINAL_TIME_CASES)
def test_convergence_order(info: SolverInfo, problem_name: str) -> None:
    problem = PROBLEMS[problem_name]
    ts = torch.tensor([0.0, problem.t_end], dtype=F64)
    exact = problem.exact(ts)
    hs, errors = [], []
    for n in step_counts(*problem.step_range(info, dense=False)):
        h = problem.t_end / n
        sol = tidal.solve(problem.f, exact[0], ts, solver=info.cls(),
                          controller=tidal.ConstantStepSize(h))
        assert sol.status == tidal.Status.SUCCESS
        # n steps of h; round-off in the accumulated time may add one more, vanishing step.
        assert sol.stats.num_steps in (n, n + 1)
        assert sol.stats.num_rejected == 0
        hs.append(h)
        errors.append(float((sol.ys[-1] - exact[-1]).abs().max()))
    check_window(errors)
    slope = fitted_slope(hs, errors)
    print(f"{info.id} {problem_name}: slope {slope:.3f} (order {info.order}), errors "
          f"{errors[0]:.1e}..{errors[-1]:.1e}")
    above = problem.slope_above.get(info.id, SLOPE_TOL)
    assert info.order - SLOPE_TOL <= slope <= info.order + above, (slope, info.order, errors)


@pytest.mark.parametrize("problem_name", sorted(PROBLEMS))
@pytest.mark.parametrize("info", GENERAL_DB, ids=lambda i: i.id)
def test_dense_output_order(info: SolverInfo, problem_name: str) -> None:
    problem = PROBLEMS[problem_name]
    expected = min(info.order, info.dense_order + 1)
    y0 = problem.exact(torch.zeros(1, dtype=F64))[0]
    hs, errors = [], []
    for n in step_counts(*problem.step_range(info, dense=True)):
        h = problem.t_end / n
        # ts[0] = 0 is the start; then one time strictly inside each step. The last one ends
        # the solve, so the last step is shortened to land on it: it is left out below.
        inside = (torch.arange(n, dtype=F64) + OFFSET) * h
        ts = torch.cat([torch.zeros(1, dtype=F64), inside])
        sol = tidal.solve(problem.f, y0, ts, solver=info.cls(),
                          controller=tidal.ConstantStepSize(h))
        assert sol.status == tidal.Status.SUCCESS
        # The output times must not shorten the steps (they would then not be interpolated).
        assert sol.stats.num_steps in (n, n + 1)
        exact = problem.exact(ts)
        hs.append(h)
        errors.append(float((sol.ys[1:-1] - exact[1:-1]).abs().max()))
    check_window(errors)
    slope = fitted_slope(hs, errors)
    print(f"{info.id} {problem_name}: dense slope {slope:.3f} (expected >= {expected}), "
          f"errors {errors[0]:.1e}..{errors[-1]:.1e}")
    assert slope >= expected - SLOPE_TOL, (slope, expected, errors)
