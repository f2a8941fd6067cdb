"""`tidal.training.least_squares`: a formula's coefficients (and initial states) fitted to
trajectories by least squares, checked against scipy's own least-squares fit of the same
model solved by scipy's DOP853."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from tidal import PIDController, Solution
from tidal._errors import InvalidArgumentError, SolveFailedError, Status
from tidal.data import Scaling, simulate
from tidal.models import NeuralODE
from tidal.models.polynomial import PolynomialODE
from tidal.nn import MLP
from tidal.training import TrainConfig
from tidal.training import least_squares as least_squares_module
from tidal.training.fit import FitResult
from tidal.training.least_squares import forward_sensitivities, least_squares
from tidal.training.refit import refit
from tidal.training.time_split import split_in_time

TIGHT = PIDController(rtol=1e-8, atol=1e-10)
LOOSE = PIDController(rtol=1e-5, atol=1e-7)  # where only the path, not the optimum, is tested
START = {"dx": {"x": 1.3, "x y": -0.8}, "dy": {"y": -2.6, "x y": 0.9}}


def scipy_reference(times: np.ndarray, values: np.ndarray, scale: np.ndarray,
                    start: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """(alpha, beta, gamma, delta[, x0, y0]) of dx = alpha x - beta x y, dy = delta x y -
    gamma y fitted by scipy's least squares to `values`, residuals divided by `scale` (tidal
    fits in standardized units); initial state fixed at `first` when given."""
    def residuals(theta: np.ndarray) -> np.ndarray:
        a, b, c, d = theta[:4]
        y0 = theta[4:] if first is None else first
        solution = scipy.integrate.solve_ivp(
            lambda t, z: [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - c * z[1]],
            (times[0], times[-1]), y0, t_eval=times, method="DOP853", rtol=1e-12, atol=1e-12)
        return ((solution.y.T - values) / scale).ravel()

    return scipy.optimize.least_squares(residuals, start, xtol=1e-14, ftol=1e-14,
                                        gtol=1e-14).x


def _noisy_series():
    data = simulate("lotka-volterra", 1, n_obs=(16, 16), noise=0.05, seed=3)
    return data, Scaling.fit(data)


def _model(scaling: Scaling, controller: PIDController = TIGHT) -> PolynomialODE:
    plain = PolynomialODE.from_terms(START, ("x", "y"))
    return PolynomialODE(plain.vector_field.matrix().detach().numpy(), 2, scaling,
                         state_names=("x", "y"), controller=controller)


def _parameters(model: PolynomialODE) -> np.ndarray:
    terms = model.terms()
    return np.array([terms["dx"]["x"], -terms["dx"]["x y"], -terms["dy"]["y"],
                     terms["dy"]["x y"]])


@pytest.mark.parametrize("learn_initial_states", [True, False])
def test_least_squares_matches_scipy(learn_initial_states: bool) -> None:
    data, scaling = _noisy_series()
    times, values = data.times[0], data.values[0]
    model = _model(scaling)
    found = least_squares(model, data, scaling, learn_initial_states=learn_initial_states)
    assert found.converged
    first = None if learn_initial_states else values[0]
    start = np.array([1.3, 0.8, 2.6, 0.9, *(values[0] if learn_initial_states else [])])
    expected = scipy_reference(times, values, np.asarray(scaling.state_scale), start, first)
    np.testing.assert_allclose(_parameters(model), expected[:4], rtol=1e-5)
    np.testing.assert_allclose(found.initial_states[0],
                               expected[4:] if learn_initial_states else values[0], rtol=1e-5)
    prediction = model(torch.as_tensor(scaling.scale_values(found.initial_states)),
                       torch.as_tensor(scaling.scale_times(times)))[:, 0].detach()
    residual = prediction.numpy() - scaling.scale_values(values)
    assert found.mse == pytest.approx(np.mean(residual ** 2), rel=1e-9)


@pytest.mark.parametrize("failure", ["solve fails", "residuals overflow"])
def test_a_trial_point_whose_solve_fails_is_stepped_back_from(monkeypatch, failure: str
                                                              ) -> None:
    """A failed solve at a trial point, or one whose squared residuals overflow float64 (a
    solve that nearly blew up), counts as NaN residuals: the trust region shrinks and the
    fit still reaches the optimum."""
    data, scaling = _noisy_series()
    model = _model(scaling, LOOSE)
    solve, start, failed = model.solve, model.vector_field.coefficients.detach().clone(), []

    def failing_at_the_first_trial_point(y0: torch.Tensor, ts: torch.Tensor,
                                         **options: Any) -> Solution:
        solution = solve(y0, ts, **options)
        if not failed and not torch.equal(model.vector_field.coefficients, start):
            failed.append(1)
            if failure == "solve fails":
                raise SolveFailedError(Status.MAX_STEPS, "at a trial point")
            solution.ys = solution.ys * 1e160
        return solution

    monkeypatch.setattr(model, "solve", failing_at_the_first_trial_point)
    found = least_squares(model, data, scaling)
    reference = least_squares(_model(scaling, LOOSE), data, scaling)
    assert failed and found.converged
    np.testing.assert_allclose(found.mse, reference.mse, rtol=1e-8)


def test_a_jacobian_that_cannot_be_solved_ends_the_fit_at_its_best_point(monkeypatch
                                                                          ) -> None:
    """Where the sensitivity equations cannot be solved (a formula near a blow-up takes more
    steps than allowed), the fit ends at the point it had reached: better than its start,
    not converged, standard errors unknown (NaN: pruning stops there)."""
    data, scaling = _noisy_series()
    model = _model(scaling, LOOSE)
    sensitivities, calls = least_squares_module.forward_sensitivities, []

    def failing_on_the_third_call(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise SolveFailedError(Status.MAX_STEPS, "in the sensitivities")
        return sensitivities(*args, **kwargs)

    monkeypatch.setattr(least_squares_module, "forward_sensitivities", failing_on_the_third_call)
    start = least_squares_module.MAX_EVALUATIONS
    monkeypatch.setattr(least_squares_module, "MAX_EVALUATIONS", 1)  # no step: the start
    reference = least_squares(_model(scaling, LOOSE), data, scaling, learn_initial_states=False)
    monkeypatch.setattr(least_squares_module, "MAX_EVALUATIONS", start)
    found = least_squares(model, data, scaling, learn_initial_states=False)
    assert len(calls) == 3 and not found.converged
    assert np.isnan(found.standard_errors).all() and found.mse < reference.mse
    prediction = model(torch.as_tensor(scaling.scale_values(data.values[0][:1])),
                       torch.as_tensor(scaling.scale_times(data.times[0])))[:, 0].detach()
    residual = prediction.numpy() - scaling.scale_values(data.values[0])
    assert found.mse == pytest.approx(np.mean(residual ** 2), rel=1e-9)  # the model is there


def test_a_start_that_cannot_be_solved_is_named(monkeypatch) -> None:
    data, scaling = _noisy_series()
    model = _model(scaling)

    def failing(y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> Solution:
        raise SolveFailedError(Status.MAX_STEPS, "at the start")

    monkeypatch.setattr(model, "solve", failing)
    with pytest.raises(InvalidArgumentError, match="starting parameters"):
        least_squares(model, data, scaling)


def test_the_evaluations_are_bounded(monkeypatch) -> None:
    data, scaling = _noisy_series()
    monkeypatch.setattr(least_squares_module, "MAX_EVALUATIONS", 2)
    found = least_squares(_model(scaling, LOOSE), data, scaling)
    assert found.evaluations <= 2 and not found.converged


def test_a_kept_formula_is_refitted_by_least_squares_on_every_observation() -> None:
    """After a split in time, `refit` takes a formula to its least-squares optimum on the
    training and validation rows together: scipy's fit of the same model on those rows."""
    data, scaling = _noisy_series()
    train, val, _ = split_in_time(data, 0.25, 0.0)
    result = FitResult(_model(scaling), scaling, [], "finished", "finished", 1, 1.0,
                       TrainConfig(), train.initial_states())
    refitted, record = refit(result, train, val, scaling)
    assert record["method"] == "least squares"
    assert isinstance(refitted.model, PolynomialODE) and refitted.model is not result.model
    times, values = data.times[0], data.values[0]
    expected = scipy_reference(times, values, np.asarray(scaling.state_scale),
                               np.array([1.3, 0.8, 2.6, 0.9, *values[0]]), None)
    np.testing.assert_allclose(_parameters(refitted.model), expected[:4], rtol=1e-5)
    np.testing.assert_allclose(refitted.initial_states[0], expected[4:], rtol=1e-5)


