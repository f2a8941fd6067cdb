r"""Least squares for a model with few parameters (a refitted formula, `PolynomialODE`).

The same objective as `fit`'s last stage, the squared error over every observed entry of the
trajectories from their estimated initial states (scaled units),

$$ \min_{\theta, \delta} \sum_{i,j,d \text{ observed}}
   \big(y_{\theta}(t_{ij}; y_{i0} + \delta_i)_d - y_{ijd}\big)^2, $$

solved by a trust-region Gauss-Newton method (`scipy.optimize.least_squares`, "trf"). Its
Jacobian comes from the forward sensitivity equations: with S = dy/d(theta, y0) carried
beside each trajectory's state,

$$ \frac{d}{dt}\begin{pmatrix} y \\ S \end{pmatrix}
   = \begin{pmatrix} f(t, y; \theta) \\ \partial_y f\, S + \partial_\theta f\, E
   \end{pmatrix}, \qquad S(t_0) = (0 \;\; I), $$

solved in one solve with the model's solver and tolerances (E selects theta's columns). The
field's directional derivatives are central differences (exact for a field quadratic in y
and linear in theta, as a degree-2 formula); a trajectory depends only on its own initial
state, so one column per state dimension serves all trajectories. Reverse-mode autograd would
need one backward pass per residual (one per observed entry, ~2,000 in the README's UDE
example: 10x the time of this solve and then some).
For a few coefficients this reaches the optimum that a first-order method creeps towards
along the flat valleys of a trajectory fit (on one Lotka-Volterra series Adam needed ~1,000
epochs to come within a few percent of it), and it is what the least-squares fit of a known
model, the usual baseline, computes.

Where a trial point's solve fails (a formula that blows up), or its squared residuals
overflow, its residuals are reported as NaN, which makes the method shrink its trust region
and try a nearer point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.adjoint.backprop import BackpropAdjoint
from tidal.controllers import PIDController
from tidal.controllers.norms import LeadingRMS
from tidal.data import Scaling, Trajectories
from tidal.integrate import solve
from tidal.models import NeuralODE
from tidal.training.batches import make_batch

#: evaluations of the residuals at most (each with a solve; a Jacobian costs one solve of the
#: sensitivity equations)
MAX_EVALUATIONS = 100


@dataclass
class LeastSquaresResult:
    """What `least_squares` returns: the model holds the optimum's parameters.

    Attributes:
        initial_states: [N, D] the trajectories' estimated initial states (user units).
        mse: the mean squared error over the observed entries (scaled units), as `fit`'s
            training loss.
        evaluations: the solves it took.
        converged: whether scipy's tolerances were met (else it stopped at
            `MAX_EVALUATIONS`, or where the sensitivity equations could not be solved; the
            parameters are the best found either way).
        standard_errors: the field's parameters' standard errors (in
            `model.vector_field.parameters()`' order, flattened) from the linearization at
            the optimum, sqrt(diag(s^2 (J^T J)^+)) with s^2 = RSS / (observed entries -
            fitted values); NaN where the entries do not outnumber the fitted values or no
            Jacobian could be computed there.
    """

    initial_states: np.ndarray
    mse: float
    evaluations: int
    converged: bool
    standard_errors: np.ndarray


def least_squares(model: NeuralODE, data: Trajectories, scaling: Scaling, *,
                  initial_states: np.ndarray | None = None, learn_initial_states: bool = True,
                  dtype: torch.dtype = torch.float64) -> LeastSquaresResult:
    """Fit `model`'s parameters (and, with `learn_initial_states`, each trajectory's initial
    state, started at `initial_states` in user units or the first observations) to `data` by
    least squares; `model` is changed in place. Meant for a few parameters: the Jacobian has
    one column per parameter."""
    model.to(dtype)
    batch = make_batch(data.scaled(scaling), dtype)
    first = batch.y0.to(torch.float64)
    start = (first if initial_states is None else torch.as_tensor(
        scaling.scale_values(np.asarray(initial_states)), dtype=torch.float64))
    parameters = list(model.vector_field.parameters())  # `forward_sensitivities`' columns
    n_weights = sum(p.numel() for p in parameters)
    offsets = torch.zeros_like(batch.y0)

    def load(theta: np.ndarray) -> torch.Tensor:
        """The initial states at `theta`, which is loaded into the model."""
        values = torch.as_tensor(theta, dtype=dtype)
        vector_to_parameters(values[:n_weights], parameters)
        if learn_initial_states:
            offsets.copy_(values[n_weights:].reshape(offsets.shape))
        return start.to(dtype) + offsets

    evaluations = 0
    sample = torch.nonzero(batch.mask)[:, 1:2]  # each residual's trajectory

    @torch.no_grad()
    def values(theta: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        y0 = load(theta)
        failed = np.full(int(batch.mask.sum()), np.nan)
        try:
            solution = model.solve(y0, batch.ts, adjoint=BackpropAdjoint())
        except SolveFailedError:
            return failed
        residuals = (solution.ys - batch.ys)[batch.mask].double().numpy()
        with np.errstate(over="ignore"):  # a solve that nearly blew up fails the same way
            return residuals if np.isfinite(residuals @ residuals) else failed

    def jacobian(theta: np.ndarray) -> np.ndarray:
        try:
            sensitivities = forward_sensitivities(model, load(theta), batch.ts,
                                                  learn_initial_states)
        except SolveFailedError as error:  # scipy asks at its current (best) point
            raise _NoJacobian(theta) from error
        rows = sensitivities[batch.mask]  # [R, P (+ D)]: d residual / d(theta (, its y0))
        if not learn_initial_states:
            return rows.double().numpy()
        n_samples, n_states = batch.y0.shape
        matrix = rows.new_zeros(len(rows), n_weights + n_samples * n_states)
        matrix[:, :n_weights] = rows[:, :n_weights]
        matrix.scatter_(1, n_weights + sample * n_states + torch.arange(n_states),
                        rows[:, n_weights:])
        return matrix.double().numpy()

    theta0 = torch.cat([parameters_to_vector(parameters).detach().double(),
                        torch.zeros(offsets.numel() if learn_initial_states else 0,
                                    dtype=torch.float64)]).numpy()
    if not np.isfinite(values(theta0)).all():
        raise InvalidArgumentError(
            "`least_squares`: the model's trajectories from its starting parameters cannot be "
            "solved; start from parameters that fit the data roughly (e.g. after `fit`).")
    evaluations = 0  # scipy's own, as its nfev
    try:
        solution = scipy.optimize.least_squares(values, theta0, jac=jacobian, method="trf",
                                                x_scale="jac", max_nfev=MAX_EVALUATIONS)
        theta, jac, converged = solution.x, solution.jac, bool(solution.status > 0)
    except _NoJacobian as stop:  # the fit ends at the best point it reached
        theta, jac, converged = stop.theta, None, False
    count = evaluations
    residuals = values(theta)  # and leaves the model there
    states = (start + offsets.double()).numpy()
    residual_dof = len(residuals) - len(theta)
    variance = residuals @ residuals / residual_dof if residual_dof > 0 else np.nan
    errors = (np.full(n_weights, np.nan) if jac is None else
              np.sqrt(np.diag(variance * np.linalg.pinv(jac.T @ jac))[:n_weights]))
    return LeastSquaresResult(scaling.unscale_values(states), float(np.mean(residuals ** 2)),
                              count, converged, errors)


class _NoJacobian(Exception):
    """The sensitivities cannot be solved at `theta`, the fit's current point."""

    def __init__(self, theta: np.ndarray) -> None:
        super().__init__("the sensitivity equations cannot be solved")
        self.theta = theta.copy()


