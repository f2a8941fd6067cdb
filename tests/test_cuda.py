"""The main paths on a CUDA device, against analytic solutions and scipy references.

Every test but the count of host synchronisations runs on the CPU too (CI has no GPU: there
it checks the same assertions), and on CUDA where a GPU is present (the `gpu` mark; `pytest -m
gpu` runs only those; passed on an H200, docs/benchmarks.md). Inputs are made
on the CPU and moved, so both devices solve the same numbers.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import tidal
from stiff_problems import radau_reference, rober, rober_numpy
from tidal.brownian import BrownianTree, sample_seeds

F64 = torch.float64
TIGHT = tidal.PIDController(rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack((-y[..., 1], y[..., 0]), -1)


def rotated(y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """exp(t J) y0 for y0 [B, 2] and times t [T] or [T, B]: [T, B, 2]."""
    t = t.to(y0).view(t.shape[0], -1)
    c, s = torch.cos(t), torch.sin(t)
    return torch.stack((c * y0[:, 0] - s * y0[:, 1], s * y0[:, 0] + c * y0[:, 1]), -1)


def test_dopri5_on_shared_and_per_sample_grids(device: torch.device) -> None:
    y0 = torch.randn(512, 2, dtype=F64).to(device)
    ts = torch.linspace(0.0, 5.0, 11, dtype=F64)
    shared = tidal.solve(rotation, y0, ts, controller=TIGHT)
    assert shared.ys.device.type == device.type
    torch.testing.assert_close(shared.ys, rotated(y0, ts), rtol=0, atol=1e-8)
    spans = torch.linspace(0.5, 1.5, 512, dtype=F64)
    grids = ts.unsqueeze(1) * spans  # sample b ends at 5 * spans[b]
    own = tidal.solve(rotation, y0, grids.to(device), controller=TIGHT)
    torch.testing.assert_close(own.ys, rotated(y0, grids), rtol=0, atol=1e-8)
    steps = own.stats.num_steps.cpu()
    assert steps[-1] > steps[0]  # the longer solves took more steps of their own


def test_dense_output_and_a_terminal_event_per_sample(device: torch.device) -> None:
    gravity = 9.81
    heights = torch.linspace(1.0, 20.0, 64, dtype=F64)
    y0 = torch.stack((heights, torch.zeros_like(heights)), -1).to(device)

    def falling(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack((y[..., 1], torch.full_like(y[..., 1], -gravity)), -1)

    grids = torch.linspace(0.0, 3.0, 7, dtype=F64).unsqueeze(1).expand(-1, 64).contiguous()
    sol = tidal.solve(falling, y0, grids.to(device), controller=TIGHT,
                      event=tidal.Event(lambda t, y: y[..., 0], direction=-1), dense=True)
    torch.testing.assert_close(sol.event_t.cpu(), torch.sqrt(2 * heights / gravity),
                               rtol=0, atol=1e-9)
    # a free fall is quadratic: dopri5's interpolant is exact on it
    t_mid = 0.25 * sol.event_t.cpu()
    inside = sol.evaluate(t_mid.to(device)).cpu()
    torch.testing.assert_close(inside[:, 0], heights - 0.5 * gravity * t_mid**2, rtol=0,
                               atol=1e-9)


@pytest.mark.parametrize("adjoint", [tidal.BackpropAdjoint(), tidal.CheckpointAdjoint(),
                                     tidal.BacksolveAdjoint()], ids=repr)
def test_gradients_of_exponential_decay(device: torch.device, adjoint: tidal.adjoint.Adjoint
                                        ) -> None:
    """y' = -a y: y(T) = y0 exp(-a T), d y(T) / d a = -T y(T), d y(T) / d y0 = exp(-a T)."""
    rates = torch.linspace(0.2, 2.0, 32, dtype=F64).unsqueeze(1).to(device).requires_grad_()
    y0 = torch.linspace(0.5, 1.5, 32, dtype=F64).unsqueeze(1).to(device).requires_grad_()
    t_end = 2.0
    sol = tidal.solve(lambda t, y: -rates * y, y0, [0.0, t_end], controller=TIGHT,
                      adjoint=adjoint)
    sol.ys[-1].sum().backward()
    decay = torch.exp(-rates.detach() * t_end)
    torch.testing.assert_close(rates.grad, -t_end * y0.detach() * decay, rtol=1e-7, atol=0)
    torch.testing.assert_close(y0.grad, decay, rtol=1e-7, atol=0)


