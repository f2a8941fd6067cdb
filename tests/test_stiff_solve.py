"""The Rosenbrock methods through `tidal.solve` (adaptive steps, both loops, dense output,
events, gradients) against references only: scipy's Radau at rtol 1e-12, exact solutions of
linear systems, finite differences of tight-tolerance solves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.integrate
import torch

import tidal
from stiff_problems import (  # noqa: F401  (float64_default is an autouse fixture)
    LinearStiff,
    float64_default,
    radau_reference,
    rober,
    rober_numpy,
    van_der_pol,
)
from tidal.models.registry import model_from_config
from tidal.nn import MLP

F64 = torch.float64
ROSENBROCKS = [tidal.Rodas5P, tidal.Rodas4P, tidal.Rosenbrock23]
IDS = [cls.name for cls in ROSENBROCKS]
# ROBER's components live on scales 1, 1e-5 and 1: one absolute tolerance per component.
ROBER_SCALE = torch.tensor([1.0, 1e-5, 1.0])
RATE_FACTORS = torch.tensor([0.5, 0.8, 1.3, 2.0])


def _rober_solve(solver: tidal.solvers.StepMethod, t_end: float, rtol: float, **options):
    field, _ = rober(torch.ones(()))
    controller = tidal.PIDController(rtol=rtol, atol=rtol * ROBER_SCALE)
    return tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, t_end]),
                       solver=solver, controller=controller, **options)


@pytest.mark.parametrize("cls", ROSENBROCKS, ids=IDS)
def test_rober_against_radau(cls) -> None:
    """ROBER to t = 1e4 at rtol 1e-6 (1e-4 for Rosenbrock23, a method for loose tolerances):
    every component within 20 rtol of its scale of scipy's Radau at rtol 1e-12."""
    rtol = 1e-4 if cls is tidal.Rosenbrock23 else 1e-6
    sol = _rober_solve(cls(), 1e4, rtol)
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 1e4)
    error = (sol.ys[-1].numpy() - reference) / ROBER_SCALE.numpy()
    assert np.abs(error).max() < 20 * rtol, error
    stats = sol.stats
    assert int(stats.num_factorizations) == int(stats.num_steps)
    # One Jacobian per step start: rejected attempts reuse it.
    assert int(stats.num_jacobians) == int(stats.num_accepted)


def test_rober_to_100_in_few_steps() -> None:
    """The issue's acceptance: ROBER on [0, 100] at rtol = atol = 1e-8 in at most 60 accepted
    steps (diffrax's Kvaerno5 takes 34) with the default Rodas5P, and accurate to the
    tolerance; calibrated (c = 4) it steps as for 2.5e-9 and is more accurate."""
    field, _ = rober(torch.ones(()))
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 100.0)
    errors = []
    for solver in (tidal.Rodas5P(), tidal.Rodas5P(tolerance_calibration=4.0)):
        sol = tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 100.0]),
                          solver=solver, controller=tidal.PIDController(1e-8, 1e-8))
        errors.append(np.abs(sol.ys[-1].numpy() - reference).max())
        if solver.tolerance_calibration == 1.0:
            assert int(sol.stats.num_accepted) <= 60
    assert errors[0] < 1e-7 and errors[1] < 1e-8, errors


def test_stiff_linear_system_against_its_exact_solution() -> None:
    """y' = L y + v cos(2t) with eigenvalues -1, -1e3, -1e6 (non-normal): the error at t = 2
    follows the tolerance, in few steps (an explicit method would need ~1e6)."""
    problem = LinearStiff((-1.0, -1e3, -1e6))
    exact = problem.exact(2.0)
    errors = []
    for rtol in (1e-5, 1e-8):
        sol = tidal.solve(problem, torch.tensor(problem.y0), torch.tensor([0.0, 2.0]),
                          solver=tidal.Rodas5P(), controller=tidal.PIDController(rtol, rtol))
        errors.append(np.abs(sol.ys[-1].numpy() - exact).max())
        assert int(sol.stats.num_steps) < 200
    assert errors[0] < 10 * 1e-5 and errors[1] < 10 * 1e-8 and errors[1] < errors[0] / 100


