"""`ODEBlock`: the Euler/ResNet identity, gradients, augmentation, NFE and argument errors."""

import pytest
import torch
from torch import nn

import tidal
from tidal.models import ODEBlock


class CountingField(nn.Module):
    """An autonomous tanh layer that counts its calls."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, d)
        self.calls = 0

    def forward(self, t, x):
        self.calls += 1
        return torch.tanh(self.linear(x))


def test_fixed_step_euler_block_equals_weight_tied_resnet():
    torch.manual_seed(0)
    field = CountingField(4).double()
    depth, t1 = 8, 2.0
    block = ODEBlock(field, t1=t1, solver=tidal.Euler(),
                     controller=tidal.ConstantStepSize(t1 / depth))
    x = torch.randn(16, 4, dtype=torch.float64)
    resnet = x
    h = t1 / depth
    for _ in range(depth):
        resnet = resnet + h * torch.tanh(field.linear(resnet))
    torch.testing.assert_close(block(x), resnet, rtol=0, atol=1e-14)


def test_nfe_counts_the_calls_of_the_field():
    field = CountingField(3).double()
    block = ODEBlock(field)
    block(torch.randn(5, 3, dtype=torch.float64))
    assert block.nfe == field.calls > 0


def test_augmented_dimensions_start_at_zero_and_are_returned():
    field = CountingField(5).double()
    torch.nn.init.zeros_(field.linear.weight)
    torch.nn.init.zeros_(field.linear.bias)
    block = ODEBlock(field, augment=2)
    x = torch.randn(3, 3, dtype=torch.float64)
    out = block(x)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, torch.cat([x, torch.zeros(3, 2, dtype=x.dtype)], 1))


def test_augmented_block_matches_the_analytic_flow():
    """Linear field A x on [x, 0]: the output is expm(t1 A) [x, 0]."""
    field = nn.Linear(3, 3, bias=False).double()
    block = ODEBlock(lambda t, x: field(x), augment=1, t1=0.7,
                     controller=tidal.PIDController(rtol=1e-10, atol=1e-12))
    x = torch.randn(4, 2, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(4, 1, dtype=x.dtype)], 1)
    expected = padded @ torch.linalg.matrix_exp(0.7 * field.weight).T
    torch.testing.assert_close(block(x), expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("adjoint", [tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(2)])
def test_gradcheck(adjoint):
    torch.manual_seed(1)
    field = tidal.nn.MLP(3, width=4, depth=1).double()
    block = ODEBlock(field, augment=1, solver=tidal.RK4(),
                     controller=tidal.ConstantStepSize(0.25), adjoint=adjoint)
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    weight = field.net[0].weight
    assert torch.autograd.gradcheck(lambda x, w: block(x), (x, weight))


def test_backsolve_adjoint_gradient_matches_backprop():
    torch.manual_seed(2)
    field = tidal.nn.MLP(2, width=8, depth=1, final_scale=1.0).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    grads = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.BacksolveAdjoint()):
        block = ODEBlock(field, adjoint=adjoint,
                         controller=tidal.PIDController(rtol=1e-9, atol=1e-10))
        field.zero_grad()
        block(x).square().sum().backward()
        grads.append(field.net[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("kwargs", "match"), [({"augment": -1}, "augment"),
                                               ({"t1": 0.0}, "t1"),
                                               ({"t1": float("inf")}, "t1")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(tidal.InvalidArgumentError, match=match):
        ODEBlock(tidal.nn.MLP(2), **kwargs)


def test_bad_input_shape_is_named():
    with pytest.raises(tidal.InvalidArgumentError, match="flatten"):
        ODEBlock(tidal.nn.MLP(2))(torch.zeros(2, 2, 2))


def test_input_of_another_dtype_than_the_field_is_named():
    """It raised torch's 'mat1 and mat2 must have the same dtype' from inside the field."""
    with pytest.raises(tidal.InvalidArgumentError, match=r"`ODEBlock\(x\)`: x is torch.float64"):
        ODEBlock(tidal.nn.MLP(2, width=4, depth=1))(torch.zeros(2, 2, dtype=torch.float64))

