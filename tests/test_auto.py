"""`tidal.Auto`: stiffness switching between Tsit5 and Rodas5P, per group, against references
(scipy's Radau at rtol 1e-12) and against Tsit5's own work on a non-stiff problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

import tidal
from stiff_problems import (  # noqa: F401  (float64_default is an autouse fixture)
    LinearStiff,
    float64_default,
    radau_reference,
    rober,
    rober_numpy,
    van_der_pol,
)

ROBER_SCALE = torch.tensor([1.0, 1e-5, 1.0])


def test_non_stiff_problem_stays_explicit() -> None:
    """Van der Pol with mu = 1: Auto takes exactly Tsit5's steps and calls of f (no
    Jacobian, no switch) and gives its result."""
    field, _ = van_der_pol(1.0)
    y0, ts = torch.tensor([2.0, 0.0]), torch.linspace(0.0, 4.5, 4)
    controller = tidal.PIDController(1e-6, 1e-6)
    auto = tidal.solve(field, y0, ts, solver=tidal.Auto(), controller=controller, dense=True)
    tsit5 = tidal.solve(field, y0, ts, solver=tidal.Tsit5(), controller=controller, dense=True)
    for name in ("num_fevals", "num_steps", "num_accepted"):
        assert int(getattr(auto.stats, name)) == int(getattr(tsit5.stats, name)), name
    assert int(auto.stats.num_jacobians) == int(auto.stats.num_switches) == 0
    torch.testing.assert_close(auto.ys, tsit5.ys, rtol=1e-13, atol=1e-13)
    t = torch.tensor([0.7, 2.9, 4.3])
    torch.testing.assert_close(auto.evaluate(t), tsit5.evaluate(t), rtol=1e-12, atol=1e-12)


def test_rober_switches_to_rodas_and_matches_radau() -> None:
    """ROBER on [0, 100] at rtol 1e-6: Auto switches to Rodas5P (Tsit5 alone would need tens
    of thousands of steps) and ends within 20 rtol of Radau at rtol 1e-12."""
    field, _ = rober(torch.ones(()))
    sol = tidal.solve(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 100.0]),
                      solver=tidal.Auto(), controller=tidal.PIDController(1e-6,
                                                                          1e-6 * ROBER_SCALE))
    assert int(sol.stats.num_switches) >= 1 and int(sol.stats.num_steps) < 200
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 100.0)
    assert np.abs((sol.ys[-1].numpy() - reference) / ROBER_SCALE.numpy()).max() < 20e-6


def test_per_sample_modes() -> None:
    """Van der Pol with mu = 1 and mu = 1000 in one batch on per-sample grids: only the stiff
    sample switches, and each sample's result is within 20 rtol of Radau."""
    mu = torch.tensor([1.0, 1000.0])

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y.unbind(-1)
        return torch.stack([v, mu * (1 - x ** 2) * v - x], -1)

    ends = (3.0, 100.0)
    sol = tidal.solve(field, torch.tensor([[2.0, 0.0], [2.0, 0.0]]),
                      torch.tensor([[0.0, 0.0], list(ends)]), solver=tidal.Auto(),
                      controller=tidal.PIDController(1e-6, 1e-6))
    assert sol.stats.num_switches.tolist() == [0, 1]
    for b, (m, t_end) in enumerate(zip(mu.tolist(), ends)):
        reference = radau_reference(van_der_pol(m)[1], [2.0, 0.0], t_end)
        assert np.abs(sol.ys[-1, b].numpy() - reference).max() < 20e-6 * np.abs(reference).max()


def test_odeint_method_auto() -> None:
    """torchdiffeq-style code reaches it as method="auto"."""
    field, _ = rober(torch.ones(()))
    ys = tidal.odeint(field, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 10.0]),
                      method="auto", rtol=1e-7, atol=1e-7 * ROBER_SCALE)
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 10.0)
    assert np.abs((ys[-1].numpy() - reference) / ROBER_SCALE.numpy()).max() < 20e-7


