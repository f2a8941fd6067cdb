"""`tidal.solve(..., compile=...)`: the compiled loop against closed forms and the eager loop.

Compilation is slow (seconds per graph), so the fields are module-level functions (one code
object: graphs are shared between tests) and the tests are few.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import scipy.integrate
import scipy.special
import torch
from torch._dynamo.utils import counters

import tidal
import tidal.compiled
from tidal._errors import InvalidArgumentError

TOL = tidal.PIDController(rtol=1e-9, atol=1e-12)

# before torch 2.11 compile=True solves eagerly (tests/test_compiled_versions.py)
pytestmark = pytest.mark.skipif(tidal.compiled._TORCH_VERSION < tidal.compiled.MIN_TORCH,
                                reason="the compiled loop needs torch >= 2.11")


def decay(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return -k * y


def rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y' = J y with J a quarter turn: y(t) = (cos t y1 - sin t y2, sin t y1 + cos t y2)."""
    return torch.stack([-y[..., 1], y[..., 0]], dim=-1)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_decay_matches_closed_form_and_eager_without_recompiling() -> None:
    k = torch.tensor(0.7, dtype=torch.float64)
    y0 = torch.linspace(0.5, 2.0, 12, dtype=torch.float64).view(4, 3)
    ts = torch.linspace(0.0, 2.0, 7, dtype=torch.float64)
    sol = tidal.solve(decay, y0, ts, args=k, controller=TOL, compile=True)
    exact = y0 * torch.exp(-k * ts).view(-1, 1, 1)
    torch.testing.assert_close(sol.ys, exact, rtol=1e-8, atol=1e-10)
    eager = tidal.solve(decay, y0, ts, args=k, controller=TOL)
    torch.testing.assert_close(sol.ys, eager.ys, rtol=1e-13, atol=1e-14)
    assert int(sol.stats.num_steps) == int(eager.stats.num_steps)
    assert int(sol.stats.num_fevals) == int(eager.stats.num_fevals)
    # another batch size and another time grid (other length, other values): no new graph
    before = graphs()
    y0b = torch.linspace(0.1, 1.0, 15, dtype=torch.float64).view(5, 3)
    tsb = torch.tensor([0.0, 0.3, 1.1, 1.5, 3.0], dtype=torch.float64)
    other = tidal.solve(decay, y0b, tsb, args=k, controller=TOL, compile=True)
    assert graphs() == before
    torch.testing.assert_close(other.ys, y0b * torch.exp(-k * tsb).view(-1, 1, 1),
                               rtol=1e-8, atol=1e-10)
    # max_steps stops where the eager loop stops, with the same partial outputs
    partial = [tidal.solve(decay, y0, ts, args=k, controller=TOL, compile=compile,
                           max_steps=5, throw=False) for compile in (True, False)]
    assert partial[0].status == partial[1].status == tidal.Status.MAX_STEPS
    torch.testing.assert_close(partial[0].ys, partial[1].ys, rtol=1e-13, atol=1e-14,
                               equal_nan=True)
    assert int(partial[0].stats.num_steps) == 5


def test_several_steps_per_call_match_the_eager_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile=3 with a graph to record: steps past the end inside a call are masked; outputs
    and steps unchanged, the calls of f of the masked steps counted.
    The step function runs uncompiled here (the same function inductor compiles; compiling 3
    unrolled steps takes a minute on a loaded machine): this checks the masking and the host's
    reading of several steps per call."""
    monkeypatch.setattr(tidal.compiled, "_compiled_steps", tidal.compiled._steps)
    k = torch.tensor(0.7, dtype=torch.float64)
    y0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)  # a graph: per-step calls
    ts = torch.linspace(0.0, 2.0, 4, dtype=torch.float64)
    chunked = tidal.solve(decay, y0, ts, args=k, controller=TOL, compile=3)
    eager = tidal.solve(decay, y0, ts, args=k, controller=TOL)
    torch.testing.assert_close(chunked.ys, y0 * torch.exp(-k * ts).view(-1, 1, 1), rtol=1e-8,
                               atol=1e-10)
    torch.testing.assert_close(chunked.ys, eager.ys, rtol=1e-13, atol=1e-14)
    steps = int(eager.stats.num_steps)
    assert int(chunked.stats.num_steps) == steps
    masked = -steps % 3  # steps of the last call past the end: f is called, nothing changes
    assert int(chunked.stats.num_fevals) == int(eager.stats.num_fevals) + 6 * masked


def python_while_loop(cond: Callable[..., torch.Tensor], body: Callable[..., tuple[Any, ...]],
                      carried: tuple[Any, ...]) -> tuple[Any, ...]:
    """`torch._higher_order_ops.while_loop` as its documentation defines it, in plain Python."""
    while bool(cond(*carried)):
        carried = body(*carried)
    return carried


@pytest.fixture
def uncompiled_whole_loop(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The whole loop run uncompiled (the decay test compiles it; another graph would cost
    another 15-50 s); the per-step function refused. Returns a list that counts the calls."""
    calls: list[int] = []

    def loop(*args: Any) -> tuple[Any, ...]:
        calls.append(1)
        return tidal.compiled._solve_loop(*args)

    def refused(*args: Any) -> None:
        raise AssertionError("a solve without a graph took the per-step function")

    monkeypatch.setattr(tidal.compiled, "while_loop", python_while_loop)
    monkeypatch.setattr(tidal.compiled, "_compiled_loop", loop)
    monkeypatch.setattr(tidal.compiled, "_compiled_steps", refused)
    return calls


