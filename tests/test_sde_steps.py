"""The SDE step methods (`tidal.solvers.sde`) against exact solutions, driven by the fixed-step
driver in `sde_driver.py` with increments from one `BrownianTree` per test, so the numerical
and the exact solution see the same Brownian path.

* Strong order: the mean over paths of |y_N - y(T)| for N = 8 .. 256 steps; the fitted slope
  of log error against log dt must be within 0.15 of the method's order. Geometric Brownian
  motion (exact: y0 exp((mu - c sigma^2/2) T + sigma W_T), c = 1 for Itô, 0 for Stratonovich)
  with diagonal, scalar and general (commutative) noise; 4096 paths, seed 42.
* Additive noise: a linear SDE with time-dependent noise and, for SRA1's order 1.5, the
  nonlinear dX1 = X2^2 dt, dX2 = sigma dW. Their exact solutions are integrals of the path,
  evaluated from the same tree's W and H on a fine grid (error O(h_f^2) and O(h_f^1.5),
  checked to be far below the errors measured).
* Weak order: Euler–Maruyama's mean and variance on the Ornstein–Uhlenbeck process (2^18
  paths) against the exact moments.
* The reversible Heun backward step rebuilds the forward states to round-off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sde_driver import fitted_order, fixed_step_solve, step_sde
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal.brownian import BrownianTree, Increment, sample_seeds
from tidal.solvers.sde import (
    ADDITIVE,
    DIAGONAL,
    GENERAL,
    SCALAR,
    SDE_METHODS,
    SRA1,
    Calculus,
    EulerMaruyama,
    Heun,
    Milstein,
    Noise,
    ReversibleHeun,
    SRATableau,
)

F64 = torch.float64
ITO, STRAT = Calculus.ITO, Calculus.STRATONOVICH
STEPS = [8, 16, 32, 64, 128, 256]
PATHS = 4096
SLOPE_TOL = 0.15


# ---- geometric Brownian motion --------------------------------------------------------------

MU = torch.tensor([0.5, -0.2], dtype=F64)
SIGMA = torch.tensor([1.0, 0.6], dtype=F64)


def gbm(noise: Noise, calculus: Calculus):
    """(f, g, exact(W_T), D, m) for geometric Brownian motion with the given noise shape."""
    c = 1.0 if calculus is ITO else 0.0
    if noise.shape == "general":  # one component driven by two Brownian motions
        mu, sigma = MU[0], SIGMA

        def exact(w):
            return torch.exp(mu - c * (sigma**2).sum() / 2 + w @ sigma).unsqueeze(-1)

        return (lambda t, y: mu * y), (lambda t, y: y.unsqueeze(-1) * sigma), exact, 1, 2
    m = 2 if noise.shape == "diagonal" else 1
    return ((lambda t, y: MU * y), (lambda t, y: SIGMA * y),
            (lambda w: torch.exp(MU - c * SIGMA**2 / 2 + SIGMA * w)), 2, m)


GBM_CASES = [
    (EulerMaruyama(), ITO, DIAGONAL, 0.5),
    (EulerMaruyama(), ITO, GENERAL, 0.5),
    (Milstein(), ITO, DIAGONAL, 1.0),
    (Milstein(), ITO, SCALAR, 1.0),
    (Milstein(STRAT), STRAT, DIAGONAL, 1.0),
    (Milstein(STRAT), STRAT, SCALAR, 1.0),
    (Heun(), STRAT, DIAGONAL, 1.0),
    (Heun(), STRAT, GENERAL, 1.0),  # commutative general noise
]


@pytest.mark.parametrize("method,calculus,noise,order", GBM_CASES,
                         ids=[f"{m!r}-{n.shape}" for m, _, n, _ in GBM_CASES])
def test_strong_order_on_geometric_brownian_motion(method, calculus, noise, order):
    method.check(noise, calculus)
    f, g, exact, d, m = gbm(noise, calculus)
    tree = BrownianTree(0.0, 1.0, sample_seeds(42, PATHS), m, tol=1 / STEPS[-1], dtype=F64)
    y_exact = exact(tree.increment(0.0, 1.0).dw)
    y0 = torch.ones(PATHS, d, dtype=F64)
    errors = [(fixed_step_solve(method, f, g, noise, y0, tree, 0.0, 1.0, n) - y_exact)
              .abs().mean().item() for n in STEPS]
    assert abs(fitted_order(STEPS, errors) - order) < SLOPE_TOL, errors


# ---- additive noise -------------------------------------------------------------------------

A = torch.tensor([-1.0, -2.0], dtype=F64)


def noise_matrix(t: torch.Tensor) -> torch.Tensor:
    """G(t) [..., 2, 2] and its derivative, for the linear problem."""
    t = torch.as_tensor(t, dtype=F64)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    g = torch.stack([torch.stack([torch.cos(t), 0.5 * one], -1),
                     torch.stack([0.5 * t, one], -1)], -2)
    dg = torch.stack([torch.stack([-torch.sin(t), zero], -1),
                      torch.stack([0.5 * one, zero], -1)], -2)
    return g, dg


def linear_exact(tree: BrownianTree, y0: torch.Tensor, fine: int) -> torch.Tensor:
    """y(1) for dy = A y dt + G(t) dW: e^{A} y0 + int_0^1 Phi(s) dW_s with Phi(s) = e^{A(1-s)}
    G(s), the integral summed over `fine` cells as Phi(m) dW - h Phi'(m) H (m the midpoint;
    the first neglected term is Phi''(m) h^2 dW / 12, so the sum is off by O(h^2))."""
    ts = np.linspace(0.0, 1.0, fine + 1)
    inc = tree.increments(ts)
    mid = torch.from_numpy((ts[1:] + ts[:-1]) / 2)
    decay = torch.exp(A * (1 - mid).unsqueeze(-1)).unsqueeze(-1)  # [n, 2, 1]
    g, dg = noise_matrix(mid)
    phi, dphi = decay * g, decay * (dg - A.unsqueeze(-1) * g)
    h = 1.0 / fine
    return (torch.exp(A) * y0 + torch.einsum("nij,nbj->bi", phi, inc.dw)
            - h * torch.einsum("nij,nbj->bi", dphi, inc.area))


@pytest.fixture(scope="module")
def linear_problem():
    tree = BrownianTree(0.0, 1.0, sample_seeds(7, 1024), 2, tol=2.0**-11, levy_area=True,
                        dtype=F64)
    y0 = torch.ones(1024, 2, dtype=F64)
    exact = linear_exact(tree, y0, 2**11)
    # The reference is converged far below the smallest error measured below (~1e-5).
    assert (exact - linear_exact(tree, y0, 2**10)).abs().mean() < 1e-6
    return tree, y0, exact


ADDITIVE_CASES = [(EulerMaruyama(), 1.0), (Milstein(), 1.0), (Heun(), 1.0),
                  (ReversibleHeun(), 1.0)]


@pytest.mark.parametrize("method,order", ADDITIVE_CASES, ids=[repr(m) for m, _ in ADDITIVE_CASES])
def test_strong_order_one_on_additive_noise(method, order, linear_problem):
    tree, y0, exact = linear_problem
    method.check(ADDITIVE, ITO)
    method.check(ADDITIVE, STRAT)
    steps = [4, 8, 16, 32, 64, 128]
    errors = [(fixed_step_solve(method, lambda t, y: A * y,
                                lambda t, y: noise_matrix(t)[0].expand(y.shape[0], 2, 2),
                                ADDITIVE, y0, tree, 0.0, 1.0, n) - exact).abs().mean().item()
              for n in steps]
    assert abs(fitted_order(steps, errors) - order) < SLOPE_TOL, errors


def test_sra1_is_at_least_order_one_and_a_half_on_a_linear_sde(linear_problem):
    """With a linear drift SRA1's order-1.5 error terms (they carry f'') vanish, and the
    measured slope is 2.0; the test asks for at least 1.5."""
    tree, y0, exact = linear_problem
    steps = [4, 8, 16, 32, 64, 128]
    errors = [(fixed_step_solve(SRA1(), lambda t, y: A * y,
                                lambda t, y: noise_matrix(t)[0].expand(y.shape[0], 2, 2),
                                ADDITIVE, y0, tree, 0.0, 1.0, n) - exact).abs().mean().item()
              for n in steps]
    assert fitted_order(steps, errors) > 1.5 - SLOPE_TOL, errors


def squared_path_exact(tree: BrownianTree, fine: int, sigma: float) -> torch.Tensor:
    """y(1) for dy1 = y2^2 dt, dy2 = sigma dW, y(0) = 0: (sigma^2 int_0^1 W^2, sigma W_1).

    On a cell of width h starting at w0, with increment dW and area H, the conditional mean of
    W is w0 + u dW + 6 u (1 - u) H (u = (s - s0)/h), and the remainder R has
    int_0^h E[R^2] = h^2/15. So E[int W^2 | W, H] = h (w0^2 + w0 dW + dW^2/3 + 2 w0 H + dW H
    + 6 H^2 / 5) + h^2/15; the sum's remaining error is a zero-mean O(h^1.5)."""
    inc = tree.increments(np.linspace(0.0, 1.0, fine + 1))
    dw, area = inc.dw[..., 0], inc.area[..., 0]
    w0 = torch.cumsum(dw, 0) - dw
    h = 1.0 / fine
    cells = h * (w0**2 + w0 * dw + dw**2 / 3 + 2 * w0 * area + dw * area + 1.2 * area**2)
    return torch.stack([sigma**2 * (cells.sum(0) + fine * h * h / 15), sigma * dw.sum(0)], -1)


