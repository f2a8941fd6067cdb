"""The loops driven by stubs (as torchode tests its loop): a fake method whose error estimates
are scripted, so that accept/reject, the clamps and the whole sequence of step sizes can be
checked against values computed by hand from the controller's documented formula, on both
loops (shared and per-sample grids). Also: a custom controller plugs into both loops through
the `StepSizeController` protocol, and non-finite steps end the solve."""

from __future__ import annotations

import math

import pytest
import torch

import tidal
from tidal.controllers.base import StepControl, StepSizeController
from tidal.solvers.base import StepMethod

F64 = torch.float64


class Scripted(StepMethod):
    """Euler steps (y' = 0 here, so y never changes) whose error ratio is scripted: attempt k
    reports ratios[k] (one per group). With rtol = 0 and atol = 1 the controller's scale is 1
    and its ratio is |e| dt for a one-entry state, so the estimate is ratio / dt."""

    name = "scripted"
    tableau = tidal.Euler.tableau
    order = 1
    error_order = 4  # the step-size exponent 1 / (q + 1) = 1/5
    adaptive = True

    def __init__(self, ratios: list) -> None:
        self.ratios = [torch.as_tensor(r, dtype=F64).reshape(-1) for r in ratios]
        self.attempts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (t0, dt) per attempt

    def attempt(self, field, stages, coefficients):
        t0 = torch.as_tensor(field.times((0.0,))[0], dtype=F64).reshape(-1).clone()
        dt = torch.as_tensor(stages.dt, dtype=F64).reshape(-1).clone()
        self.attempts.append((t0, dt))
        return stages.combine(coefficients.b), 0

    def error_estimate(self, stages, coefficients):
        ratio = self.ratios[min(len(self.attempts), len(self.ratios)) - 1]
        dt = torch.as_tensor(stages.dt, dtype=F64).reshape(-1)
        return (ratio / torch.where(dt > 0, dt, 1.0)).reshape(1, -1)

    def times(self) -> list[float]:
        return [float(t[0]) for t, _ in self.attempts]

    def steps(self) -> list[float]:
        return [float(dt[0]) for _, dt in self.attempts]


def still(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(y)


def pid(**options: float) -> tidal.PIDController:
    return tidal.PIDController(rtol=0.0, atol=1.0, dt0=0.1, **options)


def run(ratios: list, controller: tidal.PIDController, per_sample: bool, t_end: float = 10.0,
        max_steps: int | None = None) -> tuple[Scripted, tidal.Solution]:
    method = Scripted(ratios)
    y0 = torch.zeros(1, 1, dtype=F64) if per_sample else torch.zeros(1, dtype=F64)
    ts = torch.tensor([0.0, t_end], dtype=F64)
    sol = tidal.solve(still, y0, ts.unsqueeze(-1) if per_sample else ts, solver=method,
                      controller=controller, max_steps=max_steps or len(ratios), throw=False)
    return method, sol


def factor(r: float, safety: float = 0.9, low: float = 0.2, high: float = 10.0) -> float:
    """The I controller's factor by hand: safety r^(-1/5), clipped, from r >= 1e-10."""
    return min(max(safety * max(r, 1e-10) ** -0.2, low), high)


SCRIPT = [2.0, 0.5, 1e-12, 100.0, 1e6, 0.9]


def expected_sequence(script: list[float], dt: float, dt_min: float = 0.0,
                      dt_max: float = math.inf) -> tuple[list[float], list[float], list[bool]]:
    """(start time, step size, accepted) of every attempt, by hand."""
    t, times, steps, accepted = 0.0, [], [], []
    for r in script:
        times.append(t)
        steps.append(dt)
        accept = r <= 1.0 or dt <= dt_min
        f = factor(r)
        if not accept:
            f = min(f, 1.0)
        accepted.append(accept)
        if accept:
            t += dt
        dt = min(max(dt * f, dt_min), dt_max)
    return times, steps, accepted


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_accept_reject_and_step_sizes_follow_the_formula(per_sample: bool) -> None:
    method, sol = run(SCRIPT, pid(), per_sample)
    times, steps, accepted = expected_sequence(SCRIPT, 0.1)
    assert method.steps() == pytest.approx(steps, rel=1e-12)
    assert method.times() == pytest.approx(times, rel=1e-12, abs=1e-15)
    assert steps[2] * 10 == pytest.approx(steps[3])  # r = 1e-12: the factor is capped at 10
    assert steps[4] * 0.2 == pytest.approx(steps[5])  # r = 1e6: the factor is floored at 0.2
    assert int(sol.stats.num_accepted.sum()) == sum(accepted) == 3
    assert int(sol.stats.num_rejected.sum()) == 3
    assert sol.status is tidal.Status.MAX_STEPS


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_clamps_dt_max_and_dt_min(per_sample: bool) -> None:
    method, sol = run(SCRIPT, pid(dt_max=0.3, dt_min=0.05), per_sample)
    times, steps, accepted = expected_sequence(SCRIPT, 0.1, dt_min=0.05, dt_max=0.3)
    assert steps[3] == 0.3  # 10 x 0.081 clamped to dt_max
    assert method.steps() == pytest.approx(steps, rel=1e-12)
    assert method.times() == pytest.approx(times, rel=1e-12, abs=1e-15)
    assert int(sol.stats.num_accepted.sum()) == sum(accepted)
    # A rejected step at dt_min is accepted whatever its error (torchdiffeq's min_step rule).
    method, sol = run([5.0] * 4, pid(dt_min=0.05), per_sample)
    assert method.steps() == pytest.approx([0.1, 0.1 * factor(5.0), 0.05, 0.05], rel=1e-12)
    assert int(sol.stats.num_accepted.sum()) == 2  # the two attempts at dt_min


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_pi_controller_uses_the_last_accepted_ratio(per_sample: bool) -> None:
    controller = pid(pcoeff=0.2, icoeff=0.4)
    method, _ = run([0.5, 0.25, 4.0, 0.5], controller, per_sample)
    # beta1 = 0.6, beta2 = -0.2: factor = 0.9 r_n^(-0.6/5) r_{n-1}^(0.2/5), history from
    # accepted steps only (r_{n-1} = 1 at the start).
    k = 0.2

    def pi(r: float, previous: float) -> float:
        return min(max(0.9 * r ** (-0.6 * k) * previous ** (0.2 * k), 0.2), 10.0)

    dt1 = 0.1 * pi(0.5, 1.0)
    dt2 = dt1 * pi(0.25, 0.5)
    dt3 = dt2 * min(pi(4.0, 0.25), 1.0)  # rejected: history stays at 0.25
    assert method.steps() == pytest.approx([0.1, dt1, dt2, dt3], rel=1e-12)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_steps_land_on_step_ts_and_the_end(per_sample: bool) -> None:
    method, sol = run([0.5] * 20, pid(step_ts=[0.25]), per_sample, t_end=0.6)
    times = method.times()
    assert 0.25 in times  # a step was shortened to end exactly there
    assert sol.status is tidal.Status.SUCCESS
    ends = [t + dt for t, dt in zip(times, method.steps())]
    assert ends[-1] == pytest.approx(0.6, abs=1e-15)


def test_per_sample_groups_follow_their_own_scripts() -> None:
    """Two groups with different scripts step exactly as each does alone on a shared grid."""
    scripts = [[2.0, 0.5, 0.5, 3.0, 0.5], [0.5, 0.5, 2.0, 2.0, 0.5]]
    method = Scripted([list(pair) for pair in zip(*scripts)])
    ts = torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=F64)
    sol = tidal.solve(still, torch.zeros(2, 1, dtype=F64), ts, solver=method, controller=pid(),
                      max_steps=5, throw=False)
    for g, script in enumerate(scripts):
        alone, _ = run(script, pid(), per_sample=False)
        assert [float(dt[g]) for _, dt in method.attempts] == pytest.approx(alone.steps(),
                                                                          rel=1e-12)
        accepted = sum(r <= 1 for r in script)
        assert int(sol.stats.num_accepted[g]) == accepted


