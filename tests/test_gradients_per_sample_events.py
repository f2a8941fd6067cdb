"""Gradients on per-sample time grids (Checkpoint, Backsolve) and through terminal events
(Backprop, Checkpoint), against references that do not come from the code under test.

References:
* `BackpropAdjoint` on the same per-sample solve: autograd through every recorded step, the
  exact gradient of the discrete solve. `CheckpointAdjoint` must equal it to round-off.
* A converged reference (Dopri8, rtol 1e-12) and central finite differences of the forward
  solve, for `BacksolveAdjoint`, whose error must shrink with the tolerance.
* Closed forms: exponential decay reaching a level (t* = ln(y0/c)/k) and a projectile
  reaching the ground (t* = (v0 + sqrt(v0^2 + 2 g h0))/g), with their derivatives by hand.
* `torch.autograd.gradcheck` (finite differences in float64) and torchdiffeq's
  `odeint_event`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torchdiffeq  # a test-time reference, installed by the test extra
from torch.autograd import gradcheck

import tidal

F64 = torch.float64

# ---------------------------------------------------------------------------------------------
# A time-dependent field with two parameters on a batch of four samples, each with its own
# grid: forward and reverse time, spans from 1.2 to 5 time units (so 6 to 20 Dopri5 steps).

TS = ((0.0, 1.0, 0.0, 3.0),
      (0.5, 0.3, 1.0, 2.0),
      (1.0, -0.5, 3.0, 1.0),
      (1.2, -0.6, 5.0, 0.0))
Y0 = ((1.0, 0.5), (-0.4, 0.9), (0.3, 0.2), (0.7, -0.1))
P = (0.8, -0.3)


def field(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return torch.stack([p[0] * y[:, 1] * torch.cos(t) - 0.1 * y[:, 0],
                        p[1] * y[:, 0] - 0.5 * y[:, 1]], -1)


def kicked_field(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Discontinuous in time at t = 0.7 and t = -0.3: the jumps matter to the gradient."""
    kick = 1.0 + (t > 0.7).to(y.dtype) - 0.5 * (t < -0.3).to(y.dtype)
    return field(t, y, p) * kick.unsqueeze(-1)


SETUPS: dict[str, tuple[Callable, Callable, Callable]] = {
    "dopri5": (field, tidal.Dopri5, lambda: tidal.PIDController(1e-6, 1e-8)),
    "tsit5": (field, tidal.Tsit5, lambda: tidal.PIDController(1e-6, 1e-8)),
    "dopri8": (field, tidal.Dopri8, lambda: tidal.PIDController(1e-6, 1e-8)),
    "rk4": (field, tidal.RK4, lambda: tidal.ConstantStepSize(0.1)),
    "rk4_on_outputs": (field, tidal.RK4, lambda: tidal.ConstantStepSize(0.25)),
    "dopri5_jumps": (kicked_field, tidal.Dopri5,
                     lambda: tidal.PIDController(1e-6, 1e-8, jump_ts=[0.7, -0.3],
                                                 step_ts=[1.3])),
}

# y[:, 0] reaches 0.35 for samples 2 and 3 only: a batch with and without events
LEVEL_EVENT = tidal.Event(lambda t, y: y[:, 0] - 0.35)


def per_sample_grads(adjoint, setup: str, event=None, dtype=F64):
    f, solver, controller = SETUPS[setup]
    p = torch.tensor(P, dtype=dtype, requires_grad=True)
    y0 = torch.tensor(Y0, dtype=dtype, requires_grad=True)
    ts = torch.tensor(TS, dtype=F64, requires_grad=True)
    sol = tidal.solve(f, y0, ts, args=p, solver=solver(), controller=controller(),
                      adjoint=adjoint, event=event)
    ys = torch.nan_to_num(sol.ys)  # rows after an event are NaN
    loss = (ys ** 2).sum() + ys[-1, 0, 0]  # an uneven cotangent as well
    if event is not None:
        found = torch.isfinite(sol.event_t)
        loss = loss + torch.where(found, sol.event_t, 0.0).pow(2).sum()
        loss = loss + torch.where(found.unsqueeze(-1), sol.event_y, 0.0).sum()
    return sol, torch.autograd.grad(loss, (p, y0, ts))


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


