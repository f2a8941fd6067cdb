"""Rosenbrock methods (`RosenbrockTableau`, `rosenbrock_step`) against references only:
the order conditions as Butcher-series identities, exact solutions (matrix exponential,
a manufactured nonlinear solution), scipy's Radau at rtol 1e-12, finite differences."""

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
    rober,
    rober_error,
    slopes,
    solve_fixed,
    uniform_grid,
    van_der_pol_error,
)
from tidal.solvers.jacobian import BatchedJacobian
from tidal.solvers.order_conditions import achieved_order, stability_function
from tidal.solvers.rosenbrock import RosenbrockTableau
from tidal.solvers.rosenbrock_methods import RODAS4P, RODAS5P, ROSENBROCK23
from tidal.solvers.rosenbrock_step import rosenbrock_interpolate, rosenbrock_step

METHODS = [RODAS5P, RODAS4P, ROSENBROCK23]
IDS = [m.name for m in METHODS]


def _standard(tableau: RosenbrockTableau, weights):
    alpha, big_gamma = tableau.standard_form()
    return np.asarray(weights) @ big_gamma, alpha, alpha + big_gamma


# ---------------------------------------------------------------------------------------------
# Coefficients


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_classical_orders_are_exact(tableau: RosenbrockTableau) -> None:
    """All conditions up to the stated order hold, and some condition one order higher fails
    (so the stated order is the method's classical order, not a lower bound)."""
    for weights, order in ((tableau.b, tableau.order), (tableau.b_hat, tableau.embedded_order)):
        b, alpha, beta = _standard(tableau, weights)
        assert achieved_order(b, alpha, beta, tol=1e-11) == order


def _perturbed(values: tuple, index: tuple[int, ...], delta: float) -> tuple:
    if len(index) == 1:
        (j,) = index
        return (*values[:j], values[j] + delta, *values[j + 1:])
    i, j = index
    return (*values[:i], _perturbed(values[i], (j,), delta), *values[i + 1:])


def _entries(values: tuple):
    if values and isinstance(values[0], tuple):
        return [(i, j) for i, row in enumerate(values) for j in range(len(row))]
    return [(j,) for j in range(len(values))]


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_every_wrong_digit_is_refused(tableau: RosenbrockTableau) -> None:
    """Changing any single coefficient by 1e-6 (a transcription error) fails the construction,
    except the weights of the last increment u_S in b_hat and in the interpolant's correction
    rows of a Rodas method: u_S = y1 - y1_hat = O(h^(p+1)) is the error estimate, so those
    weights cannot change any condition up to the embedded or dense order."""
    s = tableau.num_stages
    free = set()
    if tableau.name.startswith("Rodas"):
        free = {("b_hat", (s - 1,))} | {("H", (r, s - 1)) for r in range(1, len(tableau.H))}
    accepted = set()
    for name in ("a", "C", "b", "b_hat", "H", "c", "d"):
        values = getattr(tableau, name)
        for index in _entries(values):
            try:
                dataclasses.replace(tableau, **{name: _perturbed(values, index, 1e-6)})
            except ValueError as error:
                assert tableau.name in str(error)
            else:
                accepted.add((name, index))
    assert accepted == free


def test_l_stability_from_the_coefficients() -> None:
    """R(z) of the propagated solution tends to 0 at z -> -inf (L-stable) and |R| <= 1 on the
    imaginary axis and in the left half-plane (A-stable)."""
    for tableau in METHODS:
        b, _, beta = _standard(tableau, tableau.b)
        assert abs(stability_function(-1e10, b, beta)[0]) < 1e-8
        axis = stability_function(1j * np.logspace(-3, 6, 400), b, beta)
        assert np.abs(axis).max() <= 1 + 1e-12
        x, y = np.meshgrid(-np.logspace(-3, 4, 40), np.linspace(-1e3, 1e3, 41))
        assert np.abs(stability_function((x + 1j * y).ravel(), b, beta)).max() <= 1 + 1e-12


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_step_is_l_stable(tableau: RosenbrockTableau) -> None:
    """One step on y' = lambda y (J = lambda exactly) multiplies y by R(h lambda): the step
    reproduces the stability function of its coefficients, and a huge stiff step damps."""
    lam = torch.tensor([-1.0, -50.0, -1e12])
    y0 = torch.ones(3, 1)
    step = rosenbrock_step(lambda t, y: lam[:, None] * y, torch.zeros(3), y0, lam[:, None] * y0,
                           torch.full((3,), 0.1), tableau, lam[:, None, None], None)
    b, _, beta = _standard(tableau, tableau.b)
    expected = stability_function(0.1 * lam.numpy(), b, beta).real
    np.testing.assert_allclose(step.y1[:, 0].numpy(), expected, rtol=1e-12, atol=1e-13)
    assert abs(float(step.y1[2, 0])) < 1e-9


