"""Sequence models on irregular data: ODERNN, GRUDelta, LatentODE, NeuralCDE and their paths.

References: scipy's natural cubic spline, closed-form ODE flows, identities of the models'
definitions (an empty mask changes nothing, zero elapsed time changes nothing, per-sample
grids equal one solve per sample), finite-difference gradients (gradcheck, float64).
"""

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

import tidal
from tidal.data.sequences import periodic_signals, spirals
from tidal.models import ODERNN, GRUDelta, LatentODE, NeuralCDE
from tidal.models.control_paths import (
    fill_forward,
    hermite_cubic,
    linear,
    natural_cubic,
    observation_channels,
    rectilinear,
)
from tidal.models.latent_ode import negative_elbo
from tidal.nn import RotationMLP


class LinearField(torch.nn.Module):
    """f(t, h) = A h."""

    def __init__(self, d):
        super().__init__()
        self.linear = torch.nn.Linear(d, d, bias=False)

    def forward(self, t, h):
        return self.linear(h)


RK4 = {"solver": tidal.RK4(), "controller": tidal.ConstantStepSize(0.5)}


def tiny_batch(k=4, b=2, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(k, b, generator=g, dtype=torch.float64).cumsum(0)
    values = torch.randn(k, b, d, generator=g, dtype=torch.float64)
    mask = torch.rand(k, b, d, generator=g) < 0.7
    mask[0] = True
    return times, values, mask


# ---- control paths -------------------------------------------------------------------------

def test_natural_cubic_matches_scipy():
    x = torch.randn(9, 3, 2, dtype=torch.float64)
    path = natural_cubic(x)
    spline = CubicSpline(np.arange(9), x.numpy(), bc_type="natural", axis=0)
    for s in (0.0, 0.4, 3.0, 5.7, 8.0):
        np.testing.assert_allclose(path.evaluate(s).numpy(), spline(s), atol=1e-12)
        np.testing.assert_allclose(path.derivative(s).numpy(), spline(s, 1), atol=1e-12)


@pytest.mark.parametrize("build", [natural_cubic, hermite_cubic, linear])
def test_paths_interpolate_the_knots_and_are_continuous(build):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    path = build(x)
    for i in range(6):
        torch.testing.assert_close(path.evaluate(float(i)), x[i], rtol=0, atol=1e-12)
    torch.testing.assert_close(path.increments(), x[1:] - x[:-1], rtol=0, atol=1e-12)


def test_hermite_is_c1_and_causal():
    x = torch.randn(6, 1, 2, dtype=torch.float64)
    path = hermite_cubic(x)
    eps = 1e-7
    for i in range(1, 5):  # the derivative is continuous at interior knots
        left = (path.evaluate(i - 1e-9) - path.evaluate(i - 1e-9 - eps)) / eps
        torch.testing.assert_close(left, path.derivative(float(i)), rtol=0, atol=1e-5)
    changed = x.clone()
    changed[4:] += 1.0  # the path on [0, 3] does not see knots 4 and later
    for s in (0.5, 1.5, 2.9):
        torch.testing.assert_close(hermite_cubic(changed).evaluate(s), path.evaluate(s))


@pytest.mark.parametrize("build", [natural_cubic, hermite_cubic])
def test_cubic_paths_with_lengths_follow_each_samples_own_knots(build):
    """With `lengths` a sample's path is the path through its own knots alone (the natural
    one: scipy's natural spline through them) and constant after its last knot, whatever the
    knots there."""
    x = torch.randn(7, 2, 2, dtype=torch.float64)
    path = build(x, torch.tensor([4, 7]))
    own = build(x[:4, :1])
    for s in (0.0, 0.3, 1.5, 2.9):
        torch.testing.assert_close(path.evaluate(s)[:1], own.evaluate(s), rtol=0, atol=1e-12)
        torch.testing.assert_close(path.derivative(s)[:1], own.derivative(s), rtol=0,
                                   atol=1e-12)
    for s in (3.0, 3.5, 5.2, 6.0):
        torch.testing.assert_close(path.evaluate(s)[0], x[3, 0], rtol=0, atol=1e-12)
        torch.testing.assert_close(path.derivative(s)[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(path.evaluate(5.5)[1:], build(x[:, 1:]).evaluate(5.5))
    if build is natural_cubic:
        spline = CubicSpline(np.arange(4), x[:4, 0].numpy(), bc_type="natural", axis=0)
        for s in (0.3, 1.5, 2.9):
            np.testing.assert_allclose(path.evaluate(s)[0].numpy(), spline(s), atol=1e-12)


def test_rectilinear_moves_time_first_then_values():
    x = torch.tensor([[[0.0, 1.0]], [[2.0, 5.0]], [[3.0, -1.0]]], dtype=torch.float64)
    path = rectilinear(x)
    knots = torch.stack([path.evaluate(float(i)) for i in range(5)])[:, 0]
    expected = torch.tensor([[0, 1], [2, 1], [2, 5], [3, 5], [3, -1]], dtype=torch.float64)
    torch.testing.assert_close(knots, expected)


def test_fill_forward_and_observation_channels():
    nan = math.nan
    values = torch.tensor([[nan, 1.0], [2.0, nan], [nan, nan], [4.0, 3.0]]).reshape(4, 1, 2)
    mask = ~values.isnan()
    filled = fill_forward(values, mask)[:, 0]
    torch.testing.assert_close(filled, torch.tensor([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0],
                                                     [4.0, 3.0]]))
    channels = observation_channels(torch.arange(4.0), values, mask)[:, 0]
    torch.testing.assert_close(channels[:, 0], torch.arange(4.0))
    torch.testing.assert_close(channels[:, 3:],
                               torch.tensor([[0.0, 1], [1, 1], [1, 1], [2, 2]]) / 4)
    never = fill_forward(torch.full((3, 1, 1), nan), torch.zeros(3, 1, 1, dtype=torch.bool))
    assert (never == 0).all()


# ---- ODE-RNN and GRU-delta -----------------------------------------------------------------

def test_odernn_advance_is_the_exact_flow():
    """With f(h) = A h the advance over [t0, t1] is expm((t1 - t0) A) h, per sample."""
    model = ODERNN(1, 3, vector_field=LinearField(3),
                   controller=tidal.PIDController(rtol=1e-10, atol=1e-12)).double()
    linear_field = model.vector_field.linear
    h = torch.randn(2, 3, dtype=torch.float64)
    t0, t1 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, 0.2])
    out = model.advance(h, t0, t1.double())
    for b in range(2):
        flow = torch.linalg.matrix_exp((t1[b] - t0[b]).double() * linear_field.weight)
        torch.testing.assert_close(out[b], flow @ h[b], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("model_class", [ODERNN, GRUDelta])
def test_empty_rows_with_no_elapsed_time_change_nothing(model_class):
    """Padding (repeated time, empty mask) leaves the hidden state as it was."""
    torch.manual_seed(0)
    model = model_class(2, 4).double()
    times, values, mask = tiny_batch()
    padded_times = torch.cat([times, times[-1:].expand(2, -1)])
    padded_values = torch.cat([values, torch.randn(2, 2, 2, dtype=torch.float64)])
    padded_mask = torch.cat([mask, torch.zeros(2, 2, 2, dtype=torch.bool)])
    torch.testing.assert_close(model.encode(padded_times, padded_values, padded_mask),
                               model.encode(times, values, mask), rtol=0, atol=0)


@pytest.mark.parametrize("model_class", [ODERNN, GRUDelta])
def test_per_sample_grid_equals_running_each_sample_alone(model_class):
    torch.manual_seed(1)
    model = model_class(2, 4, **(RK4 if model_class is ODERNN else {})).double()
    times, values, mask = tiny_batch(b=3)
    together = model(times, values, mask)
    for b in range(3):
        alone = model(times[:, b], values[:, b:b + 1], mask[:, b:b + 1])
        torch.testing.assert_close(together[:, b:b + 1], alone, rtol=1e-12, atol=1e-12)


def test_masked_feature_values_are_ignored():
    torch.manual_seed(2)
    model = ODERNN(2, 4, **RK4).double()
    times, values, mask = tiny_batch()
    other = torch.where(mask, values, values + 100.0)
    torch.testing.assert_close(model(times, values, mask), model(times, other, mask))


@pytest.mark.parametrize("model_class", [ODERNN, GRUDelta])
def test_recurrent_gradcheck(model_class):
    torch.manual_seed(3)
    model = model_class(2, 3, **(RK4 if model_class is ODERNN else {})).double()
    times, values, mask = tiny_batch(k=3)
    values.requires_grad_(True)
    weight = model.update_cell.weight_hh
    assert torch.autograd.gradcheck(lambda v, w: model(times, v, mask), (values, weight))


def test_odernn_time_gradient_matches_finite_differences():
    torch.manual_seed(4)
    model = ODERNN(2, 3, **RK4).double()
    times, values, mask = tiny_batch(k=3)
    times.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: model(t, values, mask), (times,))


