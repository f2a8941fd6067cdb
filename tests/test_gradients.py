"""Gradients through `tidal.solve`: every adjoint against references that do not come from
tidal's own gradient code.

References:
* forward sensitivity equations integrated by scipy's DOP853 (rtol 1e-12, atol 1e-14): the ODE
  augmented with S_p = dy/dp and S_0 = dy/dy0, dS/dt = J S + df/dp, and the time gradients
  dL/dt_i = dL/dy_i . f(t_i, y_i), dL/dt_0 = -(dL/dy0 - dL/dy(t_0)) . f(t_0, y_0);
* central finite differences of tidal's own forward solve at tight tolerance;
* closed forms (exponential decay), `torch.autograd.gradcheck` (finite differences in float64)
  and torchdiffeq's `odeint_adjoint`.

`BackpropAdjoint` and `CheckpointAdjoint` differentiate the discrete solve exactly (they agree
with each other to round-off); `BacksolveAdjoint` solves the continuous adjoint backwards, so
its error must shrink with the tolerance. The loss is L = sum_i ||y(t_i)||^2 throughout.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchdiffeq  # a test-time reference, installed by the test extra
from scipy.integrate import solve_ivp
from torch.autograd import gradcheck

import tidal
from solver_db import ADJOINT_DB

F64 = torch.float64

# ---------------------------------------------------------------------------------------------
# Problems: a torch vector field built from a parameter tensor p, its numpy twin, and the
# Jacobians df/dy and df/dp for the forward sensitivity equations.


@dataclass(frozen=True)
class Problem:
    name: str
    field: Callable[[torch.Tensor], Callable]  # p -> f(t, y)
    f_np: Callable
    jac_y: Callable
    jac_p: Callable
    p: tuple[float, ...]
    y0: tuple[float, ...]
    ts: tuple[float, ...]

    def __repr__(self) -> str:
        return self.name


def _decay_field(p: torch.Tensor) -> Callable:
    return lambda t, y: -p[0] * y


def _lotka_volterra_field(p: torch.Tensor) -> Callable:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, z = y[0], y[1]
        return torch.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])

    return f


def _pendulum_field(p: torch.Tensor) -> Callable:
    """theta'' = -(g/l) sin(theta) - gamma theta'; p = (g/l, gamma)."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -p[0] * torch.sin(y[0]) - p[1] * y[1]])

    return f


DECAY = Problem(
    "decay", _decay_field,
    f_np=lambda t, y, p: -p[0] * y,
    jac_y=lambda t, y, p: -p[0] * np.eye(len(y)),
    jac_p=lambda t, y, p: -y[:, None],
    p=(0.7,), y0=(1.0, -2.0), ts=(0.0, 0.5, 1.0, 1.5, 2.0))

LOTKA_VOLTERRA = Problem(
    "lotka_volterra", _lotka_volterra_field,
    f_np=lambda t, y, p: np.array([p[0] * y[0] - p[1] * y[0] * y[1],
                                   -p[2] * y[1] + p[3] * y[0] * y[1]]),
    jac_y=lambda t, y, p: np.array([[p[0] - p[1] * y[1], -p[1] * y[0]],
                                    [p[3] * y[1], -p[2] + p[3] * y[0]]]),
    jac_p=lambda t, y, p: np.array([[y[0], -y[0] * y[1], 0.0, 0.0],
                                    [0.0, 0.0, -y[1], y[0] * y[1]]]),
    p=(1.5, 1.0, 3.0, 1.0), y0=(1.0, 1.0), ts=(0.0, 0.6, 1.5, 2.2, 3.0))

PENDULUM = Problem(
    "pendulum", _pendulum_field,
    f_np=lambda t, y, p: np.array([y[1], -p[0] * np.sin(y[0]) - p[1] * y[1]]),
    jac_y=lambda t, y, p: np.array([[0.0, 1.0], [-p[0] * np.cos(y[0]), -p[1]]]),
    jac_p=lambda t, y, p: np.array([[0.0, 0.0], [-np.sin(y[0]), -y[1]]]),
    p=(9.81 / 2.0, 0.3), y0=(1.2, 0.0), ts=(0.0, 1.0, 2.0, 3.0, 4.0))


