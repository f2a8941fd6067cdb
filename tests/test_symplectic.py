"""Symplectic methods (`tidal.solvers.symplectic`): order, conservation of the quadratic
invariant of a linear Hamiltonian system, bounded energy error on the pendulum, the loop's
protocol for fixed-step methods (dense output, statistics, per-sample grids, jumps), gradients
and errors."""

from __future__ import annotations

import math

import pytest
import torch

import tidal
from solver_db import SYMPLECTIC_DB
from tidal.solvers import ImplicitMidpoint, Leapfrog, Splitting, Yoshida4

F64 = torch.float64
SYMPLECTIC = [info.cls for info in SYMPLECTIC_DB]


def oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H = (q^2 + p^2) / 2, any number of degrees of freedom: (dq, dp) = (p, -q)."""
    n = y.shape[-1] // 2
    return torch.cat([y[..., n:], -y[..., :n]], dim=-1)


def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H = p^2 / 2 - cos q."""
    return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)


def pendulum_energy(y: torch.Tensor) -> torch.Tensor:
    return 0.5 * y[..., 1] ** 2 - torch.cos(y[..., 0])


def step_matrix(solver, dt: float) -> torch.Tensor:
    """The 2x2 matrix of one step on the oscillator (the methods are linear there)."""
    columns = [tidal.solve(oscillator, e, torch.tensor([0.0, dt], dtype=F64), solver=solver,
                           controller=tidal.ConstantStepSize(dt)).ys[-1]
               for e in torch.eye(2, dtype=F64)]
    return torch.stack(columns, dim=1)


# ---------------------------------------------------------------------------------------------
# Order and conservation


@pytest.mark.parametrize("cls", SYMPLECTIC, ids=lambda c: c.name)
def test_order_against_the_analytic_oscillator(cls) -> None:
    """The slope of log(error) against log(dt) is the stated order, within 0.2."""
    y0 = torch.tensor([[1.0, 0.0], [0.3, -0.8]], dtype=F64)
    t_end = 2.0
    exact = torch.stack([y0[:, 0] * math.cos(t_end) + y0[:, 1] * math.sin(t_end),
                         -y0[:, 0] * math.sin(t_end) + y0[:, 1] * math.cos(t_end)], -1)
    dts = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for dt in dts:
        sol = tidal.solve(oscillator, y0, torch.tensor([0.0, t_end], dtype=F64),
                          solver=cls(), controller=tidal.ConstantStepSize(dt))
        errors.append(float((sol.ys[-1] - exact).abs().max()))
    slope = (math.log(errors[0]) - math.log(errors[-1])) / (math.log(dts[0]) - math.log(dts[-1]))
    assert abs(slope - cls.order) < 0.2, (errors, slope)


@pytest.mark.parametrize(("cls", "steps"), [(Leapfrog, 10_000), (Yoshida4, 5_000),
                                            (ImplicitMidpoint, 2_000)],
                         ids=["leapfrog", "yoshida4", "implicit_midpoint"])
def test_quadratic_invariant_of_the_oscillator_is_conserved(cls, steps: int) -> None:
    """A one-step map M with det 1 and |tr M| < 2 conserves the quadratic form
    Q(q, p) = c q^2 + (d - a) q p - b p^2 of M = [[a, b], [c, d]]: a symplectic method applied
    to a linear Hamiltonian system conserves this modified energy exactly, so its error is
    round-off (plus the iteration tolerance of implicit midpoint), with no drift."""
    dt = 0.125  # a binary fraction: the step count is exact
    solver = cls()
    m = step_matrix(solver, dt)
    assert float(torch.linalg.det(m)) == pytest.approx(1.0, abs=1e-13)
    (a, b), (c, d) = m.tolist()

    def invariant(y: torch.Tensor) -> torch.Tensor:
        q, p = y[..., 0], y[..., 1]
        return c * q * q + (d - a) * q * p - b * p * p

    y0 = torch.tensor([[1.0, 0.0], [0.2, 0.7]], dtype=F64)
    ts = torch.linspace(0.0, steps * dt, 101, dtype=F64)
    sol = tidal.solve(oscillator, y0, ts, solver=solver, controller=tidal.ConstantStepSize(dt),
                      max_steps=steps + 1)
    assert sol.stats.num_steps == steps
    q0 = invariant(y0)
    relative = ((invariant(sol.ys) - q0) / q0.abs()).abs()
    assert float(relative.max()) < 1e-11
    # and the true energy oscillates within a band of size O(dt^order) without drifting
    energy = 0.5 * (sol.ys ** 2).sum(-1)
    error = (energy - energy[0]).abs() / energy[0]
    early, late = error[:51].max(0).values, error[50:].max(0).values
    # (sampled at 101 times, the band's maximum varies by a few percent; a drift doubles it)
    assert (late <= 1.1 * early + 1e-11).all()  # implicit midpoint: exact up to its tolerance
    assert float(error.max()) < dt ** cls.order