@pytest.mark.slow
def test_sra1_strong_order_one_and_a_half_on_a_nonlinear_additive_sde():
    sigma, paths = 1.0, 2048
    tree = BrownianTree(0.0, 1.0, sample_seeds(7, paths), 1, tol=2.0**-12, levy_area=True,
                        dtype=F64)
    exact = squared_path_exact(tree, 2**12, sigma)
    assert (exact - squared_path_exact(tree, 2**11, sigma)).abs().mean() < 1e-6
    g_vec = torch.tensor([0.0, sigma], dtype=F64)
    noise = Noise("scalar", additive=True)
    steps = [4, 8, 16, 32, 64, 128]

    def f(t, y):
        return torch.stack([y[:, 1] ** 2, torch.zeros_like(y[:, 1])], -1)

    y0 = torch.zeros(paths, 2, dtype=F64)
    for method, order in ((SRA1(), 1.5), (EulerMaruyama(), 1.0)):
        errors = [(fixed_step_solve(method, f, lambda t, y: g_vec.expand(y.shape[0], 2),
                                    noise, y0, tree, 0.0, 1.0, n) - exact).abs().mean().item()
                  for n in steps]
        assert abs(fitted_order(steps, errors) - order) < SLOPE_TOL, (method, errors)


def test_sra1_error_estimate_is_the_distance_to_euler_maruyama_and_of_order_one_and_a_half():
    """The embedded error is y1 - y_EM exactly, and its size over one step shrinks like
    dt^1.5 (the local error of Euler–Maruyama on additive noise)."""
    paths = 8192
    tree = BrownianTree(0.0, 1.0, sample_seeds(3, paths), 2, tol=2.0**-8, levy_area=True,
                        dtype=F64)
    y0 = torch.full((paths, 2), 0.5, dtype=F64)

    def f(t, y):
        return -y**3 + math.sin(t)

    def g(t, y):
        return noise_matrix(t)[0].expand(y.shape[0], 2, 2)

    sizes = [2.0**-k for k in range(3, 9)]
    mean_errors = []
    for dt in sizes:
        inc = tree.increment(0.0, dt)
        out = SRA1().step(step_sde(f, g, ADDITIVE, 0.0, dt), y0, dt, inc, None)
        euler = y0 + f(0.0, y0) * dt + ADDITIVE.product(g(0.0, y0), inc.dw)
        torch.testing.assert_close(out.error, out.y1 - euler, rtol=0, atol=1e-14)
        mean_errors.append(out.error.abs().mean().item())
    assert abs(fitted_order([1 / s for s in sizes], mean_errors) - 1.5) < SLOPE_TOL


