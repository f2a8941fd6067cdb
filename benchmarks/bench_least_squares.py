"""Cost of `tidal.training.least_squares` (a formula's coefficients and every trajectory's
initial state fitted by Gauss-Newton) against scipy's least squares on scipy's own solver,
and its Jacobian by forward sensitivities against reverse-mode autograd, in one run.

Run from the repository root:

    .venv/bin/python benchmarks/bench_least_squares.py            # ~6 minutes
    .venv/bin/python benchmarks/bench_least_squares.py --quick    # one series only

Problem: Lotka-Volterra (dx = a x - b x y, dy = d x y - c y), `tidal.data.simulate` with 5%
noise, fitted from (1.3, 0.8, 2.6, 0.9) and the first observations; 1 series of 16 points
and 32 series of 20-40 irregular points (~2,000 residuals). Rows:

- tidal: `least_squares` as shipped (Jacobian by forward sensitivities), Dopri5 at the
  given rtol (atol = rtol / 100);
- tidal, reverse-mode Jacobian: the same fit with the Jacobian by batched reverse-mode
  autograd through the solve (one backward pass per residual, 256 at a time; what tidal used
  before);
- scipy: `scipy.optimize.least_squares` ("trf", 2-point finite-difference Jacobian) on
  `solve_ivp` (RK45, the same rtol and atol) of the same model, one solve per trajectory.

CPU seconds, one torch thread, one run each; the final mean squared error (scaled units) and
the solves (evaluations of the residuals; Jacobians for the two tidal rows) are shown so that
equal work is visible.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.integrate
import scipy.optimize
import torch

from tidal import PIDController
from tidal.adjoint.backprop import BackpropAdjoint
from tidal.data import Scaling, simulate
from tidal.models.polynomial import PolynomialODE
from tidal.training import least_squares as least_squares_module
from tidal.training.batches import make_batch
from tidal.training.least_squares import least_squares

START = {"dx": {"x": 1.3, "x y": -0.8}, "dy": {"y": -2.6, "x y": 0.9}}
ROWS = 256


def reverse_mode_sensitivities(model, y0, ts, initial_states=True, *, mask):
    """[T, B, D, P + D] like `forward_sensitivities` at the observed entries (`mask`
    [T, B, D]; zero elsewhere), by reverse-mode autograd: one batched backward pass per
    observed entry."""
    with torch.enable_grad():
        start = y0.detach().requires_grad_(initial_states)
        ys = model.solve(start, ts, adjoint=BackpropAdjoint()).ys  # [T, B, D]
        observed = ys[mask]
        inputs = [*model.parameters(), *([start] if initial_states else [])]
        blocks = []
        for first in range(0, len(observed), ROWS):
            index = torch.arange(first, min(first + ROWS, len(observed)))
            seeds = torch.nn.functional.one_hot(index, len(observed)).to(observed.dtype)
            grads = torch.autograd.grad(observed, inputs, seeds, retain_graph=True,
                                        is_grads_batched=True)
            blocks.append([g.reshape(len(index), -1) for g in grads])
    columns = [torch.cat([block[i] for block in blocks]) for i in range(len(inputs))]
    rows = [columns[0]]
    if initial_states:  # each entry's derivative by its own trajectory's initial state
        samples, states = y0.shape
        sample = torch.nonzero(mask)[:, 1]
        by_state = columns[-1].view(len(sample), samples, states)
        rows.append(by_state[torch.arange(len(sample)), sample])
    result = ys.new_zeros(*ys.shape, sum(r.shape[1] for r in rows))
    result[mask] = torch.cat(rows, 1)
    return result


def tidal_fit(data, scaling, rtol, reverse=False):
    plain = PolynomialODE.from_terms(START, ("x", "y"))
    model = PolynomialODE(plain.vector_field.matrix().detach().numpy(), 2, scaling,
                          state_names=("x", "y"), controller=PIDController(rtol, rtol / 100))
    calls = []
    original = least_squares_module.forward_sensitivities
    mask = make_batch(data.scaled(scaling), torch.float64).mask

    def counted(*args, **kwargs):
        calls.append(1)
        if reverse:
            return reverse_mode_sensitivities(*args, **kwargs, mask=mask)
        return original(*args, **kwargs)

    least_squares_module.forward_sensitivities = counted
    try:
        start = time.process_time()
        found = least_squares(model, data, scaling)
        seconds = time.process_time() - start
    finally:
        least_squares_module.forward_sensitivities = original
    return seconds, found.mse, found.evaluations, len(calls)


def scipy_fit(data, scaling, rtol):
    scale = np.asarray(scaling.state_scale)
    n = len(data.times)

    def residuals(theta):
        a, b, c, d = theta[:4]
        starts = theta[4:].reshape(n, 2)
        out = []
        for times, values, y0 in zip(data.times, data.values, starts):
            solution = scipy.integrate.solve_ivp(
                lambda t, z: [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - c * z[1]],
                (times[0], times[-1]), y0, t_eval=times, method="RK45", rtol=rtol,
                atol=rtol / 100 * scale)
            if solution.status != 0:  # failed at a trial point: as tidal, NaN residuals
                return np.full(sum(v.size for v in data.values), np.nan)
            out.append(((solution.y.T - values) / scale).ravel())
        return np.concatenate(out)

    theta0 = np.concatenate([[1.3, 0.8, 2.6, 0.9], np.stack([v[0] for v in data.values]).ravel()])
    start = time.process_time()
    solution = scipy.optimize.least_squares(residuals, theta0, method="trf", x_scale="jac",
                                            max_nfev=least_squares_module.MAX_EVALUATIONS)
    seconds = time.process_time() - start
    return seconds, float(2 * solution.cost / len(solution.fun)), solution.nfev, solution.njev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one series only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("1 series, 16 points", 1, (16, 16), 1e-8),
             ("1 series, 16 points", 1, (16, 16), 1e-5)]
    if not args.quick:
        cases.append(("32 series, 20-40 points", 32, (20, 40), 1e-5))
    print("| problem | rtol | residuals | method | CPU s | x tidal | MSE | evaluations | "
          "Jacobians |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, count, n_obs, rtol in cases:
        data = simulate("lotka-volterra", count, n_obs=n_obs, noise=0.05, seed=3)
        scaling = Scaling.fit(data)
        residuals = sum(int(np.isfinite(v).sum()) for v in data.values)
        rows = [("tidal", tidal_fit(data, scaling, rtol)),
                ("tidal, reverse-mode Jacobian", tidal_fit(data, scaling, rtol, reverse=True)),
                ("scipy (solve_ivp RK45, finite differences)", scipy_fit(data, scaling, rtol))]
        base = rows[0][1][0]
        for method, (seconds, mse, evaluations, jacobians) in rows:
            print(f"| {name} | {rtol:g} | {residuals} | {method} | {seconds:.2f} | "
                  f"{seconds / base:.2f} | {mse:.6g} | {evaluations} | {jacobians} |", flush=True)


if __name__ == "__main__":
    main()