def test_tolerance_calibration_means_a_tighter_tolerance() -> None:
    """`tolerance_calibration=c` steps exactly as the uncalibrated method asked for rtol / c
    and atol / c (first step included), and the calibrated default is more accurate against
    the exact solution than the uncalibrated method at the same tolerance."""
    problem = LinearStiff((-1.0, -1e3, -1e6))
    exact = problem.exact(2.0)

    def solve(calibration: float, rtol: float) -> tidal.Solution:
        return tidal.solve(problem, torch.tensor(problem.y0), torch.tensor([0.0, 2.0]),
                           solver=tidal.Rodas5P(tolerance_calibration=calibration),
                           controller=tidal.PIDController(rtol, rtol))

    calibrated, tighter, plain = solve(4.0, 1e-6), solve(1.0, 2.5e-7), solve(1.0, 1e-6)
    for name in ("num_accepted", "num_rejected", "num_fevals"):
        assert int(getattr(calibrated.stats, name)) == int(getattr(tighter.stats, name)), name
    torch.testing.assert_close(calibrated.ys, tighter.ys, rtol=1e-12, atol=1e-14)
    errors = [np.abs(sol.ys[-1].numpy() - exact).max() for sol in (calibrated, plain)]
    assert errors[0] < errors[1] / 2 and errors[0] < 1e-6, errors
    assert tidal.Rodas5P().tolerance_calibration == tidal.Rodas5P.default_calibration == 1


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, True, "4"])
def test_tolerance_calibration_refuses_bad_values(value) -> None:
    """(0 for every method is in tests/solver_db.py.)"""
    for make in (tidal.Rodas5P, tidal.Auto):
        with pytest.raises(tidal.InvalidArgumentError, match="tolerance_calibration"):
            make(tolerance_calibration=value)


def test_van_der_pol_against_radau() -> None:
    """Van der Pol, mu = 1000, over [0, 500] (one relaxation jump near t = 807 is left to the
    benchmark): within 20 rtol of Radau, where an explicit method runs out of steps."""
    field, field_numpy = van_der_pol(1000.0)
    y0, ts = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 500.0])
    sol = tidal.solve(field, y0, ts, solver=tidal.Rodas5P(),
                      controller=tidal.PIDController(1e-6, 1e-6))
    reference = radau_reference(field_numpy, [2.0, 0.0], 500.0)
    assert np.abs(sol.ys[-1].numpy() - reference).max() < 20 * 1e-6 * np.abs(reference).max()
    explicit = tidal.solve(field, y0, ts, solver=tidal.Tsit5(),
                           controller=tidal.PIDController(1e-6, 1e-6), max_steps=2000,
                           throw=False)
    assert explicit.status == tidal.Status.MAX_STEPS


def test_reverse_time_non_autonomous() -> None:
    """Backwards in time on y' = L y + v cos(2t) (eigenvalues -1, -2, -3: backwards, a stiff
    decay would grow without bound): df/dt enters the step with the forward time's sign (a
    sign error there costs accuracy at once)."""
    problem = LinearStiff((-1.0, -2.0, -3.0))
    end = torch.tensor(problem.exact(1.0))
    sol = tidal.solve(problem, end, torch.tensor([1.0, 0.0]), solver=tidal.Rodas5P(),
                      controller=tidal.PIDController(1e-9, 1e-9))
    forward = scipy.integrate.solve_ivp(
        lambda t, y: problem(torch.tensor(t), torch.tensor(y)).numpy(), (1.0, 0.0),
        end.numpy(), method="Radau", rtol=1e-12, atol=1e-14).y[:, -1]
    assert np.abs(sol.ys[-1].numpy() - forward).max() < 1e-7


