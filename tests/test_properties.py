"""Property-based tests (hypothesis) of tableaus, solves and the step-size controller.

Tableau properties are checked with our own arithmetic on the raw tableau data (`c`, `a`, `b`,
`b_error`, `dense_weights()`, `c_extra`, `a_extra`). Solve properties compare tidal with
itself under transformations that must not change the answer (batching, per-sample grids,
the `odeint` shim) or with analytic references (time reversal returns to y0).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tidal
from tidal.compat._steps import METHODS, TorchdiffeqController
from tidal.solvers.tableau import ButcherTableau

F64 = torch.float64
ADAPTIVE = sorted(name for name, cls in tidal.SOLVERS.items() if cls().adaptive)
FIXED = sorted(name for name, cls in tidal.SOLVERS.items() if not cls().adaptive)
#: the methods given by a Butcher tableau (Rosenbrock tableaus have their own checks in
#: tests/test_rosenbrock.py)
BUTCHER = sorted(name for name, cls in tidal.SOLVERS.items()
                 if isinstance(cls.tableau, ButcherTableau))


def close(x: float, y: float, scale: float = 1.0) -> bool:
    return abs(x - y) <= 1e-12 * max(1.0, scale)


# ---------------------------------------------------------------------------------------------
# Tableaus


@pytest.mark.parametrize("name", BUTCHER)
def test_tableau_consistency(name: str) -> None:
    tab = tidal.SOLVERS[name].tableau
    s = len(tab.c)
    assert tab.c[0] == 0.0
    assert len(tab.a) == s and len(tab.b) == s
    for i, row in enumerate(tab.a):
        assert len(row) == i
        assert close(math.fsum(row), tab.c[i], sum(map(abs, row))), (name, i)
    assert close(math.fsum(tab.b), 1.0, sum(map(abs, tab.b)))
    assert bool(tab.b_error) == tidal.SOLVERS[name]().adaptive
    for row in tab.b_error:
        assert len(row) == s
        assert close(math.fsum(row), 0.0, sum(map(abs, row)))
    # FSAL means the last stage is f(t1, y1): its node is 1 and its row is b.
    if tab.fsal:
        assert tab.c[-1] == 1.0 and tuple(tab.a[-1]) == tuple(tab.b[:-1]) and tab.b[-1] == 0.0
    for r, (row, cr) in enumerate(zip(tab.a_extra, tab.c_extra)):
        assert len(row) == s + (0 if tab.fsal else 1) + r
        assert close(math.fsum(row), cr, sum(map(abs, row)))


def _dense_stage_matrix(tab: tidal.ButcherTableau) -> tuple[list[float], list[list[float]]]:
    """Nodes and (padded) coefficient rows of every dense stage: the stages, f(t1, y1) unless
    FSAL (node 1, row b), then the extra stages."""
    n = tab.num_dense_stages
    nodes = list(tab.c)
    rows = [list(r) + [0.0] * (n - len(r)) for r in tab.a]
    if not tab.fsal:
        nodes.append(1.0)
        rows.append(list(tab.b) + [0.0] * (n - len(tab.b)))
    for row, cr in zip(tab.a_extra, tab.c_extra):
        nodes.append(cr)
        rows.append(list(row) + [0.0] * (n - len(row)))
    assert len(nodes) == n
    return nodes, rows


def _order_conditions(weights: list[float], nodes: list[float], rows: list[list[float]],
                      order: int, theta: float = 1.0) -> list[tuple[float, float]]:
    """(sum, expected) for the rooted trees up to order min(order, 4), with weights w."""
    n = len(weights)
    ac = [math.fsum(rows[i][j] * nodes[j] for j in range(n)) for i in range(n)]
    ac2 = [math.fsum(rows[i][j] * nodes[j] ** 2 for j in range(n)) for i in range(n)]
    aac = [math.fsum(rows[i][j] * ac[j] for j in range(n)) for i in range(n)]

    def w(g) -> float:
        return math.fsum(weights[i] * g(i) for i in range(n))

    conditions = [(1, w(lambda i: 1.0), theta)]
    conditions += [
        (2, w(lambda i: nodes[i]), theta**2 / 2),
        (3, w(lambda i: nodes[i] ** 2), theta**3 / 3),
        (3, w(lambda i: ac[i]), theta**3 / 6),
        (4, w(lambda i: nodes[i] ** 3), theta**4 / 4),
        (4, w(lambda i: nodes[i] * ac[i]), theta**4 / 8),
        (4, w(lambda i: ac2[i]), theta**4 / 12),
        (4, w(lambda i: aac[i]), theta**4 / 24),
    ]
    return [(value, expected) for p, value, expected in conditions if p <= min(order, 4)]


@pytest.mark.parametrize("name", BUTCHER)
def test_tableau_order_conditions(name: str) -> None:
    """b satisfies the order conditions of its stated order (up to 4); each single embedded
    solution b_hat = b - e those of its error order."""
    tab = tidal.SOLVERS[name].tableau
    nodes, rows = list(tab.c), [list(r) + [0.0] * (len(tab.c) - len(r)) for r in tab.a]
    for value, expected in _order_conditions(list(tab.b), nodes, rows, tab.order):
        assert value == pytest.approx(expected, abs=1e-13), name
    if len(tab.b_error) == 1:
        b_hat = [bi - ei for bi, ei in zip(tab.b, tab.b_error[0])]
        for value, expected in _order_conditions(b_hat, nodes, rows, tab.error_order):
            assert value == pytest.approx(expected, abs=1e-13), name


@pytest.mark.parametrize("name", BUTCHER)
def test_dense_weights_at_theta_one_equal_b(name: str) -> None:
    tab = tidal.SOLVERS[name].tableau
    dense = tab.dense_weights()
    assert len(dense) == tab.num_dense_stages
    b_full = list(tab.b) + [0.0] * (tab.num_dense_stages - tab.num_stages)
    for i, row in enumerate(dense):
        assert close(math.fsum(row), b_full[i], sum(map(abs, row))), (name, i)


def _w(row: tuple[float, ...], theta: float) -> float:
    return math.fsum(coef * theta ** (k + 1) for k, coef in enumerate(row))


@pytest.mark.parametrize("name", BUTCHER)
@given(theta=st.floats(0.0, 1.0))
def test_dense_weights_sum_to_theta(name: str, theta: float) -> None:
    """sum_i w_i(theta) = theta (a constant f is interpolated exactly), w_i(0) = 0, and the
    interpolant meets the order conditions of min(order, dense order) at every theta."""
    tab = tidal.SOLVERS[name].tableau
    dense = tab.dense_weights()
    weights = [_w(row, theta) for row in dense]
    scale = max(1.0, math.fsum(abs(c) for row in dense for c in row))
    assert abs(math.fsum(weights) - theta) <= 1e-13 * scale
    assert all(_w(row, 0.0) == 0.0 for row in dense)
    nodes, rows = _dense_stage_matrix(tab)
    for value, expected in _order_conditions(weights, nodes, rows,
                                             min(tab.order, tab.dense_order), theta):
        assert abs(value - expected) <= 1e-13 * scale, name


# ---------------------------------------------------------------------------------------------
# dtypes


@settings(deadline=None, max_examples=15)
@given(dtype=st.sampled_from([torch.float32, torch.float64]),
       name=st.sampled_from(sorted(tidal.SOLVERS)),
       batch=st.integers(1, 4), per_sample=st.booleans())
def test_dtype_preserved(dtype: torch.dtype, name: str, batch: int, per_sample: bool) -> None:
    seen: list[tuple[torch.dtype, torch.dtype, tuple]] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append((t.dtype, y.dtype, tuple(t.shape)))
        return -y + torch.sin(t).reshape(-1, 1)

    solver = tidal.SOLVERS[name]()
    controller = (tidal.PIDController(1e-5, 1e-7) if solver.adaptive
                  else tidal.ConstantStepSize(0.01))
    ts = torch.linspace(0.0, 1.0, 4, dtype=F64)
    if per_sample:
        ts = ts.unsqueeze(-1).expand(4, batch)
    y0 = torch.ones(batch, 2, dtype=dtype)
    sol = tidal.solve(f, y0, ts, solver=solver, controller=controller)
    assert sol.ys.dtype == dtype
    assert sol.ys.shape == (4, batch, 2)
    assert sol.ts.dtype == F64
    assert {(s[0], s[1]) for s in seen} == {(dtype, dtype)}
    assert {s[2] for s in seen} == {(batch,) if per_sample else ()}
    if getattr(solver, "splits_state", False):
        return  # a splitting needs a separable Hamiltonian field: see tests/test_symplectic.py
    # and it solved the right problem: y' = -y + sin t from y(0) = 1
    t = ts if not per_sample else ts[:, 0]
    exact = 1.5 * torch.exp(-t) + 0.5 * (torch.sin(t) - torch.cos(t))
    tol = 1e-2 if solver.order == 1 else 2e-3  # first order: error ~ dt = 0.01
    assert torch.allclose(sol.ys[:, 0, 0].double(), exact, atol=tol)


# ---------------------------------------------------------------------------------------------
# Per-sample grids are independent


@st.composite
def linear_batches(draw):
    batch = draw(st.integers(1, 4))
    dim = draw(st.integers(1, 3))
    points = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    reversed_ = draw(st.lists(st.booleans(), min_size=batch, max_size=batch))
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, dim, generator=g, dtype=F64)
    y0 = torch.randn(batch, dim, generator=g, dtype=F64)
    t0 = torch.rand(batch, generator=g, dtype=F64) * 4 - 2
    length = torch.rand(batch, generator=g, dtype=F64) * 2 + 0.1
    sign = torch.tensor([-1.0 if r else 1.0 for r in reversed_], dtype=F64)
    inner = torch.sort(torch.rand(points - 2, batch, generator=g, dtype=F64), 0).values
    fractions = torch.cat([torch.zeros(1, batch, dtype=F64), inner,
                           torch.ones(1, batch, dtype=F64)])
    ts = t0 + sign * length * fractions
    return a, y0, ts


def _stats(stats: tidal.Stats, b: int | None) -> dict[str, int]:
    names = ("num_fevals", "num_steps", "num_accepted", "num_rejected")
    return {n: int(getattr(stats, n) if b is None else getattr(stats, n)[b]) for n in names}


@settings(deadline=None)
@given(problem=linear_batches(),
       name=st.sampled_from(["dopri5", "tsit5", "bosh3", "dopri8", "rk4"]))
def test_per_sample_matches_lone_solves(problem, name: str) -> None:
    a, y0, ts = problem
    solver = tidal.SOLVERS[name]()
    controller = (tidal.PIDController(1e-6, 1e-8) if solver.adaptive
                  else tidal.ConstantStepSize(0.1))

    def batched(a_: torch.Tensor):
        return lambda t, y: torch.einsum("bij,bj->bi", a_, y)

    sol = tidal.solve(batched(a), y0, ts, solver=solver, controller=controller)
    assert sol.ys.shape == (ts.shape[0], *y0.shape)
    assert all(s is tidal.Status.SUCCESS for s in sol.sample_status)
    # Dopri8's 7th-order interpolant sums power-basis coefficients of up to ~4000 in size
    # (they cancel to weights of order 1), so its round-off is ~100x larger.
    rel = 1e-10 if name == "dopri8" else 1e-12
    for b in range(y0.shape[0]):
        lone = tidal.solve(batched(a[b:b + 1]), y0[b:b + 1], ts[:, b:b + 1], solver=solver,
                           controller=controller)
        shared = tidal.solve(lambda t, y, b=b: a[b] @ y, y0[b], ts[:, b], solver=solver,
                             controller=controller)
        scale = sol.ys[:, b].abs().max()
        assert (lone.ys[:, 0] - sol.ys[:, b]).abs().max() <= rel * scale
        assert (shared.ys - sol.ys[:, b]).abs().max() <= rel * scale
        assert _stats(sol.stats, b) == _stats(lone.stats, 0) == _stats(shared.stats, None)


def test_per_sample_dopri8_fevals_do_not_depend_on_batch() -> None:
    """Dopri8's three extra dense stages are needed only by a sample with an output inside a
    step; the other samples' counts (and a lone sample's) must not include them."""
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(2, 1, dtype=F64)
    ts = torch.tensor([[0.0, 0.0], [0.3, 2.0]], dtype=F64)  # only sample 0 has an inner output
    batch = tidal.solve(f, y0, ts, solver=tidal.Dopri8())
    lone = tidal.solve(f, y0[1:], ts[:, 1:], solver=tidal.Dopri8())
    shared = tidal.solve(f, y0[1], ts[:, 1], solver=tidal.Dopri8())
    assert int(batch.stats.num_steps[1]) == int(lone.stats.num_steps[0]) == shared.stats.num_steps
    assert (int(batch.stats.num_fevals[1]) == int(lone.stats.num_fevals[0])
            == shared.stats.num_fevals)


# ---------------------------------------------------------------------------------------------
# Work statistics


def _counting(f):
    calls = [0]

    def counted(t, y):
        calls[0] += 1
        return f(t, y)

    return counted, calls


def _fevals_cases():
    for name in sorted(tidal.SOLVERS):
        for per_sample in (False, True):
            yield pytest.param(name, per_sample,
                               id=f"{name}-{'per_sample' if per_sample else 'shared'}")


@pytest.mark.parametrize(("name", "per_sample"), list(_fevals_cases()))
@pytest.mark.parametrize("first_step", [None, 1.0])
def test_num_fevals_counts_calls(name: str, per_sample: bool, first_step: float | None
                                 ) -> None:
    """Stats.num_fevals is the number of calls of f (one sample, so no batching question),
    whether the first step is given (too large, so that steps get rejected) or chosen
    automatically; steps = accepted + rejected."""
    solver = tidal.SOLVERS[name]()
    controller = (tidal.PIDController(1e-4, 1e-6, dt0=first_step) if solver.adaptive
                  else tidal.ConstantStepSize(0.125))
    f, calls = _counting(lambda t, y: -y + torch.cos(4 * t).unsqueeze(-1))
    ts = torch.tensor([0.0, 2.0], dtype=F64)  # outputs at step ends only
    y0 = torch.ones(1, 2, dtype=F64)
    sol = tidal.solve(f, y0, ts.unsqueeze(-1) if per_sample else ts, solver=solver,
                      controller=controller)
    stats = _stats(sol.stats, 0 if per_sample else None)
    assert stats["num_steps"] == stats["num_accepted"] + stats["num_rejected"]
    if first_step is not None and solver.adaptive:
        assert stats["num_rejected"] > 0
    jacobians = int(sol.stats.num_jacobians.max())
    if jacobians == 0:
        assert stats["num_fevals"] == calls[0]
    else:
        # Stats: a Jacobian's calls of f (reverse mode for df/dy, one more for df/dt, and one
        # probe per solve for whether f has parameters) are not in num_fevals
        assert stats["num_fevals"] < calls[0] <= stats["num_fevals"] + 2 * jacobians + 1


def test_per_sample_rejected_steps_cost_no_end_derivative() -> None:
    """Minimal repro: one sample, HeunEuler, a first step that is far too large. Per-sample and
    shared solves take the same steps, so they should call f equally often."""
    f = lambda t, y: -10 * y  # noqa: E731
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    controller = tidal.PIDController(1e-3, 1e-5, dt0=1.0)
    f_shared, n_shared = _counting(f)
    f_sample, n_sample = _counting(f)
    shared = tidal.solve(f_shared, torch.ones(1, dtype=F64), ts, solver=tidal.HeunEuler(),
                         controller=controller)
    sample = tidal.solve(f_sample, torch.ones(1, 1, dtype=F64), ts.unsqueeze(-1),
                         solver=tidal.HeunEuler(), controller=controller)
    assert shared.stats.num_rejected > 0
    assert int(sample.stats.num_steps[0]) == shared.stats.num_steps
    assert n_sample[0] == n_shared[0]


@pytest.mark.parametrize(("dt", "span", "steps"), [(0.25, 1.0, 4), (0.125, 3.0, 24),
                                                   (0.3, 1.0, 4), (0.5, 1.25, 3)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_constant_step_count(dt: float, span: float, steps: int, per_sample: bool) -> None:
    ts = torch.tensor([0.0, span], dtype=F64)
    sol = tidal.solve(lambda t, y: -y, torch.ones(1, 1, dtype=F64),
                      ts.unsqueeze(-1) if per_sample else ts, solver=tidal.RK4(),
                      controller=tidal.ConstantStepSize(dt))
    assert _stats(sol.stats, 0 if per_sample else None)["num_steps"] == steps


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize(("dt", "steps"), [(0.1, 10), (0.01, 100), (1 / 3, 3), (0.7, 2)])
def test_constant_step_count_decimal_dt(dt: float, steps: int, per_sample: bool) -> None:
    """dt that is not a binary fraction: accumulating t += dt must not leave a sliver step of
    1e-16 before the end (0.1 * 10 in floating point is 0.9999999999999999)."""
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    sol = tidal.solve(lambda t, y: -y, torch.ones(1, 1, dtype=F64),
                      ts.unsqueeze(-1) if per_sample else ts, solver=tidal.Euler(),
                      controller=tidal.ConstantStepSize(dt))
    assert _stats(sol.stats, 0 if per_sample else None)["num_steps"] == steps


# ---------------------------------------------------------------------------------------------
# Time reversal


@settings(deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 4),
       span=st.floats(0.2, 3.0), start=st.floats(-3.0, 3.0), backwards=st.booleans(),
       name=st.sampled_from(["dopri5", "tsit5", "dopri8", "bosh3"]))
def test_time_reversal_returns_to_y0(seed: int, dim: int, span: float, start: float,
                                     backwards: bool, name: str) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=F64) / math.sqrt(dim)
    y0 = torch.randn(dim, generator=g, dtype=F64)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a @ y + 0.5 * torch.sin(t) * y.roll(1)

    end = start - span if backwards else start + span
    tol = 1e-8 if name == "bosh3" else 1e-10  # third order: keep the step count modest
    solver, controller = tidal.SOLVERS[name](), tidal.PIDController(tol, tol * 1e-2)
    there = tidal.solve(f, y0, torch.tensor([start, end], dtype=F64), solver=solver,
                        controller=controller)
    back = tidal.solve(f, there.ys[-1], torch.tensor([end, start], dtype=F64), solver=solver,
                       controller=controller)
    scale = max(1.0, float(there.ys.abs().max()))
    assert (back.ys[-1] - y0).abs().max() <= 1e-6 * scale


# ---------------------------------------------------------------------------------------------
# odeint is solve


@settings(deadline=None, max_examples=15)
@given(name=st.sampled_from(ADAPTIVE), rtol=st.floats(1e-9, 1e-3), atol=st.floats(1e-10, 1e-4),
       reverse=st.booleans(), points=st.integers(1, 6), seed=st.integers(0, 1000))
def test_odeint_equals_solve(name: str, rtol: float, atol: float, reverse: bool, points: int,
                             seed: int) -> None:
    if tidal.SOLVERS[name].order <= 3:  # keep low-order solves short
        rtol, atol = max(rtol, 1e-5), max(atol, 1e-7)
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(2, 3, generator=g, dtype=F64)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -torch.sin(y[0]) + torch.cos(t)])

    t = torch.linspace(0.0, -2.0 if reverse else 2.0, points, dtype=F64)
    out = tidal.odeint(f, y0, t, rtol=rtol, atol=atol, method=name)
    # the drop-in takes torchdiffeq's steps: its step-size rule, and its variant of the method
    # where torchdiffeq's differs from the textbook one (tidal/compat/_steps.py)
    solver = METHODS.get(name, tidal.SOLVERS[name])()
    sol = tidal.solve(f, y0, t, solver=solver,
                      controller=TorchdiffeqController(rtol=rtol, atol=atol))
    assert torch.equal(out, sol.ys)


@pytest.mark.parametrize("name", FIXED)
def test_odeint_fixed_equals_solve(name: str) -> None:
    f = lambda t, y: -y + torch.sin(t)  # noqa: E731
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.35, 1.2], dtype=F64)
    assert torch.equal(tidal.odeint(f, y0, t, method=name),
                       tidal.solve(f, y0, t, solver=tidal.SOLVERS[name](),
                                   controller=tidal.StepTo(t)).ys)
    # interp="cubic": the method's own dense output, as solve gives (torchdiffeq's default
    # between fixed steps is linear)
    assert torch.equal(tidal.odeint(f, y0, t, method=name,
                                    options={"step_size": 0.1, "interp": "cubic"}),
                       tidal.solve(f, y0, t, solver=tidal.SOLVERS[name](),
                                   controller=tidal.ConstantStepSize(0.1)).ys)


# ---------------------------------------------------------------------------------------------
# PIDController.adapt


@st.composite
def pid_controllers(draw):
    pcoeff = draw(st.floats(0.0, 0.5))
    icoeff = draw(st.floats(0.05, 1.0))
    dcoeff = draw(st.floats(0.0, 0.3))
    safety = draw(st.floats(0.1, 1.0))
    factor_min = draw(st.floats(0.01, 1.0))
    factor_max = draw(st.floats(1.0, 20.0))
    return tidal.PIDController(1e-6, 1e-8, pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff,
                               safety=safety, factor_min=factor_min, factor_max=factor_max)


EXPONENTS = st.sampled_from([1 / 2, 1 / 3, 1 / 5, 1 / 8])


@given(controller=pid_controllers(), exponent=EXPONENTS)
def test_adapt_zero_error_accepts_float(controller: tidal.PIDController, exponent: float) -> None:
    accept, factor, history = controller.adapt(0.0, (1.0, 1.0), exponent)
    assert accept
    assert math.isfinite(factor)
    assert controller.factor_min <= factor <= controller.factor_max
    assert all(math.isfinite(h) for h in history)


@given(controller=pid_controllers(), exponent=EXPONENTS,
       bad=st.sampled_from([math.nan, math.inf]))
def test_adapt_nonfinite_error_rejects_float(controller: tidal.PIDController, exponent: float,
                                             bad: float) -> None:
    accept, factor, history = controller.adapt(bad, (1.0, 1.0), exponent)
    assert not accept
    assert math.isfinite(factor)
    assert controller.factor_min <= factor <= 1.0
    assert history == (1.0, 1.0)  # history moves only on accepted steps


@given(controller=pid_controllers(), exponent=EXPONENTS)
def test_adapt_tensors(controller: tidal.PIDController, exponent: float) -> None:
    ratio = torch.tensor([0.0, math.nan, math.inf, 0.5, 2.0], dtype=F64)
    accept, factor, history = controller.adapt(ratio, (1.0, 1.0), exponent)
    assert accept.tolist() == [True, False, False, True, False]
    assert bool(torch.isfinite(factor).all())
    assert bool((factor >= controller.factor_min).all())
    assert bool((factor <= controller.factor_max).all())
    assert bool((factor[~accept] <= 1.0).all())
    for h in history:
        assert bool(torch.isfinite(torch.as_tensor(h)).all())
    # Element by element the same as the float version.
    for i, r in enumerate(ratio.tolist()):
        a_f, f_f, _ = controller.adapt(r, (1.0, 1.0), exponent)
        assert bool(accept[i]) == a_f
        assert float(factor[i]) == pytest.approx(f_f, rel=1e-12)


@given(ratio=st.floats(1e-8, 1e8), safety=st.floats(0.1, 1.0), factor_min=st.floats(0.01, 1.0),
       factor_max=st.floats(1.0, 20.0), exponent=EXPONENTS)
def test_adapt_i_controller_formula(ratio: float, safety: float, factor_min: float,
                                    factor_max: float, exponent: float) -> None:
    """The default controller is the classic I controller: factor = safety * r^(-1/k), clipped
    to [factor_min, factor_max] and to at most 1 after a rejection; accept iff r <= 1."""
    controller = tidal.PIDController(1e-6, 1e-8, safety=safety, factor_min=factor_min,
                                     factor_max=factor_max)
    accept, factor, _ = controller.adapt(ratio, (0.3, 3.0), exponent)
    expected = min(max(safety * ratio ** (-exponent), factor_min), factor_max)
    if ratio > 1.0:
        expected = min(expected, 1.0)
    assert accept == (ratio <= 1.0)
    assert factor == pytest.approx(expected, rel=1e-12)
