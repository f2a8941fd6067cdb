"""Dense output (`solve(..., dense=True)`, `Solution.evaluate`) and terminal events, checked
against analytic solutions.

Dense output: accuracy on a fine grid between steps, continuity across step boundaries,
agreement with `Solution.ys`, the span check, and per-sample grids.

Events: a body falling from height h0 under gravity lands at t* = sqrt(2 h0 / g). Its
trajectory is quadratic, which every Runge–Kutta method of order >= 2 (and every interpolant
here, cubic Hermite included) reproduces up to round-off, so the event time is limited only by
the event tolerance. Also: reverse time, vector-valued events, directions, per-sample events,
and the first zero of cos t.
"""

from __future__ import annotations

import math

import pytest
import torch

import tidal
from solver_db import ADAPTIVE_DB, GENERAL_DB, SolverInfo
from tidal.solvers.implicit_solver import ImplicitRungeKutta

F64 = torch.float64
OMEGA = 1.5
T_END = 3.0


def oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[..., 1], -OMEGA**2 * y[..., 0]], -1)


def oscillator_exact(t: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=F64)
    return torch.stack([torch.cos(OMEGA * t), -OMEGA * torch.sin(OMEGA * t)], -1)


Y0 = oscillator_exact(torch.tensor(0.0))
MAX_DERIVATIVE = OMEGA**2  # max |f| along the exact solution (|x''| = OMEGA^2 |x|)

# Adaptive solvers: rtol, and the allowed error as a multiple of it (Fehlberg2's error estimate
# belongs to its first-order solution and undershoots by a few hundred; see test_accuracy.py).
RTOL = 1e-6
ERROR_PER_RTOL = {"fehlberg2": 2000.0, "rosenbrock23": 100.0}  # see test_accuracy.py
#: Newton methods of order <= 2 take 10x the explicit methods' step here (their bound scales
#: with it): a Jacobian and an LU per step make the fine steps cost minutes of the suite, and
#: their fine-step accuracy is covered by tests/test_implicit_solve.py and test_implicit.py.
NEWTON_COARSENING = 10.0


def _fixed_dt(info: SolverInfo) -> float:
    newton = issubclass(info.cls, ImplicitRungeKutta) and info.order <= 2
    return FIXED_DT[info.order] * (NEWTON_COARSENING if newton else 1.0)


FIXED_DT = {1: 1e-3, 2: 2e-3, 3: 1e-2, 4: 2e-2, 5: 5e-2, 6: 1e-1}


def _controller_and_bound(info: SolverInfo) -> tuple[object, float]:
    if info.adaptive:
        return (tidal.PIDController(rtol=RTOL, atol=RTOL * 1e-2),
                ERROR_PER_RTOL.get(info.id, 20.0) * RTOL)
    dt = _fixed_dt(info)
    return tidal.ConstantStepSize(dt), 20.0 * dt**info.order


def _max_error(values: torch.Tensor, times: torch.Tensor) -> float:
    return float((values - oscillator_exact(times)).abs().max())


# ---------------------------------------------------------------------------------------------
# Dense output on a shared grid.


@pytest.mark.parametrize("info", GENERAL_DB, ids=lambda i: i.id)
def test_dense_matches_analytic_on_fine_grid(info: SolverInfo) -> None:
    controller, bound = _controller_and_bound(info)
    ts = torch.linspace(0.0, T_END, 4, dtype=F64)
    sol = tidal.solve(oscillator, Y0, ts, solver=info.cls(), controller=controller, dense=True,
                      max_steps=100_000)
    grid = torch.linspace(0.0, T_END, 1201, dtype=F64)[1:-1] + 1e-4  # between the steps
    values = sol.evaluate(grid)
    assert values.shape == (len(grid), 2)
    assert values.dtype == F64
    error = _max_error(values, grid)
    assert error < bound, (error, bound)
    # Interpolation adds little to the global error: the error between the steps stays
    # within 3x of the error at the output times, plus, for an interpolant of lower order
    # than the method (the cubic Hermite of gl6 and radauIIA5), its own h^(p+1) error.
    interpolation = 0.0
    if info.dense_order < info.order and not info.adaptive:
        interpolation = FIXED_DT[info.order] ** (info.dense_order + 1)
    assert error < 3 * _max_error(sol.ys, ts) + bound / 20 + interpolation