# ---------------------------------------------------------------------------------------------
# Per-sample steps


def _rober_batch(factors: torch.Tensor, t_end: float = 100.0, **options) -> tidal.Solution:
    field, _ = rober(factors)
    batch = len(factors)
    y0 = torch.tensor([[1.0, 0.0, 0.0]]).expand(batch, 3)
    ts = torch.tensor([0.0, 1.0, t_end])[:, None].expand(3, batch)
    controller = tidal.PIDController(rtol=1e-6, atol=1e-6 * ROBER_SCALE)
    return tidal.solve(field, y0, ts, solver=tidal.Rodas5P(), controller=controller, **options)


def test_per_sample_steps_do_not_depend_on_the_batch() -> None:
    """ROBER with every rate scaled by 0.5 .. 2 per sample: each sample's steps, calls of f,
    Jacobians and factorizations equal its solo solve, and so does its result."""
    batch = _rober_batch(RATE_FACTORS)
    for b in range(len(RATE_FACTORS)):
        solo = _rober_batch(RATE_FACTORS[b:b + 1])
        for name in ("num_steps", "num_accepted", "num_rejected", "num_fevals",
                     "num_jacobians", "num_factorizations"):
            assert int(getattr(batch.stats, name)[b]) == int(getattr(solo.stats, name)[0]), name
        torch.testing.assert_close(batch.ys[:, b], solo.ys[:, 0], rtol=1e-12, atol=1e-15)
    steps = batch.stats.num_steps
    assert len(set(steps.tolist())) > 1  # the samples really took different steps
    for b, factor in enumerate(RATE_FACTORS.tolist()):
        reference = radau_reference(rober_numpy(factor), [1.0, 0.0, 0.0], 100.0)
        error = (batch.ys[-1, b].numpy() - reference) / ROBER_SCALE.numpy()
        assert np.abs(error).max() < 20e-6


def test_per_sample_dense_output() -> None:
    """The Rodas interpolant between steps, per sample, against Radau at rtol 1e-12."""
    sol = _rober_batch(RATE_FACTORS[:2], t_end=10.0, dense=True)
    times = torch.tensor([[0.003, 0.3], [0.7, 4.1], [2.2, 9.9]])  # [M, B]
    values = sol.evaluate(times)
    for b, factor in enumerate(RATE_FACTORS[:2].tolist()):
        reference = scipy.integrate.solve_ivp(
            rober_numpy(factor), (0.0, 10.0), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12,
            atol=1e-14, t_eval=times[:, b].numpy()).y.T
        error = (values[:, b].numpy() - reference) / ROBER_SCALE.numpy()
        assert np.abs(error).max() < 50e-6, error


def test_event_on_rober() -> None:
    """A terminal event y3 = 0.2 (the product reaching 20%), against Radau's event time."""
    field, _ = rober(torch.ones(()))
    sol = tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1e3]),
                      solver=tidal.Rodas5P(), event=lambda t, y: y[2] - 0.2,
                      controller=tidal.PIDController(1e-8, 1e-8 * ROBER_SCALE))
    event = lambda t, y: y[2] - 0.2  # noqa: E731
    event.terminal = True
    reference = scipy.integrate.solve_ivp(rober_numpy(1.0), (0.0, 1e3), [1.0, 0.0, 0.0],
                                          method="Radau", rtol=1e-12, atol=1e-14,
                                          events=event).t_events[0][0]
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - reference) < 1e-6 * reference


# ---------------------------------------------------------------------------------------------
# Failures


def test_nonfinite_stage_is_rejected_and_retried() -> None:
    """y' = -sqrt(y) - 1e3 (y - 1) starting above its root: long steps overshoot below 0 where
    f is NaN; the step is rejected, retried smaller, and the solve matches Radau."""
    def field(t, y):
        return -torch.sqrt(y) - 1e3 * (y - 1.0)

    sol = tidal.solve(field, torch.tensor([4.0]), torch.tensor([0.0, 1.0]),
                      solver=tidal.Rodas5P(), controller=tidal.PIDController(1e-6, 1e-9))
    reference = radau_reference(lambda t, y: -np.sqrt(y) - 1e3 * (y - 1.0), [4.0], 1.0)
    assert abs(float(sol.ys[-1, 0]) - reference[0]) < 1e-6


