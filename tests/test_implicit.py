"""Implicit Runge–Kutta methods (`ImplicitTableau`, `implicit_step`) against references only:
order conditions, stability functions, exact solutions, scipy's Radau at rtol 1e-12, finite
differences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stiff_problems import (
    LinearStiff,
    Manufactured,
    float64_default,  # noqa: F401 (an autouse fixture)
    parametrized_field,
    rober_error,
    slopes,
    solve_fixed,
    uniform_grid,
    van_der_pol_error,
)
from tidal.solvers.implicit import IMPLICIT_TABLEAUS, ImplicitTableau
from tidal.solvers.implicit_step import implicit_step
from tidal.solvers.jacobian import BatchedJacobian
from tidal.solvers.order_conditions import achieved_order, stability_function

METHODS = list(IMPLICIT_TABLEAUS.values())
IDS = list(IMPLICIT_TABLEAUS)
L_STABLE = [m for m in METHODS if m.l_stable]


def test_the_torchdiffeq_names() -> None:
    assert set(IMPLICIT_TABLEAUS) == {"implicit_euler", "implicit_midpoint", "trapezoid",
                                      "radauIIA3", "radauIIA5", "gl4", "gl6", "sdirk2",
                                      "trbdf2"}


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_classical_order_is_exact(tableau: ImplicitTableau) -> None:
    a = np.asarray(tableau.a)
    assert achieved_order(np.asarray(tableau.b), a, a, tol=1e-12) == tableau.order


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_a_wrong_digit_is_refused(tableau: ImplicitTableau) -> None:
    """Any single coefficient of a or b changed by 1e-9 fails the construction (row sums,
    b summing to 1, or an order condition)."""
    s = tableau.num_stages
    for i in range(s):
        for j in range(s):
            rows = [list(row) for row in tableau.a]
            rows[i][j] += 1e-9
            with pytest.raises(ValueError, match=tableau.name):
                dataclasses.replace(tableau, a=tuple(map(tuple, rows)))
        b = list(tableau.b)
        b[i] += 1e-9
        with pytest.raises(ValueError, match=tableau.name):
            dataclasses.replace(tableau, b=tuple(b))


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_stability(tableau: ImplicitTableau) -> None:
    """A-stable (|R| <= 1 on the imaginary axis and in the left half-plane); R(-inf) = 0 for
    the L-stable methods, |R(-inf)| = 1 for the others. The step itself reproduces R."""
    a, b = np.asarray(tableau.a), np.asarray(tableau.b)
    axis = stability_function(1j * np.logspace(-3, 6, 300), b, a)
    assert np.abs(axis).max() <= 1 + 1e-12
    x, y = np.meshgrid(-np.logspace(-3, 4, 30), np.linspace(-1e3, 1e3, 31))
    assert np.abs(stability_function((x + 1j * y).ravel(), b, a)).max() <= 1 + 1e-12
    at_infinity = abs(stability_function(-1e7, b, a)[0])  # R(z) - R(-inf) = O(1/z)
    assert at_infinity < 1e-5 if tableau.l_stable else abs(at_infinity - 1) < 1e-5
    lam = torch.tensor([-1.0, -50.0, -1e6])
    y0 = torch.ones(3, 1)
    step = implicit_step(lambda t, y: lam[:, None] * y, torch.zeros(3), y0, lam[:, None] * y0,
                         torch.full((3,), 0.1), tableau, lam[:, None, None], None)
    expected = stability_function(0.1 * lam.numpy(), b, a).real
    np.testing.assert_allclose(step.y1[:, 0].numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_convergence_on_a_linear_system(tableau: ImplicitTableau) -> None:
    """Fixed-step slopes within 0.3 of the stated order, exact solution by expm. The L-stable
    methods on a stiff system (eigenvalues -1, -10, -1000); the A-stable-only ones (midpoint,
    trapezoid, Gauss) on eigenvalues -1, -3, -10, since they do not damp a stiff component
    (|R(-inf)| = 1) and their error there is not in its asymptotic regime at these steps."""
    eigenvalues = (-1.0, -10.0, -1000.0) if tableau.l_stable else (-1.0, -3.0, -10.0)
    problem = LinearStiff(eigenvalues)
    exact = problem.exact(1.0)
    counts = [4, 8, 16, 32] if tableau.order >= 5 else [8, 16, 32, 64]
    errors = [np.abs(solve_fixed(problem, torch.tensor(problem.y0)[None], uniform_grid(1.0, n),
                                 tableau)[0].numpy() - exact).max() for n in counts]
    observed = slopes([1.0 / n for n in counts], errors)
    assert np.all(np.abs(observed - tableau.order) < 0.3), observed


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_convergence_on_a_nonlinear_problem(tableau: ImplicitTableau) -> None:
    problem = Manufactured()
    y0 = problem.phi(torch.zeros(1))
    exact = problem.phi(torch.tensor(1.0)).numpy()
    counts = [5, 10, 20, 40] if tableau.order >= 5 else [10, 20, 40, 80]
    errors = [np.abs(solve_fixed(problem, y0, uniform_grid(1.0, n), tableau)[0].numpy()
                     - exact).max() for n in counts]
    observed = slopes([1.0 / n for n in counts], errors)
    assert np.all(np.abs(observed - tableau.order) < 0.3), observed


@pytest.mark.parametrize("tableau", L_STABLE, ids=[m.name for m in L_STABLE])
def test_rober_against_radau(tableau: ImplicitTableau) -> None:
    relative = rober_error(tableau)
    bound = {1: 0.05, 2: 5e-3, 3: 1e-4, 5: 1e-7}[tableau.order]
    assert relative.max() < bound, relative


def test_van_der_pol_against_radau() -> None:
    assert van_der_pol_error(IMPLICIT_TABLEAUS["radauIIA5"]).max() < 1e-9


# ---------------------------------------------------------------------------------------------
# Newton iteration: per sample


def test_newton_converges_per_sample_and_reports_failure_per_sample() -> None:
    """A linear sample converges in 2 iterations (1 exact step + the check); a nonlinear one
    takes more; with too few iterations the slow ones are reported as failed, the others not.
    Each sample's result equals its solo step."""
    k = torch.tensor([0.0, 1.0, 1.0])  # nonlinearity per sample

    def field(t, y):
        return -2.0 * y + k[:, None] * y ** 3

    y0 = torch.tensor([[0.5], [0.5], [0.4]])
    t0, dt = torch.zeros(3), torch.tensor([0.1, 0.1, 0.3])
    jacobian = BatchedJacobian(field)
    J = jacobian(t0, y0).J
    tableau = IMPLICIT_TABLEAUS["radauIIA5"]
    step = implicit_step(field, t0, y0, field(t0, y0), dt, tableau, J, jacobian)
    assert bool(step.ok.all()) and step.iterations[0] == 2 and bool((step.iterations[1:] > 2).all())
    for b in range(3):
        solo_k = k[b:b + 1]
        solo = implicit_step(lambda t, y, kk=solo_k: -2.0 * y + kk[:, None] * y ** 3,
                             t0[b:b + 1], y0[b:b + 1], field(t0, y0)[b:b + 1], dt[b:b + 1],
                             tableau, J[b:b + 1], jacobian)
        assert torch.equal(solo.y1, step.y1[b:b + 1])
    short = implicit_step(field, t0, y0, field(t0, y0), dt, tableau, J, jacobian, max_iters=3)
    assert short.ok.tolist() == [True, False, False]