# ---------------------------------------------------------------------------------------------
# Convergence against exact solutions


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_convergence_on_a_stiff_linear_system(tableau: RosenbrockTableau) -> None:
    """Fixed-step slopes within 0.3 of the classical order on y' = L y + v cos(2t), eigenvalues
    -1, -10, -1000 (a stiff, non-normal, non-autonomous system; exact by expm). Rosenbrock23
    is checked at 2, the order of the solution it propagates."""
    problem = LinearStiff((-1.0, -10.0, -1000.0))
    exact = problem.exact(1.0)
    counts = [8, 16, 32, 64] if tableau.order == 5 else [8, 16, 32, 64, 128]
    errors = [np.abs(solve_fixed(problem, torch.tensor(problem.y0)[None], uniform_grid(1.0, n),
                                 tableau)[0].numpy() - exact).max() for n in counts]
    observed = slopes([1.0 / n for n in counts], errors)
    assert np.all(np.abs(observed - tableau.order) < 0.3), observed


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_convergence_on_a_nonlinear_problem(tableau: RosenbrockTableau) -> None:
    """The same on a nonlinear, non-autonomous problem with a known solution: this exercises
    the nonlinear order conditions and the df/dt terms."""
    problem = Manufactured()
    y0 = problem.phi(torch.zeros(1))
    exact = problem.phi(torch.tensor(1.0)).numpy()
    counts = [20, 40, 80, 160]
    errors = [np.abs(solve_fixed(problem, y0, uniform_grid(1.0, n), tableau)[0].numpy()
                     - exact).max() for n in counts]
    observed = slopes([1.0 / n for n in counts], errors)
    assert np.all(np.abs(observed - tableau.order) < 0.3), observed