def test_singular_matrix_rejects_only_its_sample() -> None:
    """With a constant step h, y' = y / (gamma h) makes W = I - gamma h J exactly singular:
    that sample ends (SINGULAR: fixed steps cannot shrink); its neighbour is unaffected."""
    h = 0.2  # gamma h (1 / (gamma h)) rounds to exactly 1 in float64
    rate = torch.stack([1.0 / (tidal.Rodas5P.rosenbrock.gamma * torch.tensor(h)),
                        torch.tensor(-1.0)])[:, None]
    ts = torch.tensor([0.0, 1.0])[:, None].expand(2, 2)
    sol = tidal.solve(lambda t, y: rate * y, torch.ones(2, 1), ts, solver=tidal.Rodas5P(),
                      controller=tidal.ConstantStepSize(h), throw=False)
    assert sol.sample_status[0] == tidal.Status.SINGULAR
    assert sol.sample_status[1] == tidal.Status.SUCCESS
    assert abs(float(sol.ys[-1, 1, 0]) - np.exp(-1.0)) < 1e-4


def test_float32_singular_solve_ends_with_a_named_status() -> None:
    """On a shared grid the same singular W ends the solve with SINGULAR, whose message says
    to solve in float64."""
    h = 0.25  # gamma h (1 / (gamma h)) rounds to exactly 1 in float32
    rate = 1.0 / (tidal.Rodas5P.rosenbrock.gamma * torch.tensor(h, dtype=torch.float32))
    with pytest.raises(tidal.SolveFailedError, match=r"SINGULAR.*float64") as info:
        tidal.solve(lambda t, y: rate * y, torch.ones(2, dtype=torch.float32),
                    torch.tensor([0.0, 1.0]), solver=tidal.Rodas5P(),
                    controller=tidal.ConstantStepSize(h))
    assert info.value.status == tidal.Status.SINGULAR


# ---------------------------------------------------------------------------------------------
# Gradients: the Jacobian is part of the step, so backpropagation through exact steps must
# include its dependence on y and the parameters.

ROBER_TS = torch.tensor([0.0, 1e-3, 1e-1, 1.0, 10.0])
WEIGHTS = torch.tensor([1.0, 2.0, 3.0])


def _rober_loss(log_rates: torch.Tensor, rtol: float, adjoint=None, t_end: float = 10.0,
                per_sample: bool = False) -> torch.Tensor:
    k1, k2, k3 = (torch.tensor(ROBER_K_TUPLE) * torch.exp(log_rates)).unbind()

    def field(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2,
                            k2 * y2 ** 2], -1)

    ts = ROBER_TS[t_end >= ROBER_TS]
    y0 = torch.tensor([1.0, 0.0, 0.0])
    if per_sample:
        y0, ts = y0[None], ts[:, None]
    sol = tidal.solve(field, y0, ts, solver=tidal.Rodas5P(), adjoint=adjoint,
                      controller=tidal.PIDController(rtol, rtol * ROBER_SCALE))
    return ((sol.ys[1:].reshape(len(ts) - 1, 3) / ROBER_SCALE) * WEIGHTS).sum()


ROBER_K_TUPLE = (0.04, 3e7, 1e4)