# ---- weak order -------------------------------------------------------------------------------

@pytest.mark.slow
def test_euler_maruyama_weak_order_one_on_ornstein_uhlenbeck_moments():
    theta, sigma, x0, paths = 2.0, 0.5, 1.0, 2**18
    tree = BrownianTree(0.0, 1.0, sample_seeds(11, paths), 1, tol=1 / 32, dtype=F64)
    mean = x0 * math.exp(-theta)
    var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta))
    steps, mean_err, var_err = [4, 8, 16, 32], [], []
    for n in steps:
        y = fixed_step_solve(EulerMaruyama(), lambda t, y: -theta * y,
                             lambda t, y: torch.full_like(y, sigma), DIAGONAL,
                             torch.full((paths, 1), x0, dtype=F64), tree, 0.0, 1.0, n)
        mean_err.append(abs(y.mean().item() - mean))
        var_err.append(abs(y.var().item() - var))
    assert abs(fitted_order(steps, mean_err) - 1.0) < SLOPE_TOL, mean_err
    assert abs(fitted_order(steps, var_err) - 1.0) < SLOPE_TOL, var_err


# ---- reversible Heun ------------------------------------------------------------------------

def test_reversible_heun_backward_step_rebuilds_the_forward_states():
    paths, steps = 64, 200
    tree = BrownianTree(0.0, 2.0, sample_seeds(5, paths), 3, tol=2.0 / steps, dtype=F64)
    weights = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def f(t, y):
        return torch.tanh(y) * math.cos(t) - 0.3 * y

    def g(t, y):
        return 0.4 * torch.sigmoid(y).unsqueeze(-1) * weights  # general noise [B, 2, 3]

    y0 = torch.randn(paths, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    method = ReversibleHeun()
    ys, states = fixed_step_solve(method, f, g, GENERAL, y0, tree, 0.0, 2.0, steps,
                                  keep_all=True)
    ts = np.linspace(0.0, 2.0, steps + 1)
    incs = tree.increments(ts)
    y, state = ys[-1], states[-1]
    for i in reversed(range(steps)):
        dt = float(ts[i + 1] - ts[i])
        y, state = method.backward(step_sde(f, g, GENERAL, float(ts[i]), dt), y, dt,
                                   Increment(incs.dw[i], None), state)
        torch.testing.assert_close(y, ys[i], rtol=1e-12, atol=1e-12)
        for a, b in zip(state, states[i]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- per-sample steps, registry, bad input --------------------------------------------------

ALL_METHODS = [(EulerMaruyama(), DIAGONAL), (Milstein(), DIAGONAL), (Milstein(STRAT), SCALAR),
               (Heun(), GENERAL), (ReversibleHeun(), GENERAL), (SRA1(), ADDITIVE)]


def test_every_registered_method_is_tested():
    tested = {type(m) for m, _ in ALL_METHODS}
    assert set(SDE_METHODS.values()) == tested
    assert {type(m) for m, *_ in GBM_CASES + ADDITIVE_CASES} | {SRA1} == tested


@pytest.mark.parametrize("method,noise", ALL_METHODS, ids=[repr(m) for m, _ in ALL_METHODS])
def test_per_sample_steps_match_shared_steps_and_zero_steps_stand_still(method, noise):
    """dt as a tensor [B, 1] (per-sample grids) gives each sample what a shared dt gives it,
    and a sample with dt = 0 (dW = 0, H = 0) keeps its state."""
    batch, d = 6, 2
    m = {"diagonal": d, "scalar": 1, "general": 3}[noise.shape]
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(d, m, generator=gen, dtype=F64)

    def f(t, y):
        return torch.sin(y) + t

    def g(t, y):  # t is a float, or a tensor [B, 1] on per-sample steps
        if noise.additive:
            growth = torch.as_tensor(1 + t, dtype=F64).reshape(-1, 1, 1)
            return (weights * growth).expand(y.shape[0], d, m)
        scale = 0.5 + torch.sigmoid(y)
        return scale.unsqueeze(-1) * weights if noise.shape == "general" else scale

    y0 = torch.randn(batch, d, generator=gen, dtype=F64)
    dts = torch.tensor([0.1, 0.0, 0.05, 0.2, 0.0, 0.01], dtype=F64)
    tree = BrownianTree(0.0, 1.0, sample_seeds(1, batch), m, tol=1e-3, levy_area=True,
                        dtype=F64)
    inc = tree.increment(torch.full((batch,), 0.3, dtype=F64), 0.3 + dts)
    per_sample = step_sde(f, g, noise, 0.3, dts.unsqueeze(-1))
    out = method.step(per_sample, y0, dts.unsqueeze(-1), inc, method.init(per_sample, y0))
    for b in range(batch):
        dt = float(dts[b])
        one = step_sde(f, g, noise, 0.3, dt)
        rows = Increment(inc.dw[b:b + 1], inc.area[b:b + 1])
        ref = method.step(one, y0[b:b + 1], dt, rows, method.init(one, y0[b:b + 1]))
        torch.testing.assert_close(out.y1[b:b + 1], ref.y1, rtol=1e-13, atol=1e-13)
        if dt == 0.0:
            assert torch.equal(out.y1[b], y0[b])


INCOMPATIBLE = [
    (EulerMaruyama(), DIAGONAL, STRAT, "solves ito"),
    (Heun(), SCALAR, ITO, "solves stratonovich"),
    (ReversibleHeun(), GENERAL, ITO, "solves stratonovich"),
    (Milstein(), GENERAL, ITO, "general non-additive noise"),
    (SRA1(), DIAGONAL, ITO, "needs additive noise"),
]


@pytest.mark.parametrize("method,noise,calculus,message", INCOMPATIBLE)
def test_incompatible_equations_are_refused(method, noise, calculus, message):
    with pytest.raises(IncompatibleOptionsError, match=message):
        method.check(noise, calculus)


def test_sra1_without_levy_area_is_refused():
    tree = BrownianTree(0.0, 1.0, sample_seeds(0, 2), 1, tol=0.1)
    sde = step_sde(lambda t, y: y, lambda t, y: torch.ones_like(y), Noise("diagonal", True),
                   0.0, 0.1)
    with pytest.raises(IncompatibleOptionsError, match="levy_area=True"):
        SRA1().step(sde, torch.zeros(2, 1), 0.1, tree.increment(0.0, 0.1), None)


def test_bad_method_data_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"shape=\.\.\."):
        Noise("triangular")
    with pytest.raises(InvalidArgumentError, match=r"calculus=\.\.\."):
        Milstein("ito")
    tab = SRA1.tableau
    with pytest.raises(ValueError, match=r"beta2\.c1 = -1"):
        SRATableau(tab.c0, tab.c1, tab.a0, tab.b0, tab.alpha, tab.beta1, (1.0, -1.0))
    with pytest.raises(ValueError, match=r"alpha\.\(b0 e\) = 1 "):
        SRATableau(tab.c0, tab.c1, tab.a0, ((), (1.0,)), tab.alpha, tab.beta1, tab.beta2)
    with pytest.raises(ValueError, match="sum to 0"):
        SRATableau(tab.c0, tab.c1, tab.a0, tab.b0, tab.alpha, tab.beta1, tab.beta2,
                   (1.0, 0.0), (0.0, 0.0), (0.0, 0.0), 1.0)
