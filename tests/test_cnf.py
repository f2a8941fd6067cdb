"""Continuous normalizing flows against references: a linear flow's exact change of density,
invertibility, Hutchinson's estimator against the exact divergence, normalization of the
learned density, gradients (gradcheck), regularization lowering the NFE, and argument errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

import tidal
from tidal._errors import InvalidArgumentError
from tidal.data.toys import sample_toy, toy_log_prob
from tidal.models import divergence
from tidal.models.cnf import CNF
from tidal.nn import MLP, ConcatSquashMLP
from tidal.training.flow import evaluate_nll, fit_flow

TIGHT = tidal.PIDController(rtol=1e-10, atol=1e-10)


class Linear(torch.nn.Module):
    """f(t, z) = A z."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


def _random_cnf(trace: str = "exact", **kwargs) -> CNF:
    torch.manual_seed(1)
    field = MLP(2, width=16, depth=2, time_input=True, final_scale=1.0).double()
    return CNF(field, trace=trace, **kwargs)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_flow_matches_expm_and_trace(trace: str) -> None:
    """For f = A z: z(t1) = expm(A t1) z0 with either trace, and with the exact trace
    Δlogp = -tr(A) t1 forwards and +tr(A) t1 backwards."""
    a = torch.tensor([[-0.5, 1.0, 0.2], [-1.0, 0.3, 0.0], [0.4, 0.1, -0.2]], dtype=torch.float64)
    cnf = CNF(Linear(a), trace=trace, dim=3, t1=1.7, controller=TIGHT)
    z0 = torch.randn(5, 3, dtype=torch.float64)
    flow = cnf.inverse(z0)
    expected = z0 @ torch.linalg.matrix_exp(a * 1.7).T
    torch.testing.assert_close(flow.y, expected, rtol=1e-8, atol=1e-8)
    if trace == "exact":
        torch.testing.assert_close(flow.delta_logp, torch.full((5,), -a.trace().item() * 1.7,
                                                               dtype=torch.float64))
        back = cnf.transform(flow.y)
        torch.testing.assert_close(back.delta_logp, -flow.delta_logp)


def test_linear_flow_log_prob_is_the_pushforward_gaussian() -> None:
    """x = M z with z ~ N(0, I) and M = expm(A t1) is N(0, M M^T)."""
    a = torch.tensor([[0.3, -0.7], [0.5, -0.1]], dtype=torch.float64)
    cnf = CNF(Linear(a), dim=2, controller=TIGHT)
    m = torch.linalg.matrix_exp(a)
    x = torch.randn(7, 2, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                 covariance_matrix=m @ m.T).log_prob(x)
    torch.testing.assert_close(cnf.log_prob(x), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_transform_then_inverse_returns_the_input(trace: str) -> None:
    cnf = _random_cnf(trace, controller=tidal.PIDController(rtol=1e-9, atol=1e-9))
    x = 2 * torch.randn(64, 2, dtype=torch.float64)
    z = cnf.transform(x)
    back = cnf.inverse(z.y)
    assert (z.y - x).abs().max() > 0.1  # the flow does move the points
    torch.testing.assert_close(back.y, x, rtol=0, atol=1e-5)
    if trace == "exact":
        torch.testing.assert_close(back.delta_logp, -z.delta_logp, rtol=0, atol=1e-5)


def test_hutchinson_is_unbiased_for_the_divergence() -> None:
    """Mean of 20 000 probes per point within 4 standard errors of the exact divergence (a
    false alarm probability below 1e-4 per point; 16 points), for both probe kinds."""
    torch.manual_seed(2)
    field = MLP(3, width=16, depth=2, time_input=True, final_scale=1.0).double()
    y = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64)
    exact = divergence.exact(field, t, y, frobenius=True)
    reps = 20_000
    many = y.detach().repeat(reps, 1).requires_grad_(True)
    for noise in ("rademacher", "gaussian"):
        eps = divergence.probe(many, noise)
        est = divergence.hutchinson(field, t, many, eps, frobenius=True)
        for value, ref in ((est.divergence, exact.divergence),
                           (est.frobenius, exact.frobenius)):
            value = value.detach().view(reps, 16)
            stderr = value.std(0) / math.sqrt(reps)
            assert ((value.mean(0) - ref).abs() < 4 * stderr + 1e-12).all(), noise