def _radau_loss(log_rates: np.ndarray, t_end: float) -> float:
    """The loss of `_rober_loss` from scipy's Radau at rtol 1e-12."""
    k1, k2, k3 = np.asarray(ROBER_K_TUPLE) * np.exp(log_rates)
    ts = ROBER_TS[t_end >= ROBER_TS].numpy()
    ys = scipy.integrate.solve_ivp(
        lambda t, y: [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k3 * y[1] * y[2]
                      - k2 * y[1] ** 2, k2 * y[1] ** 2], (0.0, ts[-1]), [1.0, 0.0, 0.0],
        method="Radau", rtol=1e-12, atol=1e-14, t_eval=ts[1:]).y.T
    return float(((ys / ROBER_SCALE.numpy()) * WEIGHTS.numpy()).sum())


def _finite_differences(t_end: float, eps: float = 1e-5) -> torch.Tensor:
    """Central differences of the Radau loss at log-rates 0."""
    grads = []
    for i in range(3):
        e = np.zeros(3)
        e[i] = eps
        grads.append((_radau_loss(e, t_end) - _radau_loss(-e, t_end)) / (2 * eps))
    return torch.tensor(grads)


def test_rober_log_rate_gradient() -> None:
    """d loss / d log-rates on ROBER over [0, 1] at rtol 1e-6, by Backprop and Checkpoint,
    against central differences of Radau solves at rtol 1e-12: relative error below 1e-5."""
    reference = _finite_differences(1.0)
    for adjoint in (None, tidal.CheckpointAdjoint(2)):
        p = torch.zeros(3, requires_grad=True)
        (grad,) = torch.autograd.grad(_rober_loss(p, 1e-6, adjoint, t_end=1.0), p)
        assert float((grad - reference).abs().max() / reference.abs().max()) < 1e-5


def test_per_sample_gradient_matches_shared() -> None:
    """The same loss on a per-sample grid (one sample) gives the same gradient."""
    p = torch.zeros(3, requires_grad=True)
    (shared,) = torch.autograd.grad(_rober_loss(p, 1e-6, t_end=1.0), p)
    (per_sample,) = torch.autograd.grad(_rober_loss(p, 1e-6, t_end=1.0, per_sample=True), p)
    torch.testing.assert_close(per_sample, shared, rtol=1e-9, atol=0)


@pytest.mark.slow
def test_rober_log_rate_gradient_to_t10() -> None:
    """The issue's acceptance on the longer span [0, 10] (outputs log-spaced)."""
    p = torch.zeros(3, requires_grad=True)
    (grad,) = torch.autograd.grad(_rober_loss(p, 1e-6), p)
    reference = _finite_differences(10.0)
    assert float((grad - reference).abs().max() / reference.abs().max()) < 1e-5


def test_odeint_names_the_rosenbrock_methods() -> None:
    """torchdiffeq-style code reaches the stiff methods by name."""
    field, _ = rober(torch.ones(()))
    ys = tidal.odeint(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 40.0]),
                      method="rodas5p", rtol=1e-8, atol=1e-10)
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 40.0)
    assert np.abs(ys[-1].numpy() - reference).max() < 1e-7


def test_stiffness_messages_name_the_stiff_solver() -> None:
    for status in (tidal.Status.MAX_STEPS, tidal.Status.DT_UNDERFLOW):
        assert "tidal.Rodas5P()" in status.message and "rodas5p" in status.message


def test_rober_system_simulates_log_spaced_observations() -> None:
    """The built-in "rober" system: observations at t0 and log-spaced times, simulated with
    Rodas5P, equal to scipy's Radau at rtol 1e-12 (noise 0)."""
    data = tidal.simulate("rober", 2, n_obs=8, noise=0.0, seed=1)
    assert dict(tidal.data.SYSTEMS["rober"].params) == {"k1": 0.04, "k2": 3e7, "k3": 1e4}
    for times, values in zip(data.times, data.values):
        y0 = values[0]  # no noise
        assert times[0] == 0.0 and times[1] >= 1e-5 and times[-1] <= 1e5
        assert np.all(np.diff(np.log10(times[1:])) > 0)
        reference = scipy.integrate.solve_ivp(
            rober_numpy(1.0), (0.0, times[-1]), y0, method="Radau", rtol=1e-12, atol=1e-14,
            t_eval=times).y.T
        scale = np.array([1.0, 1e-5, 1.0])
        # simulate's atol 1e-10 is 1e-5 of B's scale
        assert np.abs((values - reference) / scale).max() < 5e-5