# ---------------------------------------------------------------------------------------------
# CheckpointAdjoint on per-sample grids equals BackpropAdjoint to round-off


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("with_event", [False, True], ids=["no_event", "event"])
def test_per_sample_checkpoint_equals_backprop(setup: str, with_event: bool) -> None:
    """One segment, a few, more than there are steps, and the automatic number; gradients
    for the parameters, y0 and every sample's times (and event time and state)."""
    event = LEVEL_EVENT if with_event else None
    ref_sol, ref = per_sample_grads(tidal.BackpropAdjoint(), setup, event)
    if with_event:
        assert ref_sol.sample_status.count(tidal.Status.EVENT) == 2
    counts = (1, 2, 3, 1000, None) if setup == "dopri5" else (1, 3, None)
    for checkpoints in counts:
        sol, got = per_sample_grads(tidal.CheckpointAdjoint(checkpoints), setup, event)
        assert sol.stats.num_steps.tolist() == ref_sol.stats.num_steps.tolist()
        torch.testing.assert_close(sol.ys, ref_sol.ys, rtol=1e-12, atol=1e-12, equal_nan=True)
        for g, r in zip(got, ref):
            assert relative(g, r) < 1e-12, (checkpoints, g, r)


def _checkpointed_solve_node(ys: torch.Tensor):
    """The autograd node of the per-sample checkpointed solve behind `ys`."""
    stack = [ys.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if "CheckpointedSolve" in node.name():
            return node
        stack.extend(n for n, _ in node.next_functions)
    raise AssertionError("no checkpointed solve in the graph")


@pytest.mark.parametrize("checkpoints", [3, None])
def test_per_sample_checkpoint_memory_is_bounded(checkpoints: int | None) -> None:
    """The backward pass keeps at most `checkpoints` starting states (sqrt(8 x iterations)
    for None), each one state of the batch, however long the solve; the gradient stays that
    of Backprop."""
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 0.0, 0.0], [10.0, 3.0, -20.0]], dtype=F64)
    omega = torch.tensor(3.0, dtype=F64, requires_grad=True)

    def rotate(t, y):
        return torch.stack([omega * y[:, 1], -omega * y[:, 0]], -1)

    results = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(checkpoints)):
        sol = tidal.solve(rotate, y0, ts, adjoint=adjoint,
                          controller=tidal.PIDController(1e-5, 1e-7))
        if isinstance(adjoint, tidal.CheckpointAdjoint):
            saved = _checkpointed_solve_node(sol.ys).saved_tensors
        results.append(torch.autograd.grad((sol.ys[-1] ** 2).sum() + sol.ys[-1, :, 0].sum(),
                                           (y0, omega)))
    iterations = int(sol.stats.num_steps.max())
    assert iterations > 150
    limit = checkpoints if checkpoints is not None else math.isqrt(8 * iterations)
    assert 1 <= len(saved) <= limit
    assert all(s.shape == (3, 2) for s in saved)
    for g, r in zip(*results[::-1]):
        assert relative(g, r) < 1e-11


def test_per_sample_checkpoint_single_and_two_output_times() -> None:
    for ts in ([[0.0, 1.0]], [[0.0, 1.0], [1.0, -2.0]]):
        t = torch.tensor(ts, dtype=F64, requires_grad=True)
        results = []
        for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(3)):
            p = torch.tensor(P, dtype=F64, requires_grad=True)
            y0 = torch.tensor(Y0[:2], dtype=F64, requires_grad=True)
            ys = tidal.solve(field, y0, t, args=p, adjoint=adjoint).ys
            assert ys.shape == (len(ts), 2, 2)
            results.append(torch.autograd.grad((ys ** 2).sum(), (p, y0, t), allow_unused=True))
        for g, r in zip(*results):  # None and zeros alike where nothing depends on p
            g = torch.zeros_like(p) if g is None else g
            r = torch.zeros_like(p) if r is None else r
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def _gradcheck_inputs(ts):
    return (torch.tensor(P, dtype=F64, requires_grad=True),
            torch.tensor(Y0[:2], dtype=F64, requires_grad=True),
            torch.tensor(ts, dtype=F64, requires_grad=True))