def test_log_prob_integrates_to_one() -> None:
    """Midpoint rule on [-7, 7]^2 (120^2 cells) of exp(log_prob) for a random flow: within 1%."""
    cnf = _random_cnf(controller=tidal.PIDController(rtol=1e-6, atol=1e-6))
    n, half = 120, 7.0
    h = 2 * half / n
    c = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    with torch.no_grad():
        p = cnf.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)).exp()
    assert abs(p.sum().item() * h * h - 1.0) < 0.01


def test_gradcheck_log_prob_wrt_parameters() -> None:
    """Exact trace with create_graph: the gradient of log p(x) with respect to a weight matches
    finite differences. Fixed RK4 steps make log p a smooth function of the weight (adaptive
    step sizes would jump with it)."""
    torch.manual_seed(3)
    field = MLP(2, width=4, depth=1, time_input=True, final_scale=1.0).double()
    # Backprop: a checkpoint replay runs in the backward pass, after functional_call has put
    # the module's own parameters back, so it would differentiate those instead
    cnf = CNF(field, solver=tidal.RK4(), controller=tidal.ConstantStepSize(0.25),
              adjoint=tidal.BackpropAdjoint())
    x = torch.randn(3, 2, dtype=torch.float64)
    params = {"vector_field." + k: v.detach() for k, v in field.named_parameters()}

    def log_prob(weight: torch.Tensor) -> torch.Tensor:
        values = {**params, "vector_field.net.0.weight": weight}
        return torch.func.functional_call(cnf, values, (x,))[0]

    weight = params["vector_field.net.0.weight"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(log_prob, (weight,))


def test_checkpoint_adjoint_gives_the_backprop_gradient() -> None:
    cnf = _random_cnf(kinetic=0.1, jacobian=0.1)
    x = torch.randn(8, 2, dtype=torch.float64)
    grads = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint()):
        cnf.adjoint = adjoint
        cnf.zero_grad()
        log_prob, reg = cnf(x)
        (reg - log_prob).mean().backward()
        grads.append([p.grad.clone() for p in cnf.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_regularizers_integrate_kinetic_energy_and_frobenius_norm() -> None:
    """For f = A z: ∫ ||f||^2 dt = ∫ ||A expm(A t) z0||^2 dt (quadrature reference) and
    ∫ ||A||_F^2 dt = t1 ||A||_F^2; counted positive in both directions."""
    a = torch.tensor([[-0.4, 0.9], [-0.6, 0.1]], dtype=torch.float64)
    cnf = CNF(Linear(a), dim=2, t1=1.5, kinetic=1.0, jacobian=1.0, controller=TIGHT)
    z0 = torch.randn(4, 2, dtype=torch.float64)
    flow = cnf.inverse(z0)
    s = torch.linspace(0, 1.5, 3001, dtype=torch.float64)
    speed = torch.stack([(z0 @ (a @ torch.linalg.matrix_exp(a * si)).T).square().sum(-1)
                         for si in s])
    kinetic = torch.trapezoid(speed, s, dim=0)
    torch.testing.assert_close(flow.kinetic, kinetic, rtol=1e-6, atol=0)
    torch.testing.assert_close(flow.jacobian, torch.full((4,), 1.5 * a.square().sum().item(),
                                                         dtype=torch.float64))
    back = cnf.transform(flow.y)
    torch.testing.assert_close(back.kinetic, flow.kinetic, rtol=1e-7, atol=0)
    _, reg = cnf(flow.y)
    torch.testing.assert_close(reg, back.kinetic + back.jacobian, rtol=1e-7, atol=0)


def test_sample_is_seeded_and_follows_the_flow() -> None:
    cnf = _random_cnf()
    a = cnf.sample(5, generator=torch.Generator().manual_seed(0))
    b = cnf.sample(5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, 2) and a.dtype == torch.float64
    torch.testing.assert_close(a, b)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(a, cnf.inverse(z).y)
    assert cnf.last_stats.num_fevals > 0


def test_custom_base_distribution() -> None:
    """A flow that does not move (f = 0) has the base's density."""
    loc = torch.tensor([1.0, -2.0], dtype=torch.float64)
    base = torch.distributions.Independent(torch.distributions.Normal(loc, 0.5), 1)
    cnf = CNF(Linear(torch.zeros(2, 2, dtype=torch.float64)), base=base)
    x = torch.randn(6, 2, dtype=torch.float64)
    torch.testing.assert_close(cnf.log_prob(x), base.log_prob(x))
    g = torch.Generator().manual_seed(4)
    s1 = cnf.sample(3, generator=g)
    assert s1.shape == (3, 2)
    torch.testing.assert_close(s1, cnf.sample(3, generator=torch.Generator().manual_seed(4)))
    factorized = CNF(Linear(torch.zeros(2, 2, dtype=torch.float64)),
                     base=torch.distributions.Normal(loc, 0.5))
    with pytest.raises(InvalidArgumentError, match="Independent"):
        factorized.log_prob(x)


def test_concat_squash_field_is_time_conditioned_and_trains() -> None:
    """`ConcatSquashMLP` depends on t in every layer; a few steps of `fit_flow` on eight
    Gaussians lower the validation NLL, and the history has one entry per step."""
    torch.manual_seed(0)
    field = ConcatSquashMLP(2, width=16, depth=2)
    y = torch.randn(4, 2)
    assert not torch.allclose(field(torch.tensor(0.0), y), field(torch.tensor(1.0), y))
    assert ConcatSquashMLP(**field.config()).config() == field.config()
    cnf = CNF(field, controller=tidal.PIDController(rtol=1e-4, atol=1e-4))
    train = sample_toy("eight-gaussians", 1024, seed=0)
    val = sample_toy("eight-gaussians", 256, seed=1)
    before = evaluate_nll(cnf, val)
    history = fit_flow(cnf, train, val_samples=val, steps=15, batch_size=128, lr=1e-2,
                       val_every=5, progress=False)
    assert len(history.train_nll) == len(history.num_fevals) == 15
    assert history.val_steps == [5, 10, 15]
    assert history.val_nll[-1] < before - 0.3
    assert before > -toy_log_prob("eight-gaussians", val.double()).mean().item()


def test_fit_flow_is_reproducible_and_stops_on_callback() -> None:
    data = sample_toy("two-moons", 256, seed=0)

    def run() -> list[float]:
        torch.manual_seed(0)
        cnf = CNF(MLP(2, width=8, depth=1, time_input=True), trace="hutchinson",
                  controller=tidal.PIDController(rtol=1e-3, atol=1e-3))
        return fit_flow(cnf, data, steps=6, batch_size=64, seed=1, progress=False,
                        callback=lambda step, history: step == 3).train_nll

    first = run()
    assert len(first) == 4
    assert first == run()


def test_fit_flow_stops_cleanly_on_a_nan_loss() -> None:
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.w * y * 0.0

    cnf = CNF(Broken(), dim=2, base=_NaNBase())
    before = {k: v.clone() for k, v in cnf.state_dict().items()}
    history = fit_flow(cnf, torch.randn(32, 2), steps=3, batch_size=16, progress=False)
    assert history.status == "diverged"
    assert re.search(r"diverged at step 1 \(the loss became nan\).*lr=", history.message)
    for name, value in cnf.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


class _NaNBase:
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:1], math.nan)

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(*shape, 2)