def _forced_field(p: torch.Tensor) -> Callable:
    """Time dependent: y0' = -k y0 + cos(w t), y1' = -k y1 + y0 sin(w t); p = (k, w)."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-p[0] * y[0] + torch.cos(p[1] * t),
                            -p[0] * y[1] + y[0] * torch.sin(p[1] * t)])

    return f


# reverse time, time dependent, t_0 != 0
FORCED_REVERSE = Problem(
    "forced_reverse", _forced_field,
    f_np=lambda t, y, p: np.array([-p[0] * y[0] + np.cos(p[1] * t),
                                   -p[0] * y[1] + y[0] * np.sin(p[1] * t)]),
    jac_y=lambda t, y, p: np.array([[-p[0], 0.0], [np.sin(p[1] * t), -p[0]]]),
    jac_p=lambda t, y, p: np.array([[-y[0], -t * np.sin(p[1] * t)],
                                    [-y[1], y[0] * t * np.cos(p[1] * t)]]),
    p=(0.5, 2.0), y0=(1.0, 0.5), ts=(3.0, 2.4, 1.7, 1.0, 0.5))

# reverse time: the same pendulum from t = 3 back to t = -1
PENDULUM_REVERSE = Problem(
    "pendulum_reverse", _pendulum_field, PENDULUM.f_np, PENDULUM.jac_y, PENDULUM.jac_p,
    PENDULUM.p, PENDULUM.y0, ts=(3.0, 2.0, 1.0, 0.0, -1.0))

PROBLEMS = [DECAY, LOTKA_VOLTERRA, PENDULUM, PENDULUM_REVERSE, FORCED_REVERSE]


@dataclass(frozen=True)
class Grads:
    """dL/dp, dL/dy0, dL/dts as float64 numpy arrays."""

    p: np.ndarray
    y0: np.ndarray
    ts: np.ndarray | None = None

    def vector(self, with_ts: bool = True) -> np.ndarray:
        parts = [self.p, self.y0] + ([self.ts] if with_ts and self.ts is not None else [])
        return np.concatenate([np.ravel(part) for part in parts])


def relative_error(got: Grads, want: Grads, with_ts: bool = True) -> float:
    a, b = got.vector(with_ts), want.vector(with_ts)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@functools.cache
def sensitivity_reference(problem: Problem) -> Grads:
    """Gradients of L by the forward sensitivity equations, integrated by scipy."""
    p, y0, ts = np.array(problem.p), np.array(problem.y0), np.array(problem.ts)
    n, m = len(y0), len(p)

    def rhs(t: float, z: np.ndarray) -> np.ndarray:
        y, s_p, s_0 = z[:n], z[n:n + n * m].reshape(n, m), z[n + n * m:].reshape(n, n)
        jac = problem.jac_y(t, y, p)
        return np.concatenate([problem.f_np(t, y, p),
                               (jac @ s_p + problem.jac_p(t, y, p)).ravel(),
                               (jac @ s_0).ravel()])

    z0 = np.concatenate([y0, np.zeros(n * m), np.eye(n).ravel()])
    sol = solve_ivp(rhs, (ts[0], ts[-1]), z0, method="DOP853", t_eval=ts, rtol=1e-12,
                    atol=1e-14)
    assert sol.success, sol.message
    z = sol.y.T
    ys = z[:, :n]
    s_p = z[:, n:n + n * m].reshape(-1, n, m)
    s_0 = z[:, n + n * m:].reshape(-1, n, n)
    grad_p = np.einsum("ti,tij->j", 2 * ys, s_p)
    grad_y0 = np.einsum("ti,tij->j", 2 * ys, s_0)
    grad_ts = np.array([2 * ys[i] @ problem.f_np(ts[i], ys[i], p) for i in range(len(ts))])
    # moving t_0 moves every later output by -S_0 f(t_0, y_0); the output y(t_0) = y0 stays
    grad_ts[0] = -(grad_y0 - 2 * y0) @ problem.f_np(ts[0], y0, p)
    return Grads(grad_p, grad_y0, grad_ts)


def _loss(problem: Problem, p: np.ndarray, y0: np.ndarray, ts: np.ndarray) -> float:
    with torch.no_grad():
        sol = tidal.solve(problem.field(torch.tensor(p, dtype=F64)), torch.tensor(y0, dtype=F64),
                          torch.tensor(ts, dtype=F64), solver=tidal.Dopri8(),
                          controller=tidal.PIDController(1e-12, 1e-14))
    return float((sol.ys ** 2).sum())


@functools.cache
def finite_difference_reference(problem: Problem, h: float = 3e-6) -> Grads:
    """Central differences of tidal's own forward solve (Dopri8, rtol 1e-12)."""
    p, y0, ts = np.array(problem.p), np.array(problem.y0), np.array(problem.ts)
    x0 = np.concatenate([p, y0, ts])
    m, n = len(p), len(y0)
    grads = []
    for i in range(len(x0)):
        step = h * max(1.0, abs(x0[i]))
        plus, minus = x0.copy(), x0.copy()
        plus[i] += step
        minus[i] -= step
        split = [(x[:m], x[m:m + n], x[m + n:]) for x in (plus, minus)]
        grads.append((_loss(problem, *split[0]) - _loss(problem, *split[1])) / (2 * step))
    g = np.array(grads)
    return Grads(g[:m], g[m:m + n], g[m + n:])


ADJOINTS = [info.id for info in ADJOINT_DB]


def make_adjoint(name: str, params: list[torch.Tensor], checkpoints: int | None = 3,
                 **backsolve_options):
    if name == "backprop":
        return tidal.BackpropAdjoint()
    if name == "checkpoint":
        return tidal.CheckpointAdjoint(checkpoints=checkpoints)
    return tidal.BacksolveAdjoint(params=params, **backsolve_options)