# ---- latent ODE ----------------------------------------------------------------------------

def test_negative_elbo_matches_the_formula():
    torch.manual_seed(5)
    pred, values = torch.randn(3, 2, 1, dtype=torch.float64), torch.randn(3, 2, 1).double()
    mask = torch.tensor([[True, False], [True, True], [False, True]]).unsqueeze(-1)
    mean, std = torch.randn(2, 2).double(), torch.rand(2, 2).double() + 0.5
    sigma = 0.3
    expected = 0.0
    for b in range(2):
        normal = torch.distributions.Normal(pred[:, b, 0], sigma)
        ll = (normal.log_prob(values[:, b, 0]) * mask[:, b, 0]).sum()
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mean[b], std[b]), torch.distributions.Normal(0.0, 1.0)
        ).sum()
        expected += (kl - ll) / 2
    torch.testing.assert_close(negative_elbo(pred, values, mask, mean, std, sigma), expected)


def test_latent_ode_gradcheck_and_shapes():
    torch.manual_seed(6)
    model = LatentODE(2, 2, 3, width=4, obs_std=0.5, **RK4).double()
    times, values, mask = tiny_batch(k=3, b=2)
    shared = times[:, 0]
    out = model(shared, values, mask, torch.cat([shared, shared[-1:] + 1]))
    assert out.shape == (4, 2, 2)
    targets = values.clone()
    values.requires_grad_(True)
    weight = model.vector_field.net[0].weight

    def loss(v, w):
        torch.manual_seed(0)  # the same posterior sample in every evaluation
        return model.loss(shared, v, mask, shared, targets, mask)

    assert torch.autograd.gradcheck(loss, (values, weight))