def test_gradient_through_a_switch() -> None:
    """y' = -k (y - cos t), k = 1e3 (stiff: Auto switches): d/dk of the outputs' sum by
    backpropagation against autograd of the exact solution
    y = k (k cos t + sin t) / (k^2 + 1) + (y0 - k^2 / (k^2 + 1)) exp(-k t)."""
    ts = torch.tensor([0.0, 0.002, 0.5, 2.0, 5.0])

    def exact(k: torch.Tensor) -> torch.Tensor:
        return (k * (k * torch.cos(ts) + torch.sin(ts)) / (k ** 2 + 1)
                + (2.0 - k ** 2 / (k ** 2 + 1)) * torch.exp(-k * ts))

    k = torch.tensor(1e3, requires_grad=True)
    sol = tidal.solve(lambda t, y: -k * (y - torch.cos(t)), torch.tensor([2.0]), ts,
                      solver=tidal.Auto(), controller=tidal.PIDController(1e-6, 1e-6))
    assert int(sol.stats.num_switches) >= 1
    (grad,) = torch.autograd.grad(sol.ys.sum(), k)
    (reference,) = torch.autograd.grad(exact(k).sum(), k)
    torch.testing.assert_close(sol.ys[:, 0], exact(k).detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, reference, rtol=1e-3, atol=1e-8)


def test_rosenbrock_steps_are_calibrated() -> None:
    """Auto's Rodas5P steps carry a tolerance calibration (`tolerance_calibration=4`; Rodas5P's
    default, 1, when not given): on a stiff linear system (Auto switches at once) the
    calibrated Auto is several times closer to the exact solution at the same rtol."""
    problem = LinearStiff((-1.0, -1e3, -1e6))
    exact = problem.exact(2.0)
    errors = []
    for calibration in (4.0, None):
        sol = tidal.solve(problem, torch.tensor(problem.y0), torch.tensor([0.0, 2.0]),
                          solver=tidal.Auto(tolerance_calibration=calibration),
                          controller=tidal.PIDController(1e-6, 1e-6))
        assert int(sol.stats.num_switches) == 1
        errors.append(np.abs(sol.ys[-1].numpy() - exact).max())
    assert errors[0] < errors[1] / 2 and errors[0] < 1e-7, errors


def _fading_stiffness(k0: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """y' = -k(t) (y - cos t) with k(t) = k0 e^-t + 1 (k0 [B, 1] or 0-d): stiff while
    k(t) h is large, then not, so Auto switches to Rodas5P and back."""
    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1) if t.dim() else t
        return -(k0 * torch.exp(-t) + 1.0) * (y - torch.cos(t))
    return field


def test_checkpoint_replays_the_recorded_modes() -> None:
    """Under CheckpointAdjoint the replays start mid-solve in either mode and take each step
    with the forward solve's method: the gradient equals BackpropAdjoint's to round-off,
    and both match central differences of scipy's Radau at rtol 1e-12."""
    ts = torch.linspace(0.0, 8.0, 6)
    grads = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(checkpoints=3)):
        k0 = torch.tensor(1e3, requires_grad=True)
        sol = tidal.solve(_fading_stiffness(k0), torch.tensor([2.0]), ts, solver=tidal.Auto(),
                          controller=tidal.PIDController(1e-4, 1e-4), adjoint=adjoint)
        assert int(sol.stats.num_switches) == 2  # to Rodas5P and back
        grads.append(torch.autograd.grad(sol.ys.sum(), k0)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=0)

    def total(k0: float) -> float:
        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            return -(k0 * np.exp(-t) + 1.0) * (y - np.cos(t))
        out = solve_ivp(rhs, (0.0, 8.0), [2.0], method="Radau", t_eval=ts.numpy(),
                        rtol=1e-12, atol=1e-14)
        return float(out.y.sum())

    step = 0.1
    reference = (total(1e3 + step) - total(1e3 - step)) / (2 * step)
    # (the discrete gradient of a solve at rtol 1e-4: 1e-3 off here)
    assert abs(grads[1].item() - reference) < 1e-2 * abs(reference)


def test_checkpoint_with_per_sample_modes() -> None:
    """Per-sample grids, one sample stiff (it switches twice) and one not: CheckpointAdjoint's
    gradient equals BackpropAdjoint's to round-off for each sample's rate."""
    ts = torch.stack([torch.linspace(0.0, 8.0, 6), torch.linspace(0.0, 3.0, 6)], 1)
    grads = []
    for adjoint in (tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(checkpoints=3)):
        k0 = torch.tensor([[1e3], [1.0]], requires_grad=True)
        sol = tidal.solve(_fading_stiffness(k0), torch.tensor([[2.0], [0.5]]), ts,
                          solver=tidal.Auto(), controller=tidal.PIDController(1e-4, 1e-4),
                          adjoint=adjoint)
        assert sol.stats.num_switches.tolist() == [2, 0]
        grads.append(torch.autograd.grad(sol.ys.sum(), k0)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-18)