@pytest.mark.parametrize("cls", ROSENBROCKS, ids=IDS)
def test_shared_grid_with_a_jump_matches_the_exact_solution(cls) -> None:
    """A stiff linear system on a shared [T] grid (one step size for the whole state), with a
    jump time where the field switches: y' = A y before t = 0.5, y' = -y after, exactly
    y(t) = exp(-(t - 0.5)) expm(0.5 A) y0."""
    from scipy.linalg import expm

    a = torch.tensor([[-1000.0, 1.0], [0.0, -2.0]])

    def f(t, y):
        return y @ a.T if t < 0.5 else -y

    y0 = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    ts = torch.tensor([0.0, 0.25, 0.5, 1.0])
    solution = tidal.solve(f, y0, ts, solver=cls(),
                           controller=tidal.PIDController(rtol=1e-8, atol=1e-10, jump_ts=[0.5]))
    half = expm(0.5 * a.numpy())
    exact = (y0.numpy() @ half.T) * np.exp(-0.5)
    np.testing.assert_allclose(solution.ys[-1].numpy(), exact, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(solution.ys[1].numpy(), y0.numpy() @ expm(0.25 * a.numpy()).T,
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["rodas5p", "rosenbrock23", "auto", "radauIIA5"])
def test_backsolve_with_an_implicit_method(name: str) -> None:
    """y' = a y + sin t with the backward solve on the same implicit method: dy(T)/dy0 =
    exp(a T) and d sum y(T)/da = T exp(a T) sum y0 + 2 int_0^T (T - s) exp(a (T - s)) sin s ds.
    (Not a stiff rate: backsolve rebuilds y backwards in time, which a stiff decay makes
    unstable whatever the method; docs/design.md.)"""
    rate = -0.7
    from scipy.integrate import quad

    a = torch.tensor(rate, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    end = 1.5
    solver = tidal.registry.SOLVERS[name]()
    controller = (tidal.ConstantStepSize(0.01) if name == "radauIIA5"
                  else tidal.PIDController(1e-8, 1e-10))
    solution = tidal.solve(lambda t, y: a * y + torch.sin(t), y0,
                           torch.tensor([0.0, end], dtype=torch.float64), solver=solver,
                           controller=controller, adjoint=tidal.BacksolveAdjoint(params=[a]))
    solution.ys[-1].sum().backward()
    decay = math.exp(rate * end)
    forcing = quad(lambda s: (end - s) * math.exp(rate * (end - s)) * math.sin(s), 0, end,
                   epsabs=1e-14, epsrel=1e-12)[0]
    torch.testing.assert_close(y0.grad, torch.full((2,), decay, dtype=torch.float64),
                               rtol=1e-5, atol=1e-10)
    assert float(a.grad) == pytest.approx(end * 3.0 * decay + 2 * forcing, rel=1e-5, abs=1e-9)


def test_a_model_with_a_rosenbrock_solver_saves_as_data() -> None:
    """A run's config keeps only numbers as solver options (the run schema's rule): the
    default `jac=None` is left out (it used to be saved as null, which the schema refused when
    `tidal fit --solver rodas5p` wrote its report), the calibration is kept."""
    for solver in (tidal.Rodas5P(), tidal.Rodas4P(tolerance_calibration=2.0),
                   tidal.Rodas5P(tolerance_calibration=4.0)):
        model = tidal.NeuralODE(MLP(3, width=8, depth=1), solver=solver)
        config = json.loads(json.dumps(model.config()))
        assert config["solver_options"] == {
            "tolerance_calibration": solver.tolerance_calibration}
        assert model_from_config(config).solver == solver
