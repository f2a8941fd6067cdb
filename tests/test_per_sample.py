"""Per-sample time grids (`ts` of shape [T, B]): every sample has its own span, direction,
output times, step sizes and statistics. Checked against analytic solutions, against solving
each sample alone, and (for `step_ts` / `jump_ts`) against the times f is called at.
"""

from __future__ import annotations

import math

import pytest
import torch

import tidal

F64 = torch.float64


def grids(starts, ends, points: int) -> torch.Tensor:
    """[points, B]: linspace(start_b, end_b) per sample."""
    starts = torch.as_tensor(starts, dtype=F64)
    ends = torch.as_tensor(ends, dtype=F64)
    fractions = torch.linspace(0.0, 1.0, points, dtype=F64).unsqueeze(-1)
    return starts + (ends - starts) * fractions


def modulated(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y' = k cos(t) y for y [B, ...], t [B], k [B]."""
    shape = (-1,) + (1,) * (y.dim() - 1)
    return (k * torch.cos(t)).reshape(shape) * y


def modulated_exact(ts: torch.Tensor, y0: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y(t) = y0 exp(k (sin t - sin t0)), [T, B, ...]."""
    shape = ts.shape + (1,) * (y0.dim() - 1)
    growth = torch.exp(k * (torch.sin(ts) - torch.sin(ts[0]))).reshape(shape)
    return y0.double().unsqueeze(0) * growth


# ---------------------------------------------------------------------------------------------
# Accuracy, directions, dtypes, shapes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["dopri5", "tsit5", "dopri8", "bosh3"])
def test_mixed_spans_and_directions_against_analytic(dtype: torch.dtype, name: str) -> None:
    starts = [0.0, 1.0, -2.0, 3.0, 0.5]
    ends = [2.0, -1.5, -1.0, 0.0, 0.51]  # forward, reverse, forward, reverse, very short
    ts = grids(starts, ends, 7)
    k = torch.tensor([1.0, -0.5, 2.0, 0.7, 3.0], dtype=dtype)
    y0 = torch.randn(5, 2, 3, dtype=dtype)
    rtol, atol = (1e-9, 1e-11) if dtype == F64 else (1e-5, 1e-7)
    sol = tidal.solve(modulated, y0, ts, args=k, solver=tidal.SOLVERS[name](),
                      controller=tidal.PIDController(rtol, atol))
    assert sol.ys.shape == (7, 5, 2, 3)
    assert sol.ys.dtype == dtype
    assert sol.sample_status == (tidal.Status.SUCCESS,) * 5
    assert torch.equal(sol.ys[0], y0)
    exact = modulated_exact(ts, y0, k.double())
    tol = 2e-7 if dtype == F64 else 2e-3
    scale = exact.abs().amax(dim=(0, 2, 3))
    for b in range(5):
        assert (sol.ys[:, b].double() - exact[:, b]).abs().max() <= tol * scale[b], b


def test_many_outputs_inside_one_step_and_few_in_another() -> None:
    """Sample 0: 200 outputs over a span its steps cross in a handful of steps; sample 1: the
    same number of outputs spread over a long span (one or none per step)."""
    ts = torch.stack([torch.linspace(0.0, 0.5, 200, dtype=F64),
                      torch.linspace(0.0, -60.0, 200, dtype=F64)], 1)
    k = torch.tensor([1.0, 1.0], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k, controller=tidal.PIDController(1e-8, 1e-10))
    steps = sol.stats.num_accepted
    assert int(steps[0]) < 20 < int(steps[1])  # many outputs per step vs many steps
    exact = modulated_exact(ts, y0, k)
    assert torch.allclose(sol.ys, exact, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("limit", [1, 300])
def test_outputs_interpolated_in_batches_match_analytic(monkeypatch: pytest.MonkeyPatch,
                                                        limit: int) -> None:
    """Outputs inside steps wait and are interpolated together; with a small limit on what may
    wait they go in many batches (after every step, or every few), with the gradient through
    them, and every batching gives the analytic solution (and the same values)."""
    from tidal import _loop_per_sample

    ts = grids([0.0, 1.0, 0.0], [3.0, -2.0, 0.2], 40)  # many outputs per step in sample 2
    k = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    y0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    controller = tidal.PIDController(1e-9, 1e-11)
    together = tidal.solve(modulated, y0, ts, args=k, controller=controller).ys
    monkeypatch.setattr(_loop_per_sample, "PENDING_ELEMENTS", limit)
    sol = tidal.solve(modulated, y0, ts, args=k, controller=controller)
    exact = modulated_exact(ts, y0.detach(), k)
    assert torch.allclose(sol.ys, exact, rtol=1e-7, atol=1e-10)
    assert torch.allclose(sol.ys, together, rtol=1e-14, atol=0.0)
    (grad,) = torch.autograd.grad(sol.ys[-1].sum(), y0)  # d y(T) / d y0 = exp(k (sin T - sin t0))
    growth = torch.exp(k * (torch.sin(ts[-1]) - torch.sin(ts[0]))).unsqueeze(-1)
    assert torch.allclose(grad, growth.expand(3, 2), rtol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_f_sees_per_sample_times_and_args(dtype: torch.dtype) -> None:
    """f(t, y, args): t is [B] in the state's dtype, equal to each sample's own time (every
    evaluation, the initial-step trial included, lies inside each sample's span), y has the
    state's shape, args arrive as given.
    """
    ts = grids([0.0, 5.0, -1.0], [1.0, 3.0, -0.5], 4)
    args = {"k": torch.tensor([1.0, 2.0, -1.0], dtype=dtype)}
    calls = []

    def f(t, y, a):
        assert a is args
        calls.append((t.detach().clone(), tuple(y.shape), t.dtype))
        return modulated(t, y, a["k"])

    y0 = torch.ones(3, 4, dtype=dtype)
    sol = tidal.solve(f, y0, ts, args=args)
    assert {c[1] for c in calls} == {(3, 4)}
    assert {c[2] for c in calls} == {dtype}
    times = torch.stack([c[0] for c in calls]).double()  # [calls, B]
    assert torch.equal(times[0], ts[0].to(dtype).double())  # f0 at each sample's start
    low, high = ts.min(0).values, ts.max(0).values
    slack = 1e-6 * (1 + high.abs())
    assert bool(((times >= low - slack) & (times <= high + slack)).all())
    exact = modulated_exact(ts, y0.double(), args["k"].double())
    tol = 1e-5 if dtype == F64 else 1e-4
    assert torch.allclose(sol.ys.double(), exact, rtol=tol, atol=tol)


def test_state_of_shape_b_only() -> None:
    """y0 [B]: one scalar per sample."""
    ts = grids([0.0, 1.0], [2.0, 0.0], 5)
    k = torch.tensor([1.0, 3.0], dtype=F64)
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k, controller=tidal.PIDController(1e-9, 1e-11))
    assert sol.ys.shape == (5, 2)
    assert torch.allclose(sol.ys, modulated_exact(ts, y0, k), rtol=1e-7)


def test_samples_match_lone_solves_and_shared_grid() -> None:
    ts = grids([0.0, 2.0, -1.0, 0.3], [3.0, -2.0, 4.0, 0.4], 6)
    k = torch.tensor([1.0, -2.0, 0.5, 4.0], dtype=F64)
    y0 = torch.randn(4, 3, dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k)
    for b in range(4):
        lone = tidal.solve(modulated, y0[b:b + 1], ts[:, b:b + 1], args=k[b:b + 1])
        shared = tidal.solve(lambda t, y, kb: kb * torch.cos(t) * y, y0[b], ts[:, b],
                             args=k[b])
        scale = sol.ys[:, b].abs().max()
        assert (lone.ys[:, 0] - sol.ys[:, b]).abs().max() <= 1e-12 * scale
        assert (shared.ys - sol.ys[:, b]).abs().max() <= 1e-12 * scale
        assert int(sol.stats.num_steps[b]) == shared.stats.num_steps
        assert int(sol.stats.num_rejected[b]) == shared.stats.num_rejected
        assert int(sol.stats.num_fevals[b]) == shared.stats.num_fevals


# ---------------------------------------------------------------------------------------------
# Statistics


def test_stats_are_per_sample_tensors() -> None:
    ts = grids([0.0, 0.0, 0.0], [2.0, 10.0, -30.0], 3)
    k = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    sol = tidal.solve(modulated, torch.ones(3, 2, dtype=F64), ts, args=k,
                      controller=tidal.PIDController(1e-8, 1e-10, dt0=1.0))
    stats = sol.stats
    for name in ("num_fevals", "num_steps", "num_accepted", "num_rejected"):
        value = getattr(stats, name)
        assert isinstance(value, torch.Tensor)
        assert value.shape == (3,)
        assert value.dtype == torch.int64
    assert torch.equal(stats.num_steps, stats.num_accepted + stats.num_rejected)
    assert bool((stats.num_rejected >= 1).all())  # dt0 = 1.0 is too large for all three
    # Longer spans need more steps; the samples do not share one count.
    assert int(stats.num_accepted[0]) < int(stats.num_accepted[1]) < int(
        stats.num_accepted[2])
    assert bool((stats.num_fevals >= 6 * stats.num_steps).all())  # dopri5: 6 new stages


def test_fixed_step_per_sample() -> None:
    ts = grids([0.0, 1.0, 0.0], [1.0, -1.0, 0.3], 5)
    k = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    y0 = torch.ones(3, 1, dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k, solver=tidal.RK4(),
                      controller=tidal.ConstantStepSize(1 / 64))
    exact = modulated_exact(ts, y0, k)
    assert torch.allclose(sol.ys, exact, rtol=1e-6)
    assert torch.equal(sol.stats.num_rejected, torch.zeros(3, dtype=torch.int64))
    assert sol.stats.num_steps.tolist() == [64, 128, math.ceil(0.3 * 64)]


def test_no_call_of_f_at_the_end_of_the_last_step_unless_an_output_needs_it() -> None:
    """RK4 is not FSAL: f(t1, y1) starts the next step, and the last step's interpolant uses
    it. A solve does not evaluate it at the end of its last step unless an output lies inside
    that step: 4 calls a step, as torchdiffeq's rk4 makes, on shared and per-sample grids
    (each sample as its solo solve), and outputs inside the last step as accurate as before
    (cubic Hermite: error O(dt^4))."""
    calls = []

    def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -y

    y0 = torch.ones(2, 1, dtype=F64)
    rk4, dt = tidal.RK4(), tidal.ConstantStepSize(0.1)
    for ts, inside in (([0.0, 0.5, 1.0], 0), ([0.0, 0.95, 1.0], 1)):
        calls.clear()
        sol = tidal.solve(decay, y0, ts, solver=rk4, controller=dt)
        assert len(calls) == int(sol.stats.num_fevals) == 4 * 10 + inside
        exact = torch.exp(-torch.tensor(ts, dtype=F64)).view(-1, 1, 1)
        torch.testing.assert_close(sol.ys, exact.expand_as(sol.ys), rtol=2e-6, atol=0)
    # per sample: one sample ends at 0.5, the other at 1.0 with an output inside its last step
    ts = torch.tensor([[0.0, 0.0], [0.2, 0.95], [0.5, 1.0]], dtype=F64)
    sol = tidal.solve(decay, y0, ts, solver=rk4, controller=dt)
    solo = [tidal.solve(decay, y0[b:b + 1], ts[:, b], solver=rk4, controller=dt)
            for b in range(2)]
    assert sol.stats.num_fevals.tolist() == [int(s.stats.num_fevals) for s in solo] == [20, 41]
    torch.testing.assert_close(sol.ys, torch.exp(-ts).unsqueeze(-1), rtol=2e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# step_ts and jump_ts


class Recorder:
    def __init__(self, f):
        self.f, self.times = f, []

    def __call__(self, t, y):
        self.times.append(t.detach().clone())
        return self.f(t, y)

    def column(self, b: int) -> list[float]:
        return [float(t[b]) for t in self.times]


@pytest.mark.parametrize("kind", ["step_ts", "jump_ts"])
@pytest.mark.parametrize("solver", [tidal.Dopri5(), tidal.Dopri8(), tidal.RK4()],
                         ids=["dopri5", "dopri8", "rk4"])
def test_steps_land_on_marked_times(kind: str, solver: tidal.ExplicitRungeKutta) -> None:
    """Each sample's steps land exactly on the marked times inside its own span (its last
    stage is evaluated there); the others are ignored."""
    marks = [0.3, 1.7, 2.2, -0.6]
    ts = grids([0.0, 2.0, 0.5, 0.0], [1.0, -1.0, 3.0, -2.0], 5)
    if solver.adaptive:
        controller = tidal.PIDController(1e-6, 1e-8, **{kind: marks})
        plain_controller = tidal.PIDController(1e-6, 1e-8)
    else:
        controller = tidal.ConstantStepSize(0.25, **{kind: marks})
        plain_controller = tidal.ConstantStepSize(0.25)
    f = Recorder(lambda t, y: -y * torch.cos(t).unsqueeze(-1))
    sol = tidal.solve(f, torch.ones(4, 1, dtype=F64), ts, solver=solver, controller=controller)
    plain = Recorder(lambda t, y: -y * torch.cos(t).unsqueeze(-1))
    tidal.solve(plain, torch.ones(4, 1, dtype=F64), ts, solver=solver,
                controller=plain_controller)
    for b in range(4):
        low, high = sorted((float(ts[0, b]), float(ts[-1, b])))
        inside = [m for m in marks if low < m < high]
        assert inside, "every sample has a mark inside its span"
        called = f.column(b)
        for m in inside:
            if kind == "step_ts":
                assert m in called, (b, m)
            else:  # a step ending on a jump takes f from the near side, the next from the far
                below, above = math.nextafter(m, -math.inf), math.nextafter(m, math.inf)
                assert below in called and above in called, (b, m)
            assert m not in plain.column(b), (b, m)  # not by accident
    exact = torch.exp(-(torch.sin(ts) - torch.sin(ts[0])))
    tol = 1e-3 if not solver.adaptive else 1e-5
    assert torch.allclose(sol.ys[..., 0], exact, rtol=tol)


def test_jump_ts_reevaluates_f_after_the_jump() -> None:
    """After landing on a jump, f is evaluated again just past it (in the direction of the
    sample) for the next step's first stage."""
    ts = grids([0.0, 2.0], [2.0, 0.0], 3)
    f = Recorder(lambda t, y: -y)
    tidal.solve(f, torch.ones(2, 1, dtype=F64), ts,
                controller=tidal.PIDController(1e-6, 1e-8, jump_ts=[1.3]))
    forward, backward = f.column(0), f.column(1)
    after = math.nextafter(1.3, math.inf)
    before = math.nextafter(1.3, -math.inf)
    assert after in forward
    assert before in backward


def _jump_problem(right_continuous: bool):
    """f = 1 before t = 1, -1 after; y = 1 - |t - 1| from y(0) = 0."""

    def f(t, y):
        before = (t < 1.0) if right_continuous else (t <= 1.0)
        return torch.where(before.unsqueeze(-1), torch.ones_like(y), -torch.ones_like(y))

    return f


def _jump_errors(ts, f, jump_ts):
    counter = Recorder(f)
    y0 = (1.0 - (ts[0] - 1.0).abs()).unsqueeze(-1)
    sol = tidal.solve(counter, y0, ts, controller=tidal.PIDController(1e-7, 1e-9,
                                                                      jump_ts=jump_ts))
    exact = 1.0 - (ts - 1.0).abs()
    return (sol.ys[..., 0] - exact).abs().amax(0), sol.stats.num_fevals


def test_jump_ts_forward_left_continuous() -> None:
    ts = grids([0.0, 0.5], [2.0, 1.5], 5)
    f = _jump_problem(right_continuous=False)
    err_plain, fevals_plain = _jump_errors(ts, f, ())
    err_jump, fevals_jump = _jump_errors(ts, f, (1.0,))
    assert bool((err_jump <= 1e-12).all())
    assert bool((err_jump < err_plain / 1000).all())
    assert bool((fevals_jump < fevals_plain / 3).all())


def test_jump_ts_either_side_convention() -> None:
    """Whichever side f takes at the jump time itself, declaring the jump should make the
    solve exact: samples forward with a right-continuous f, backward with a left-continuous
    one."""
    ts = grids([0.0, 0.5], [2.0, 1.5], 5)
    err_fwd, fevals_fwd = _jump_errors(ts, _jump_problem(right_continuous=True), (1.0,))
    err_bwd, fevals_bwd = _jump_errors(ts.flip(0), _jump_problem(right_continuous=False), (1.0,))
    assert bool((err_fwd <= 1e-12).all()) and bool((err_bwd <= 1e-12).all())
    assert bool((fevals_fwd < 100).all()) and bool((fevals_bwd < 100).all())


# ---------------------------------------------------------------------------------------------
# Events, dense output, norms, degenerate grids


def test_per_sample_events() -> None:
    """y' = -y from y = 1: g = y - c_b crosses at t = ln(1/c_b) (backwards for c_b > 1);
    sample 3's level is never reached and it runs to its end."""
    c = torch.tensor([0.5, 0.2, 2.0, 0.01], dtype=F64)
    ts = grids([0.0, 0.0, 0.0, 0.0], [5.0, 5.0, -5.0, 2.0], 11)
    sol = tidal.solve(lambda t, y: -y, torch.ones(4, 1, dtype=F64), ts,
                      event=lambda t, y: y[:, 0] - c)
    assert sol.sample_status == (tidal.Status.EVENT,) * 3 + (tidal.Status.SUCCESS,)
    assert sol.status is tidal.Status.EVENT
    expected = -torch.log(c[:3])
    assert torch.allclose(sol.event_t[:3], expected, atol=1e-7)
    assert math.isnan(float(sol.event_t[3]))
    assert torch.allclose(sol.event_y[:3, 0], c[:3], rtol=1e-7)
    exact = torch.exp(-ts)
    for b in range(4):
        reached = (ts[:, b].abs() <= float(sol.event_t[b].abs())) if b < 3 else ts[:, b] == ts[
            :, b]
        assert torch.allclose(sol.ys[reached, b, 0], exact[reached, b], rtol=1e-6)
        assert torch.isnan(sol.ys[~reached, b]).all()


def test_per_sample_dense_output() -> None:
    ts = grids([0.0, 1.0, -1.0], [2.0, -1.0, 0.5], 4)
    k = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k, dense=True,
                      controller=tidal.PIDController(1e-9, 1e-11))
    query = torch.tensor([[0.3, 0.9, -0.2], [1.99, -0.99, 0.49], [0.0, 1.0, -1.0]], dtype=F64)
    values = sol.evaluate(query)
    assert values.shape == (3, 3, 2)
    exact = y0.unsqueeze(0) * torch.exp(
        k * (torch.sin(query) - torch.sin(ts[0]))).unsqueeze(-1)
    assert torch.allclose(values, exact, rtol=1e-7)
    single = sol.evaluate(query[0])
    assert single.shape == (3, 2)
    assert torch.allclose(single, exact[0], rtol=1e-7)


def test_per_sample_dense_output_takes_one_time_per_sample_or_one_for_all() -> None:
    """y' = -y on per-sample grids: a single time serves every sample (it raised a reshape
    RuntimeError), and t of another length is refused (t of shape [2B] was read as [2, B]
    and only its first row answered, silently)."""
    ts = grids([0.0, 0.0], [1.0, 2.0], 5)
    sol = tidal.solve(lambda t, y: -y, torch.ones(2, 3, dtype=F64), ts, dense=True,
                      controller=tidal.PIDController(1e-10, 1e-12))
    torch.testing.assert_close(sol.evaluate(0.5), torch.full((2, 3), math.exp(-0.5), dtype=F64),
                               rtol=1e-8, atol=0)
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`Solution\.evaluate\(t\)` on per-sample grids.*B = 2.*\(4,\)"):
        sol.evaluate(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))