@torch.no_grad()
def forward_sensitivities(model: NeuralODE, y0: torch.Tensor, ts: torch.Tensor,
                          initial_states: bool = True) -> torch.Tensor:
    """[T, B, D, P (+ D)]: the derivatives of the model's trajectories from `y0` [B, D] at
    `ts` with respect to its field's P parameters (flattened in `parameters()` order) and,
    with `initial_states`, each trajectory's own initial state; the sensitivity equations of
    the module docstring, solved with the model's solver and tolerances."""
    field = model.vector_field
    names, tensors = zip(*field.named_parameters())
    sizes = [p.numel() for p in tensors]
    theta = parameters_to_vector(tensors).detach()
    n_weights, (n_samples, n_states) = len(theta), y0.shape
    n_columns = n_weights + (n_states if initial_states else 0)
    # central differences at about the cube root of the precision, where their truncation
    # and rounding errors balance, relative to the states' and parameters' sizes
    step = torch.finfo(y0.dtype).eps ** (1 / 3)
    unit = torch.eye(n_columns, n_weights, dtype=y0.dtype)  # each column's parameter part
    parameter_size = torch.cat([1 / (1 + theta.abs()), theta.new_zeros(n_columns - n_weights)])

    def field_at(values: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        chunks = (c.view_as(p) for c, p in zip(values.split(sizes), tensors))
        return torch.func.functional_call(field, dict(zip(names, chunks)), (t, y))

    def augmented(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f(y) and d f(y + e s_k; theta + e u_k) / de at e = 0 for each column (s_k, u_k)
        of S, all in one call of the field with 2K + 1 sets of parameters."""
        y = z[:, :n_states]
        directions = z[:, n_states:].view(n_samples, n_states, n_columns).permute(2, 0, 1)
        state_size = (directions.abs().amax(-1) / (1 + y.abs().amax(-1))).amax(-1)  # [K]
        size = torch.maximum(state_size, parameter_size)
        steps = step / torch.where(size > 0, size, 1)
        moves = steps.view(-1, 1, 1) * directions
        states = torch.cat([y[None], y + moves, y - moves])
        moves = steps.view(-1, 1) * unit
        parameters = torch.cat([theta[None], theta + moves, theta - moves])
        rates = torch.func.vmap(field_at, in_dims=(0, None, 0))(parameters, t, states)
        derivatives = (rates[1:n_columns + 1] - rates[n_columns + 1:]) / (2 * steps.view(-1, 1, 1))
        return torch.cat([rates[0], derivatives.permute(1, 2, 0).reshape(n_samples, -1)], 1)

    start = y0.new_zeros(n_samples, n_states, n_columns)
    if initial_states:
        start[:, :, n_weights:] = torch.eye(n_states, dtype=y0.dtype)
    controller = model.controller
    if isinstance(controller, PIDController) and controller.norm is None:
        # steps chosen by the states alone (as CVODES by default): the plain solve's steps
        controller = dataclasses.replace(controller, norm=LeadingRMS(n_states, ts.ndim == 2))
    solution = solve(augmented, torch.cat([y0, start.view(n_samples, -1)], 1), ts,
                     solver=model.solver, controller=controller,
                     adjoint=BackpropAdjoint(), max_steps=model.max_steps)
    return solution.ys[..., n_states:].reshape(*solution.ys.shape[:-1], n_states, n_columns)