@pytest.mark.parametrize("info", GENERAL_DB, ids=lambda i: i.id)
def test_dense_continuous_across_constant_steps(info: SolverInfo) -> None:
    """With ConstantStepSize(h) the accepted steps end exactly at k h (h = 1/8 is exact in
    binary): the interpolants either side of each boundary must agree there."""
    h = 0.125
    sol = tidal.solve(oscillator, Y0, torch.tensor([0.0, 2.0], dtype=F64), solver=info.cls(),
                      controller=tidal.ConstantStepSize(h), dense=True)
    assert sol.stats.num_accepted == 16
    boundaries = torch.arange(1, 16, dtype=F64) * h
    eps = 1e-9
    before, at, after = (sol.evaluate(boundaries + d) for d in (-eps, 0.0, eps))
    slack = eps * MAX_DERIVATIVE * 1.5 + 1e-13  # y moves by at most eps * max|f|
    assert float((after - before).abs().max()) < 2 * slack
    assert float((at - before).abs().max()) < slack
    assert float((after - at).abs().max()) < slack
    # ...and a genuine jump of the size allowed would be visible: the test can fail.
    assert 2 * slack < 1e-8


@pytest.mark.parametrize("info", ADAPTIVE_DB, ids=lambda i: i.id)
def test_dense_continuous_across_adaptive_steps(info: SolverInfo) -> None:
    """Adaptive steps are forced to end at `step_ts` (and chosen freely in between): the
    interpolants either side of those boundaries agree. A fine grid over the whole span shows
    no jump anywhere (second differences stay at the size y'' allows)."""
    step_ts = (0.3, 0.7, 1.1, 1.9, 2.45)
    rtol = 1e-6
    sol = tidal.solve(oscillator, Y0, torch.tensor([0.0, T_END], dtype=F64), solver=info.cls(),
                      controller=tidal.PIDController(rtol=rtol, atol=1e-8, step_ts=step_ts),
                      dense=True)
    boundaries = torch.tensor(step_ts, dtype=F64)
    eps = 1e-9
    before, after = sol.evaluate(boundaries - eps), sol.evaluate(boundaries + eps)
    assert float((after - before).abs().max()) < 3 * eps * MAX_DERIVATIVE + 1e-13
    bound = ERROR_PER_RTOL.get(info.id, 20.0) * rtol
    assert float((before - oscillator_exact(boundaries)).abs().max()) < bound
    delta = 1e-3
    grid = torch.arange(0.0, T_END, delta, dtype=F64)
    second = sol.evaluate(grid).diff(n=2, dim=0).abs().max()
    # |y''| <= OMEGA^3 for the velocity; 1.05 covers the interpolation error of y''.
    assert float(second) < 1.05 * delta**2 * OMEGA**3


def test_evaluate_at_ts_reproduces_ys() -> None:
    """Output times that fall inside steps and at the end: evaluate(ts) == ys (the same
    interpolant), and both match the analytic solution."""
    rtol = 1e-9
    ts = torch.linspace(0.0, T_END, 17, dtype=F64)
    sol = tidal.solve(oscillator, Y0, ts, solver=tidal.Dopri5(),
                      controller=tidal.PIDController(rtol=rtol, atol=1e-11), dense=True)
    values = sol.evaluate(ts)
    assert values.shape == sol.ys.shape
    torch.testing.assert_close(values, sol.ys, rtol=0, atol=1e-13)
    assert _max_error(values, ts) < 20 * rtol
    assert _max_error(sol.ys, ts) < 20 * rtol