def test_rodas5p_on_rober_with_per_sample_rates(device: torch.device) -> None:
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    field, _ = rober(scales.to(device))  # its Jacobian by autodiff, on the device
    y0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=F64).to(device)
    scaled_atol = torch.tensor([1e-8, 1e-14, 1e-8], dtype=F64).to(device)
    sol = tidal.solve(field, y0, [0.0, 100.0], solver=tidal.Rodas5P(),
                      controller=tidal.PIDController(rtol=1e-8, atol=scaled_atol))
    for b, scale in enumerate(scales.tolist()):
        reference = radau_reference(rober_numpy(scale), [1.0, 0.0, 0.0], 100.0)
        error = np.abs(sol.ys[-1, b].cpu().numpy() - reference) / np.abs(reference)
        assert error.max() < 1e-6, (scale, error)
    assert int(sol.stats.num_jacobians) > 0


def test_sde_strong_error_on_geometric_brownian_motion(device: torch.device) -> None:
    """Milstein on dX = mu X dt + sigma X dW against exp((mu - sigma^2 / 2) t + sigma W_t) of
    the same Brownian path, on the path's own device."""
    mu, sigma, paths, steps = 0.5, 0.8, 4096, 256
    tree = BrownianTree(0.0, 1.0, sample_seeds(3, paths, device=device), 1, tol=1.0 / steps,
                        dtype=F64)
    y0 = torch.ones(paths, 1, dtype=F64, device=device)
    exact = y0 * torch.exp(mu - 0.5 * sigma**2 + sigma * tree.increment(0.0, 1.0).dw)
    sol = tidal.sdeint(lambda t, y: mu * y, lambda t, y: sigma * y, y0, [0.0, 1.0],
                       dt=1.0 / steps, solver=tidal.Milstein(), brownian=tree)
    assert sol.ys.device.type == device.type
    # Milstein's strong error is O(dt): 0.75 dt here (Euler-Maruyama's: 9 dt)
    assert (sol.ys[-1] - exact).abs().mean().item() < 2.0 / steps


def test_sde_on_per_sample_grids_against_the_same_paths(device: torch.device) -> None:
    """Each path on its own grid to its own end T_b (per-sample Brownian queries, device work
    only): Milstein against exp((mu - sigma^2 / 2) T_b + sigma W(T_b)) of the same path."""
    mu, sigma, paths, dt = 0.5, 0.8, 512, 1.0 / 256
    tree = BrownianTree(0.0, 2.0, sample_seeds(4, paths, device=device), 1, tol=dt, dtype=F64)
    ends = torch.linspace(1.0, 2.0, paths, dtype=F64)
    grids = torch.stack([torch.zeros_like(ends), 0.5 * ends, ends]).to(device)
    y0 = torch.ones(paths, 1, dtype=F64, device=device)
    sol = tidal.sdeint(lambda t, y: mu * y, lambda t, y: sigma * y, y0, grids, dt=dt,
                       solver=tidal.Milstein(), brownian=tree)
    w = tree.increment(torch.zeros_like(ends).to(device), ends.to(device)).dw
    exact = torch.exp((mu - 0.5 * sigma**2) * ends.to(device).unsqueeze(-1) + sigma * w)
    assert sol.ys.device.type == device.type
    assert (sol.ys[-1] - exact).abs().mean().item() < 4.0 * dt  # 1.3 dt here; Euler-Maruyama 15 dt
    steps = sol.stats.num_steps
    assert int(steps[-1]) > int(steps[0])  # the longer paths took more steps of their own


def test_torchdiffeq_dropin_with_its_adjoint(device: torch.device) -> None:
    y0 = torch.randn(16, 2, dtype=F64).to(device)
    ts = torch.linspace(0.0, 2.0 * math.pi, 5, dtype=F64).to(device)

    class Rotation(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.omega = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.omega * rotation(t, y)

    func = Rotation().to(device)
    ys = tidal.odeint_adjoint(func, y0, ts, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ys, rotated(y0, ts.cpu()), rtol=0, atol=1e-8)
    # d/d omega of sum(y(2 pi)) at omega = 1: 2 pi * sum(J y0)
    ys[-1].sum().backward()
    expected = 2.0 * math.pi * rotation(None, y0).sum()
    torch.testing.assert_close(func.omega.grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.gpu
def test_no_host_synchronisation_per_stage() -> None:
    """The eager loop reads the step's outcome on the host once per step, never per stage:
    dopri5's six stages per step would show as at least six synchronisations a step."""
    device = torch.device("cuda")
    net = tidal.nn.MLP(2).to(device)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # turns fast: many steps
        return 10.0 * rotation(t, y) + net(t, y)

    y0 = torch.randn(256, 2, device=device)
    ts = torch.linspace(0.0, 5.0, 10)
    tidal.solve(f, y0, ts)  # warm-up: allocations and lazy loading
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.no_grad():
                sol = tidal.solve(f, y0, ts)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    steps = int(sol.stats.num_steps)
    assert steps > 50
    assert syncs <= 2 * steps + 10, (syncs, steps)
