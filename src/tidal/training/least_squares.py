r"""Least squares for a model with few parameters (a refitted formula, `PolynomialODE`).

The same objective as `fit`'s last stage, the squared error over every observed entry of the
trajectories from their estimated initial states (scaled units),

$$ \min_{\theta, \delta} \sum_{i,j,d \text{ observed}}
   \big(y_{\theta}(t_{ij}; y_{i0} + \delta_i)_d - y_{ijd}\big)^2, $$

solved by a trust-region Gauss-Newton method (`scipy.optimize.least_squares`, "trf") with the
exact Jacobian of the computed residuals: reverse-mode autograd through the solve's stored
graph (`BackpropAdjoint`), one row per observed entry, the rows batched (`is_grads_batched`).
For a few coefficients this reaches the optimum that a first-order method creeps towards
along the flat valleys of a trajectory fit (on one Lotka-Volterra series Adam needed ~1,000
epochs to come within a few percent of it), and it is what the least-squares fit of a known
model, the usual baseline, computes.

Where a trial point's solve fails (a formula that blows up), its residuals are reported as
NaN, which makes the method shrink its trust region and try a nearer point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.adjoint.backprop import BackpropAdjoint
from tidal.data import Scaling, Trajectories
from tidal.models import NeuralODE
from tidal.training.batches import make_batch

#: evaluations of the residuals at most (each with a solve; a Jacobian costs one backward pass
#: per observed entry, batched)
MAX_EVALUATIONS = 100
#: the Jacobian's rows computed together (memory grows with them: all ~2,000 rows of the
#: README's 32-series UDE example at once held 2.7 GB)
JACOBIAN_ROWS = 256


@dataclass
class LeastSquaresResult:
    """What `least_squares` returns: the model holds the optimum's parameters.

    Attributes:
        initial_states: [N, D] the trajectories' estimated initial states (user units).
        mse: the mean squared error over the observed entries (scaled units), as `fit`'s
            training loss.
        evaluations: the solves it took.
        converged: whether scipy's tolerances were met (else it stopped at
            `MAX_EVALUATIONS`; the parameters are the best found either way).
        standard_errors: the model's parameters' standard errors (in `model.parameters()`'
            order, flattened) from the linearization at the optimum, sqrt(diag(s^2 (J^T
            J)^+)) with s^2 = RSS / (observed entries - fitted values); NaN where the entries
            do not outnumber the fitted values.
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
    parameters = list(model.parameters())
    n_weights = sum(p.numel() for p in parameters)
    offsets = torch.zeros_like(batch.y0, requires_grad=learn_initial_states)

    def residuals(theta: np.ndarray) -> torch.Tensor:
        values = torch.as_tensor(theta, dtype=dtype)
        with torch.no_grad():
            vector_to_parameters(values[:n_weights], parameters)
            if learn_initial_states:
                offsets.copy_(values[n_weights:].reshape(offsets.shape))
        y0 = start.to(dtype) + offsets
        return (model.solve(y0, batch.ts, adjoint=BackpropAdjoint()).ys - batch.ys)[batch.mask]

    def values(theta: np.ndarray) -> np.ndarray:
        try:
            with torch.no_grad():
                return residuals(theta).double().numpy()
        except SolveFailedError:
            return np.full(int(batch.mask.sum()), np.nan)

    def jacobian(theta: np.ndarray) -> np.ndarray:
        r = residuals(theta)
        inputs = parameters + ([offsets] if learn_initial_states else [])
        rows = []
        for first_row in range(0, len(r), JACOBIAN_ROWS):
            index = torch.arange(first_row, min(first_row + JACOBIAN_ROWS, len(r)))
            seeds = torch.nn.functional.one_hot(index, len(r)).to(r.dtype)
            blocks = torch.autograd.grad(r, inputs, seeds, retain_graph=True,
                                         is_grads_batched=True)
            rows.append(torch.cat([block.reshape(len(seeds), -1) for block in blocks], 1))
        return torch.cat(rows).double().numpy()

    theta0 = torch.cat([parameters_to_vector(parameters).detach().double(),
                        torch.zeros(offsets.numel() if learn_initial_states else 0,
                                    dtype=torch.float64)]).numpy()
    if not np.isfinite(values(theta0)).all():
        raise InvalidArgumentError(
            "`least_squares`: the model's trajectories from its starting parameters cannot be "
            "solved; start from parameters that fit the data roughly (e.g. after `fit`).")
    solution = scipy.optimize.least_squares(values, theta0, jac=jacobian, method="trf",
                                            x_scale="jac", max_nfev=MAX_EVALUATIONS)
    values(solution.x)  # leave the model at the optimum
    states = (start + offsets.detach().double()).numpy()
    residual_dof = len(solution.fun) - len(solution.x)
    variance = 2 * solution.cost / residual_dof if residual_dof > 0 else np.nan
    covariance = variance * np.linalg.pinv(solution.jac.T @ solution.jac)
    return LeastSquaresResult(scaling.unscale_values(states),
                              float(2 * solution.cost / len(solution.fun)),
                              int(solution.nfev), bool(solution.status > 0),
                              np.sqrt(np.diag(covariance)[:n_weights]))