def test_rotation_field_flow_is_the_matrix_exponential_and_gradchecks():
    """With the MLP's output zeroed, RotationMLP is y' = y (S - S^T): the flow is
    y0 exp((S - S^T) t) (torch.linalg.matrix_exp) and keeps |y|; gradients by gradcheck in a
    latent ODE's decoder."""
    torch.manual_seed(8)
    field = RotationMLP(3, width=4, rotation_scale=1.5).double()
    with torch.no_grad():
        field.mlp.net[-1].weight.zero_()
    y0 = torch.randn(2, 3, dtype=torch.float64)
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    ys = tidal.solve(field, y0, ts, controller=tidal.PIDController(rtol=1e-10, atol=1e-12)).ys
    generator = field.generator.detach()
    exact = torch.stack([y0 @ torch.linalg.matrix_exp((generator - generator.T) * t)
                         for t in ts])
    torch.testing.assert_close(ys, exact, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ys.norm(dim=-1), y0.norm(dim=-1).expand(5, 2))
    model = LatentODE(2, 3, 3, width=4, vector_field=RotationMLP(3, width=4).double(),
                      **RK4).double()
    times, values, mask = tiny_batch(k=3, b=2)
    shared = times[:, 0]

    assert torch.autograd.gradcheck(lambda w: model(shared, values, mask, shared),
                                    (model.vector_field.generator,))
    with pytest.raises(tidal.InvalidArgumentError, match="rotation_scale"):
        RotationMLP(3, rotation_scale=-1.0)