def tidal_grads(problem: Problem, adjoint: str, rtol: float, atol: float,
                dtype: torch.dtype = F64, solver=None) -> tuple[Grads, tidal.Solution]:
    p = torch.tensor(problem.p, dtype=dtype, requires_grad=True)
    y0 = torch.tensor(problem.y0, dtype=dtype, requires_grad=True)
    ts = torch.tensor(problem.ts, dtype=F64, requires_grad=True)
    sol = tidal.solve(problem.field(p), y0, ts, solver=solver,
                      controller=tidal.PIDController(rtol, atol),
                      adjoint=make_adjoint(adjoint, [p]))
    assert sol.ys.dtype == dtype
    loss = (sol.ys ** 2).sum()
    grads = torch.autograd.grad(loss, (p, y0, ts))
    assert grads[0].dtype == dtype and grads[1].dtype == dtype and grads[2].dtype == F64
    return Grads(*(g.detach().double().numpy() for g in grads)), sol


# ---------------------------------------------------------------------------------------------
# The references themselves


def test_sensitivity_reference_matches_closed_form() -> None:
    """y = y0 exp(-k (t - t0)): L = sum_i ||y0||^2 exp(-2k (t_i - t0))."""
    k, y0, ts = DECAY.p[0], np.array(DECAY.y0), np.array(DECAY.ts)
    decay = np.exp(-2 * k * (ts - ts[0]))
    exact = Grads(p=np.array([np.sum(-2 * (ts - ts[0]) * decay) * (y0 @ y0)]),
                  y0=2 * y0 * decay.sum(),
                  ts=np.concatenate([[np.sum(2 * k * decay[1:]) * (y0 @ y0)],
                                     -2 * k * decay[1:] * (y0 @ y0)]))
    assert relative_error(sensitivity_reference(DECAY), exact) < 1e-11


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_finite_differences_of_the_solve_match_sensitivities(problem: Problem) -> None:
    """Two independent references agree: the gradient is well defined at this accuracy."""
    error = relative_error(finite_difference_reference(problem), sensitivity_reference(problem))
    assert error < 1e-7


# ---------------------------------------------------------------------------------------------
# Exact references: the headline checks


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
@pytest.mark.parametrize("adjoint", ["backprop", "checkpoint"])
def test_discrete_adjoints_match_sensitivities(problem: Problem, adjoint: str) -> None:
    got, _ = tidal_grads(problem, adjoint, rtol=1e-10, atol=1e-12)
    assert relative_error(got, sensitivity_reference(problem)) < 1e-6
    assert relative_error(got, finite_difference_reference(problem)) < 1e-6
    reference = sensitivity_reference(problem)
    for part in ("p", "y0", "ts"):  # every part, not only the largest
        a, b = getattr(got, part), getattr(reference, part)
        assert np.linalg.norm(a - b) < 1e-6 * np.linalg.norm(b), part


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_backsolve_converges_to_sensitivities(problem: Problem) -> None:
    """The continuous adjoint's error falls at least 10x per 100x tighter rtol and reaches
    1e-6 at rtol 1e-10."""
    reference = sensitivity_reference(problem)
    errors = []
    for rtol in (1e-6, 1e-8, 1e-10):
        got, sol = tidal_grads(problem, "backsolve", rtol=rtol, atol=rtol * 1e-2)
        assert sol.backward_stats is not None and sol.backward_stats.num_steps > 0
        errors.append(relative_error(got, reference))
    assert errors[1] < errors[0] / 10, errors
    assert errors[2] < errors[1] / 10, errors
    assert errors[2] < 1e-6, errors
    assert relative_error(got, finite_difference_reference(problem)) < 1e-6


@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_float32_gradients(adjoint: str) -> None:
    """float32 state and parameters: gradients in float32, accurate to float32's reach."""
    for problem in (DECAY, LOTKA_VOLTERRA):
        got, _ = tidal_grads(problem, adjoint, rtol=1e-6, atol=1e-8, dtype=torch.float32)
        assert relative_error(got, sensitivity_reference(problem)) < 1e-4, problem


# ---------------------------------------------------------------------------------------------
# gradcheck in float64: y0, parameters and times

GRADCHECK_TS = (0.0, 0.3, 0.7)
BACKSOLVE_GRADCHECK = {"atol": 1e-6, "rtol": 1e-5}  # what the continuous adjoint reaches


def _forced_lotka_volterra(p: torch.Tensor) -> Callable:
    """Lotka-Volterra with a periodic supply of prey: time dependent."""
    lotka_volterra = _lotka_volterra_field(p)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lotka_volterra(t, y) + torch.stack([0.5 * torch.cos(2 * t), 0 * t])

    return f


