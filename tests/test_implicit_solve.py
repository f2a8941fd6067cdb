"""The fixed-step implicit methods through `tidal.odeint` and `tidal.solve` against exact
solutions: stiff linear systems, order of convergence, per-sample Newton failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tidal
from stiff_problems import LinearStiff, float64_default  # noqa: F401
from tidal.solvers.implicit import IMPLICIT_TABLEAUS

NAMES = sorted(set(IMPLICIT_TABLEAUS) - {"implicit_midpoint"})


@pytest.mark.parametrize("name", NAMES)
def test_odeint_on_a_stiff_linear_system(name: str) -> None:
    """odeint(method=name) with a fixed step on eigenvalues -1, -1e3, -1e4: the L-stable
    methods damp the stiff modes with an error of their order; none blows up."""
    problem = LinearStiff((-1.0, -1e3, -1e4))
    t = torch.tensor([0.0, 1.0])
    errors = []
    for step in (0.05, 0.025):
        ys = tidal.odeint(problem, torch.tensor(problem.y0), t, method=name,
                          options={"step_size": step})
        errors.append(np.abs(ys[-1].numpy() - problem.exact(1.0)).max())
    order = tidal.SOLVERS[name].order
    assert np.isfinite(errors).all()
    if IMPLICIT_TABLEAUS[name].l_stable and errors[1] > 1e-10:  # above round-off
        assert np.log2(errors[0] / errors[1]) > order - 0.5, errors


def test_failed_newton_ends_only_its_sample() -> None:
    """A sample whose Newton iteration cannot converge ends with NOT_CONVERGED; the other
    sample of the batch finishes and matches its exact solution."""
    rate = torch.tensor([[-1.0], [-1.0]])
    scale = torch.tensor([[1.0], [1e6]])

    def field(t, y):
        return rate * y + scale * (y - 1.0) ** 3 * (scale > 1)

    ts = torch.tensor([0.0, 1.0])[:, None].expand(2, 2)
    sol = tidal.solve(field, torch.tensor([[1.0], [3.0]]), ts,
                      solver=tidal.solvers.RadauIIA5(max_iters=3),
                      controller=tidal.ConstantStepSize(0.5), throw=False)
    assert sol.sample_status == (tidal.Status.SUCCESS, tidal.Status.NOT_CONVERGED)
    assert abs(float(sol.ys[-1, 0, 0]) - np.exp(-1.0)) < 1e-4