class Halving(StepSizeController):
    """A controller outside tidal: every step is half the previous one, all accepted."""

    adaptive = False
    step_ts = ()
    jump_ts = ()

    def bind(self, solver, y0, shape, groups):
        return _HalvingControl()


class _HalvingControl(StepControl):
    def first_step(self, trial, y, f0):
        return torch.full((len(y),), 0.5, dtype=F64), 1

    def error_ratio(self, stages, y0, y1, dt):
        return 0.0 if isinstance(dt, float) else torch.zeros_like(dt)

    def decide(self, ratio, taken, proposed):
        return (True if isinstance(ratio, float) else torch.ones_like(ratio, dtype=torch.bool),
                taken / 2)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_a_new_controller_plugs_into_both_loops(per_sample: bool) -> None:
    method = Scripted([0.0])
    y0 = torch.zeros(1, 1, dtype=F64) if per_sample else torch.zeros(1, dtype=F64)
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    sol = tidal.solve(still, y0, ts.unsqueeze(-1) if per_sample else ts, solver=method,
                      controller=Halving(), max_steps=6, throw=False)
    assert method.steps() == [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625]
    assert sol.status is tidal.Status.MAX_STEPS  # halving never reaches t = 1


# ---------------------------------------------------------------------------------------------
# Steps that are not finite


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
def test_non_finite_steps_are_retried_then_end_the_solve(per_sample: bool) -> None:
    method, sol = run([math.nan], pid(), per_sample, max_steps=1000)
    assert sol.status is tidal.Status.NONFINITE
    retries = 10  # AdaptiveControl.nonfinite_retries
    assert len(method.attempts) == retries + 1
    # Each retry takes the smallest factor.
    assert method.steps() == pytest.approx([0.1 * 0.2**k for k in range(retries + 1)])
    # A finite step in between, accepted or not, resets the count.
    for finite in (0.5, 2.0):
        method, sol = run([math.inf] * 5 + [finite] + [math.inf] * 11, pid(), per_sample,
                          max_steps=1000)
        assert sol.status is tidal.Status.NONFINITE
        assert len(method.attempts) == 5 + 1 + retries + 1