def _gradcheck_fn(adjoint: str, rtol: float, solver=None, controller=None) -> Callable:
    def fn(p: torch.Tensor, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return tidal.solve(_forced_lotka_volterra(p), y0, ts, solver=solver,
                           controller=controller or tidal.PIDController(rtol, rtol * 1e-2),
                           adjoint=make_adjoint(adjoint, [p], checkpoints=2)).ys

    return fn


def _inputs(ts=GRADCHECK_TS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.tensor(LOTKA_VOLTERRA.p, dtype=F64, requires_grad=True),
            torch.tensor((1.0, 0.5), dtype=F64, requires_grad=True),
            torch.tensor(ts, dtype=F64, requires_grad=True))


@pytest.mark.parametrize("adjoint", [
    "backprop", pytest.param("checkpoint", marks=pytest.mark.slow), "backsolve"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck(adjoint: str, reverse: bool) -> None:
    """Parameters, y0 and every output time (t_0 included) at once."""
    fn = _gradcheck_fn(adjoint, rtol=1e-10)
    tolerances = BACKSOLVE_GRADCHECK if adjoint == "backsolve" else {}
    assert gradcheck(fn, _inputs((0.6, 0.3, -0.1) if reverse else GRADCHECK_TS), **tolerances)


@pytest.mark.parametrize("adjoint", ["backprop", "checkpoint"])
def test_gradcheck_fixed_steps_exact(adjoint: str) -> None:
    """RK4 with a constant step: the step sizes do not move under perturbation, so the discrete
    gradient and finite differences agree to gradcheck's default tolerances, outputs inside
    steps (interpolated) included."""
    fn = _gradcheck_fn(adjoint, rtol=0.0, solver=tidal.RK4(),
                       controller=tidal.ConstantStepSize(0.15))
    p, y0, ts = _inputs()
    assert gradcheck(lambda p, y0: fn(p, y0, ts.detach()), (p, y0))


def test_gradcheck_per_sample_grids_backprop() -> None:
    """ts of shape [T, B]: each sample its own grid (one of them reversed)."""
    p = torch.tensor((0.8, -0.3), dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 0.5], [-0.4, 0.9]], dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 1.0], [0.5, 0.3], [1.2, -0.5]], dtype=F64, requires_grad=True)

    def f(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.stack([p[0] * y[:, 1] * torch.cos(t), p[1] * y[:, 0] - 0.5 * y[:, 1]],
                           -1)

    def fn(p, y0, ts):
        return tidal.solve(f, y0, ts, args=p, controller=tidal.PIDController(1e-10, 1e-12)).ys

    assert gradcheck(fn, (p, y0, ts))


# ---------------------------------------------------------------------------------------------
# CheckpointAdjoint equals BackpropAdjoint to round-off

SOLVER_SETUPS = {
    "dopri5": (tidal.Dopri5, lambda: tidal.PIDController(1e-6, 1e-8)),
    "tsit5": (tidal.Tsit5, lambda: tidal.PIDController(1e-6, 1e-8)),
    "dopri8": (tidal.Dopri8, lambda: tidal.PIDController(1e-6, 1e-8)),
    "rk4": (tidal.RK4, lambda: tidal.ConstantStepSize(0.1)),
    "rk4_on_outputs": (tidal.RK4, lambda: tidal.ConstantStepSize(0.25)),  # steps end on ts
    "dopri5_jump": (tidal.Dopri5, lambda: tidal.PIDController(1e-6, 1e-8, jump_ts=[0.7],
                                                              step_ts=[1.3])),
}


def _torch_grads(adjoint, ts, solver, controller, problem=LOTKA_VOLTERRA):
    p = torch.tensor(problem.p, dtype=F64, requires_grad=True)
    y0 = torch.tensor(problem.y0, dtype=F64, requires_grad=True)
    ts = torch.tensor(ts, dtype=F64, requires_grad=True)
    sol = tidal.solve(problem.field(p), y0, ts, solver=solver, controller=controller,
                      adjoint=adjoint)
    loss = (sol.ys ** 2).sum() + sol.ys[-1, 0]  # an uneven cotangent as well
    return sol, torch.autograd.grad(loss, (p, y0, ts))


@pytest.mark.parametrize("setup", list(SOLVER_SETUPS))
def test_checkpoint_equals_backprop(setup: str) -> None:
    """1 segment, a few, more than there are steps, and the automatic sqrt(steps); forward and
    reverse time."""
    solver_cls, controller = SOLVER_SETUPS[setup]
    for ts in [(0.0, 0.5, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.5, 0.0)]:
        ref_sol, ref = _torch_grads(tidal.BackpropAdjoint(), ts, solver_cls(), controller())
        for checkpoints in (1, 2, 5, 1000, None):
            sol, got = _torch_grads(tidal.CheckpointAdjoint(checkpoints), ts, solver_cls(),
                                    controller())
            assert sol.stats.num_steps == ref_sol.stats.num_steps
            torch.testing.assert_close(sol.ys, ref_sol.ys, rtol=1e-12, atol=1e-12)
            for g, r in zip(got, ref):
                error = float((g - r).norm() / r.norm())
                assert error < 1e-12, (ts, checkpoints, g, r)


@pytest.mark.parametrize("adjoint", [tidal.CheckpointAdjoint(), tidal.BacksolveAdjoint()])
def test_forward_calls_f_as_often_as_the_solve_says(adjoint: tidal.adjoint.Adjoint) -> None:
    """The call of f that finds the tensors f uses (none given) is the forward solve's first:
    the forward pass calls f exactly `num_fevals` times, on shared and per-sample grids; but
    once more from a jump at the start, whose first value is taken from the jump's far side."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    calls = []

    def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -k * y

    y0 = torch.ones(3, 2, dtype=F64)
    for ts, jump_ts, more in [([0.0, 1.0], (), 0),
                              (torch.tensor([[0.0] * 3, [1.0, 2.0, 3.0]]), (), 0),
                              ([0.0, 1.0], (0.0,), 1)]:
        calls.clear()
        sol = tidal.solve(decay, y0, ts, adjoint=adjoint,
                          controller=tidal.PIDController(1e-8, 1e-10, jump_ts=jump_ts))
        assert len(calls) == int(sol.stats.num_fevals.max()) + more
        sol.ys[-1].sum().backward()
        end = torch.as_tensor(ts, dtype=F64)[-1]
        exact = -(end * torch.exp(-0.7 * end) * y0.sum(-1)).sum()
        torch.testing.assert_close(k.grad, exact, rtol=1e-6, atol=0)
        k.grad = None


def test_checkpoint_with_a_single_output_time_and_two() -> None:
    for ts in [(0.0,), (1.0,), (0.0, 1.0), (1.0, 0.0)]:
        p = torch.tensor(LOTKA_VOLTERRA.p, dtype=F64, requires_grad=True)
        y0 = torch.tensor(LOTKA_VOLTERRA.y0, dtype=F64, requires_grad=True)
        t = torch.tensor(ts, dtype=F64, requires_grad=True)
        results = []
        for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(4)):
            ys = tidal.solve(_lotka_volterra_field(p), y0, t, adjoint=adjoint,
                             controller=tidal.PIDController(1e-8, 1e-10)).ys
            assert ys.shape == (len(ts), 2)
            results.append(torch.autograd.grad((ys ** 2).sum(), (p, y0, t), allow_unused=True))
        for g, r in zip(*results):
            if r is None:
                assert g is None or bool((g == 0).all())
            else:
                torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
        if len(ts) == 1:  # L = ||y0||^2: nothing else moves it
            torch.testing.assert_close(results[1][1], 2 * y0.detach())
            torch.testing.assert_close(results[1][2], torch.zeros(1, dtype=F64))


# ---------------------------------------------------------------------------------------------
# BacksolveAdjoint: seminorm, nn.Module parameters


class MLPField(torch.nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2: a few hundred parameters."""

    def __init__(self, width: int = 128, scale: float = 1.0):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, 2)).double()
        with torch.no_grad():
            for param in self.net.parameters():
                param.mul_(scale)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