def test_pendulum_energy_is_bounded_for_leapfrog_and_drifts_for_rk4() -> None:
    """Leapfrog on the (nonlinear) pendulum: the energy error stays in a band of size O(dt^2)
    whose width does not grow over 5,000 steps (about 80 periods); RK4 at the same step size
    loses energy steadily (its error grows about linearly in time)."""
    dt, steps = 0.1, 5_000
    y0 = torch.tensor([2.0, 0.0], dtype=F64)  # a large swing: period about 8.4
    ts = torch.linspace(0.0, steps * dt, 201, dtype=F64)
    errors = {}
    for solver in (Leapfrog(), tidal.RK4()):
        sol = tidal.solve(pendulum, y0, ts, solver=solver, controller=tidal.ConstantStepSize(dt),
                          max_steps=steps + 1)
        energy = pendulum_energy(sol.ys)
        errors[solver.name] = (energy - energy[0]).abs()
    leap, rk4 = errors["leapfrog"], errors["rk4"]
    assert float(leap[100:].max()) <= 1.1 * float(leap[:101].max())  # no growth
    assert float(leap.max()) < dt ** 2
    # RK4 drifts: the error at the end is many times its value a tenth of the way in
    assert float(rk4[-1]) > 5 * float(rk4[20])
    assert float(rk4[-1]) > float(rk4[:101].max()) * 1.8


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Leapfrog, Yoshida4], ids=lambda c: c.name)
def test_long_run_conservation_100k_steps(cls) -> None:
    dt, steps = 0.1, 100_000
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    ts = torch.linspace(0.0, steps * dt, 1001, dtype=F64)
    sol = tidal.solve(pendulum, y0, ts, solver=cls(), controller=tidal.ConstantStepSize(dt),
                      max_steps=steps + 1)
    error = (pendulum_energy(sol.ys) - pendulum_energy(y0)).abs()
    assert float(error[500:].max()) <= 1.1 * float(error[:501].max())
    assert float(error.max()) < dt ** cls.order


# ---------------------------------------------------------------------------------------------
# The loop's protocol for fixed-step methods


@pytest.mark.parametrize("cls", SYMPLECTIC, ids=lambda c: c.name)
def test_per_sample_grids_match_the_shared_grid(cls) -> None:
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5], [-0.2, 1.0]], dtype=F64)
    ts = torch.linspace(0.0, 3.0, 7, dtype=F64)
    shared = tidal.solve(pendulum, y0, ts, solver=cls(), controller=tidal.ConstantStepSize(0.1))
    per_sample = tidal.solve(pendulum, y0, ts.unsqueeze(-1).expand(7, 3), solver=cls(),
                             controller=tidal.ConstantStepSize(0.1))
    assert torch.allclose(shared.ys, per_sample.ys, rtol=0, atol=1e-14)
    assert per_sample.stats.num_fevals.tolist() == [shared.stats.num_fevals] * 3


@pytest.mark.parametrize("cls", SYMPLECTIC, ids=lambda c: c.name)
def test_per_sample_reverse_time_and_different_spans(cls) -> None:
    """Each sample on its own grid, one backwards in time, equals its lone shared solve.
    (Implicit midpoint iterates until every sample of the batch has converged, so a sample's
    result may differ from its lone solve by the iteration's tolerance.)"""
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64)
    ts = torch.stack([torch.linspace(0.0, 2.0, 5, dtype=F64),
                      torch.linspace(1.0, -1.5, 5, dtype=F64)], 1)
    batch = tidal.solve(pendulum, y0, ts, solver=cls(), controller=tidal.ConstantStepSize(0.1))
    for b in range(2):
        lone = tidal.solve(pendulum, y0[b], ts[:, b], solver=cls(),
                           controller=tidal.ConstantStepSize(0.1))
        implicit = cls is ImplicitMidpoint
        assert torch.allclose(batch.ys[:, b], lone.ys, rtol=0, atol=1e-12 if implicit else 1e-14)
        if not implicit:
            assert int(batch.stats.num_fevals[b]) == lone.stats.num_fevals