def test_latent_ode_per_sample_targets_equal_shared_ones():
    torch.manual_seed(7)
    model = LatentODE(2, 2, 3, width=4, **RK4).double()
    times, values, mask = tiny_batch(k=3, b=2)
    shared = times[:, 0]
    targets = torch.stack([shared, shared + torch.tensor([0.0, 0.3, 0.6]).double()])[0]
    per_sample = targets.unsqueeze(1).expand(-1, 2).contiguous()
    torch.testing.assert_close(model(shared, values, mask, targets),
                               model(shared, values, mask, per_sample), rtol=1e-10, atol=1e-12)


def test_latent_ode_takes_per_sample_targets_padded_with_a_repeated_last_time():
    """The documented padding (a shorter series repeats its last time) in forward and loss
    decodes each sample as it would alone (it raised solve's 'duplicate times')."""
    torch.manual_seed(7)
    model = LatentODE(2, 2, 3, width=4, **RK4).double()
    times, values, mask = tiny_batch(k=4, b=2)
    padded = times.clone()
    padded[3, 1] = padded[2, 1]
    mask[3, 1] = False
    out = model(padded, values, mask, padded)
    alone = model(padded[:3, 1], values[:3, 1:], mask[:3, 1:], padded[:3, 1])
    torch.testing.assert_close(out[:3, 1:], alone, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[3, 1], out[2, 1], rtol=1e-4, atol=1e-6)
    assert torch.isfinite(model.loss(padded, values, mask, padded, values, mask))


def test_a_series_encoding_does_not_depend_on_the_series_batched_with_it():
    """Series 0 read on its own times, and on the union grid with a series observed later
    (the backward encoder starts at the union's last row): the same posterior (mean, std),
    the same decoding at every target and the same refined one, to round-off. The encoder
    used to carry series 0's state from the union's end through its blank rows first."""
    torch.manual_seed(11)
    model = LatentODE(2, 3, 4, width=8, **RK4).double()
    own = torch.tensor([0.0, 0.4, 0.9, 1.5], dtype=torch.float64)
    union = torch.cat([own, torch.tensor([2.1, 2.8], dtype=torch.float64)])
    values = torch.randn(6, 2, 2, dtype=torch.float64)
    mask = torch.ones(6, 2, 2, dtype=torch.bool)
    mask[4:, 0] = False  # series 0 ends at 1.5, series 1 at 2.8
    mask[1, 0, 0] = mask[2, 1, 1] = False
    alone = (own, values[:4, :1], mask[:4, :1])
    for got, expected in zip(model.posterior(union, values, mask), model.posterior(*alone)):
        torch.testing.assert_close(got[:1], expected, rtol=0, atol=1e-12)
    for refine in (0, 3):
        torch.testing.assert_close(model(union, values, mask, union, refine=refine)[:, :1],
                                   model(*alone, union, refine=refine), rtol=0, atol=1e-12)


@pytest.mark.parametrize("model_class", [ODERNN, GRUDelta])
def test_a_backward_run_starts_each_sample_at_its_last_observation(model_class):
    """Run backwards, a sample's state is h0 until its own last observation and then as if
    its run began there; a sample with one time (a constant column of a per-sample grid)
    runs beside samples whose times decrease (it was refused: 'decrease somewhere')."""
    torch.manual_seed(12)
    model = model_class(2, 4, **(RK4 if model_class is ODERNN else {})).double()
    times, values, mask = tiny_batch(k=5, b=3)
    mask[3:, 0] = False  # sample 0 is last observed at row 2
    times[:, 2] = times[0, 2]  # sample 2: one time
    mask[1:, 2] = False
    h0 = torch.randn(3, 4, dtype=torch.float64)
    advanced, updated = model.run(times.flip(0), values.flip(0), mask.flip(0), h0)
    torch.testing.assert_close(advanced[:3, 0], h0[0].expand(3, 4), rtol=0, atol=0)
    _, late = model.run(times[:3, :1].flip(0), values[:3, :1].flip(0), mask[:3, :1].flip(0),
                        h0[:1])
    torch.testing.assert_close(updated[2:, :1], late, rtol=0, atol=1e-12)
    _, single = model.run(times[:1, 2:], values[:1, 2:], mask[:1, 2:], h0[2:])
    torch.testing.assert_close(updated[-1, 2:], single[0], rtol=0, atol=1e-12)