@pytest.fixture
def single_thread():
    """The MLP's matrices are tiny: MKL's threads only add synchronisation, and on a busy
    2-core machine their spin-waiting made this test 10-50x slower (0.7 s -> 35 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp_grads(field: torch.nn.Module, adjoint, rtol: float, atol: float | None = None):
    y0 = torch.tensor([[0.5, -1.0], [1.0, 0.3], [-0.7, 0.2]], dtype=F64, requires_grad=True)
    ts = torch.linspace(0.0, 2.0, 5, dtype=F64)
    controller = tidal.PIDController(rtol, rtol * 1e-2 if atol is None else atol)
    sol = tidal.solve(field, y0, ts, controller=controller, adjoint=adjoint)
    params = [p for p in field.parameters() if p.requires_grad]
    grads = torch.autograd.grad((sol.ys ** 2).sum(), (y0, *params))
    return torch.cat([g.reshape(-1) for g in grads]), sol


@pytest.mark.usefixtures("single_thread")
def test_backsolve_seminorm_same_gradients_fewer_steps() -> None:
    field = MLPField()
    exact, _ = _mlp_grads(field, tidal.BackpropAdjoint(), rtol=1e-12)
    errors, steps = {}, {}
    for seminorm in (False, True):
        g, sol = _mlp_grads(field, tidal.BacksolveAdjoint(seminorm=seminorm), rtol=1e-7)
        assert sol.backward_stats is not None
        errors[seminorm] = float((g - exact).norm() / exact.norm())
        steps[seminorm] = sol.backward_stats.num_steps
    assert errors[False] < 1e-6 and errors[True] < 1e-6, errors
    assert steps[True] <= steps[False], steps
    assert steps[True] < steps[False], steps  # with hundreds of parameters it does save steps


@pytest.mark.usefixtures("single_thread")
def test_backsolve_takes_module_parameters_and_explicit_params() -> None:
    """params=None takes the nn.Module's parameters; frozen ones are left alone."""
    field = MLPField(width=8)
    frozen = field.net[2].bias
    frozen.requires_grad_(False)
    exact, _ = _mlp_grads(field, tidal.BackpropAdjoint(), rtol=1e-12)
    implicit, _ = _mlp_grads(field, tidal.BacksolveAdjoint(), rtol=1e-10)
    assert frozen.grad is None
    assert float((implicit - exact).norm() / exact.norm()) < 1e-7
    # explicit params for a plain function
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    ts = torch.tensor(DECAY.ts, dtype=F64)
    sol = tidal.solve(lambda t, y: -k * y, y0, ts, controller=tidal.PIDController(1e-10, 1e-12),
                      adjoint=tidal.BacksolveAdjoint(params=[k]))
    gk, gy0 = torch.autograd.grad((sol.ys ** 2).sum(), (k, y0))
    reference = sensitivity_reference(DECAY)
    assert relative_error(Grads(gk.numpy()[None], gy0.numpy()), reference, with_ts=False) < 1e-8