def test_evaluate_shapes() -> None:
    ts = torch.linspace(0.0, T_END, 5, dtype=F64)
    sol = tidal.solve(oscillator, Y0, ts, controller=tidal.PIDController(rtol=1e-9, atol=1e-11),
                      dense=True)
    assert sol.evaluate(1.0).shape == (2,)
    assert sol.evaluate(torch.tensor(1.0, dtype=F64)).shape == (2,)
    times = torch.tensor([[0.1, 0.2, 0.3], [1.5, 2.5, 2.9]], dtype=F64)
    values = sol.evaluate(times)
    assert values.shape == (2, 3, 2)
    assert float((values - oscillator_exact(times)).abs().max()) < 2e-8
    assert float((sol.evaluate(1.0) - oscillator_exact(torch.tensor(1.0))).abs().max()) < 2e-8


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_evaluate_outside_span_raises(reverse: bool) -> None:
    ts = torch.linspace(0.0, 2.0, 5, dtype=F64)
    if reverse:
        ts = -ts  # from 0 back to -2
    sol = tidal.solve(oscillator, Y0, ts, dense=True)
    sign = -1.0 if reverse else 1.0
    inside = sol.evaluate(torch.tensor([0.0, sign * 1.0, sign * 2.0], dtype=F64))
    # y(-t) = [cos t, +OMEGA sin t]: the solution is even in position, odd in velocity.
    expected = oscillator_exact(torch.tensor([0.0, sign * 1.0, sign * 2.0], dtype=F64))
    assert float((inside - expected).abs().max()) < 1e-5
    for t in (sign * 2.01, -sign * 0.01, sign * 100.0):
        with pytest.raises(tidal.InvalidArgumentError):
            sol.evaluate(t)
    with pytest.raises(tidal.InvalidArgumentError):  # one bad time in a batch is enough
        sol.evaluate(torch.tensor([sign * 0.5, sign * 2.5], dtype=F64))


def test_evaluate_needs_dense() -> None:
    sol = tidal.solve(oscillator, Y0, torch.linspace(0.0, 1.0, 3, dtype=F64))
    with pytest.raises(tidal.InvalidArgumentError):
        sol.evaluate(0.5)


# ---------------------------------------------------------------------------------------------
# Dense output on per-sample grids: y' = cos(t) y, y = y0 exp(sin t) (non-autonomous, so the
# per-sample times handed to f matter).

PS_Y0 = torch.tensor([[1.0, -0.5], [2.0, 0.25], [0.5, 1.0]], dtype=F64)
PS_T_END = torch.tensor([1.0, 2.5, -2.0], dtype=F64)  # the last sample runs backwards


def _cos_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    assert t.shape == (y.shape[0],)
    return torch.cos(t)[:, None] * y


def _cos_exact(t: torch.Tensor) -> torch.Tensor:
    """t [..., B] -> [..., B, 2]."""
    return PS_Y0 * torch.exp(torch.sin(t))[..., None]


def _per_sample_solution(info: SolverInfo) -> tidal.Solution:
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)[:, None] * PS_T_END  # [T, B]
    return tidal.solve(_cos_field, PS_Y0, ts, solver=info.cls(),
                       controller=tidal.PIDController(rtol=1e-8, atol=1e-10), dense=True)


@pytest.mark.parametrize("info", [i for i in ADAPTIVE_DB if i.order >= 3], ids=lambda i: i.id)
def test_per_sample_dense(info: SolverInfo) -> None:
    sol = _per_sample_solution(info)
    assert sol.sample_status == (tidal.Status.SUCCESS,) * 3
    bound = 20 * 1e-8 * 3  # 20 rtol times the solution's size (|y| <= 2 e)
    # t [B]: one time per sample, each inside its own span.
    t = torch.tensor([0.37, 2.2, -1.3], dtype=F64)
    values = sol.evaluate(t)
    assert values.shape == (3, 2)
    assert float((values - _cos_exact(t)).abs().max()) < bound
    # t [M, B]: a fine grid per sample, strictly inside each span.
    fractions = torch.linspace(0.0, 1.0, 101, dtype=F64)[:, None]
    grid = fractions * PS_T_END  # [M, B]
    values = sol.evaluate(grid)
    assert values.shape == (101, 3, 2)
    assert float((values - _cos_exact(grid)).abs().max()) < bound
    # The ends of each span and the outputs.
    torch.testing.assert_close(sol.evaluate(sol.ts), sol.ys, rtol=0, atol=1e-12)
    assert float((sol.ys - _cos_exact(sol.ts)).abs().max()) < bound