def test_errors_name_the_argument() -> None:
    field = MLP(2)
    with pytest.raises(InvalidArgumentError, match=r"trace='trace'.*exact"):
        CNF(field, trace="trace")
    with pytest.raises(InvalidArgumentError, match="noise='uniform'"):
        CNF(field, noise="uniform")
    with pytest.raises(InvalidArgumentError, match="t1=0"):
        CNF(field, t1=0)
    with pytest.raises(InvalidArgumentError, match="kinetic=-1"):
        CNF(field, kinetic=-1)
    with pytest.raises(InvalidArgumentError, match=r"base=...*log_prob"):
        CNF(field, base=object())
    with pytest.raises(InvalidArgumentError, match="vector_field"):
        CNF(3)
    # dim=3 on a 2-state network gave torch's "mat1 and mat2 shapes" error at sample()
    with pytest.raises(InvalidArgumentError, match=r"`CNF\(dim=3\)`.*in_features \(2\)"):
        CNF(field, dim=3)
    with pytest.raises(InvalidArgumentError, match=r"`CNF\(dim=0\)` must be a positive"):
        CNF(Linear(torch.eye(2)), dim=0)
    cnf = CNF(field)
    with pytest.raises(InvalidArgumentError, match=r"shape \[B, d\]; got \(2,\)"):
        cnf.log_prob(torch.zeros(2))
    with pytest.raises(InvalidArgumentError, match="dimension 2 got points of dimension 3"):
        cnf.log_prob(torch.zeros(4, 3))
    with pytest.raises(InvalidArgumentError, match="needs the dimension"):
        CNF(Linear(torch.eye(2))).sample(3)
    with pytest.raises(InvalidArgumentError, match=r"batch_size=64.*16 samples"):
        fit_flow(cnf, torch.zeros(16, 2), batch_size=64, progress=False)
    with pytest.raises(InvalidArgumentError, match="schedule='linear'"):
        fit_flow(cnf, torch.zeros(16, 2), batch_size=8, schedule="linear", progress=False)