def test_per_sample_norm_returns_one_value_per_sample() -> None:
    shapes = []

    def max_norm(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return x.abs().amax(dim=(1, 2))

    ts = grids([0.0, 1.0], [2.0, -1.0], 3)
    k = torch.tensor([1.0, 2.0], dtype=F64)
    y0 = torch.ones(2, 2, 2, dtype=F64)
    sol = tidal.solve(modulated, y0, ts, args=k,
                      controller=tidal.PIDController(1e-7, 1e-9, norm=max_norm))
    assert set(shapes) == {(2, 2, 2)}
    assert torch.allclose(sol.ys, modulated_exact(ts, y0, k), rtol=1e-5)
    # Each sample alone gives the same result with the same norm.
    for b in range(2):
        lone = tidal.solve(modulated, y0[b:b + 1], ts[:, b:b + 1], args=k[b:b + 1],
                           controller=tidal.PIDController(1e-7, 1e-9, norm=max_norm))
        assert torch.allclose(lone.ys[:, 0], sol.ys[:, b], rtol=1e-12, atol=0)


def test_per_sample_norm_receives_the_scaled_error() -> None:
    """The norm sees err / (atol + rtol * max(|y0|, |y1|)) with err = h * sum_i e_i k_i; for
    y' = lam_b y the first dopri5 step of size h is computed here by hand."""
    seen = []

    def norm(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x.abs().amax(-1)

    lam = torch.tensor([-2.0, 3.0], dtype=F64)
    h, rtol, atol = 0.1, 1e-3, 1e-6
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    tidal.solve(lambda t, y: lam.unsqueeze(-1) * y, y0, grids([0.0, 0.0], [1.0, -1.0], 2),
                controller=tidal.PIDController(rtol, atol, dt0=h, norm=norm))
    tab = tidal.Dopri5.tableau
    for b, direction in enumerate((1.0, -1.0)):
        step = direction * h
        ks: list[float] = []
        y = float(y0[b, 0])
        for i in range(tab.num_stages):
            ks.append(float(lam[b]) * (y + step * sum(tab.a[i][j] * ks[j] for j in range(i))))
        y1 = y + step * sum(bi * k for bi, k in zip(tab.b, ks))
        err = step * sum(e * k for e, k in zip(tab.b_error[0], ks))
        expected = abs(err) / (atol + rtol * max(abs(y), abs(y1)))
        assert float(seen[0][b, 0].abs()) == pytest.approx(expected, rel=1e-10)


def test_shared_and_per_sample_agree_with_a_non_homogeneous_norm() -> None:
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    controller = tidal.PIDController(1e-6, 1e-8, dt0=0.1, norm=lambda x: (x**2).mean(-1))
    shared = tidal.solve(lambda t, y: -y, torch.ones(1, dtype=F64), ts, controller=controller)
    per_sample = tidal.solve(lambda t, y: -y, torch.ones(1, 1, dtype=F64), ts.unsqueeze(-1),
                             controller=controller)
    assert int(per_sample.stats.num_steps[0]) == shared.stats.num_steps
    assert torch.allclose(per_sample.ys[:, 0], shared.ys, rtol=1e-12)


def test_single_output_time_returns_y0() -> None:
    y0 = torch.randn(3, 2, dtype=F64)
    sol = tidal.solve(lambda t, y: -y, y0, torch.tensor([[0.0, 1.0, -2.0]], dtype=F64))
    assert sol.ys.shape == (1, 3, 2)
    assert torch.equal(sol.ys[0], y0)
    assert sol.sample_status == (tidal.Status.SUCCESS,) * 3


def test_single_output_time_calls_f_at_the_start_times() -> None:
    f = Recorder(lambda t, y: -y)
    tidal.solve(f, torch.ones(2, 1, dtype=F64), torch.tensor([[5.0, 6.0]], dtype=F64))
    assert torch.equal(f.times[0], torch.tensor([5.0, 6.0], dtype=F64))


# ---------------------------------------------------------------------------------------------
# The loop's bookkeeping (host flags, steps counted per run of iterations) against lone solves


def _blows_up_after_one(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y' = k y until t = 1, NaN after: a sample whose span passes t = 1 fails."""
    return torch.where((t > 1.0).reshape(-1, 1), math.nan, k.reshape(-1, 1) * y)


CASES = {
    "plain": (modulated, {}),
    "not fsal, extra dense stages": (modulated, {"solver": tidal.Dopri8()}),
    "pi, step_ts, jump_ts": (modulated, {"controller": tidal.PIDController(
        1e-6, 1e-8, pcoeff=0.2, icoeff=0.4, step_ts=[0.35, 2.5], jump_ts=[0.5, 1.2])}),
    "event": (modulated, {"event": lambda t, y: y[..., 0].abs() - 0.9}),
    "non-finite": (_blows_up_after_one, {"throw": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_sample_steps_as_its_lone_solve(case: str) -> None:
    """Each sample's outputs, statistics, status and event equal those of solving it alone
    (batch 1): its step sequence does not depend on the rest of the batch, whatever the loop
    decides on the host for the batch. (In float64: in float32 the round-off of the error
    estimate's matrix product, which BLAS sums in an order that depends on the batch size, can
    flip a decision on a step whose error ratio is within round-off of 1.)"""
    f, options = CASES[case]
    dtype = F64
    ts = grids([0.0, 2.0, -1.0, 0.3, 0.0], [3.0, -2.0, 4.0, 0.4, 0.8], 5).to(dtype)
    k = torch.tensor([1.0, -2.0, 0.5, 4.0, 3.0], dtype=dtype)
    y0 = torch.randn(5, 2, dtype=dtype, generator=torch.Generator().manual_seed(3)) + 2.0
    batch = tidal.solve(f, y0, ts, args=k, **options)
    names = ("num_fevals", "num_steps", "num_accepted", "num_rejected")
    for b in range(5):
        lone = tidal.solve(f, y0[b:b + 1], ts[:, b:b + 1], args=k[b:b + 1], **options)
        for name in names:
            assert int(getattr(batch.stats, name)[b]) == int(getattr(lone.stats, name)[0]), name
        assert batch.sample_status[b] == lone.sample_status[0]
        assert torch.equal(batch.ys[:, b].isnan(), lone.ys[:, 0].isnan())  # same outputs reached
        scale = float(lone.ys.nan_to_num().abs().max())
        difference = (batch.ys[:, b] - lone.ys[:, 0]).nan_to_num().abs().max()
        assert float(difference) <= 1e-12 * scale  # round-off (interpolants cancel)
        if case == "event":
            assert torch.equal(batch.event_t[b:b + 1].isnan(), lone.event_t.isnan())
            assert torch.allclose(batch.event_t[b:b + 1], lone.event_t, equal_nan=True,
                                  rtol=1e-12)
    if case == "non-finite":  # the samples whose span passes t = 1 failed, the others did not
        assert [s == tidal.Status.NONFINITE for s in batch.sample_status] == [
            True, True, True, False, False]
    if case == "event":
        assert tidal.Status.EVENT in batch.sample_status