def test_per_sample_dense_outside_span_raises() -> None:
    sol = _per_sample_solution(next(i for i in GENERAL_DB if i.id == "dopri5"))
    with pytest.raises(tidal.InvalidArgumentError):
        sol.evaluate(torch.tensor([1.5, 1.0, -1.0], dtype=F64))  # sample 0 ends at 1.0
    with pytest.raises(tidal.InvalidArgumentError):
        sol.evaluate(torch.tensor([0.5, 1.0, -2.5], dtype=F64))  # sample 2 ends at -2.0
    with pytest.raises(tidal.InvalidArgumentError):
        sol.evaluate(torch.tensor([0.5, 1.0, 0.5], dtype=F64))  # sample 2 starts at 0


# ---------------------------------------------------------------------------------------------
# Events: a falling body, state [height, velocity].

G = 9.81
H0 = 10.0
EVENT_TOL = 1e-10


def falling(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[..., 1], torch.full_like(y[..., 1], -G)], -1)


def ballistic(t, h0: float, v0: float = 0.0) -> torch.Tensor:
    """Exact [height, velocity] at times t (any shape)."""
    t = torch.as_tensor(t, dtype=F64)
    return torch.stack([h0 + v0 * t - 0.5 * G * t**2, v0 - G * t], -1)


def landing_time(h0: float, v0: float = 0.0) -> float:
    """The positive root of h0 + v0 t - g t^2 / 2."""
    return (v0 + math.sqrt(v0**2 + 2 * G * h0)) / G


def height(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[..., 0]


EVENT_SOLVERS = [info for info in GENERAL_DB
                 if info.id in ("midpoint", "heun3", "rk4", "bosh3", "dopri5", "tsit5",
                                "dopri8")]


def _event_controller(info: SolverInfo):
    if info.adaptive:
        return tidal.PIDController(rtol=1e-8, atol=1e-10)
    return tidal.ConstantStepSize(0.05)


@pytest.mark.parametrize("info", EVENT_SOLVERS, ids=lambda i: i.id)
def test_falling_body_event(info: SolverInfo) -> None:
    ts = torch.linspace(0.0, 3.0, 31, dtype=F64)
    t_star = landing_time(H0)
    sol = tidal.solve(falling, torch.tensor([H0, 0.0], dtype=F64), ts, solver=info.cls(),
                      controller=_event_controller(info),
                      event=tidal.Event(height, tol=EVENT_TOL))
    assert sol.status == tidal.Status.EVENT
    assert sol.event_t.shape == ()
    assert abs(float(sol.event_t) - t_star) <= 1e-9
    velocity = -G * t_star
    # The reported time is at most tol past the crossing: height ~ velocity * (t - t*).
    assert abs(float(sol.event_y[0])) <= 1e-9 * abs(velocity)
    assert abs(float(sol.event_y[1]) - velocity) <= 1e-8
    reached = ts <= t_star
    assert int(reached.sum()) == 15  # t = 0, 0.1, ..., 1.4
    assert bool(sol.ys[~reached].isnan().all())
    torch.testing.assert_close(sol.ys[reached], ballistic(ts[reached], H0), rtol=0, atol=1e-10)


def test_event_with_bare_function_and_default_tol() -> None:
    t_star = landing_time(H0)
    sol = tidal.solve(falling, torch.tensor([H0, 0.0], dtype=F64),
                      torch.linspace(0.0, 3.0, 7, dtype=F64), event=height)
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - t_star) <= 1e-10  # default tol 1e-12 * max(1, |t|)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("per_sample", [False, True])
def test_an_integer_event_function_stops_where_it_changes(dtype: torch.dtype,
                                                           per_sample: bool) -> None:
    """An indicator g = (y > 1/2) as integers falls from 1 to 0 at t = ln 2 for y' = -y, y0 = 1
    (int64 gave "value cannot be converted to type int64_t without overflow")."""
    ts = torch.linspace(0.0, 1.0, 5, dtype=F64)
    ts = ts.unsqueeze(-1).expand(5, 3) if per_sample else ts
    sol = tidal.solve(lambda t, y: -y, torch.ones(3, 2, dtype=F64), ts,
                      event=lambda t, y: (y[..., 0] > 0.5).to(dtype))
    assert sol.status == tidal.Status.EVENT
    torch.testing.assert_close(sol.event_t, torch.full_like(sol.event_t, math.log(2.0)),
                               rtol=0, atol=1e-6)