# forward and reverse samples, spans of different lengths, in one batch
GRADCHECK_TS = ((0.0, 0.6), (0.3, 0.3), (0.7, -0.1))


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_per_sample_gradcheck(adjoint: str) -> None:
    """Parameters, y0 and every sample's times at once; Backsolve to its tolerance."""

    def fn(p, y0, ts):
        chosen = (tidal.CheckpointAdjoint(2) if adjoint == "checkpoint"
                  else tidal.BacksolveAdjoint(params=[p]))
        return tidal.solve(field, y0, ts, args=p, adjoint=chosen,
                           controller=tidal.PIDController(1e-10, 1e-12)).ys

    tolerances = {"atol": 1e-6, "rtol": 1e-5} if adjoint == "backsolve" else {}
    assert gradcheck(fn, _gradcheck_inputs(GRADCHECK_TS), **tolerances)


def test_per_sample_checkpoint_gradcheck_fixed_steps_exact() -> None:
    """RK4 with a constant step: finite differences see the discrete gradient exactly."""
    ts = torch.tensor(GRADCHECK_TS, dtype=F64)

    def fn(p, y0):
        return tidal.solve(field, y0, ts, args=p, solver=tidal.RK4(),
                           controller=tidal.ConstantStepSize(0.07),
                           adjoint=tidal.CheckpointAdjoint(2)).ys

    p, y0, _ = _gradcheck_inputs(GRADCHECK_TS)
    assert gradcheck(fn, (p, y0))


# ---------------------------------------------------------------------------------------------
# BacksolveAdjoint on per-sample grids


def _backsolve_grads(rtol: float, seminorm: bool = False, dtype=F64):
    p = torch.tensor(P, dtype=dtype, requires_grad=True)
    y0 = torch.tensor(Y0, dtype=dtype, requires_grad=True)
    ts = torch.tensor(TS, dtype=F64, requires_grad=True)
    sol = tidal.solve(field, y0, ts, args=p, controller=tidal.PIDController(rtol, rtol * 1e-2),
                      adjoint=tidal.BacksolveAdjoint(seminorm=seminorm))
    loss = (sol.ys ** 2).sum() + sol.ys[-1, 0, 0]
    return sol, torch.autograd.grad(loss, (p, y0, ts))


def _converged_grads() -> tuple[torch.Tensor, ...]:
    """Backprop through Dopri8 at rtol 1e-12: the gradient of the exact solution to ~1e-11."""
    p = torch.tensor(P, dtype=F64, requires_grad=True)
    y0 = torch.tensor(Y0, dtype=F64, requires_grad=True)
    ts = torch.tensor(TS, dtype=F64, requires_grad=True)
    sol = tidal.solve(field, y0, ts, args=p, solver=tidal.Dopri8(),
                      controller=tidal.PIDController(1e-12, 1e-14))
    return torch.autograd.grad((sol.ys ** 2).sum() + sol.ys[-1, 0, 0], (p, y0, ts))


def _directional_differences(directions: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of the forward solve (Dopri8, rtol 1e-12) along directions in
    (p, y0, ts)."""
    x0 = torch.cat([torch.tensor(P, dtype=F64), torch.tensor(Y0, dtype=F64).reshape(-1),
                    torch.tensor(TS, dtype=F64).reshape(-1)])

    def loss(x: torch.Tensor) -> float:
        p, y0, ts = x[:2], x[2:10].view(4, 2), x[10:].view(4, 4)
        with torch.no_grad():
            ys = tidal.solve(field, y0, ts, args=p, solver=tidal.Dopri8(),
                             controller=tidal.PIDController(1e-12, 1e-14)).ys
        return float((ys ** 2).sum() + ys[-1, 0, 0])

    return torch.tensor([(loss(x0 + h * v) - loss(x0 - h * v)) / (2 * h) for v in directions],
                        dtype=F64)


def test_per_sample_backsolve_converges_to_the_gradient() -> None:
    """The error against a converged reference falls at least 10x per 100x tighter rtol and
    reaches 1e-6 at rtol 1e-10, in every part (parameters, y0, each sample's times); the
    reference itself agrees with finite differences along random directions."""
    reference = _converged_grads()
    flat_reference = torch.cat([g.reshape(-1) for g in reference])
    directions = torch.randn(3, len(flat_reference), dtype=F64)
    assert relative(_directional_differences(directions), directions @ flat_reference) < 1e-7
    errors = []
    for rtol in (1e-6, 1e-8, 1e-10):
        sol, got = _backsolve_grads(rtol)
        assert sol.backward_stats is not None and sol.backward_stats.num_steps > 0
        errors.append(relative(torch.cat([g.reshape(-1) for g in got]), flat_reference))
    assert errors[1] < errors[0] / 10, errors
    assert errors[2] < errors[1] / 10, errors
    assert errors[2] < 1e-6, errors
    for g, r in zip(got, reference):
        assert relative(g, r) < 1e-6


def test_per_sample_backsolve_seminorm_and_float32() -> None:
    reference = _converged_grads()
    _, semi = _backsolve_grads(1e-10, seminorm=True)
    for g, r in zip(semi, reference):
        assert relative(g, r) < 1e-6
    _, low = _backsolve_grads(1e-6, dtype=torch.float32)
    assert low[0].dtype == torch.float32 and low[2].dtype == F64
    for g, r in zip(low, reference):
        assert relative(g.double(), r) < 1e-4


def test_per_sample_backsolve_with_a_module_and_a_closure() -> None:
    """Parameters found by walking f's graph (an nn.Module inside a closure) and a
    multi-dimensional state [B, 2, 2]; against Backprop at the same tight tolerance."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 4)).double()
    f = lambda t, y: net(y.reshape(len(y), 4)).reshape(y.shape)  # noqa: E731
    y0 = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 1.0, 0.0], [0.4, 0.2, 1.5], [1.0, -0.5, 3.0]], dtype=F64)
    results = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.BacksolveAdjoint()):
        sol = tidal.solve(f, y0, ts, adjoint=adjoint,
                          controller=tidal.PIDController(1e-10, 1e-12))
        results.append(torch.autograd.grad((sol.ys ** 2).sum(), (y0, *net.parameters())))
    for g, r in zip(*results[::-1]):
        assert relative(g, r) < 1e-6