@pytest.mark.parametrize("kind", ["formula", "network"])
def test_forward_sensitivities_match_scipys_differences(kind: str) -> None:
    """d y(t) / d(parameters, y0) from the sensitivity equations on two trajectories with
    their own time grids, against central differences of scipy DOP853 solves at 1e-12 of the
    same field: a formula (exact differences in the field) and a tanh network (nonlinear in
    its weights)."""
    scaling = Scaling((0.0, 0.0), (1.0, 1.0))
    torch.manual_seed(0)
    field = (_model(scaling).vector_field if kind == "formula"
             else MLP(2, width=6, final_scale=1.0).double())
    model = NeuralODE(field, controller=TIGHT).double()
    y0 = torch.tensor([[1.2, 0.7], [0.6, 1.1]], dtype=torch.float64)
    ts = torch.tensor([[0.0, 0.5], [0.3, 0.9], [1.1, 1.6], [2.0, 2.1]], dtype=torch.float64)
    found = forward_sensitivities(model, y0, ts)  # [T, B, D, P + D]
    theta = parameters_to_vector(model.parameters()).detach().clone()

    def scipy_states(parameters: torch.Tensor, start: np.ndarray, times: np.ndarray
                     ) -> np.ndarray:
        vector_to_parameters(parameters, model.parameters())
        with torch.no_grad():
            def rate(t: float, y: np.ndarray) -> np.ndarray:
                return field(torch.tensor(t, dtype=torch.float64),
                             torch.as_tensor(y)[None])[0].numpy()
            solution = scipy.integrate.solve_ivp(rate, (times[0], times[-1]), start,
                                                 t_eval=times, method="DOP853", rtol=1e-12,
                                                 atol=1e-12)
        return solution.y.T

    n_weights = len(theta)
    for b in range(2):
        start, times = y0[b].numpy(), ts[:, b].numpy()
        columns = []
        for k in range(n_weights + 2):
            step = 1e-5 * max(1.0, abs(float(theta[k]))) if k < n_weights else 1e-5
            shift = torch.zeros(n_weights, dtype=torch.float64)
            moved = np.zeros(2)
            if k < n_weights:
                shift[k] = step
            else:
                moved[k - n_weights] = step
            ahead = scipy_states(theta + shift, start + moved, times)
            behind = scipy_states(theta - shift, start - moved, times)
            columns.append((ahead - behind) / (2 * step))
        expected = np.stack(columns, -1)  # [T, D, P + D]
        np.testing.assert_allclose(found[:, b].numpy(), expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())