@pytest.fixture
def uncompiled_replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Checkpoint replays' steps run through the replay step uncompiled (the slow gradient
    test compiles it). Returns a list that counts the steps."""
    calls: list[int] = []

    def step(*args: Any) -> tuple[Any, ...]:
        calls.append(1)
        return tidal.compiled._replay_step(*args)

    monkeypatch.setattr(tidal.compiled, "_compiled_replay_step", step)
    return calls


def test_rotation_backwards_in_time_matches_closed_form(uncompiled_whole_loop: list[int]
                                                        ) -> None:
    """Tsit5 backwards in time through the whole loop."""
    y0 = torch.tensor([[1.0, 0.0], [0.3, -0.4]], dtype=torch.float64)
    ts = torch.linspace(0.0, -2 * math.pi, 9, dtype=torch.float64)
    sol = tidal.solve(rotation, y0, ts, solver=tidal.Tsit5(), controller=TOL, compile=True)
    c, s = torch.cos(ts).view(-1, 1), torch.sin(ts).view(-1, 1)
    exact = torch.stack([c * y0[:, 0] - s * y0[:, 1], s * y0[:, 0] + c * y0[:, 1]], dim=-1)
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-8)
    eager = tidal.solve(rotation, y0, ts, solver=tidal.Tsit5(), controller=TOL)
    torch.testing.assert_close(sol.ys, eager.ys, rtol=0, atol=1e-13)
    assert len(uncompiled_whole_loop) == 1


def broken(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y' = -y until t = 0.3, then NaN."""
    return torch.where(t < 0.3, -y, math.nan)


def test_whole_loop_outputs_counts_and_failures_match_the_eager_loop(
        uncompiled_whole_loop: list[int]) -> None:
    """Many outputs per step (more than a step's window: the host writes the rest), a solve
    that stops where f turns NaN, and `max_steps`: outputs, statuses and counts as the eager
    loop's, the outputs against the closed forms. (The error ratios agree with the eager
    loop's to round-off amplified by the error estimate's cancellation, ~1e-9 relative at
    rtol 1e-9: enough to change how many retries reach the NaN boundary, not the outputs.)"""
    k = torch.tensor(0.7, dtype=torch.float64)
    y0 = torch.linspace(0.5, 2.0, 6, dtype=torch.float64).view(2, 3)
    ts = torch.linspace(0.0, 2.0, 301, dtype=torch.float64)
    cases = [(decay, k, ts, {}), (broken, None, ts, {}), (decay, k, ts, {"max_steps": 7})]
    solves = []
    for f, args, times, options in cases:
        compiled, eager = (tidal.solve(f, y0, times, args=args, controller=TOL,
                                       compile=compile, throw=False, **options)
                           for compile in (True, False))
        assert compiled.status == eager.status
        if f is not broken:  # retries at the NaN boundary follow round-off in the step sizes
            assert dataclasses.asdict(compiled.stats) == dataclasses.asdict(eager.stats)
        torch.testing.assert_close(compiled.ys, eager.ys, rtol=1e-13, atol=1e-14,
                                   equal_nan=True)
        solves.append(compiled)
    whole, blown, stopped = solves
    assert int(whole.stats.num_steps) < len(ts) // 8  # steps passing more outputs than 8
    exact = y0 * torch.exp(-k * ts).view(-1, 1, 1)
    torch.testing.assert_close(whole.ys, exact, rtol=1e-8, atol=1e-10)
    assert stopped.status == tidal.Status.MAX_STEPS and int(stopped.stats.num_steps) == 7
    reached = ~stopped.ys[:, 0, 0].isnan()
    assert 0 < int(reached.sum()) < len(ts)
    torch.testing.assert_close(stopped.ys[reached], exact[reached], rtol=1e-8, atol=1e-10)
    assert blown.status == tidal.Status.NONFINITE
    reached = ~blown.ys[:, 0, 0].isnan()
    assert reached.tolist() == (ts < 0.3).tolist()
    torch.testing.assert_close(blown.ys[reached], torch.exp(-ts[reached]).view(-1, 1, 1) * y0,
                               rtol=1e-8, atol=1e-10)
    assert len(uncompiled_whole_loop) >= 3