def test_event_reverse_time() -> None:
    """Released at rest from H0 at t = 0, the body was at the ground at t = -t* (the motion
    is symmetric in time); integrating backwards finds it there, rising at speed g t*."""
    ts = -torch.linspace(0.0, 3.0, 31, dtype=F64)
    t_star = landing_time(H0)
    sol = tidal.solve(falling, torch.tensor([H0, 0.0], dtype=F64), ts,
                      controller=tidal.PIDController(rtol=1e-8, atol=1e-10),
                      event=tidal.Event(height, tol=EVENT_TOL))
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) + t_star) <= 1e-9
    assert abs(float(sol.event_y[0])) <= 1e-9 * G * t_star
    assert abs(float(sol.event_y[1]) - G * t_star) <= 1e-8
    reached = ts >= -t_star
    assert bool(sol.ys[~reached].isnan().all())
    torch.testing.assert_close(sol.ys[reached], ballistic(ts[reached], H0), rtol=0, atol=1e-10)


@pytest.mark.parametrize("swap", [False, True], ids=["ground-last", "ground-first"])
def test_vector_event_stops_at_first_crossing(swap: bool) -> None:
    """g = [height, height - 5]: the second component crosses first (at 5 m), whatever its
    position in the vector."""
    def g(t, y):
        parts = [y[..., 0], y[..., 0] - 5.0]
        return torch.stack(parts[::-1] if swap else parts, -1)

    sol = tidal.solve(falling, torch.tensor([H0, 0.0], dtype=F64),
                      torch.linspace(0.0, 3.0, 31, dtype=F64),
                      controller=tidal.PIDController(rtol=1e-8, atol=1e-10),
                      event=tidal.Event(g, tol=EVENT_TOL))
    t_five = math.sqrt(2 * (H0 - 5.0) / G)
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - t_five) <= 1e-9
    assert abs(float(sol.event_y[0]) - 5.0) <= 1e-8


# A ball thrown up from the ground at 15 m/s passes 5 m going up, then coming down.
V_UP = 15.0
_disc = math.sqrt(V_UP**2 - 2 * G * 5.0)
T_UP, T_DOWN = (V_UP - _disc) / G, (V_UP + _disc) / G


def _above_five(t, y):
    return y[..., 0] - 5.0


def _thrown(direction: int) -> tidal.Solution:
    return tidal.solve(falling, torch.tensor([0.0, V_UP], dtype=F64),
                       torch.linspace(0.0, 3.0, 31, dtype=F64),
                       controller=tidal.PIDController(rtol=1e-8, atol=1e-10),
                       event=tidal.Event(_above_five, direction=direction, tol=EVENT_TOL))


@pytest.mark.parametrize("direction", [0, 1])
def test_event_direction_finds_upward_crossing(direction: int) -> None:
    sol = _thrown(direction)
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - T_UP) <= 1e-9


def test_event_direction_up_ignores_downward_crossing() -> None:
    """Falling from H0 through the ground: a downward crossing, which direction=+1 ignores
    (the solve runs to the end, below ground); direction=-1 and 0 stop there."""
    ts = torch.linspace(0.0, 3.0, 31, dtype=F64)
    kwargs = dict(controller=tidal.PIDController(rtol=1e-8, atol=1e-10))
    y0 = torch.tensor([H0, 0.0], dtype=F64)
    up = tidal.solve(falling, y0, ts, event=tidal.Event(height, direction=1), **kwargs)
    assert up.status == tidal.Status.SUCCESS
    assert math.isnan(float(up.event_t))
    assert bool(up.event_y.isnan().all())
    torch.testing.assert_close(up.ys, ballistic(ts, H0), rtol=0, atol=1e-9)
    t_star = landing_time(H0)
    for direction in (-1, 0):
        down = tidal.solve(falling, y0, ts, event=tidal.Event(height, direction=direction),
                           **kwargs)
        assert down.status == tidal.Status.EVENT
        assert abs(float(down.event_t) - t_star) <= 1e-9


def test_event_direction_down_after_going_up() -> None:
    """g = height - 5 starts at -5, goes up through 0 at T_UP (ignored: wrong direction) and
    down through 0 at T_DOWN, which direction=-1 asks for."""
    sol = _thrown(-1)
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - T_DOWN) <= 1e-9


# ---------------------------------------------------------------------------------------------
# Per-sample events.