def test_latent_ode_decoder_options_set_the_decoder_solve_alone():
    """A rotation field dz/dt = A z decoded over [0, 5] with fine RK4 steps matches
    expm(A t) z0 (closed form); the encoder keeps its one coarse step per interval."""
    torch.manual_seed(8)
    model = LatentODE(1, 2, 3, width=4, decoder_options={
        "solver": tidal.RK4(), "controller": tidal.ConstantStepSize(0.01)}, **RK4).double()
    rotation = torch.tensor([[0.0, -6.0], [6.0, 0.0]], dtype=torch.float64)
    model.vector_field = LinearField(2).double()
    model.vector_field.linear.weight.data.copy_(rotation)
    model.decoder.weight.data.fill_(1.0)
    model.decoder.bias.data.zero_()
    z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ts = torch.linspace(0, 5, 11, dtype=torch.float64)
    exact = torch.stack([(torch.linalg.matrix_exp(rotation * t) @ z0[0]).sum() for t in ts])
    torch.testing.assert_close(model.decode(z0, ts)[:, 0, 0], exact, atol=1e-5, rtol=0)
    assert model.encoder.solve_config.controller.dt == 0.5
    # the untrained posterior starts nearly deterministic (sigma = softplus(raw - 4))
    times, values, mask = tiny_batch(k=3, b=2, d=1)
    assert float(model.posterior(times[:, 0], values, mask)[1].detach().max()) < 0.1


def test_posterior_mode_is_the_ridge_solution_of_a_linear_model():
    """With dz/dt = A z and x = C z + d the observations are linear in z_0, x(t_k) = C
    expm(A t_k) z_0 + d = M_k z_0 + d, and the mode of p(z_0 | x) ~ N(x; M z_0 + d, s^2)
    N(z_0; 0, I) solves (M^T M / s^2 + I) z_0 = M^T (x - d) / s^2 over the observed entries
    (numpy, expm from scipy). `posterior_mode` reaches it for each series on its own (their
    masks differ), gives the model's parameters no gradient, and `refine=N` decodes from its
    N-th step; a series padded with a repeated last time (per-sample grids) moves as it does
    alone."""
    from scipy.linalg import expm

    torch.manual_seed(9)
    s = 0.2
    model = LatentODE(2, 2, 3, width=4, obs_std=s, decoder_options={
        "controller": tidal.PIDController(rtol=1e-9, atol=1e-11)}, **RK4).double()
    a = np.array([[-0.3, -2.0], [2.0, -0.3]])
    c, d = np.array([[1.0, 0.5], [-0.5, 1.0]]), np.array([0.1, -0.2])
    model.vector_field = LinearField(2).double()
    with torch.no_grad():
        model.vector_field.linear.weight.copy_(torch.from_numpy(a))
        model.decoder.weight.copy_(torch.from_numpy(c))
        model.decoder.bias.copy_(torch.from_numpy(d))
    times = torch.tensor([0.0, 0.4, 0.9, 1.5, 2.0], dtype=torch.float64)
    values = torch.randn(5, 2, 2, dtype=torch.float64)
    mask = torch.ones(5, 2, 2, dtype=torch.bool)
    mask[1, 0, 1] = mask[3, 1, 0] = mask[4, 1] = False
    z0, _ = model.posterior_mode(times, values, mask, steps=250, lr=0.1)
    for b in range(2):
        seen = [(t, j) for k, t in enumerate(times.tolist()) for j in range(2) if mask[k, b, j]]
        m = np.array([(c @ expm(a * t))[j] for t, j in seen])
        x = np.array([float(values[k, b, j]) - d[j] for k in range(5) for j in range(2)
                      if mask[k, b, j]])
        expected = np.linalg.solve(m.T @ m / s**2 + np.eye(2), m.T @ x / s**2)
        np.testing.assert_allclose(z0[b].numpy(), expected, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())
    twenty, _ = model.posterior_mode(times, values, mask, steps=20)
    torch.testing.assert_close(model(times, values, mask, times, refine=20),
                               model.decode(twenty, times))
    # the second series ends at 1.5, padded to the grid's length as per-sample grids are
    padded = torch.stack([times, torch.cat([times[:4], times[3:4]])], dim=1)
    short, alone = mask.clone(), mask[:4, 1:]
    short[4, 1] = False
    few, _ = model.posterior_mode(times[:4], values[:4, 1:], alone, steps=20, lr=0.1)
    both, _ = model.posterior_mode(padded, values, short, steps=20, lr=0.1)
    torch.testing.assert_close(both[1:], few, rtol=0, atol=1e-7)