# ---------------------------------------------------------------------------------------------
# Event gradients against closed forms


DISCRETE_ADJOINTS = {"backprop": tidal.BackpropAdjoint,
                     "checkpoint": lambda: tidal.CheckpointAdjoint(2)}
TIGHT = tidal.PIDController(1e-10, 1e-12)


def _decay_event(adjoint: str, per_sample: bool, reverse: bool, time_dependent: bool = False):
    """dy/dt = -k y from y0 until y = c e^{-m t} (m = 0 unless time dependent)."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor(3.0 if reverse else 0.3, dtype=F64, requires_grad=True)
    m = torch.tensor(0.2 if time_dependent else 0.0, dtype=F64)
    y0 = torch.tensor([1.5, 1.2] if per_sample else [1.5], dtype=F64, requires_grad=True)
    end = -20.0 if reverse else 20.0
    if per_sample:
        state = y0.unsqueeze(-1)  # [B, 1]
        ts = torch.tensor([[0.0, 0.0], [end, 2 * end]], dtype=F64)
        event = tidal.Event(lambda t, y: y[:, 0] - c * torch.exp(-m * t))
    else:
        state = y0
        ts = torch.tensor([0.0, 0.5 * end, end], dtype=F64)
        event = tidal.Event(lambda t, y: y[0] - c * torch.exp(-m * t))
    sol = tidal.solve(lambda t, y: -k * y, state, ts, event=event, controller=TIGHT,
                      adjoint=DISCRETE_ADJOINTS[adjoint]())
    return sol, (k, c, y0)


@pytest.mark.parametrize("adjoint", list(DISCRETE_ADJOINTS))
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("time_dependent", [False, True], ids=["level", "moving_level"])
def test_decay_event_time_and_state_match_closed_form(adjoint: str, per_sample: bool,
                                                      reverse: bool, time_dependent: bool
                                                      ) -> None:
    """t* = ln(y0/c)/(k - m): dt*/dk = -t*/(k - m), dt*/dc = -1/(c (k - m)),
    dt*/dy0 = 1/(y0 (k - m)); the event state y* = c e^{-m t*} moves only through t*."""
    sol, (k, c, y0) = _decay_event(adjoint, per_sample, reverse, time_dependent)
    kk, cc, mm = 0.7, float(c.detach()), 0.2 if time_dependent else 0.0
    for b in range(len(y0)):
        yb = float(y0[b].detach())
        t_star = math.log(yb / cc) / (kk - mm)
        event_t = sol.event_t[b] if per_sample else sol.event_t
        event_y = sol.event_y[b, 0] if per_sample else sol.event_y[0]
        assert float(event_t.detach()) == pytest.approx(t_star, rel=1e-9)
        dt = torch.autograd.grad(event_t, (k, c, y0), retain_graph=True)
        exact_dt = (-t_star / (kk - mm), -1 / (cc * (kk - mm)), 1 / (yb * (kk - mm)))
        for got, want in zip((dt[0], dt[1], dt[2][b]), exact_dt):
            assert float(got) == pytest.approx(want, rel=1e-6)
        assert float(dt[2].sum() - dt[2][b]) == 0.0  # samples do not mix
        dy = torch.autograd.grad(event_y, (k, c, y0), retain_graph=True)
        level = cc * math.exp(-mm * t_star)
        exact_dy = (-mm * level * exact_dt[0], level / cc - mm * level * exact_dt[1],
                    -mm * level * exact_dt[2])
        for got, want in zip((dy[0], dy[1], dy[2][b]), exact_dy):
            assert float(got) == pytest.approx(want, rel=1e-6, abs=1e-9)


def _projectile(adjoint: str, per_sample: bool):
    """Height h and velocity v under gravity g, until h = 0 on the way down."""
    g = torch.tensor(9.81, dtype=F64, requires_grad=True)
    h0 = torch.tensor([2.0, 0.5] if per_sample else [2.0], dtype=F64, requires_grad=True)
    v0 = torch.tensor([3.0, -1.0] if per_sample else [3.0], dtype=F64, requires_grad=True)
    if per_sample:
        state = torch.stack([h0, v0], -1)
        ts = torch.tensor([[0.0, 0.0], [0.5, 0.1], [math.inf, math.inf]], dtype=F64)
        hit = tidal.Event(lambda t, y: y[:, 0], direction=-1)

        def f(t, y):
            return torch.stack([y[:, 1], -g * torch.ones_like(y[:, 1])], -1)
    else:
        state = torch.cat([h0, v0])
        ts = torch.tensor([0.0, 0.5, math.inf], dtype=F64)
        hit = tidal.Event(lambda t, y: y[0], direction=-1)

        def f(t, y):
            return torch.stack([y[1], -g * torch.ones_like(y[1])])
    sol = tidal.solve(f, state, ts, event=hit, controller=TIGHT,
                      adjoint=DISCRETE_ADJOINTS[adjoint]())
    return sol, (g, h0, v0)


@pytest.mark.parametrize("adjoint", list(DISCRETE_ADJOINTS))
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_projectile_event_matches_closed_form(adjoint: str, per_sample: bool) -> None:
    """t* = (v0 + D)/g with D = sqrt(v0^2 + 2 g h0): dt*/dh0 = 1/D, dt*/dv0 = (1 + v0/D)/g,
    dt*/dg = h0/(g D) - t*/g; the impact velocity v* = -D: dv*/dh0 = -g/D, dv*/dv0 = -v0/D,
    dv*/dg = -h0/D; the impact height stays 0."""
    sol, (g, h0, v0) = _projectile(adjoint, per_sample)
    for b in range(len(h0)):
        gg, hh, vv = 9.81, float(h0[b].detach()), float(v0[b].detach())
        d = math.sqrt(vv ** 2 + 2 * gg * hh)
        t_star = (vv + d) / gg
        event_t = sol.event_t[b] if per_sample else sol.event_t
        event_y = sol.event_y[b] if per_sample else sol.event_y
        assert float(event_t.detach()) == pytest.approx(t_star, rel=1e-10)
        dt = torch.autograd.grad(event_t, (g, h0, v0), retain_graph=True)
        exact = (hh / (gg * d) - t_star / gg, 1 / d, (1 + vv / d) / gg)
        for got, want in zip((dt[0], dt[1][b], dt[2][b]), exact):
            assert float(got) == pytest.approx(want, rel=1e-6)
        dv = torch.autograd.grad(event_y[1], (g, h0, v0), retain_graph=True)
        for got, want in zip((dv[0], dv[1][b], dv[2][b]), (-hh / d, -gg / d, -vv / d)):
            assert float(got) == pytest.approx(want, rel=1e-6)
        dh = torch.autograd.grad(event_y[0], (g, h0, v0), retain_graph=True)
        assert max(abs(float(x.sum())) for x in dh) < 1e-9


def test_projectile_event_gradient_matches_torchdiffeq_odeint_event() -> None:
    """torchdiffeq's `odeint_event` differentiates the event time by its own implicit
    function; so does `tidal.odeint(..., event_fn=...)`."""
    results = []
    for library in ("tidal", "torchdiffeq"):
        g = torch.tensor(9.81, dtype=F64, requires_grad=True)
        y0 = torch.tensor([2.0, 3.0], dtype=F64, requires_grad=True)

        def f(t, y, g=g):
            return torch.stack([y[1], -g * torch.ones_like(y[1])])

        def hit(t, y):
            return y[0]

        t0 = torch.tensor(0.0, dtype=F64)
        if library == "tidal":
            event_t, states = tidal.odeint(f, y0, torch.tensor([0.0, 10.0], dtype=F64),
                                           event_fn=hit, rtol=1e-10, atol=1e-12)
        else:
            event_t, states = torchdiffeq.odeint_event(f, y0, t0, event_fn=hit, rtol=1e-10,
                                                       atol=1e-12)
        results.append(torch.autograd.grad(event_t + states[-1, 1], (g, y0)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("adjoint", list(DISCRETE_ADJOINTS))
def test_event_gradient_through_the_initial_time(adjoint: str) -> None:
    """The decay is autonomous, so moving t0 moves the event time with it: dt*/dt0 = 1, and
    the event state does not move."""
    k = torch.tensor(0.7, dtype=F64)
    ts = torch.tensor([0.4, 3.0, 30.0], dtype=F64, requires_grad=True)
    sol = tidal.solve(lambda t, y: -k * y, torch.tensor([1.5], dtype=F64), ts,
                      event=lambda t, y: y[0] - 0.3, controller=TIGHT,
                      adjoint=DISCRETE_ADJOINTS[adjoint]())
    (dt,) = torch.autograd.grad(sol.event_t, ts, retain_graph=True)
    torch.testing.assert_close(dt, torch.tensor([1.0, 0.0, 0.0], dtype=F64), atol=1e-8,
                               rtol=0)
    (dy,) = torch.autograd.grad(sol.event_y.sum(), ts)
    assert float(dy.abs().max()) < 1e-8


def test_vector_event_differentiates_the_component_that_fired() -> None:
    """g = [y - 0.1, y - c]: the second component fires first (c = 0.3 > 0.1), so t* and its
    gradient are those of the level c."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    c = torch.tensor(0.3, dtype=F64, requires_grad=True)
    sol = tidal.solve(lambda t, y: -k * y, torch.tensor([1.5], dtype=F64),
                      torch.tensor([0.0, 20.0], dtype=F64), controller=TIGHT,
                      event=lambda t, y: torch.stack([y[0] - 0.1, y[0] - c]))
    t_star = math.log(1.5 / 0.3) / 0.7
    dk, dc = torch.autograd.grad(sol.event_t, (k, c))
    assert float(dk) == pytest.approx(-t_star / 0.7, rel=1e-6)
    assert float(dc) == pytest.approx(-1 / (0.3 * 0.7), rel=1e-6)


