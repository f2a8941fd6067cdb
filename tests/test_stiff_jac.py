"""A user Jacobian (`jac=`) on the stiff solvers: used instead of autodiff (counted), and
giving the results of the autodiff Jacobian and of scipy's Radau at rtol 1e-12."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import tidal
from stiff_problems import (  # noqa: F401  (float64_default is an autouse fixture)
    LinearStiff,
    float64_default,
    radau_reference,
    rober,
    rober_numpy,
)

ROBER_SCALE = torch.tensor([1.0, 1e-5, 1.0])
FACTORS = torch.tensor([0.5, 2.0])


class Counted:
    def __init__(self, jac):
        self.jac, self.calls = jac, 0

    def __call__(self, *args):
        self.calls += 1
        return self.jac(*args)


def _numpy_rober(factors: torch.Tensor):
    """ROBER evaluated in numpy: no autodiff can differentiate it, so only `jac` can help."""
    fields = [rober_numpy(float(k)) for k in factors]

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = y.detach().reshape(-1, 3).numpy()
        return torch.tensor(np.array([f(0.0, row) for f, row in zip(fields, rows)])
                            ).reshape(y.shape)

    return field


@functools.cache
def _reference(factor: float, t_end: float) -> np.ndarray:
    return radau_reference(rober_numpy(factor), [1.0, 0.0, 0.0], t_end)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_user_jacobian_is_used_and_matches_radau(per_sample: bool) -> None:
    """ROBER with rates scaled by 0.5 and 2 per sample. With f written in numpy (autodiff
    cannot form its Jacobian, so the solve works only through `jac`): one call of `jac` per
    Jacobian in the statistics and results within 20 rtol of Radau. With f in torch (per
    sample; the shared grid's autodiff Jacobian is slow): the same steps and results as with
    the autodiff Jacobian."""
    field, jac = rober(FACTORS)
    counted = Counted(jac)
    y0 = torch.tensor([[1.0, 0.0, 0.0]]).expand(2, 3)
    ts = torch.tensor([0.0, 1.0, 10.0])
    ts = ts[:, None].expand(3, 2) if per_sample else ts
    controller = tidal.PIDController(1e-6, 1e-6 * ROBER_SCALE)
    sol = tidal.solve(_numpy_rober(FACTORS), y0, ts, solver=tidal.Rodas5P(jac=counted),
                      controller=controller)
    assert counted.calls == int(sol.stats.num_jacobians.max()) > 10
    for b, factor in enumerate(FACTORS.tolist()):
        error = (sol.ys[-1, b].numpy() - _reference(factor, 10.0)) / ROBER_SCALE.numpy()
        assert np.abs(error).max() < 20e-6
    if not per_sample:
        return
    with_jac = tidal.solve(field, y0, ts, solver=tidal.Rodas5P(jac=jac), controller=controller)
    autodiff = tidal.solve(field, y0, ts, solver=tidal.Rodas5P(), controller=controller)
    torch.testing.assert_close(with_jac.ys, autodiff.ys, rtol=1e-12, atol=1e-16)
    assert torch.equal(with_jac.stats.num_steps, autodiff.stats.num_steps)


def test_user_jacobian_with_args_backwards_in_time() -> None:
    """`jac(t, y, args)` when the solve has `args`, and the sign of a backward solve: the
    linear stiff system y' = L y + v cos 2t from its exact value at t = 1 back to 0."""
    problem = LinearStiff((-1.0, -2.0, -3.0))
    counted = Counted(lambda t, y, L: L.expand(*y.shape, y.shape[-1]))

    def field(t: torch.Tensor, y: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        return y @ L.T + torch.cos(2 * t)[..., None] * problem.v_t

    end = torch.tensor(problem.exact(1.0))
    sol = tidal.solve(field, end, torch.tensor([1.0, 0.0]), args=problem.L_t,
                      solver=tidal.Rodas5P(jac=counted),
                      controller=tidal.PIDController(1e-9, 1e-9))
    assert counted.calls == int(sol.stats.num_jacobians) > 0
    assert np.abs(sol.ys[-1].numpy() - problem.y0).max() < 1e-7


def test_user_jacobian_carries_parameter_gradients() -> None:
    """A differentiable `jac` in terms of the rates: the gradient of a loss with respect to
    the rates equals the one with the autodiff Jacobian."""
    def loss(use_jac: bool) -> torch.Tensor:
        factor = torch.ones((), requires_grad=True)
        field, jac = rober(factor)
        sol = tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.1, 1.0]),
                          solver=tidal.Rodas5P(jac=jac if use_jac else None),
                          controller=tidal.PIDController(1e-6, 1e-6 * ROBER_SCALE))
        (grad,) = torch.autograd.grad((sol.ys / ROBER_SCALE).sum(), factor)
        return grad

    torch.testing.assert_close(loss(True), loss(False), rtol=1e-9, atol=0)


def test_implicit_method_uses_the_user_jacobian() -> None:
    """A fixed-step Newton method with `jac=` on y' = L y + v cos 2t (eigenvalues down to
    -1e6): the steps of the autodiff Jacobian, within 1e-6 of the exact solution."""
    problem = LinearStiff((-1.0, -1e3, -1e6))
    counted = Counted(lambda t, y: problem.L_t.expand(*y.shape, y.shape[-1]))
    y0, ts = torch.tensor(problem.y0), torch.tensor([0.0, 1.0])
    control = tidal.ConstantStepSize(0.05)
    with_jac = tidal.solve(problem, y0, ts, solver=tidal.solvers.RadauIIA5(jac=counted),
                           controller=control)
    autodiff = tidal.solve(problem, y0, ts, solver=tidal.solvers.RadauIIA5(),
                           controller=control)
    assert counted.calls == int(with_jac.stats.num_jacobians) == 20
    torch.testing.assert_close(with_jac.ys, autodiff.ys, rtol=1e-12, atol=1e-14)
    assert np.abs(with_jac.ys[-1].numpy() - problem.exact(1.0)).max() < 1e-6
