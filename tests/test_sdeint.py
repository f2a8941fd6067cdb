"""`tidal.sdeint` against exact results: the whole solve (problem, SDE loop, Brownian tree,
adjoints), not only the step functions (those are in test_sde_steps.py).

* Strong order on geometric Brownian motion, exact y0 exp((mu - sigma^2/2) T + sigma W_T) with
  W_T asked from the same tree the solve used: 4096 paths, seed 42, N = 8 .. 256 steps; the
  slope of log mean |error| against log dt is within 0.15 of 0.5 (Euler-Maruyama) and 1.0
  (Milstein, Itô and Stratonovich; Heun).
* Weak order on Ornstein-Uhlenbeck: the sample mean and variance of X_T (2^17 paths x 4
  components, seed 3) have biases against the exact moments that shrink like dt (slope within
  0.15 of 1), and match Euler-Maruyama's own discrete moments within 4 standard errors.
* Adaptive SRA1: a rejected step asks the tree for a shorter interval of the same path, so
  the adaptive solution converges to the exact solution of that path (linear SDE, exact
  solution from the path's W and H).
* Per-sample grids: each sample equals a solve of that sample alone on its own grid, with the
  same seed.
* Gradients: Checkpoint and the reversible adjoint equal Backprop (1e-6 relative, float64);
  gradcheck (finite differences) for each adjoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tidal
from sde_driver import fitted_order
from test_sde_steps import A, linear_exact, noise_matrix
from tidal.brownian import BrownianTree, sample_seeds
from tidal.solvers.sde import Calculus, Noise

F64 = torch.float64
SLOPE_TOL = 0.15


# ---- strong and weak order through sdeint ---------------------------------------------------

MU, SIGMA = 0.5, 0.8
ORDER_CASES = [
    (tidal.EulerMaruyama(), "ito", 0.5),
    (tidal.Milstein(), "ito", 1.0),
    (tidal.Milstein(Calculus.STRATONOVICH), "stratonovich", 1.0),
    (tidal.Heun(), "stratonovich", 1.0),
]


@pytest.mark.parametrize("method,calculus,order", ORDER_CASES,
                         ids=[f"{m!r}" for m, _, _ in ORDER_CASES])
def test_strong_order_on_geometric_brownian_motion(method, calculus, order):
    paths, big = 4096, 256
    tree = BrownianTree(0.0, 1.0, sample_seeds(42, paths), 1, tol=1.0 / big, dtype=F64)
    y0 = torch.ones(paths, 1, dtype=F64)
    w1 = tree.increment(0.0, 1.0).dw
    ito = 0.5 * SIGMA**2 if calculus == "ito" else 0.0
    exact = y0 * torch.exp((MU - ito) * 1.0 + SIGMA * w1)
    steps = [8, 16, 32, 64, 128, 256]
    errors = []
    for n in steps:
        sol = tidal.sdeint(lambda t, y: MU * y, lambda t, y: SIGMA * y, y0, [0.0, 1.0],
                           dt=1.0 / n, solver=method, calculus=calculus, brownian=tree)
        assert int(sol.stats.num_steps) == n
        errors.append((sol.ys[-1] - exact).abs().mean().item())
    assert abs(fitted_order(steps, errors) - order) < SLOPE_TOL, errors


def test_weak_order_one_on_ornstein_uhlenbeck_mean_and_variance():
    theta, sigma, x0, paths = 1.0, 0.5, 1.0, 2**17
    y0 = torch.full((paths, 4), x0, dtype=F64)
    exact_mean = x0 * math.exp(-theta)
    exact_var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta))
    steps = [4, 8, 16]
    mean_bias, var_bias = [], []
    for n in steps:
        h = 1.0 / n
        sol = tidal.sdeint(lambda t, y: -theta * y, lambda t, y: torch.full_like(y, sigma), y0,
                           [0.0, 1.0], dt=h, seed=3)
        x = sol.ys[-1].flatten()
        mean, var = x.mean().item(), x.var().item()
        # Euler-Maruyama's own moments: mean x0 (1 - theta h)^n, variance
        # sigma^2 h sum_k (1 - theta h)^(2k); the estimates must match them statistically.
        a = 1 - theta * h
        scheme_mean, scheme_var = x0 * a**n, sigma**2 * h * (1 - a ** (2 * n)) / (1 - a * a)
        assert abs(mean - scheme_mean) < 4 * math.sqrt(scheme_var / x.numel())
        assert abs(var - scheme_var) < 4 * scheme_var * math.sqrt(2 / x.numel())
        mean_bias.append(abs(mean - exact_mean))
        var_bias.append(abs(var - exact_var))
    assert abs(fitted_order(steps, mean_bias) - 1.0) < SLOPE_TOL, mean_bias
    assert abs(fitted_order(steps, var_bias) - 1.0) < SLOPE_TOL, var_bias


def test_adaptive_sra1_converges_to_the_exact_solution_of_the_same_path():
    tree = BrownianTree(0.0, 1.0, sample_seeds(7, 256), 2, tol=2.0**-11, levy_area=True,
                        dtype=F64)
    y0 = torch.ones(256, 2, dtype=F64)
    exact = linear_exact(tree, y0, 2**11)
    errors, rejected = [], 0
    for tol in (1e-2, 1e-3, 1e-4):
        sol = tidal.sdeint(lambda t, y: A * y,
                           lambda t, y: noise_matrix(t)[0].expand(y.shape[0], 2, 2),
                           y0, [0.0, 1.0], dt=0.1, noise="additive", solver=tidal.SRA1(),
                           controller=tidal.PIDController(rtol=tol, atol=tol), brownian=tree)
        errors.append((sol.ys[-1] - exact).abs().mean().item())
        rejected += int(sol.stats.num_rejected)
    assert rejected > 0  # the test exercises re-queries after rejected steps
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4, errors


@pytest.mark.slow
def test_adaptive_steps_on_per_sample_grids_converge_too():
    tree = BrownianTree(0.0, 1.0, sample_seeds(7, 64), 2, tol=2.0**-11, levy_area=True,
                        dtype=F64)
    y0 = torch.ones(64, 2, dtype=F64)
    exact = linear_exact(tree, y0, 2**11)
    ts = torch.tensor([0.0, 1.0], dtype=F64).unsqueeze(-1).expand(2, 64)
    sol = tidal.sdeint(lambda t, y: A * y,
                       lambda t, y: noise_matrix(t)[0].expand(y.shape[0], 2, 2), y0, ts,
                       dt=0.1, noise="additive", solver=tidal.SRA1(),
                       controller=tidal.PIDController(rtol=1e-4, atol=1e-4), brownian=tree)
    assert (sol.ys[-1] - exact).abs().mean().item() < 1e-4
    assert sol.stats.num_steps.shape == (64,) and bool((sol.stats.num_rejected >= 0).all())


# ---- grids, dtypes, noise shapes ------------------------------------------------------------

def test_per_sample_grids_equal_each_sample_alone():
    batch, dt = 3, 0.02
    seeds = sample_seeds(5, batch)
    ts = torch.tensor([[0.0, 0.0, 0.5], [0.37, 1.0, 1.0], [1.0, 2.0, 1.6]], dtype=F64)
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.1]], dtype=F64)

    def tree(s):
        return BrownianTree(0.0, 2.56, s, 2, tol=dt, dtype=F64)  # nodes on the step grid

    def f(t, y):
        return -y * (1 + t.reshape(-1, 1) if t.dim() else 1 + t)

    def g(t, y):
        return 0.3 * torch.cos(y)

    sol = tidal.sdeint(f, g, y0, ts, dt=dt, solver=tidal.Milstein(), brownian=tree(seeds))
    for b in range(batch):
        alone = tidal.sdeint(f, g, y0[b:b + 1], ts[:, b], dt=dt, solver=tidal.Milstein(),
                             brownian=tree(seeds[b:b + 1]))
        torch.testing.assert_close(sol.ys[:, b], alone.ys[:, 0], rtol=1e-12, atol=1e-12)
        assert int(sol.stats.num_steps[b]) == int(alone.stats.num_steps)


@pytest.mark.parametrize("noise,shape", [("diagonal", (4, 3)), ("scalar", (4, 3)),
                                         ("general", (4, 3, 2)), ("additive", (4, 3, 2))])
def test_noise_shapes_and_float32(noise, shape):
    """Every noise shape runs in float32 and gives the same path as float64 to float32
    rounding (the tree's float32 and float64 paths agree)."""
    out = {}
    for dtype in (torch.float32, F64):
        y0 = torch.ones(4, 3, dtype=dtype)
        g0 = torch.full(shape, 0.2, dtype=dtype)

        def g(t, y, g0=g0):
            if noise == "additive":
                return g0
            if noise == "general":
                return g0 * (1 + 0.1 * y.unsqueeze(-1))
            return g0 * (1 + 0.1 * y)

        sol = tidal.sdeint(lambda t, y: -y, g, y0, [0.0, 0.5, 1.0], dt=0.05, noise=noise,
                           seed=1)
        assert sol.ys.dtype == dtype and sol.ys.shape == (3, 4, 3)
        out[dtype] = sol.ys
    torch.testing.assert_close(out[torch.float32].double(), out[F64], rtol=1e-5, atol=1e-5)


def test_dt_as_a_one_element_tensor_is_the_same_number():
    """dt=torch.tensor(0.1) was refused as not "a positive finite number"."""
    args = (lambda t, y: -y, lambda t, y: torch.ones_like(y), torch.zeros(3, 2, dtype=F64),
            [0.0, 1.0])
    expected = tidal.sdeint(*args, dt=0.1, seed=3).ys
    assert torch.equal(tidal.sdeint(*args, dt=torch.tensor(0.1, dtype=F64), seed=3).ys, expected)
    with pytest.raises(tidal.InvalidArgumentError, match=r"`sdeint\(dt=-0\.1\)` must be a"):
        tidal.sdeint(*args, dt=torch.tensor(-0.1, dtype=F64), seed=3)


def test_same_seed_same_paths_and_seed_none_follows_torch_manual_seed():
    args = (lambda t, y: -y, lambda t, y: torch.ones_like(y), torch.zeros(5, 2), [0.0, 1.0])
    a = tidal.sdeint(*args, dt=0.1, seed=4).ys
    assert torch.equal(a, tidal.sdeint(*args, dt=0.1, seed=4).ys)
    assert not torch.equal(a, tidal.sdeint(*args, dt=0.1, seed=5).ys)
    torch.manual_seed(0)
    b = tidal.sdeint(*args, dt=0.1).ys
    torch.manual_seed(0)
    assert torch.equal(b, tidal.sdeint(*args, dt=0.1).ys)


def test_output_times_off_the_step_grid_are_landed_on():
    sol = tidal.sdeint(lambda t, y: torch.ones_like(y), lambda t, y: torch.zeros_like(y),
                       torch.zeros(2, 1, dtype=F64), [0.0, 0.123, 0.5, 0.77], dt=0.1, seed=0)
    torch.testing.assert_close(sol.ys[:, 0, 0], torch.tensor([0.0, 0.123, 0.5, 0.77],
                                                             dtype=F64))


def test_nonfinite_state_ends_the_solve():
    sol = tidal.sdeint(lambda t, y: y * y, lambda t, y: torch.zeros_like(y),
                       torch.full((1, 1), 10.0, dtype=F64), [0.0, 1.0, 2.0], dt=0.01, seed=0,
                       throw=False)
    assert sol.status is tidal.Status.NONFINITE
    with pytest.raises(tidal.SolveFailedError):
        tidal.sdeint(lambda t, y: y * y, lambda t, y: torch.zeros_like(y),
                     torch.full((1, 1), 10.0, dtype=F64), [0.0, 1.0], dt=0.01, seed=0)


# ---- gradients ------------------------------------------------------------------------------

def _problem(noise="diagonal"):
    torch.manual_seed(0)
    w = torch.randn(2, 2, dtype=F64, requires_grad=True)
    s = torch.tensor([0.3, 0.5], dtype=F64, requires_grad=True)
    y0 = torch.randn(3, 2, dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.tanh(y @ w) - 0.1 * y

    def g(t, y):
        if noise == "additive":  # no graph at all: nothing to pull back through g
            return torch.full((*y.shape, 2), 0.3, dtype=F64)
        if noise == "general":
            return (s * torch.sin(y)).unsqueeze(-1) * torch.ones(1, 1, 2, dtype=F64)
        return s * torch.sin(y)

    return f, g, y0, (y0, w) if noise == "additive" else (y0, w, s)


@pytest.mark.parametrize("noise", ["diagonal", "general", "additive"])
@pytest.mark.parametrize("adjoint", ["checkpoint", "reversible"])
def test_adjoints_equal_backprop(adjoint, noise):
    f, g, y0, inputs = _problem(noise)
    ts = torch.tensor([0.0, 0.3, 0.35, 1.0])
    solver = tidal.ReversibleHeun() if adjoint == "reversible" else tidal.Heun()
    made = tidal.ReversibleAdjoint() if adjoint == "reversible" else tidal.CheckpointAdjoint(4)

    def grads(adj):
        sol = tidal.sdeint(f, g, y0, ts, dt=0.005, solver=solver, calculus="stratonovich",
                           noise=noise, adjoint=adj, seed=3)
        loss = (sol.ys**2).sum() + sol.ys[2].sum()
        return torch.autograd.grad(loss, inputs)

    for ref, got in zip(grads(tidal.BackpropAdjoint()), grads(made)):
        assert (got - ref).norm() <= 1e-6 * ref.norm()


@pytest.mark.parametrize("adjoint", ["backprop", "checkpoint", "reversible"])
def test_gradcheck(adjoint):
    *_, inputs = _problem()
    solver = tidal.ReversibleHeun() if adjoint == "reversible" else tidal.Milstein()
    made = {"backprop": tidal.BackpropAdjoint(), "checkpoint": tidal.CheckpointAdjoint(3),
            "reversible": tidal.ReversibleAdjoint()}[adjoint]
    calculus = "stratonovich" if adjoint == "reversible" else "ito"

    def run(y0, w, s):
        def fw(t, y):
            return torch.tanh(y @ w) - 0.1 * y

        def gs(t, y):
            return s * torch.sin(y)

        return tidal.sdeint(fw, gs, y0, [0.0, 0.2, 0.5], dt=0.05, solver=solver,
                            calculus=calculus, adjoint=made, seed=1).ys

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_reversible_adjoint_on_per_sample_grids_equals_backprop(noise):
    """Each sample its own span and output times (one sample stops early, so later
    iterations leave it standing); float64, 1e-6 relative."""
    f, g, y0, inputs = _problem(noise)
    ts = torch.tensor([[0.0, 0.1, -0.2], [0.3, 0.5, 0.2], [0.35, 0.6, 0.9]], dtype=F64)

    def grads(adj):
        sol = tidal.sdeint(f, g, y0, ts, dt=0.01, solver=tidal.ReversibleHeun(),
                           calculus="stratonovich", noise=noise, adjoint=adj, seed=3)
        loss = (sol.ys**2).sum() + sol.ys[1].sum()
        return torch.autograd.grad(loss, inputs)

    for ref, got in zip(grads(tidal.BackpropAdjoint()), grads(tidal.ReversibleAdjoint())):
        assert (got - ref).norm() <= 1e-6 * ref.norm()


def test_reversible_adjoint_on_per_sample_grids_gradcheck():
    ts = torch.tensor([[0.0, 0.1, 0.0], [0.3, 0.5, 0.44]], dtype=F64)

    def run(y0):
        return tidal.sdeint(lambda t, y: -y * y, lambda t, y: 0.2 * torch.cos(y), y0, ts,
                            dt=0.05, seed=2, solver=tidal.ReversibleHeun(),
                            calculus="stratonovich", adjoint=tidal.ReversibleAdjoint()).ys

    assert torch.autograd.gradcheck(run, (torch.randn(3, 2, dtype=F64, requires_grad=True),))


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_stochastic_backsolve_converges_to_backprop_on_the_same_path(noise):
    """The adjoint SDE's gradient is not the discrete solve's, but approaches it as dt
    shrinks (Heun steps both ways): measured relative gaps 3e-3 -> 6e-4 (diagonal) and
    2e-2 -> 5e-3 (general) from dt = 0.02 to 0.005."""
    f, g, y0, inputs = _problem(noise)
    ts = torch.tensor([0.0, 0.3, 0.35, 1.0])

    def gap(dt):
        def grads(adj):
            sol = tidal.sdeint(f, g, y0, ts, dt=dt, solver=tidal.Heun(), noise=noise,
                               calculus="stratonovich", adjoint=adj, seed=3)
            return torch.autograd.grad((sol.ys**2).sum() + sol.ys[2].sum(), inputs)
        return max(float((b - a).norm() / a.norm()) for a, b in
                   zip(grads(tidal.BackpropAdjoint()), grads(tidal.BacksolveAdjoint())))

    coarse, fine = gap(0.02), gap(0.005)
    assert fine < 1e-2 and fine < coarse / 3


def test_stochastic_backsolve_gradcheck():
    """Finite differences of the discrete solve, to the adjoint's own accuracy at dt = 0.01
    (about 1e-3 relative)."""
    *_, inputs = _problem()

    def run(y0, w, s):
        return tidal.sdeint(lambda t, y: torch.tanh(y @ w) - 0.1 * y,
                            lambda t, y: s * torch.sin(y), y0, [0.0, 0.1, 0.3], dt=0.01,
                            solver=tidal.Heun(), calculus="stratonovich",
                            adjoint=tidal.BacksolveAdjoint(), seed=1).ys

    assert torch.autograd.gradcheck(run, inputs, atol=1e-3, rtol=1e-2)


def test_per_sample_grids_backprop_gradcheck():
    ts = torch.tensor([[0.0, 0.1, 0.0], [0.3, 0.5, 0.44]], dtype=F64)

    def run(y0):
        return tidal.sdeint(lambda t, y: -y * y, lambda t, y: 0.2 * torch.cos(y), y0, ts,
                            dt=0.05, seed=2, adjoint=tidal.CheckpointAdjoint(2)).ys

    assert torch.autograd.gradcheck(run, (torch.randn(3, 2, dtype=F64, requires_grad=True),))


# ---- bad input ------------------------------------------------------------------------------

def _bad(**changes):
    kw = dict(drift=lambda t, y: -y, diffusion=lambda t, y: torch.ones_like(y),
              y0=torch.ones(2, 3), ts=[0.0, 1.0], dt=0.1)
    kw.update(changes)
    return lambda: tidal.sdeint(kw.pop("drift"), kw.pop("diffusion"), kw.pop("y0"),
                                kw.pop("ts"), **kw)


BAD = [
    ("no dt", dict(dt=None), tidal.InvalidArgumentError, r"sdeint\(dt=\.\.\.\)` is required"),
    ("dt <= 0", dict(dt=0.0), tidal.InvalidArgumentError, r"sdeint\(dt=0.0\)"),
    ("dt nan", dict(dt=math.nan), tidal.InvalidArgumentError, r"sdeint\(dt=nan\)"),
    ("NaN y0", dict(y0=torch.tensor([[1.0, math.nan, 0.0]])), tidal.InvalidArgumentError,
     r"sdeint\(y0=\.\.\.\)` contains NaN"),
    ("1-D y0", dict(y0=torch.ones(3)), tidal.InvalidArgumentError, r"sdeint\(y0=.*\[B, d\]"),
    ("reverse time", dict(ts=[1.0, 0.0]), tidal.InvalidArgumentError,
     r"sdeint\(ts=\.\.\.\)` must be increasing"),
    ("diffusion shape vs diagonal", dict(diffusion=lambda t, y: torch.ones(2, 3, 2)),
     tidal.InvalidArgumentError, r"sdeint\(diffusion=\.\.\.\)` returned shape \(2, 3, 2\).*"
                                 r"noise='diagonal'"),
    ("diffusion shape vs general", dict(noise="general"), tidal.InvalidArgumentError,
     r"sdeint\(diffusion=\.\.\.\)`.*\[B, d, m\]"),
    ("drift shape", dict(drift=lambda t, y: y[:, :1]), tidal.InvalidArgumentError,
     r"sdeint\(drift=\.\.\.\)` returned shape"),
    ("unknown noise", dict(noise="pink"), tidal.InvalidArgumentError, r"sdeint\(noise="),
    ("unknown calculus", dict(calculus="ito2"), tidal.InvalidArgumentError,
     r"sdeint\(calculus="),
    ("ODE solver", dict(solver=tidal.Dopri5()), tidal.InvalidArgumentError,
     r"sdeint\(solver=\.\.\.\)"),
    ("class not instance", dict(solver=tidal.Heun), tidal.InvalidArgumentError,
     r"solver=Heun\(\)"),
    ("Ito method, Stratonovich SDE", dict(solver=tidal.EulerMaruyama(),
                                          calculus="stratonovich",
                                          diffusion=lambda t, y: y),
     tidal.IncompatibleOptionsError, r"Itô|ito"),
    ("adaptive without an estimate", dict(controller=tidal.PIDController(1e-3, 1e-3)),
     tidal.IncompatibleOptionsError, r"no error estimate"),
    ("backsolve on an Itô equation", dict(adjoint=tidal.BacksolveAdjoint()),
     tidal.IncompatibleOptionsError, r"calculus='stratonovich'"),
    ("reversible adjoint, other method", dict(adjoint=tidal.ReversibleAdjoint()),
     tidal.IncompatibleOptionsError, r"ReversibleAdjoint\(\)"),
    ("checkpoint with a stateful method", dict(adjoint=tidal.CheckpointAdjoint(),
                                               solver=tidal.ReversibleHeun(),
                                               calculus="stratonovich"),
     tidal.IncompatibleOptionsError, r"CheckpointAdjoint"),
    ("bad seed", dict(seed=1.5), tidal.InvalidArgumentError, r"sdeint\(seed=1.5\)"),
    ("tree too short", dict(brownian=BrownianTree(0.0, 0.5, sample_seeds(0, 2), 3, tol=0.1)),
     tidal.InvalidArgumentError, r"does not cover"),
    ("ts requires grad", dict(ts=torch.tensor([0.0, 1.0], requires_grad=True)),
     tidal.InvalidArgumentError, r"sdeint\(ts=\.\.\.\)` requires grad"),
]


@pytest.mark.parametrize("desc,changes,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_the_argument_named(desc, changes, error, match):
    with pytest.raises(error, match=match):
        _bad(**changes)()


def test_max_steps():
    sol = tidal.sdeint(lambda t, y: -y, lambda t, y: torch.ones_like(y), torch.ones(2, 1),
                       [0.0, 1.0], dt=0.01, seed=0, max_steps=10, throw=False)
    assert sol.status is tidal.Status.MAX_STEPS and int(sol.stats.num_steps) == 10
    assert np.isnan(sol.ys[-1].numpy()).all()


def test_noise_object_with_diagonal_additive_noise():
    sol = tidal.sdeint(lambda t, y: -y, lambda t, y: torch.full_like(y, 0.1), torch.ones(2, 2),
                       [0.0, 1.0], dt=0.1, noise=Noise("diagonal", additive=True),
                       solver=tidal.SRA1(), seed=0)
    assert torch.isfinite(sol.ys).all()


def test_additive_noise_that_depends_on_the_state_is_refused():
    """noise='additive' with g = 0.6 y (geometric Brownian motion) was solved silently: Heun
    then solved the Stratonovich equation (E log y(1) = 0.29 instead of Itô's 0.12), SRA1
    and Milstein dropped their correction terms. A g of t alone still runs."""
    y0 = torch.ones(8, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for solver in (tidal.EulerMaruyama(), tidal.Heun(), tidal.SRA1(), tidal.Milstein()):
        with pytest.raises(tidal.InvalidArgumentError, match="changes with y"):
            tidal.sdeint(lambda t, y: 0.3 * y, lambda t, y: 0.6 * y.unsqueeze(-1), y0, ts,
                         dt=0.1, noise="additive", solver=solver, seed=0)
    sol = tidal.sdeint(lambda t, y: -y, lambda t, y: (0.5 + t) * torch.ones_like(y)[..., None],
                       y0, ts, dt=0.1, noise="additive", solver=tidal.SRA1(), seed=0)
    assert torch.isfinite(sol.ys).all()


def test_a_given_tree_coarser_than_the_step_is_refused():
    """A BrownianTree with tol=0.25 under dt=0.01 solved geometric Brownian motion silently
    to E log y(1) = 0.27 instead of Ito's 0.12 (increments inside a leaf carry no quadratic
    variation); a tree of tol <= dt is used as before."""
    from tidal.brownian import BrownianTree, sample_seeds

    y0 = torch.ones(4, 1, dtype=torch.float64)
    coarse = BrownianTree(0.0, 1.0, sample_seeds(1, 4), 1, tol=0.25, dtype=torch.float64)
    with pytest.raises(tidal.InvalidArgumentError, match=r"coarser than the step dt=0\.01"):
        tidal.sdeint(lambda t, y: 0.3 * y, lambda t, y: 0.6 * y, y0, [0.0, 1.0], dt=0.01,
                     brownian=coarse)
    fine = BrownianTree(0.0, 1.0, sample_seeds(1, 4), 1, tol=0.01, dtype=torch.float64)
    assert torch.isfinite(tidal.sdeint(lambda t, y: 0.3 * y, lambda t, y: 0.6 * y, y0,
                                       [0.0, 1.0], dt=0.01, brownian=fine).ys).all()


def test_evaluate_on_an_sde_solution_says_what_to_do_instead():
    """It said only 'solve with tidal.solve(..., dense=True)', which sdeint has no option for."""
    sol = tidal.sdeint(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y), torch.ones(2, 1),
                       [0.0, 1.0], dt=0.1, seed=0)
    with pytest.raises(tidal.InvalidArgumentError, match=r"sdeint` has none.*its `ts`"):
        sol.evaluate(0.5)