def test_per_sample_events() -> None:
    """Four bodies with their own grids: three dropped from different heights land at their
    own times; the fourth, thrown up at 30 m/s, is still in the air at the end (t = 4) and
    finishes with SUCCESS and no event."""
    heights = [10.0, 2.0, 30.0, 1.0]
    speeds = [0.0, 0.0, 0.0, 30.0]
    t_end = torch.tensor([3.0, 1.0, 4.0, 4.0], dtype=F64)
    ts = torch.linspace(0.0, 1.0, 41, dtype=F64)[:, None] * t_end  # [41, 4]
    y0 = torch.tensor(list(zip(heights, speeds)), dtype=F64)
    sol = tidal.solve(falling, y0, ts, controller=tidal.PIDController(rtol=1e-8, atol=1e-10),
                      event=tidal.Event(height, tol=EVENT_TOL))
    landings = [landing_time(h, v) for h, v in zip(heights, speeds)]
    assert landings[3] > 4.0
    assert sol.sample_status == (tidal.Status.EVENT,) * 3 + (tidal.Status.SUCCESS,)
    assert sol.status == tidal.Status.EVENT
    assert sol.event_t.shape == (4,)
    for b in range(3):
        assert abs(float(sol.event_t[b]) - landings[b]) <= 1e-9, b
        assert abs(float(sol.event_y[b, 0])) <= 1e-9 * G * landings[b]
        assert abs(float(sol.event_y[b, 1]) + G * landings[b]) <= 1e-8
        reached = ts[:, b] <= landings[b]
        assert bool(sol.ys[~reached, b].isnan().all()), b
        torch.testing.assert_close(sol.ys[reached, b], ballistic(ts[reached, b], heights[b]),
                                   rtol=0, atol=1e-9)
    assert math.isnan(float(sol.event_t[3]))
    assert bool(sol.event_y[3].isnan().all())
    torch.testing.assert_close(sol.ys[:, 3], ballistic(ts[:, 3], heights[3], speeds[3]),
                               rtol=0, atol=1e-9)
    # Sample 1 lands at 0.64 s, before its own grid ends (t = 1); sample 2 at 2.47 s.
    assert int((~sol.ys[:, 1, 0].isnan()).sum()) == int((ts[:, 1] <= landings[1]).sum())


def test_per_sample_events_match_single_solves() -> None:
    """Each sample's event equals the event of a shared-grid solve of that sample alone."""
    heights = [10.0, 3.0]
    ts = torch.linspace(0.0, 3.0, 16, dtype=F64)
    y0 = torch.tensor([[h, 0.0] for h in heights], dtype=F64)
    controller = tidal.PIDController(rtol=1e-8, atol=1e-10)
    event = tidal.Event(height, tol=EVENT_TOL)
    batched = tidal.solve(falling, y0, ts[:, None].expand(-1, 2), controller=controller,
                          event=event)
    for b, h in enumerate(heights):
        single = tidal.solve(falling, y0[b], ts, controller=controller, event=event)
        assert abs(float(batched.event_t[b]) - float(single.event_t)) <= 2e-10
        assert abs(float(single.event_t) - landing_time(h)) <= 1e-9


# ---------------------------------------------------------------------------------------------
# Harmonic oscillator: x = cos t first reaches 0 at pi / 2.


def test_oscillator_first_zero() -> None:
    def f(t, y):
        return torch.stack([y[1], -y[0]])

    sol = tidal.solve(f, torch.tensor([1.0, 0.0], dtype=F64),
                      torch.linspace(0.0, 10.0, 11, dtype=F64), solver=tidal.Dopri5(),
                      controller=tidal.PIDController(rtol=1e-10, atol=1e-12),
                      event=lambda t, y: y[0])
    assert sol.status == tidal.Status.EVENT
    assert abs(float(sol.event_t) - math.pi / 2) < 1e-8
    assert abs(float(sol.event_y[1]) + 1.0) < 1e-8
    assert bool(sol.ys[2:].isnan().all())  # t = 2, 3, ... come after pi / 2
    torch.testing.assert_close(sol.ys[1], torch.tensor([math.cos(1.0), -math.sin(1.0)],
                                                       dtype=F64), rtol=0, atol=1e-9)