class _FreshNode:
    """A stand-in for an autograd node whose `next_functions` makes new Python objects each
    time, as torch's do: one freed during the walk can leave its id to the next."""

    __slots__ = ("spec",)

    def __init__(self, spec: dict) -> None:
        self.spec = spec

    @property
    def variable(self) -> torch.Tensor | None:
        return self.spec.get("variable")

    @property
    def next_functions(self) -> tuple:
        return tuple((_FreshNode(child), 0) for child in self.spec.get("next", ()))


def test_the_search_for_the_tensors_f_uses_misses_none() -> None:
    """The Checkpoint and Backsolve adjoints find f's tensors by walking f's graph; a walk that
    remembered nodes by id alone missed closure tensors on Python 3.12 (their gradients came
    back None), and misses them here on this deep graph of short-lived node objects."""
    from tidal.adjoint.base import _leaves

    rng = np.random.default_rng(0)
    leaves = [torch.ones(1) for _ in range(50)]

    def graph(depth: int) -> dict:
        if depth == 0:
            return {"variable": leaves[rng.integers(len(leaves))]}
        return {"next": [graph(depth - 1) for _ in range(rng.integers(1, 4))]}

    def reachable(spec: dict) -> set[int]:
        if "variable" in spec:
            return {id(spec["variable"])}
        return set().union(*(reachable(child) for child in spec["next"]))

    for _ in range(5):
        spec = graph(6)
        assert {id(leaf) for leaf in _leaves(_FreshNode(spec))} == reachable(spec)


def test_backsolve_with_its_own_solver_and_controller() -> None:
    """A loose forward solve, an accurate backward one: the gradient is as accurate as the
    backward solve (the states are re-integrated backwards from the stored outputs)."""
    p = torch.tensor(PENDULUM.p, dtype=F64, requires_grad=True)
    y0 = torch.tensor(PENDULUM.y0, dtype=F64, requires_grad=True)
    ts = torch.tensor(PENDULUM.ts, dtype=F64)
    adjoint = tidal.BacksolveAdjoint(solver=tidal.Dopri8(), params=[p],
                                     controller=tidal.PIDController(1e-11, 1e-13))
    sol = tidal.solve(PENDULUM.field(p), y0, ts, solver=tidal.Dopri5(), adjoint=adjoint,
                      controller=tidal.PIDController(1e-10, 1e-12))
    assert sol.backward_stats is None  # nothing ran backwards yet
    gp, gy0 = torch.autograd.grad((sol.ys ** 2).sum(), (p, y0))
    assert sol.backward_stats is not None and sol.backward_stats.num_steps > 0
    got = Grads(gp.numpy(), gy0.numpy())
    assert relative_error(got, sensitivity_reference(PENDULUM), with_ts=False) < 1e-8


ARGS_FORMS = {
    "tensor": (lambda k, c: k, lambda t, y, a: -a * y),
    "tuple": (lambda k, c: (k, 2.0, c), lambda t, y, a: -a[0] * y + a[2]),
    "dict": (lambda k, c: {"k": k, "c": c, "name": "x"}, lambda t, y, a: -a["k"] * y + a["c"]),
    "nested": (lambda k, c: ((k, c),), lambda t, y, a: -a[0][0] * y + a[0][1]),
}


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict", "nested"])
def test_backsolve_differentiates_args_or_refuses_them(form: str) -> None:
    """Tensors passed through `solve(args=...)` get BackpropAdjoint's gradients (to the
    tolerance), also when `params=` lists one of them too (counted once)."""
    make_args, f = ARGS_FORMS[form]
    ts = torch.tensor(DECAY.ts, dtype=F64)
    results = {}
    for name in ("backprop", "backsolve", "backsolve_params"):
        k = torch.tensor(0.7, dtype=F64, requires_grad=True)
        c = torch.tensor(0.3, dtype=F64, requires_grad=True)
        y0 = torch.tensor(DECAY.y0, dtype=F64, requires_grad=True)
        adjoint = {"backprop": tidal.BackpropAdjoint(), "backsolve": tidal.BacksolveAdjoint(),
                   "backsolve_params": tidal.BacksolveAdjoint(params=[k])}[name]
        try:
            sol = tidal.solve(f, y0, ts, args=make_args(k, c), adjoint=adjoint,
                              controller=tidal.PIDController(1e-10, 1e-12))
        except (tidal.InvalidArgumentError, tidal.IncompatibleOptionsError):
            assert name != "backprop"
            continue  # refusing is fine too
        (sol.ys ** 2).sum().backward()
        results[name] = (k.grad, None if form == "tensor" else c.grad, y0.grad)
    reference = results.pop("backprop")
    if form == "tensor":  # the closed form checks the reference itself
        want = sensitivity_reference(DECAY).p[0]
        assert abs(float(reference[0]) - want) < 1e-8 * abs(want)
    for name, grads in results.items():
        for got, want in zip(grads, reference):
            if want is not None:
                assert got is not None, name
                torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9, msg=name)