def test_a_diverging_iteration_fails_alone() -> None:
    """y' = -1000 y with h = 0.1 and a useless J = 0 for sample 0 (the iteration is then a
    fixed-point one with factor 100): it diverges and is flagged after a few iterations;
    sample 1 (exact J) converges."""
    tableau = IMPLICIT_TABLEAUS["radauIIA5"]
    y0 = torch.ones(2, 1)
    J = torch.tensor([[[0.0]], [[-1000.0]]])
    step = implicit_step(lambda t, y: -1000.0 * y, torch.zeros(2), y0, -1000.0 * y0,
                         torch.full((2,), 0.1), tableau, J, None)
    assert step.ok.tolist() == [False, True] and int(step.iterations[0]) <= 3
    exact_r = stability_function(-100.0, np.asarray(tableau.b), np.asarray(tableau.a)).real
    torch.testing.assert_close(step.y1[1], torch.tensor(exact_r), rtol=1e-12, atol=1e-15)


def test_a_singular_newton_matrix_is_a_per_sample_failure() -> None:
    """I - h A (x) J singular (J = 1/h for implicit Euler): flagged, the other sample fine."""
    tableau = IMPLICIT_TABLEAUS["implicit_euler"]
    J = torch.tensor([[[4.0]], [[-1.0]]])  # h = 0.25: 1 - 0.25 * 4 = 0 exactly
    y0 = torch.ones(2, 1)
    step = implicit_step(lambda t, y: -y, torch.zeros(2), y0, -y0, torch.full((2,), 0.25),
                         tableau, J, None)
    assert step.ok.tolist() == [False, True]
    torch.testing.assert_close(step.y1[1], torch.tensor([0.8]), rtol=1e-15, atol=0.0)


# ---------------------------------------------------------------------------------------------
# Gradients by the implicit function theorem


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_gradient_by_the_implicit_function_theorem(tableau: ImplicitTableau) -> None:
    """gradcheck of y1 with respect to y0, the field's parameters and dt (stiff parameter
    theta_2 = 20, so the iteration takes several simplified-Newton steps)."""
    t0 = torch.tensor([0.1, 0.3])
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]], requires_grad=True)
    theta = torch.tensor([1.5, 0.7, 20.0], requires_grad=True)
    dt = torch.tensor([0.2, 0.05], requires_grad=True)

    def y1(y0, theta, dt):
        field = parametrized_field(theta)
        jacobian = BatchedJacobian(field)
        J = jacobian(t0, y0).J.detach()
        step = implicit_step(field, t0, y0, field(t0, y0), dt, tableau, J, jacobian)
        assert bool(step.ok.all())
        return step.y1

    assert torch.autograd.gradcheck(y1, (y0, theta, dt))