def test_standard_errors_match_scipys_linearization() -> None:
    """sqrt(diag(s^2 (J^T J)^-1)) at the optimum, against the same formula from scipy's own
    fit (finite-difference Jacobian, DOP853 at 1e-12), initial states fitted in both."""
    data, scaling = _noisy_series()
    times, values = data.times[0], data.values[0]
    model = _model(scaling)
    found = least_squares(model, data, scaling)
    scale = np.asarray(scaling.state_scale)
    theta = scipy_reference(times, values, scale, np.array([1.3, 0.8, 2.6, 0.9, *values[0]]),
                            None)

    def residuals(p: np.ndarray) -> np.ndarray:
        a, b, c, d = p[:4]
        solution = scipy.integrate.solve_ivp(
            lambda t, z: [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - c * z[1]],
            (times[0], times[-1]), p[4:], t_eval=times, method="DOP853", rtol=1e-12,
            atol=1e-12)
        return ((solution.y.T - values) / scale).ravel()

    r = residuals(theta)
    jacobian = np.stack([(residuals(theta + h) - residuals(theta - h)) / (2 * h.sum())
                         for h in np.eye(6) * 1e-6 * np.maximum(np.abs(theta), 1.0)], 1)
    variance = r @ r / (len(r) - len(theta))
    expected = np.sqrt(np.diag(variance * np.linalg.inv(jacobian.T @ jacobian)))[:4]
    np.testing.assert_allclose(found.standard_errors, expected, rtol=1e-3)


def test_a_term_removed_keeps_the_others() -> None:
    model = PolynomialODE.from_terms({"dx": {"x": 1.5, "x y": -1.0, "y^2": 0.1},
                                      "dy": {"y": -3.0, "x y": 1.0}}, ("x", "y"))
    smaller = model.without(2)  # dx's y^2, the third learned coefficient
    assert smaller.terms() == {"dx": {"x": 1.5, "x y": -1.0}, "dy": {"y": -3.0, "x y": 1.0}}
    assert model.terms()["dx"]["y^2"] == pytest.approx(0.1)  # the original is unchanged