# ---------------------------------------------------------------------------------------------
# odeint_adjoint: torchdiffeq's semantics


class LotkaVolterraModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (torch.nn.Parameter(torch.tensor(v, dtype=F64))
                                          for v in LOTKA_VOLTERRA.p)
        self.unused = torch.nn.Parameter(torch.ones(3, dtype=F64))
        self.frozen = torch.nn.Parameter(torch.tensor(1.0, dtype=F64), requires_grad=False)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, z = y[0], y[1]
        return self.frozen * torch.stack([self.a * x - self.b * x * z,
                                          -self.c * z + self.d * x * z])


def _odeint_adjoint_grads(odeint_adjoint, **kwargs):
    module = LotkaVolterraModule()
    y0 = torch.tensor(LOTKA_VOLTERRA.y0, dtype=F64, requires_grad=True)
    t = torch.tensor(LOTKA_VOLTERRA.ts, dtype=F64)
    ys = odeint_adjoint(module, y0, t, rtol=1e-9, atol=1e-11, **kwargs)
    (ys ** 2).sum().backward()
    return module, y0


def test_odeint_adjoint_matches_torchdiffeq_and_sensitivities() -> None:
    module, y0 = _odeint_adjoint_grads(tidal.odeint_adjoint)
    ref_module, ref_y0 = _odeint_adjoint_grads(torchdiffeq.odeint_adjoint)
    for name in ("a", "b", "c", "d"):
        torch.testing.assert_close(getattr(module, name).grad, getattr(ref_module, name).grad,
                                   rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(y0.grad, ref_y0.grad, rtol=1e-6, atol=1e-8)
    got = Grads(np.array([float(getattr(module, name).grad) for name in "abcd"]),
                y0.grad.numpy())
    assert relative_error(got, sensitivity_reference(LOTKA_VOLTERRA), with_ts=False) < 1e-6
    # torchdiffeq's conventions: unused parameters get zeros, frozen ones nothing
    assert ref_module.unused.grad is not None and ref_module.frozen.grad is None
    assert module.unused.grad is not None
    assert torch.equal(module.unused.grad, torch.zeros(3, dtype=F64))
    assert module.frozen.grad is None


def test_odeint_adjoint_seminorm() -> None:
    module, y0 = _odeint_adjoint_grads(tidal.odeint_adjoint,
                                       adjoint_options={"norm": "seminorm"})
    got = Grads(np.array([float(getattr(module, name).grad) for name in "abcd"]),
                y0.grad.numpy())
    assert relative_error(got, sensitivity_reference(LOTKA_VOLTERRA), with_ts=False) < 1e-6
    assert torch.equal(module.unused.grad, torch.zeros(3, dtype=F64))
    assert module.frozen.grad is None


def test_odeint_adjoint_plain_function_needs_adjoint_params() -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    t = torch.tensor(DECAY.ts, dtype=F64)
    with pytest.raises(tidal.InvalidArgumentError, match=r"nn\.Module.*adjoint_params"):
        tidal.odeint_adjoint(lambda t, y: -k * y, y0, t)
    ys = tidal.odeint_adjoint(lambda t, y: -k * y, y0, t, rtol=1e-10, atol=1e-12,
                              adjoint_params=(k,))
    gk, gy0 = torch.autograd.grad((ys ** 2).sum(), (k, y0))
    got = Grads(gk.numpy()[None], gy0.numpy())
    assert relative_error(got, sensitivity_reference(DECAY), with_ts=False) < 1e-8


class TupleLotkaVolterra(torch.nn.Module):
    """The Lotka-Volterra system with the state as a tuple (prey [1], predators [])."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(LOTKA_VOLTERRA.p, dtype=F64))

    def forward(self, t, state):
        x, z = state  # shapes [1] and []
        a, b, c, d = self.p
        return a * x - b * x * z, -c * z + d * x[0] * z


def test_odeint_adjoint_tuple_state() -> None:
    module = TupleLotkaVolterra()
    x0 = torch.tensor([LOTKA_VOLTERRA.y0[0]], dtype=F64, requires_grad=True)
    z0 = torch.tensor(LOTKA_VOLTERRA.y0[1], dtype=F64, requires_grad=True)
    xs, zs = tidal.odeint_adjoint(module, (x0, z0), torch.tensor(LOTKA_VOLTERRA.ts, dtype=F64),
                                  rtol=1e-9, atol=1e-11)
    assert xs.shape == (5, 1) and zs.shape == (5,)
    ((xs ** 2).sum() + (zs ** 2).sum()).backward()
    assert x0.grad.shape == (1,) and z0.grad.shape == ()
    got = Grads(module.p.grad.numpy(), np.array([float(x0.grad), float(z0.grad)]))
    assert relative_error(got, sensitivity_reference(LOTKA_VOLTERRA), with_ts=False) < 1e-6


def test_odeint_adjoint_time_gradients_match_torchdiffeq() -> None:
    results = []
    for odeint_adjoint in (tidal.odeint_adjoint, torchdiffeq.odeint_adjoint):
        module = LotkaVolterraModule()
        y0 = torch.tensor(LOTKA_VOLTERRA.y0, dtype=F64)
        t = torch.tensor(LOTKA_VOLTERRA.ts, dtype=F64, requires_grad=True)
        ys = odeint_adjoint(module, y0, t, rtol=1e-9, atol=1e-11)
        results.append(torch.autograd.grad((ys ** 2).sum(), t)[0])
    reference = sensitivity_reference(LOTKA_VOLTERRA).ts
    assert np.linalg.norm(results[0].numpy() - reference) < 1e-6 * np.linalg.norm(reference)
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-8)


def test_odeint_time_gradients_match_torchdiffeq() -> None:
    """tidal.odeint (no adjoint) differentiates t, as torchdiffeq.odeint does."""
    results = []
    for odeint in (tidal.odeint, torchdiffeq.odeint):
        y0 = torch.tensor(FORCED_REVERSE.y0, dtype=F64)
        t = torch.tensor(FORCED_REVERSE.ts, dtype=F64, requires_grad=True)
        p = torch.tensor(FORCED_REVERSE.p, dtype=F64)
        ys = odeint(FORCED_REVERSE.field(p), y0, t, rtol=1e-10, atol=1e-12)
        results.append(torch.autograd.grad((ys ** 2).sum(), t, allow_unused=True)[0])
    assert results[0] is not None, "no gradient reached t"
    reference = sensitivity_reference(FORCED_REVERSE).ts
    assert np.linalg.norm(results[0].numpy() - reference) < 1e-6 * np.linalg.norm(reference)
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Error paths


def _incompatible(option: str, adjoint_name: str) -> str:
    """The message names the option and the adjoint, and suggests BackpropAdjoint."""
    return (rf"(?s)(?=.*{option})(?=.*{re.escape(adjoint_name)})"
            r"(?=.*tidal\.BackpropAdjoint\(\))")


@pytest.mark.parametrize("adjoint", ["backsolve", "checkpoint"])
def test_adjoints_refuse_dense_output(adjoint: str) -> None:
    name = "BacksolveAdjoint" if adjoint == "backsolve" else "CheckpointAdjoint"
    y0 = torch.ones(2, 3, dtype=F64, requires_grad=True)
    with pytest.raises(tidal.IncompatibleOptionsError, match=_incompatible("dense", name)):
        tidal.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), dense=True,
                    adjoint=make_adjoint(adjoint, []))


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_backsolve_refuses_events_and_suggests_the_discrete_adjoints(per_sample: bool) -> None:
    y0 = torch.ones(2, 3, dtype=F64, requires_grad=True)
    ts = torch.tensor([[0.0, 0.0], [1.0, 2.0]] if per_sample else [0.0, 1.0], dtype=F64)
    pattern = (r"(?s)(?=.*event)(?=.*BacksolveAdjoint)(?=.*tidal\.CheckpointAdjoint\(\))"
               r"(?=.*tidal\.BackpropAdjoint\(\))")
    with pytest.raises(tidal.IncompatibleOptionsError, match=pattern):
        tidal.solve(lambda t, y: -y, y0, ts, event=lambda t, y: y.sum(-1) - 0.5,
                    adjoint=tidal.BacksolveAdjoint())


def test_backsolve_refuses_per_element_tolerances_without_its_own_controller() -> None:
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    controller = tidal.PIDController(rtol=torch.full((3,), 1e-6, dtype=F64), atol=1e-8)
    with pytest.raises(tidal.IncompatibleOptionsError, match=r"BacksolveAdjoint.*controller"):
        tidal.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                    controller=controller, adjoint=tidal.BacksolveAdjoint())


@pytest.mark.parametrize("checkpoints", [0, -1, 2.5, True])
def test_checkpoint_count_must_be_a_positive_integer(checkpoints) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match="checkpoints"):
        tidal.CheckpointAdjoint(checkpoints=checkpoints)