def _one_step(tableau: RosenbrockTableau, h: float):
    problem = Manufactured()
    t0 = torch.tensor([0.3])
    y0 = problem.phi(t0)
    J, dfdt = BatchedJacobian(problem)(t0, y0)
    return problem, t0, y0, rosenbrock_step(problem, t0, y0, problem(t0, y0),
                                            torch.tensor([h]), tableau, J, dfdt)


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_local_orders_of_solution_embedded_solution_and_dense_output(
        tableau: RosenbrockTableau) -> None:
    """One step's local error against the exact solution falls like h^(p+1) for the solution,
    h^(p_hat+1) for the embedded one and h^(q+1) for the interpolant at theta = 0.4."""
    steps = [0.2, 0.1, 0.05]
    errors: dict[str, list[float]] = {"solution": [], "embedded": [], "dense": []}
    for h in steps:
        problem, t0, y0, step = _one_step(tableau, h)
        exact = problem.phi(t0 + h)
        errors["solution"].append(float((step.y1 - exact).abs().max()))
        errors["embedded"].append(float((step.y1 - step.error - exact).abs().max()))
        middle = rosenbrock_interpolate(tableau, y0, step.dense, torch.tensor([0.4]))
        errors["dense"].append(float((middle - problem.phi(t0 + 0.4 * h)).abs().max()))
    for name, order in (("solution", tableau.order), ("embedded", tableau.embedded_order),
                        ("dense", tableau.dense_order)):
        observed = slopes(steps, errors[name])
        assert np.all(np.abs(observed - (order + 1)) < 0.4), (name, observed)


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_dense_output_ends(tableau: RosenbrockTableau) -> None:
    _, _, y0, step = _one_step(tableau, 0.1)
    start = rosenbrock_interpolate(tableau, y0, step.dense, torch.tensor(0.0))
    end = rosenbrock_interpolate(tableau, y0, step.dense, torch.tensor(1.0))
    assert torch.equal(start, y0)
    torch.testing.assert_close(end, step.y1, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Stiff problems against scipy's Radau


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_rober_against_radau(tableau: RosenbrockTableau) -> None:
    """ROBER to t = 40 over 100 log-spaced fixed steps (a mini-driver without error control)."""
    relative = rober_error(tableau)
    bound = {5: 5e-6, 4: 5e-5, 2: 1e-3}[tableau.order]
    assert relative.max() < bound, relative


@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_van_der_pol_against_radau(tableau: RosenbrockTableau) -> None:
    """Van der Pol, mu = 1000, on its slow manifold to t = 100 (40 log-spaced fixed steps)."""
    relative = van_der_pol_error(tableau)
    bound = {5: 1e-7, 4: 1e-6, 2: 1e-3}[tableau.order]
    assert relative.max() < bound, relative


# ---------------------------------------------------------------------------------------------
# Batches, failures


def test_each_sample_is_independent_of_its_batch() -> None:
    """ROBER with per-sample rates and step sizes: a batched step equals each sample's solo
    step, and a sample with dt = 0 stays exactly where it is."""
    scale = torch.tensor([0.5, 1.0, 2.0, 1.3])
    y0 = torch.tensor([[1.0, 1e-5, 0.0], [0.9, 2e-5, 0.1], [0.5, 1e-6, 0.5], [0.7, 3e-5, 0.3]])
    t0 = torch.tensor([0.0, 1.0, 2.0, 3.0])
    dt = torch.tensor([0.1, 1e-3, 10.0, 0.0])
    field, jac = rober(scale)
    batched = rosenbrock_step(field, t0, y0, field(t0, y0), dt, RODAS5P, jac(t0, y0), None)
    for b in range(4):
        solo_field, solo_jac = rober(scale[b:b + 1])
        args = (t0[b:b + 1], y0[b:b + 1])
        solo = rosenbrock_step(solo_field, *args, solo_field(*args), dt[b:b + 1], RODAS5P,
                               solo_jac(*args), None)
        torch.testing.assert_close(batched.y1[b:b + 1], solo.y1, rtol=1e-15, atol=0.0)
        torch.testing.assert_close(batched.error[b:b + 1], solo.error, rtol=1e-15,
                                   atol=1e-300)
    assert torch.equal(batched.y1[3], y0[3]) and bool(batched.ok.all())


def test_singular_w_and_nonfinite_stages_are_per_sample_failures() -> None:
    """W = I - gamma h J exactly singular for sample 0, f NaN for sample 1: both flagged (no
    exception), sample 2 unaffected, the singular sample's y1 finite."""
    # a step size whose gamma h times its float reciprocal rounds to exactly 1
    h = next(h for h in np.linspace(0.3, 0.7, 41)
             if (RODAS5P.gamma * h) * (1.0 / (RODAS5P.gamma * h)) == 1.0)
    nan_in_sample_1 = torch.tensor([0.0, float("nan"), 0.0])[:, None]

    def field(t, y):
        return -y + nan_in_sample_1 * y

    y0 = torch.ones(3, 2)
    J = -torch.eye(2).expand(3, 2, 2).clone()
    J[0] = torch.eye(2) * (1.0 / (RODAS5P.gamma * h))  # W = 0 exactly
    step = rosenbrock_step(field, torch.zeros(3), y0, field(torch.zeros(3), y0),
                           torch.full((3,), h), RODAS5P, J, None)
    assert step.ok.tolist() == [False, False, True]
    assert bool(torch.isfinite(step.y1[0]).all())
    solo = rosenbrock_step(lambda t, y: -y, torch.zeros(1), y0[2:], -y0[2:], torch.tensor([h]),
                           RODAS5P, J[2:], None)
    assert torch.equal(step.y1[2:], solo.y1)


def test_a_singular_sample_leaves_shared_gradients_finite() -> None:
    """The backward pass of an LU of a singular matrix is NaN even for a zero incoming
    gradient; the substitution before factoring keeps a shared parameter's gradient finite
    (and equal to the gradient without the singular sample)."""
    h = next(h for h in np.linspace(0.3, 0.7, 41)
             if (RODAS5P.gamma * h) * (1.0 / (RODAS5P.gamma * h)) == 1.0)
    theta = torch.tensor(-1.0, requires_grad=True)
    y0 = torch.ones(2, 2)
    J = theta * torch.eye(2).expand(2, 2, 2)
    J = torch.cat([torch.eye(2)[None] * (1.0 / (RODAS5P.gamma * h)) + 0.0 * theta, J[1:]])
    step = rosenbrock_step(lambda t, y: theta * y, torch.zeros(2), y0, theta * y0,
                           torch.full((2,), h), RODAS5P, J, None)
    assert step.ok.tolist() == [False, True]
    (grad,) = torch.autograd.grad(torch.where(step.ok[:, None], step.y1, 0.0).sum(), theta,
                                  retain_graph=True)
    solo = rosenbrock_step(lambda t, y: theta * y, torch.zeros(1), y0[1:], theta * y0[1:],
                           torch.tensor([h]), RODAS5P, J[1:], None)
    (expected,) = torch.autograd.grad(solo.y1.sum(), theta)
    torch.testing.assert_close(grad, expected, rtol=1e-14, atol=0.0)


def test_float32_follows_the_state() -> None:
    """A float32 state gives float32 results that agree with the float64 step to float32
    round-off (the coefficients are cast from float64 once)."""
    problem = Manufactured()
    t0 = torch.tensor([0.3, 0.5])
    results = {}
    for dtype in (torch.float32, torch.float64):
        y0 = problem.phi(t0).to(dtype)
        t = t0.to(dtype)
        J, dfdt = BatchedJacobian(problem)(t, y0)
        dt = torch.tensor([0.1, 0.2], dtype=dtype)
        step = rosenbrock_step(problem, t, y0, problem(t, y0), dt, RODAS5P, J, dfdt)
        middle = rosenbrock_interpolate(RODAS5P, y0, step.dense, torch.tensor([0.5, 0.25]))
        assert step.y1.dtype == step.error.dtype == middle.dtype == dtype
        results[dtype] = (step.y1, middle)
    for low, high in zip(results[torch.float32], results[torch.float64]):
        torch.testing.assert_close(low.double(), high, rtol=1e-5, atol=1e-6)


def test_fsal_returns_f_at_the_end() -> None:
    problem = Manufactured()
    _, t0, _, step = _one_step(ROSENBROCK23, 0.1)
    assert ROSENBROCK23.fsal and not RODAS5P.fsal
    torch.testing.assert_close(step.f1, problem(t0 + 0.1, step.y1), rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Gradients


T0 = torch.tensor([0.1, 0.3])
DT = torch.tensor([0.2, 0.05])


def _rosenbrock_y1(y0: torch.Tensor, theta: torch.Tensor, tableau: RosenbrockTableau,
                   mode: str | None = None, frozen: bool = False) -> torch.Tensor:
    field = parametrized_field(theta)
    jacobian = BatchedJacobian(field)
    jacobian.mode = mode
    J, dfdt = jacobian(T0, y0)
    if frozen:
        J, dfdt = J.detach(), dfdt.detach()
    return rosenbrock_step(field, T0, y0, field(T0, y0), DT, tableau, J, dfdt).y1


@pytest.mark.parametrize("mode", ["reverse_vmap", "reverse", "forward_vmap", "jvp"])
@pytest.mark.parametrize("tableau", METHODS, ids=IDS)
def test_gradient_through_the_step_and_its_jacobian(tableau: RosenbrockTableau, mode: str
                                                    ) -> None:
    """gradcheck (finite differences) of y1 with respect to y0 and the field's parameters, the
    Jacobian recomputed from them in every way `BatchedJacobian` can."""
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]], requires_grad=True)
    theta = torch.tensor([1.5, 0.7, 20.0], requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, p: _rosenbrock_y1(y, p, tableau, mode),
                                    (y0, theta))


def test_a_frozen_jacobian_gives_a_wrong_gradient() -> None:
    """Detaching J (and df/dt) changes the parameter gradient by ~1e-2 relative, far above
    the finite-difference error (~2e-8): the gradient through J is required."""
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]])
    theta = torch.tensor([1.5, 0.7, 20.0], requires_grad=True)
    full = torch.autograd.grad(_rosenbrock_y1(y0, theta, RODAS5P).sum(), theta)[0]
    frozen = torch.autograd.grad(_rosenbrock_y1(y0, theta, RODAS5P, frozen=True).sum(),
                                 theta)[0]
    eps = 1e-6
    finite = torch.stack([
        (_rosenbrock_y1(y0, theta.detach() + eps * e, RODAS5P).sum()
         - _rosenbrock_y1(y0, theta.detach() - eps * e, RODAS5P).sum()) / (2 * eps)
        for e in torch.eye(3)])
    assert float((full - finite).norm() / finite.norm()) < 1e-6
    assert float((frozen - finite).norm() / finite.norm()) > 1e-3