def test_fevals_are_counted_per_call() -> None:
    calls = [0]

    def counted(t, y):
        calls[0] += 1
        return pendulum(t, y)

    for solver, per_step in ((Leapfrog(), 3), (Yoshida4(), 7)):
        calls[0] = 0
        sol = tidal.solve(counted, torch.tensor([1.0, 0.0], dtype=F64),
                          torch.tensor([0.0, 1.0], dtype=F64), solver=solver,
                          controller=tidal.ConstantStepSize(0.1))
        assert sol.stats.num_steps == 10
        # f at the start, per_step a step, none at the end of the last step
        assert sol.stats.num_fevals == calls[0] == 1 + per_step * 10 - 1


def test_dense_output_is_cubic_hermite_between_steps() -> None:
    """Outputs inside steps come from the Hermite interpolant through the steps' ends: third
    order in dt between steps, so far more accurate than the distance between steps."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    ts = torch.linspace(0.0, 1.0, 23, dtype=F64)  # off the step grid
    sol = tidal.solve(oscillator, y0, ts, solver=Yoshida4(), controller=tidal.ConstantStepSize(0.1),
                      dense=True)
    exact = torch.stack([torch.cos(ts), -torch.sin(ts)], -1)
    assert float((sol.ys - exact).abs().max()) < 1e-4
    assert torch.allclose(sol.evaluate(ts), sol.ys, rtol=0, atol=1e-14)
    on_grid = tidal.solve(oscillator, y0, torch.tensor([0.0, 0.5], dtype=F64),
                          solver=Yoshida4(), controller=tidal.ConstantStepSize(0.1))
    assert torch.allclose(sol.evaluate(0.5), on_grid.ys[-1], rtol=0, atol=1e-14)


def test_odeint_by_name_and_step_to() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 2.0, 11, dtype=F64)
    for name in ("leapfrog", "yoshida4", "implicit_midpoint"):
        ys = tidal.odeint(pendulum, y0, t, method=name,
                          options={"step_size": 0.05, "interp": "cubic"})
        ref = tidal.solve(pendulum, y0, t, solver=tidal.SOLVERS[name](),
                          controller=tidal.ConstantStepSize(0.05)).ys
        assert torch.equal(ys, ref)
        assert tidal.odeint(pendulum, y0, t, method=name).shape == (11, 2)  # StepTo(t)


def test_several_degrees_of_freedom_and_a_batch_dimension() -> None:
    """State [..., 2n]: q is the first half of the last dimension, p the second."""
    y0 = torch.randn(4, 3, 6, dtype=F64)
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    sol = tidal.solve(oscillator, y0, ts, solver=Leapfrog(),
                      controller=tidal.ConstantStepSize(0.01))
    q, p = y0[..., :3], y0[..., 3:]
    exact = torch.cat([q * math.cos(1.0) + p * math.sin(1.0),
                       -q * math.sin(1.0) + p * math.cos(1.0)], -1)
    assert float((sol.ys[-1] - exact).abs().max()) < 1e-4


def test_splitting_is_data() -> None:
    lf = Leapfrog.splitting
    assert lf.symmetric and lf.steps == (("kick", 0.5), ("drift", 1.0), ("kick", 0.5))
    y4 = Yoshida4.splitting
    assert y4.symmetric and len(y4.steps) == 7
    assert math.fsum(y4.drifts) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="must sum to 1"):
        Splitting(kicks=(0.5, 0.6), drifts=(1.0,), order=2)
    with pytest.raises(ValueError, match="one more kick than drifts"):
        Splitting(kicks=(1.0,), drifts=(1.0,), order=1)


# ---------------------------------------------------------------------------------------------
# Gradients


def _parametrised_pendulum(k: torch.Tensor):
    def f(t, y):
        return torch.stack([y[..., 1], -k * torch.sin(y[..., 0])], dim=-1)
    return f


@pytest.mark.parametrize("cls", SYMPLECTIC, ids=lambda c: c.name)
@pytest.mark.parametrize("adjoint", [tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(3)],
                         ids=["backprop", "checkpoint"])
def test_gradcheck(cls, adjoint) -> None:
    ts = torch.tensor([0.0, 0.35, 1.0], dtype=F64)

    def run(y0: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return tidal.solve(_parametrised_pendulum(k), y0, ts, solver=cls(),
                           controller=tidal.ConstantStepSize(0.1), adjoint=adjoint).ys

    y0 = torch.tensor([[0.7, 0.1], [-0.3, 0.4]], dtype=F64, requires_grad=True)
    k = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, k))


def test_checkpoint_equals_backprop() -> None:
    ts = torch.linspace(0.0, 5.0, 11, dtype=F64)
    grads = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(4)):
        k = torch.tensor(1.3, dtype=F64, requires_grad=True)
        y0 = torch.tensor([0.7, 0.1], dtype=F64, requires_grad=True)
        ys = tidal.solve(_parametrised_pendulum(k), y0, ts, solver=Yoshida4(),
                         controller=tidal.ConstantStepSize(0.05), adjoint=adjoint).ys
        grads.append(torch.autograd.grad(ys.square().sum(), (y0, k)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# Errors


def test_errors() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(tidal.InvalidArgumentError, match=r"ConstantStepSize\(dt\)"):
        tidal.solve(pendulum, y0, ts, solver=Leapfrog())
    with pytest.raises(tidal.IncompatibleOptionsError, match="no error estimate"):
        tidal.solve(pendulum, y0, ts, solver=Leapfrog(),
                    controller=tidal.PIDController(1e-6, 1e-8))
    with pytest.raises(tidal.InvalidArgumentError, match=r"two\s+equal halves"):
        tidal.solve(lambda t, y: -y, torch.ones(3, dtype=F64), ts, solver=Leapfrog(),
                    controller=tidal.ConstantStepSize(0.1))
    with pytest.raises(tidal.IncompatibleOptionsError, match="CheckpointAdjoint"):
        tidal.solve(pendulum, y0.requires_grad_(), ts, solver=Yoshida4(),
                    controller=tidal.ConstantStepSize(0.1), adjoint=tidal.BacksolveAdjoint())
    with pytest.raises(tidal.InvalidArgumentError, match="max_iters"):
        ImplicitMidpoint(max_iters=0)
    with pytest.raises(tidal.InvalidArgumentError, match="tol"):
        ImplicitMidpoint(tol=-1.0)


def test_backsolve_with_another_backward_method_works() -> None:
    k = torch.tensor(1.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([0.7, 0.1], dtype=F64)
    ys = tidal.solve(_parametrised_pendulum(k), y0, torch.tensor([0.0, 1.0], dtype=F64),
                     solver=Leapfrog(), controller=tidal.ConstantStepSize(0.01),
                     adjoint=tidal.BacksolveAdjoint(solver=tidal.RK4())).ys
    (grad,) = torch.autograd.grad(ys[-1, 0], k)
    k2 = k.detach().requires_grad_()
    ref = tidal.solve(_parametrised_pendulum(k2), y0, torch.tensor([0.0, 1.0], dtype=F64),
                      solver=Leapfrog(), controller=tidal.ConstantStepSize(0.01)).ys
    (expected,) = torch.autograd.grad(ref[-1, 0], k2)
    assert float(grad) == pytest.approx(float(expected), rel=1e-3)


def test_implicit_midpoint_reports_a_failed_iteration() -> None:
    """A stiff linear field with dt * |lambda| = 5 > 2: the fixed-point iteration diverges."""
    with pytest.raises(tidal.SolveFailedError, match=r"NOT_CONVERGED.*ImplicitMidpoint step "
                                                     r"of size 0\.5.*smaller\s+`dt`") as info:
        tidal.solve(lambda t, y: -10.0 * y, torch.ones(2, dtype=F64),
                    torch.tensor([0.0, 1.0], dtype=F64), solver=ImplicitMidpoint(max_iters=30),
                    controller=tidal.ConstantStepSize(0.5))
    assert info.value.status is tidal.Status.NOT_CONVERGED


def test_float32_is_preserved() -> None:
    y0 = torch.tensor([1.0, 0.0])
    for cls in SYMPLECTIC:
        sol = tidal.solve(pendulum, y0, torch.tensor([0.0, 1.0], dtype=F64), solver=cls(),
                          controller=tidal.ConstantStepSize(0.1))
        assert sol.ys.dtype == torch.float32
