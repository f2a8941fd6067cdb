"""Batched Jacobians (`BatchedJacobian`) against analytic Jacobians and finite differences, in
every mode, with the fallbacks exercised by fields that rule out the faster modes."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.function import once_differentiable

from stiff_problems import rober
from tidal._errors import InvalidArgumentError
from tidal.solvers.jacobian import MODES, BatchedJacobian

F64 = torch.float64
SCALE = torch.tensor([0.5, 1.0, 2.0, 1.7], dtype=F64)
Y = torch.tensor([[1.0, 1e-5, 0.0], [0.9, 2e-5, 0.1], [0.5, 1e-6, 0.5], [0.7, 3e-5, 0.3]],
                 dtype=F64)
T = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)


def forced_rober(t, y):
    """ROBER with per-sample rates plus a time-dependent term: df/dt = cos(t) y."""
    field, _ = rober(SCALE)
    return field(t, y) + torch.sin(t)[..., None] * y


def forced_rober_jacobian(t, y):
    _, jac = rober(SCALE)
    return jac(t, y) + torch.sin(t)[..., None, None] * torch.eye(3, dtype=F64)


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13 * float(want.abs().max()))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shared_time", [False, True], ids=["per_sample_t", "shared_t"])
def test_every_mode_matches_the_analytic_jacobian(mode: str, shared_time: bool) -> None:
    t = torch.tensor(0.3, dtype=F64) if shared_time else T
    jacobian = BatchedJacobian(forced_rober)
    jacobian.mode = mode
    J, dfdt = jacobian(t, Y)
    _close(J, forced_rober_jacobian(t, Y))
    _close(dfdt, torch.cos(t)[..., None] * Y)
    assert jacobian.num_evaluations == 1 and not J.requires_grad


def test_a_neural_field_against_finite_differences() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.to(F64)

    def field(t, y):
        return net(torch.cat([y, t[:, None]], -1))

    with torch.no_grad():
        J, dfdt = BatchedJacobian(field)(T, Y)
        eps = 1e-6
        columns = [(field(T, Y + eps * e) - field(T, Y - eps * e)) / (2 * eps)
                   for e in torch.eye(3, dtype=F64)]
        finite_dfdt = (field(T + eps, Y) - field(T - eps, Y)) / (2 * eps)
    torch.testing.assert_close(J, torch.stack(columns, -1), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(dfdt, finite_dfdt, rtol=1e-8, atol=1e-9)


def test_user_jacobian_and_autonomous_fields() -> None:
    jacobian = BatchedJacobian(forced_rober, jac=forced_rober_jacobian)
    J, dfdt = jacobian(T, Y)
    assert jacobian.mode == "user"
    _close(J, forced_rober_jacobian(T, Y))
    _close(dfdt, torch.cos(T)[..., None] * Y)
    field, jac = rober(SCALE)
    assert BatchedJacobian(field, autonomous=True)(T, Y).dfdt is None
    assert BatchedJacobian(field, jac=jac, autonomous=True)(T, Y).dfdt is None


def test_a_wrong_user_jacobian_is_named() -> None:
    jacobian = BatchedJacobian(forced_rober, jac=lambda t, y: torch.zeros(4, 3))
    with pytest.raises(InvalidArgumentError, match=r"`jac=`.*\(4, 3, 3\)"):
        jacobian(T, Y)


# Fields that rule out the faster modes. Each computes y^2 elementwise (J = diag(2 y)).


class _Square(torch.autograd.Function):
    """x^2 with the backward pass of reverse mode; subclasses change how it can be
    differentiated."""

    @staticmethod
    def forward(x):
        return x ** 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _VmapHostileBackward(_Square):
    """A backward pass that reads its incoming gradient on the host: vmap cannot batch it."""

    @staticmethod
    def backward(ctx, grad):
        assert float(grad.abs().sum()) >= 0.0
        return _Square.backward(ctx, grad)


class _OnceDifferentiable(_Square):
    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return _Square.backward(ctx, grad)


class _ForwardOnly(_Square):
    """A forward-mode rule only (its backward refuses)."""

    generate_vmap_rule = True

    @staticmethod
    def jvp(ctx, tangent):
        return 2 * ctx.x * tangent

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("no reverse mode")


class _ForwardOnlyNoVmap(_ForwardOnly):
    generate_vmap_rule = False


def _in_place(t, y):
    out = torch.empty_like(y)
    out[:, 0] = y[:, 0] ** 2  # in-place writes into a buffer
    out[:, 1:] = y[:, 1:] ** 2 * (1.0 + 0.0 * y.abs().max().item())  # .item() on the state
    return out


@pytest.mark.parametrize(("field", "mode"), [
    (lambda t, y: y ** 2, "reverse_vmap"),
    (_in_place, "reverse_vmap"),
    (lambda t, y: torch.nn.functional.dropout(y, 0.0, training=True) ** 2, "reverse_vmap"),
    (lambda t, y: _OnceDifferentiable.apply(y), "reverse_vmap"),
    (lambda t, y: _VmapHostileBackward.apply(y), "reverse"),
    (lambda t, y: _ForwardOnly.apply(y), "forward_vmap"),
    (lambda t, y: _ForwardOnlyNoVmap.apply(y), "jvp"),
], ids=["plain", "in_place_and_item", "dropout", "once_differentiable", "host_sync_backward",
        "forward_only", "forward_only_no_vmap"])
def test_fallbacks(field, mode: str) -> None:
    jacobian = BatchedJacobian(field)
    J, dfdt = jacobian(T, Y)
    assert jacobian.mode == mode
    _close(J, torch.diag_embed(2 * Y))
    assert torch.equal(dfdt, torch.zeros_like(Y))


def test_a_field_autograd_cannot_see_is_refused_with_advice() -> None:
    def through_numpy(t, y):
        return torch.from_numpy(y.detach().numpy() ** 2)

    with pytest.raises(InvalidArgumentError, match="jac="):
        BatchedJacobian(through_numpy)(T, Y)


@pytest.mark.parametrize("mode", MODES)
def test_the_jacobian_is_differentiable(mode: str) -> None:
    """J and df/dt as functions of y, t and a parameter of the field pass gradcheck."""
    def both(y, t, theta):
        def field(t, y):
            return torch.tanh(theta * y) * torch.cos(t)[:, None] + y[:, :1] * y

        jacobian = BatchedJacobian(field)
        jacobian.mode = mode
        return jacobian(t, y)

    y = Y[:2].clone().requires_grad_()
    t = T[:2].clone().requires_grad_()
    theta = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: tuple(both(*args)), (y, t, theta))


def test_no_graph_without_a_reason() -> None:
    """Grad mode on but nothing requiring grad: J carries no graph; a parameter that requires
    grad gives it one."""
    theta = torch.tensor(2.0, dtype=F64)
    assert not BatchedJacobian(lambda t, y: theta * y ** 2)(T, Y).J.requires_grad
    theta.requires_grad_()
    assert BatchedJacobian(lambda t, y: theta * y ** 2)(T, Y).J.requires_grad