def test_density_plots_return_figures() -> None:
    from matplotlib.figure import Figure

    from tidal.plots.density import density_grid, plot_density, plot_samples

    def log_p(x: torch.Tensor) -> torch.Tensor:
        return toy_log_prob("eight-gaussians", x)

    peak = torch.tensor([2.0, 3.0])
    points, values = density_grid(lambda x: -(x - peak).square().sum(-1), (-4, 4, -4, 4),
                                  resolution=40)
    assert points.shape == (1600, 2) and values.shape == (40, 40)
    row, col = divmod(values.argmax().item(), 40)  # rows run along y, columns along x
    assert (row, col) in {(34, 29), (34, 30), (35, 29), (35, 30)}
    assert isinstance(plot_density(log_p, (-4, 4, -4, 4), resolution=20, title="p"), Figure)
    fig = plot_samples(sample_toy("rings", 100, seed=0),
                       reference=sample_toy("rings", 100, seed=1).numpy(), bounds=(-4, 4, -4, 4))
    assert isinstance(fig, Figure)
    with pytest.raises(InvalidArgumentError, match="bounds"):
        plot_density(log_p, (1, 0, 0, 1))
    with pytest.raises(InvalidArgumentError, match=r"samples=...\)` must have shape \[N, 2\]"):
        plot_samples(torch.zeros(3, 3))