def test_samples_without_an_event_get_no_event_gradient() -> None:
    """Sample 1 never reaches the level: its event time is NaN, and masking it out leaves
    finite gradients that do not reach its y0."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.5], [0.2]], dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=F64)
    for adjoint in DISCRETE_ADJOINTS.values():
        sol = tidal.solve(lambda t, y: -k * y, y0, ts, event=lambda t, y: y[:, 0] - 0.3,
                          controller=TIGHT, adjoint=adjoint())
        assert sol.sample_status == (tidal.Status.EVENT, tidal.Status.SUCCESS)
        found = torch.isfinite(sol.event_t)
        loss = torch.where(found, sol.event_t, 0.0).sum()
        loss = loss + torch.where(found.unsqueeze(-1), sol.event_y, 0.0).sum()
        dk, dy0 = torch.autograd.grad(loss, (k, y0))
        assert bool(torch.isfinite(dk)) and float(dy0[1, 0]) == 0.0
        assert float(dy0[0, 0]) == pytest.approx(1 / (1.5 * 0.7), rel=1e-6)


@pytest.mark.parametrize("adjoint", list(DISCRETE_ADJOINTS))
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_event_gradcheck(adjoint: str, per_sample: bool) -> None:
    """Finite differences of the located event time and state (Lotka-Volterra prey rising to
    a level that is itself a parameter), in y0 and the parameters."""
    ts = (torch.tensor([[0.0, 0.0], [0.3, 0.2], [10.0, 8.0]], dtype=F64) if per_sample
          else torch.tensor([0.0, 0.3, 10.0], dtype=F64))

    def fn(p, y0, level):
        def f(t, y):
            x, z = y[..., 0], y[..., 1]
            return torch.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z], -1)

        sol = tidal.solve(f, y0, ts, event=lambda t, y: y[..., 0] - level, controller=TIGHT,
                          adjoint=DISCRETE_ADJOINTS[adjoint]())
        return sol.event_t, sol.event_y

    p = torch.tensor([1.5, 1.0, 3.0, 1.0], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 1.0], [1.2, 0.9]] if per_sample else [1.0, 1.0], dtype=F64,
                      requires_grad=True)
    level = torch.tensor(2.0, dtype=F64, requires_grad=True)
    # per-sample: one random projection of the Jacobian (fast mode), a sixth of the solves
    assert gradcheck(fn, (p, y0, level), atol=1e-6, rtol=1e-5, fast_mode=per_sample)


def test_checkpoint_event_equals_backprop_on_a_shared_grid() -> None:
    """With outputs before, at and after the event, and with an event-only end (ts = [t0,
    inf]); forward and reverse time."""
    level = tidal.Event(lambda t, y: y[0] - 0.35)
    for times in ([0.0, 0.5, 1.0, 2.0, 3.0, 9.0], [0.0, math.inf], [0.0, -1.0, -9.0]):
        results = []
        for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(2),
                        tidal.CheckpointAdjoint(1000)):
            p = torch.tensor(P, dtype=F64, requires_grad=True)
            y0 = torch.tensor(Y0[2], dtype=F64, requires_grad=True)
            ts = torch.tensor(times, dtype=F64, requires_grad=True)
            sol = tidal.solve(lambda t, y, p: field(t, y.unsqueeze(0), p)[0], y0, ts, args=p,
                              event=level, adjoint=adjoint)
            assert sol.status is tidal.Status.EVENT
            ys = torch.nan_to_num(sol.ys, posinf=0.0)
            loss = (ys ** 2).sum() + sol.event_t ** 2 + sol.event_y.sum()
            results.append(torch.autograd.grad(loss, (p, y0, ts)))
        for got in results[1:]:
            for g, r in zip(got, results[0]):
                assert relative(g, r) < 1e-12, (times, g, r)


def test_per_sample_outputs_before_an_event_only_end_have_finite_gradients() -> None:
    """ts ends at inf (only the event stops each sample): outputs interpolated inside a step
    of one sample, while another's next output is the infinite end, once gave that sample NaN
    gradients. Projectile outputs: d(sum ys)/dh0 = rows reached, d/dv0 = sum (t_i + 1)."""
    y0 = torch.tensor([[2.0, 3.0], [0.5, -1.0]], dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 0.0], [0.05, 0.01], [0.1, 0.02], [math.inf, math.inf]],
                      dtype=F64)
    sol = tidal.solve(lambda t, y: torch.stack([y[:, 1], -9.81 * torch.ones_like(y[:, 1])], -1),
                      y0, ts, event=tidal.Event(lambda t, y: y[:, 0], direction=-1),
                      controller=tidal.PIDController(1e-3, 1e-5))
    (grad,) = torch.autograd.grad(torch.nan_to_num(sol.ys).sum(), y0)
    expected = torch.tensor([[3.0, 3.15], [3.0, 3.03]], dtype=F64)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_per_sample_checkpoint_with_parameters_made_outside_f() -> None:
    """W = exp(raw) is computed once, outside f, and so is the event level: every segment's
    replay reaches the same exp node, which an earlier segment's backward must not free."""
    results = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(3)):
        raw = torch.tensor([0.1, -0.2], dtype=F64, requires_grad=True)
        raw_level = torch.tensor(-1.0, dtype=F64, requires_grad=True)
        weights, level = raw.exp(), raw_level.exp()
        y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64, requires_grad=True)

        def f(t, y, weights=weights):
            return torch.stack([weights[0] * y[:, 1], -weights[1] * y[:, 0]], -1)

        def ground(t, y, level=level):
            return y[:, 0] + level

        sol = tidal.solve(f, y0, torch.tensor([[0.0, 0.0], [5.0, 8.0]], dtype=F64),
                          event=ground, adjoint=adjoint)
        assert sol.sample_status == (tidal.Status.EVENT,) * 2
        loss = (torch.nan_to_num(sol.ys) ** 2).sum() + sol.event_t.sum() + weights.sum()
        results.append(torch.autograd.grad(loss, (raw, raw_level, y0)))
    for g, r in zip(*results[::-1]):
        assert relative(g, r) < 1e-12