def test_outputs_in_buffers_of_a_few_rows_match_the_eager_loop(
        uncompiled_whole_loop: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop hands its outputs to the host every BUFFER values (at least WINDOW rows
    more than a step's window), so that the buffer it carries, and copies each step, stays
    small: with 61 outputs in buffers of 8 rows the solve takes several calls, and its
    outputs are the eager loop's and the closed form's."""
    monkeypatch.setattr(tidal.compiled, "BUFFER", 12)  # 2 rows of 6: the minimum, 8 rows
    k = torch.tensor(0.7, dtype=torch.float64)
    y0 = torch.linspace(0.5, 2.0, 6, dtype=torch.float64).view(2, 3)
    ts = torch.linspace(0.0, 2.0, 61, dtype=torch.float64)
    compiled, eager = (tidal.solve(decay, y0, ts, args=k, controller=TOL, compile=compile)
                       for compile in (True, False))
    assert len(uncompiled_whole_loop) >= 61 // 16
    assert dataclasses.asdict(compiled.stats) == dataclasses.asdict(eager.stats)
    torch.testing.assert_close(compiled.ys, eager.ys, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(compiled.ys, y0 * torch.exp(-k * ts).view(-1, 1, 1), rtol=1e-8,
                               atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("adjoint", [tidal.BackpropAdjoint(), tidal.CheckpointAdjoint()])
def test_gradients_match_closed_form_and_eager(adjoint: tidal.adjoint.Adjoint) -> None:
    """y(T) = y0 exp(-k T): d sum y(T) / d y0 = exp(-k T), d / dk = -T sum y0 exp(-k T)."""
    ts = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    grads = []
    for compile in (True, False):
        k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)
        sol = tidal.solve(decay, y0, ts, args=k, controller=TOL, adjoint=adjoint,
                          compile=compile)
        sol.ys[-1].sum().backward()
        assert y0.grad is not None and k.grad is not None
        grads.append((y0.grad, k.grad))
    (gy, gk), (gy_eager, gk_eager) = grads
    decayed = math.exp(-0.7 * 1.5)
    torch.testing.assert_close(gy, torch.full_like(gy, decayed), rtol=1e-8, atol=0)
    torch.testing.assert_close(gk, torch.tensor(-1.5 * 2.5 * decayed, dtype=torch.float64),
                               rtol=1e-7, atol=0)
    torch.testing.assert_close(gy, gy_eager, rtol=1e-13, atol=0)
    torch.testing.assert_close(gk, gk_eager, rtol=1e-13, atol=0)
    # another batch size and time grid: no new graph (the checkpoint's replay step included)
    before = graphs()
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.linspace(0.1, 1.0, 6, dtype=torch.float64).view(3, 2).requires_grad_(True)
    sol = tidal.solve(decay, y0, [0.0, 0.2, 1.7], args=k, controller=TOL, adjoint=adjoint,
                      compile=True)
    sol.ys[-1].sum().backward()
    assert graphs() == before
    assert y0.grad is not None and k.grad is not None
    decayed = math.exp(-0.7 * 1.7)
    torch.testing.assert_close(y0.grad, torch.full_like(y0, decayed), rtol=1e-8, atol=0)
    torch.testing.assert_close(k.grad, -1.7 * y0.detach().sum() * decayed, rtol=1e-7, atol=0)


def untraceable(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-y through scipy (numpy itself dynamo traces; scipy it cannot)."""
    return torch.from_numpy(scipy.special.logit(scipy.special.expit(-y.detach().numpy())))


def test_untraceable_field_falls_back_to_eager_with_one_warning() -> None:
    y0 = torch.ones(3, dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = tidal.solve(untraceable, y0, ts, compile=True)
        again = tidal.solve(untraceable, y0, ts, compile=True)
    ours = [str(w.message) for w in caught if "compile=True" in str(w.message)]
    assert len(ours) == 1 and "cannot trace" in ours[0] and "eagerly" in ours[0]
    torch.testing.assert_close(sol.ys, torch.exp(-ts).view(-1, 1).expand(-1, 3),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(again.ys, sol.ys, rtol=0, atol=0)


def lotka_volterra(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack((1.5 * x - x * z, x * z - 3.0 * z), dim=-1)


def test_whole_loop_lotka_volterra_matches_scipy(uncompiled_whole_loop: list[int]) -> None:
    """W4's problem (batch 1, 100 outputs, about one a step) against scipy's DOP853 at rtol
    1e-12, and the eager loop's outputs and counts."""
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    ts = torch.linspace(0.0, 10.0, 100, dtype=torch.float64)
    controller = tidal.PIDController(rtol=1e-8, atol=1e-10)
    sol = tidal.solve(lotka_volterra, y0, ts, controller=controller, compile=True)
    reference = scipy.integrate.solve_ivp(
        lambda t, y: [1.5 * y[0] - y[0] * y[1], y[0] * y[1] - 3.0 * y[1]], (0.0, 10.0),
        y0.numpy(), method="DOP853", t_eval=ts.numpy(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sol.ys, torch.from_numpy(reference.y.T), rtol=0, atol=1e-6)
    eager = tidal.solve(lotka_volterra, y0, ts, controller=controller)
    torch.testing.assert_close(sol.ys, eager.ys, rtol=1e-13, atol=1e-14)
    assert dataclasses.asdict(sol.stats) == dataclasses.asdict(eager.stats)
    assert len(uncompiled_whole_loop) == 1


def test_checkpoint_forward_through_the_whole_loop(uncompiled_whole_loop: list[int],
                                                  uncompiled_replays: list[int]) -> None:
    """Checkpoint's forward solve (no graph) saves its 25 step ends in calls of at most 16,
    the backward replays each of them through the replay step; gradients as the eager loop's
    and the closed form of y' = -k y."""
    ts = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    grads = []
    for compile in (True, False):
        k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)
        sol = tidal.solve(decay, y0, ts, args=k, controller=TOL,
                          adjoint=tidal.CheckpointAdjoint(), compile=compile)
        sol.ys[-1].sum().backward()
        assert y0.grad is not None and k.grad is not None
        grads.append(torch.cat([y0.grad.reshape(-1), k.grad.reshape(1)]))
    assert len(uncompiled_whole_loop) == 2 and int(sol.stats.num_accepted) > 16
    assert len(uncompiled_replays) == int(sol.stats.num_accepted)
    decayed = math.exp(-0.7 * 2.0)
    exact = torch.tensor([decayed] * 4 + [-2.0 * 2.5 * decayed], dtype=torch.float64)
    torch.testing.assert_close(grads[0], exact, rtol=1e-7, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


class CountingDecay:
    """y' = -y through a wrapper that counts its calls: a Python side effect."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -y


def test_field_with_side_effects_takes_the_per_step_function(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The whole loop cannot trace a side effect (dynamo refuses it in a `while_loop` body):
    the solve takes the per-step function (run uncompiled here) without a warning, and the
    field is remembered for the next solve."""
    steps: list[int] = []

    def per_step(*args: Any) -> Any:
        steps.append(1)
        return tidal.compiled._steps(*args)

    monkeypatch.setattr(tidal.compiled, "_compiled_steps", per_step)
    field = CountingDecay()
    y0 = torch.ones(3, dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = tidal.solve(field, y0, ts, controller=TOL, compile=True)
    assert steps and field in tidal.compiled._not_whole
    assert field.calls == int(sol.stats.num_fevals)
    torch.testing.assert_close(sol.ys, torch.exp(-ts).view(-1, 1).expand(-1, 3), rtol=1e-8,
                               atol=0)


def test_options_the_compiled_step_lacks_run_eagerly_with_a_warning() -> None:
    y0 = torch.ones(2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="events"):
        sol = tidal.solve(lambda t, y: -y, y0, [0.0, 5.0], event=lambda t, y: y[0] - 0.5,
                          compile=True)
    assert sol.event_t is not None
    assert abs(float(sol.event_t) - math.log(2.0)) < 1e-6


def test_neural_ode_solves_through_the_compiled_loop(uncompiled_whole_loop: list[int],
                                                    uncompiled_replays: list[int]) -> None:
    """`NeuralODE(compile=True)` reaches the compiled loop (the whole loop, run uncompiled, for
    its default checkpoint forward) and trains to the eager model's gradients."""
    calls = uncompiled_whole_loop
    torch.manual_seed(0)
    net = tidal.nn.MLP(2).double()
    y0 = torch.randn(4, 2, dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    grads = []
    for compile in (True, False):
        net.zero_grad()
        tidal.NeuralODE(net, compile=compile)(y0, ts).square().sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()
                                if p.grad is not None]))
    assert calls and uncompiled_replays
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def nan_when_recording(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y' = -y, but NaN after t = 0 wherever autograd records: the forward solve is fine, a
    replay's steps not."""
    recording = torch.is_grad_enabled() and y.requires_grad
    return torch.where(t > 0, y * math.nan, -y) if recording else -y


def test_checkpoint_replays_fail_as_the_eager_ones(uncompiled_whole_loop: list[int],
                                                   uncompiled_replays: list[int]) -> None:
    """A replayed step that is not finite (the forward one was) ends the backward pass with
    the eager replay's error; replays with a jump among their step ends stay eager."""
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for compile in (True, False):
        y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
        sol = tidal.solve(nan_when_recording, y0, ts, adjoint=tidal.CheckpointAdjoint(1),
                          compile=compile)
        with pytest.raises(tidal.SolveFailedError, match="NONFINITE"):
            sol.ys.sum().backward()
    assert len(uncompiled_replays) == 1
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    controller = tidal.PIDController(rtol=1e-9, atol=1e-12, jump_ts=[0.5])
    with pytest.warns(UserWarning, match="controller"):
        sol = tidal.solve(decay, y0, ts, args=torch.tensor(0.7, dtype=torch.float64),
                          controller=controller, adjoint=tidal.CheckpointAdjoint(),
                          compile=True)
    sol.ys[-1].sum().backward()
    assert len(uncompiled_replays) == 1
    torch.testing.assert_close(y0.grad, torch.full_like(y0, math.exp(-0.7)), rtol=1e-8, atol=0)


def test_replay_step_that_cannot_compile_replays_eagerly_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, uncompiled_whole_loop: list[int]) -> None:
    calls: list[int] = []

    def fails(*args: Any) -> None:
        calls.append(1)
        raise torch._dynamo.exc.Unsupported("no graph today")

    monkeypatch.setattr(tidal.compiled, "_compiled_replay_step", fails)
    monkeypatch.setattr(tidal.compiled, "_not_replayable", weakref.WeakSet())  # (decay's)
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="replay was not compiled") as caught:
        sol = tidal.solve(decay, y0, [0.0, 2.0], args=k, controller=TOL,
                          adjoint=tidal.CheckpointAdjoint(), compile=True)
        sol.ys[-1].sum().backward()
    assert len([w for w in caught if "replay" in str(w.message)]) == 1 and calls == [1]
    exact = math.exp(-1.4)
    torch.testing.assert_close(y0.grad, torch.full_like(y0, exact), rtol=1e-8, atol=0)
    torch.testing.assert_close(k.grad, torch.tensor(-4.0 * exact, dtype=torch.float64),
                               rtol=1e-7, atol=0)


def test_importing_tidal_does_not_load_the_compiler() -> None:
    """torch.compile imports dynamo (about a second of every `import tidal` and command line
    call): the compiled functions are made on their first call."""
    code = "import sys, tidal; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_bad_compile_argument_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="compile"):
        tidal.solve(lambda t, y: -y, torch.ones(2), [0.0, 1.0], compile=0)


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", [tidal.BackpropAdjoint(), tidal.CheckpointAdjoint()])
def test_compiled_and_eager_agree_on_cuda(adjoint: tidal.adjoint.Adjoint) -> None:
    """Backprop through compiled steps; Checkpoint through the whole loop and compiled
    replays."""
    device = torch.device("cuda")
    net = tidal.nn.MLP(2).to(device, torch.float64)
    y0 = torch.randn(64, 2, dtype=torch.float64, device=device)
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    results = []
    for compile in (True, False):
        model = tidal.NeuralODE(net, adjoint=adjoint, compile=compile)
        net.zero_grad()
        ys = model(y0, ts)
        ys.square().sum().backward()
        results.append((ys, [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    (ys, grads), (ys_eager, grads_eager) = results
    torch.testing.assert_close(ys, ys_eager, rtol=1e-10, atol=1e-12)
    for g, g_eager in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(g, g_eager, rtol=1e-10, atol=1e-12)
    exact = tidal.solve(rotation, y0, ts, controller=TOL, compile=True).ys
    c, s = torch.cos(ts).view(-1, 1).to(device), torch.sin(ts).view(-1, 1).to(device)
    torch.testing.assert_close(exact[..., 0], c * y0[:, 0] - s * y0[:, 1], rtol=0, atol=1e-8)