@pytest.mark.slow
def test_regularization_lowers_the_nfe_at_similar_likelihood() -> None:
    """Two runs of 150 steps from the same initialization and data, without and with the RNODE
    regularizers (λ_K = λ_J = 0.1). Measured: training solves took 26.2 evaluations without
    and 20.0 with (mean of the last 30 steps; ratio 0.76), an accurate evaluation solve
    (rtol = atol = 1e-7) 62 against 56, at validation NLLs of 3.14 and 3.19 nats."""
    train = sample_toy("eight-gaussians", 4096, seed=0)
    val = sample_toy("eight-gaussians", 512, seed=1)
    results = []
    for weight in (0.0, 0.1):
        torch.manual_seed(0)
        cnf = CNF(ConcatSquashMLP(2, width=32, depth=2), kinetic=weight, jacobian=weight,
                  solver=tidal.Dopri5(), controller=tidal.PIDController(rtol=1e-4, atol=1e-4),
                  adjoint=tidal.BackpropAdjoint())  # the measured configuration
        history = fit_flow(cnf, train, steps=150, batch_size=128, lr=1e-2, progress=False)
        cnf.controller = tidal.PIDController(rtol=1e-7, atol=1e-7)
        nll = evaluate_nll(cnf, val)
        results.append((sum(history.num_fevals[-30:]) / 30, cnf.last_stats.num_fevals, nll))
    (train_plain, eval_plain, nll_plain), (train_reg, eval_reg, nll_reg) = results
    assert train_reg <= 0.85 * train_plain
    assert eval_reg < eval_plain
    assert abs(nll_reg - nll_plain) < 0.1


def test_a_given_hutchinson_probe_is_the_one_used_and_its_shape_is_checked() -> None:
    """`CNF.log_prob(x, probe)` uses `probe`: the result equals the one with the probe torch's
    generator would draw (same state), and a probe of another shape is refused."""
    torch.manual_seed(0)
    cnf = CNF(tidal.nn.MLP(2, width=8, time_input=True).double(), trace="hutchinson")
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.manual_seed(7)
    drawn = cnf.log_prob(x)
    torch.manual_seed(7)
    probe = divergence.probe(x, "rademacher")
    torch.testing.assert_close(cnf.log_prob(x, probe), drawn, rtol=0, atol=0)
    assert not torch.allclose(cnf.log_prob(x, -probe.roll(1, 0)), drawn)
    with pytest.raises(InvalidArgumentError, match=r"probe must have the batch's shape \(5, 2\)"):
        cnf.log_prob(x, probe[:3])


def test_points_of_another_dtype_than_the_network_are_named() -> None:
    """float64 points for a float32 network raised torch's 'mat1 and mat2 must have the same
    dtype' from inside the augmented field."""
    cnf = CNF(MLP(2, width=4, depth=1, time_input=True))
    with pytest.raises(InvalidArgumentError, match=r"`CNF\(x\)`: x is torch.float64 but"):
        cnf.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    assert cnf.log_prob(torch.zeros(3, 2)).shape == (3,)


def test_fit_flow_refuses_bad_data_and_numbers_before_training() -> None:
    """NaN samples failed mid-training as 'solve(y0=...) contains NaN'; validation points of
    another d as 'A CNF of dimension 2 got ...'; lr=-1 raised torch's ValueError, seed=1.5
    torch's 'manual_seed expected a long'; evaluate_nll(batch_size=0) torch's split error."""
    cnf = CNF(MLP(2, width=4, depth=1, time_input=True))
    x = torch.randn(16, 2)
    bad = x.clone()
    bad[3, 0] = math.nan
    cases = [({"samples": bad}, r"fit_flow\(samples=...\)` contains NaN .* row 3"),
             ({"val_samples": torch.randn(4, 3)},
              r"fit_flow\(val_samples=...\)` must be .*\[N, 2\]"),
             ({"val_samples": bad}, r"fit_flow\(val_samples=...\)` contains NaN"),
             ({"lr": -1.0}, r"fit_flow\(lr=-1.0\)"), ({"seed": 1.5}, r"fit_flow\(seed=1.5\)"),
             ({"weight_decay": math.nan}, r"fit_flow\(weight_decay=nan\)")]
    for change, pattern in cases:
        arguments = {"samples": x, "steps": 1, "batch_size": 8, "progress": False, **change}
        with pytest.raises(InvalidArgumentError, match=pattern):
            fit_flow(cnf, **arguments)
    with pytest.raises(InvalidArgumentError, match=r"evaluate_nll\(batch_size=0\)"):
        evaluate_nll(cnf, x, batch_size=0)