def test_the_refinement_is_chosen_on_the_observations_not_read():
    """Series drawn from a linear latent ODE (noise-free; z_0 ~ N(0, I)) with the model itself
    as the decoder and an untrained encoder: the encoder's mean predicts the hidden 30%
    badly, the refinement toward the posterior's mode (the ridge solution, near the true z_0
    at obs_std 0.01) nearly exactly; `choose_refinement` scores every choice on those hidden
    observations and takes the best."""
    from tidal.data.sequences import IrregularSeries
    from tidal.training.sequence_fit import SequenceOptions, choose_refinement

    torch.manual_seed(10)
    model = LatentODE(2, 2, 3, width=4, obs_std=0.01, decoder_options={
        "solver": tidal.RK4(), "controller": tidal.ConstantStepSize(0.3)}, **RK4).double()
    model.vector_field = LinearField(2).double()
    with torch.no_grad():
        model.vector_field.linear.weight.copy_(torch.tensor([[-0.2, -1.5], [1.5, -0.2]]))
    times = torch.linspace(0, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        values = model.decode(torch.randn(6, 2, dtype=torch.float64), times)
    data = IrregularSeries(times, values, torch.ones(values.shape, dtype=torch.bool))
    chosen, losses = choose_refinement(model, data, SequenceOptions(model="latent-ode",
                                                                    task="interpolate"))
    assert chosen == min(losses, key=lambda k: losses[k]) == 400
    assert losses[chosen] < 1e-6 * float(values.var()) and losses[0] > 0.1 * float(values.var())


def test_latent_ode_targets_must_start_at_the_first_time():
    model = LatentODE(2, 2, 3)
    times, values, mask = tiny_batch()
    with pytest.raises(tidal.InvalidArgumentError, match="target_times"):
        model(times[:, 0], values.float(), mask, times[1:, 0])


# ---- neural CDE ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["natural_cubic", "hermite_cubic", "linear", "rectilinear"])
def test_cde_gradcheck(path):
    torch.manual_seed(8)
    model = NeuralCDE(2, 3, 2, width=4, depth=1, path=path, **RK4).double()
    times, values, mask = tiny_batch(k=3)
    values.requires_grad_(True)
    weight = model.field.net[0].weight
    assert torch.autograd.gradcheck(lambda v, w: model(times, v, mask)[-1], (values, weight))


@pytest.mark.parametrize("path", ["natural_cubic", "hermite_cubic", "linear", "rectilinear"])
def test_cde_padding_changes_nothing(path):
    """A series padded to a longer batch's rows (repeated last time, empty mask) gets the
    states it gets alone at its rows and keeps its last one through the padding (the readout
    a classifier takes). The intensity was divided by the batch's K and the natural spline
    ran through the padding, so both moved with the longest series in the batch."""
    torch.manual_seed(13)
    model = NeuralCDE(2, 3, 2, width=4, path=path, solver=tidal.Midpoint(),
                      controller=tidal.ConstantStepSize(1.0)).double()
    times, values, mask = tiny_batch(k=6, b=2)
    times[4:, 0] = times[3, 0]
    mask[4:, 0] = False  # series 0: 4 rows, then padding
    together = model.hidden(times, values, mask)[:, :1]
    alone = model.hidden(times[:4, :1], values[:4, :1], mask[:4, :1])
    torch.testing.assert_close(together[:4], alone, rtol=0, atol=1e-12)
    torch.testing.assert_close(together[4:], alone[-1:].expand(2, -1, -1), rtol=0, atol=1e-12)


def test_cde_with_linear_field_matches_the_closed_form():
    """F(z) = z e_0^T (only the time channel drives z): dz = z dt, so z(K-1) = z(0) e^{t_K - t_0}
    on any path through the same times."""
    model = NeuralCDE(1, 2, 1, path="hermite_cubic",
                      controller=tidal.PIDController(rtol=1e-11, atol=1e-13)).double()
    channels = model.channels

    def matrix(z):
        out = torch.zeros(*z.shape, channels, dtype=z.dtype)
        out[..., 0] = z
        return out

    model.matrix = matrix
    times, values, mask = tiny_batch(d=1)
    z = model.hidden(times, values, mask)
    growth = torch.exp(times[-1] - times[0]).unsqueeze(-1)
    torch.testing.assert_close(z[-1], z[0] * growth, rtol=1e-7, atol=1e-9)


def test_bad_series_are_named():
    model = NeuralCDE(2, 3, 2)
    times, values, mask = tiny_batch()
    with pytest.raises(tidal.InvalidArgumentError, match="mask"):
        model(times, values.float(), mask.float())
    with pytest.raises(tidal.InvalidArgumentError, match="times"):
        model(times.flip(0), values.float(), mask)
    with pytest.raises(tidal.InvalidArgumentError, match="values"):
        model(times, values[..., :1].float(), mask[..., :1])
    with pytest.raises(tidal.InvalidArgumentError, match="path"):
        NeuralCDE(2, 3, 2, path="quintic")


def test_a_latent_odes_bad_series_are_named_as_its_own():
    """Not as its encoder's (`ODERNN(mask)`), which the user did not call."""
    model = LatentODE(2, 4, 8)
    times, values, mask = tiny_batch()
    values = values.float()
    for args, argument in (((times, values, mask.float(), times), "mask"),
                           ((times.flip(0), values, mask, times.flip(0)), "times"),
                           ((times, values[..., :1], mask[..., :1], times), "values")):
        with pytest.raises(tidal.InvalidArgumentError, match=rf"`LatentODE\({argument}\)`"):
            model(*args)


@pytest.mark.parametrize("build", [lambda: ODERNN(2, 3, width=4), lambda: GRUDelta(2, 3),
                                   lambda: NeuralCDE(2, 3, 2), lambda: LatentODE(2, 2, 3, width=4)])
def test_values_of_another_dtype_or_nan_where_observed_are_named(build):
    """float64 values for a float32 model raised torch's 'mat1 and mat2 must have the same
    dtype'; NaN at an observed entry failed as 'solve(y0=...) contains NaN'; NaN where the
    mask is False stays ignored."""
    model = build()
    times, values, mask = tiny_batch()
    targets = (times,) if isinstance(model, LatentODE) else ()
    with pytest.raises(tidal.InvalidArgumentError, match=r"\(values\)` is torch.float64 but"):
        model(times, values, mask, *targets)
    values = values.float()
    values[1, 0, 0] = math.nan
    mask[1, 0, 0] = True
    with pytest.raises(tidal.InvalidArgumentError, match=r"NaN or infinite where the mask"):
        model(times, values, mask, *targets)
    mask[1, 0, 0] = False
    assert torch.isfinite(model(times, values, mask, *targets)).all()
    with pytest.raises(tidal.InvalidArgumentError, match=r"\(times\)` must be a torch"):
        model(times.tolist(), values, mask, *targets)


# ---- generated data ------------------------------------------------------------------------

def test_periodic_signals_are_the_documented_sines():
    """Without noise, each series is c + a sin(2 pi f t + phi) exactly: checked in closed form
    for a fixed (f, a, phi, c), and for the reference family (a = 1, phi = 0: x(0) = c and
    x - c = sin(2 pi f t) with one f in [0.4, 0.8] per series, recovered by least squares over
    a fine grid of f)."""
    data = periodic_signals(5, observed=0.4, noise=0.0, frequency=(0.7, 0.7),
                            amplitude=(1.5, 1.5), phase=(0.3, 0.3), offset_std=0.0, seed=3)
    assert data.times[0] == 0 and bool((data.times.diff() > 0).all())
    assert data.mask.any(0).all()
    assert 0.25 < data.mask.double().mean().item() < 0.55
    expected = 1.0 + 1.5 * torch.sin(2 * math.pi * 0.7 * data.times + 0.3)
    torch.testing.assert_close(data.values[:, :, 0].double(), expected[:, None].expand(-1, 5),
                               atol=1e-6, rtol=0)
    reference = periodic_signals(6, noise=0.0, seed=1)
    x = reference.values[:, :, 0].double()
    c = x[0]
    assert bool(((c - 1.0).abs() < 0.5).all())
    grid = torch.linspace(0.35, 0.85, 501, dtype=torch.float64)
    sines = torch.sin(2 * math.pi * grid[:, None] * reference.times[None, :])  # [F, K]
    residual = ((x - c)[None, :, :] - sines[:, :, None]).square().sum(1)  # [F, B]
    best = grid[residual.argmin(0)]
    assert bool(((best >= 0.4 - 1e-3) & (best <= 0.8 + 1e-3)).all())
    # the grid step 1e-3 in f leaves at most ~0.03 (a wrong family: tens)
    assert residual.min(0).values.max() < 0.05


def test_spirals_turn_in_the_labelled_direction():
    data = spirals(20, noise=0.0)
    angle = torch.atan2(data.values[..., 1], data.values[..., 0]).double()
    turn = (torch.diff(angle, dim=0) + math.pi) % (2 * math.pi) - math.pi
    direction = torch.sign(turn.sum(0))
    assert torch.equal(direction, 2.0 * data.labels - 1)


def test_compacted_per_sample_grid_gives_the_union_grid_encoding():
    """The ODE flow through unobserved rows is the flow over the whole interval, so the
    ODE-RNN's states after each observation on the union grid and on the compacted per-sample
    grids agree to solver accuracy."""
    torch.manual_seed(9)
    data = periodic_signals(3, num_points=12, observed=0.4, seed=4)
    data.mask[0] = True  # both grids then start at t = 0 (h = 0 there)
    compact = data.compacted()
    assert compact.values.shape[0] == int(data.mask.any(-1).sum(0).max())
    for b in range(3):
        rows = data.mask[:, b, 0]
        count = int(rows.sum())
        torch.testing.assert_close(compact.times[:count, b], data.times[rows])
        torch.testing.assert_close(compact.values[:count, b], data.values[rows, b])
        assert not compact.mask[count:, b].any()
    model = ODERNN(1, 4, controller=tidal.PIDController(rtol=1e-10, atol=1e-12)).double()
    union = model.run(data.times, data.values.double(), data.mask)[1]
    per_sample = model.run(compact.times, compact.values.double(), compact.mask)[1]
    for b in range(3):  # the states after each observation
        rows = data.mask[:, b, 0]
        torch.testing.assert_close(per_sample[:int(rows.sum()), b], union[rows, b],
                                   rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", ["frequency", "amplitude", "phase"])
def test_periodic_signals_refuse_a_reversed_range(name):
    message = rf"`{name}=\(2.0, 1.0\)`: must be a range"
    with pytest.raises(tidal.InvalidArgumentError, match=message):
        periodic_signals(4, **{name: (2.0, 1.0)})


@pytest.mark.parametrize(("build", "pattern"), [
    # SolveConfig.__init__() got an unexpected keyword argument 'rtol' (a name never typed)
    (lambda: LatentODE(2, 3, 4, rtol=1e-3), r"`LatentODE\(\.\.\.\)` got unknown solve option"),
    (lambda: NeuralCDE(2, 3, 1, atol=1e-4), r"`NeuralCDE\(\.\.\.\)` got unknown solve option"),
    (lambda: ODERNN(2, 3, step=0.1), r"`ODERNN\(\.\.\.\)` got unknown solve option"),
    (lambda: tidal.models.ODEBlock(tidal.nn.MLP(2), rtol=1e-3), r"`ODEBlock\(\.\.\.\)`"),
    # accepted, to fail at the first solve naming `solve(...)`
    (lambda: LatentODE(2, 3, 4, solver="dopri5"), r"`LatentODE\(solver='dopri5'\)` must be a"),
    (lambda: ODERNN(2, 3, max_steps=0), r"`ODERNN\(max_steps=0\)` must be a positive"),
])
def test_sequence_models_check_their_solve_options(build, pattern):
    with pytest.raises(tidal.InvalidArgumentError, match=pattern):
        build()
