"""The solve loop on a shared time grid: one step size for the whole state.

Time is a Python float (float64) in forward direction tau = direction * t; the state keeps the
user's shape. Per step: the method's stages, the controller's error ratio (the only host
synchronisation) and decision, and, for accepted steps, outputs by dense interpolation, events
and the hand-over of f(t1, y1) to the next step. Python floats instead of tensors for time and
step size save about 15 small tensor operations per step (docs/design.md); everything off the
per-step path is shared with the per-sample loop (`tidal._loop_io`).

A NaN or inf from f or in the state ends the solve with `Status.NONFINITE`: at once at the
start or with a fixed step, after the controller's few retries with smaller steps otherwise
(`StepControl.nonfinite_retries`: a long step may overshoot into a region where f is not
defined). It never turns into a search that runs to `max_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tidal._errors import Status
from tidal._loop_io import LoopResult, LoopSetup
from tidal._vector_field import Field
from tidal.events import bisection_steps
from tidal.interpolation import DenseSteps, interpolate_shared
from tidal.solvers.explicit_rk import BufferedStages, StackedStages, Stages, extra_stages
from tidal.solvers.jacobian import Jacobian, StepJacobian

SLIVER = 1e-10  # relative length of a leftover step not worth taking
#: a step at most this much of |t| is one float64 time cannot resolve (dt_underflow)
TINY = 10 * torch.finfo(torch.float64).eps


@dataclass
class _Step:
    """An accepted step; `stages` [S_dense, N] is filled on first use (extra stages too)."""

    tau: float
    dt: float
    y: torch.Tensor
    y1: torch.Tensor
    stages: torch.Tensor | None = None


class _Clock:
    """Python-float forward time to the user's time tensors (0-d, the state's dtype)."""

    def __init__(self, direction: float, dtype: torch.dtype, device: torch.device):
        self.direction, self.dtype, self.device = direction, dtype, device
        self.numpy_dtype = (torch.empty((), dtype=dtype).numpy().dtype if device.type == "cpu"
                            else None)

    def time(self, tau: float) -> torch.Tensor:
        return torch.full((), self.direction * tau, dtype=self.dtype, device=self.device)

    def beside(self, tau: float, side: float) -> torch.Tensor:
        """The user time just after (side = +1) or before (side = -1) tau in forward time, as
        the neighbour in the state's dtype (a float64 one would round back onto tau)."""
        toward = torch.full((), side * self.direction * math.inf, dtype=self.dtype,
                            device=self.device)
        return torch.nextafter(self.time(tau), toward)

    def times(self, taus: list[float]) -> Sequence[torch.Tensor]:
        """Many user times at once (one tensor per stage of a step)."""
        if self.numpy_dtype is None:
            return tuple(self.time(tau) for tau in taus)
        values = np.array(taus, dtype=self.numpy_dtype)
        return torch.from_numpy(values if self.direction > 0 else -values).unbind()


class _StepField:
    """The `StepField` of the current step (see `tidal.solvers.base`)."""

    __slots__ = ("_jacobian", "after_jump", "clock", "dt", "f", "factorizations", "failure",
                 "jacobians", "jump", "last_dim", "state", "switches", "tau0")

    def __init__(self, field: Field, clock: _Clock, last_dim: int):
        self.f, self.clock, self.last_dim = field, clock, last_dim
        self.tau0, self.dt, self.jump, self.after_jump = 0.0, 0.0, math.inf, False
        self._jacobian: StepJacobian | None = None
        self.jacobians = self.factorizations = self.switches = 0
        self.failure: torch.Tensor | None = None
        self.state: dict[str, Any] = {}

    def set(self, tau0: float, dt: float, jump: float, after_jump: bool = False) -> None:
        """The step from tau0 over dt; `jump` is its end if that is a jump, else inf;
        `after_jump`: tau0 is a jump (f there from its far side)."""
        self.tau0, self.dt, self.jump, self.after_jump = tau0, dt, jump, after_jump

    def times(self, c: tuple[float, ...]) -> Sequence[torch.Tensor]:
        times = self.clock.times([self.tau0 + ci * self.dt for ci in c])
        if self.jump < math.inf:  # f at c = 1 from the near side of the jump
            near = self.clock.beside(self.jump, -1.0)
            times = tuple(near if ci == 1.0 else t for ci, t in zip(c, times))
        return times

    def at(self, c: float, y: torch.Tensor) -> torch.Tensor:
        if c == 1.0 and self.jump < math.inf:
            return self.f(self.clock.beside(self.jump, -1.0), y)
        return self.f(self.clock.time(self.tau0 + c * self.dt), y)

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """The whole state is one group: [1, N]."""
        return y.reshape(1, -1)

    @property
    def jac_rows(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        f = self.f
        if f.jac is None:
            return None
        return lambda t, rows: f.jacobian(t, rows.view(f.loop_shape))

    def jacobian(self, y0: torch.Tensor) -> Jacobian:
        """df/dy [1, N, N] and df/dt [1, N] of the flat state at the step's start."""
        if self._jacobian is None:
            f, shape = self.f, y0.shape
            direction = None if self.clock.direction > 0 else torch.full(
                (1, 1), -1.0, dtype=y0.dtype, device=y0.device)
            self._jacobian = StepJacobian(lambda t, y: f(t, y.view(shape)).reshape(1, -1),
                                          direction, self.jac_rows)
        start = (self.clock.beside(self.tau0, 1.0) if self.after_jump
                 else self.clock.time(self.tau0))
        value, fresh = self._jacobian.at(start, y0, self.rows(y0))
        self.jacobians += fresh
        return value

    def count_factorization(self) -> None:
        self.factorizations += 1

    def count_switches(self, switched: torch.Tensor) -> None:
        self.switches += int(switched.sum())

    def report(self, statuses: torch.Tensor) -> None:
        self.failure = statuses

    def failure_status(self) -> Status:
        """Why the steps failed, as the method last reported it (else NONFINITE)."""
        return Status.NONFINITE if self.failure is None else Status(int(self.failure[0]))


class SharedLoop:
    def __init__(self, s: LoopSetup):
        self.s = s
        y0, grid = s.y0, s.grid
        self.tableau = s.solver.tableau
        self.coef = s.solver.coefficients(y0.dtype, y0.device)
        records_graph = torch.is_grad_enabled() and (y0.requires_grad or s.f0.requires_grad)
        self.stages: Stages = (StackedStages() if records_graph
                               else BufferedStages(self.tableau.num_dense_stages, y0))
        # f(t1, y1) that nothing reads at a jump: the next step takes f afresh from the jump's
        # far side
        self.end_unused = self.tableau.end_derivative_unused
        direction = 1.0 if grid.forward else -1.0  # one group
        self.clock = _Clock(direction, y0.dtype, y0.device)
        self.step_field = _StepField(s.field, self.clock, s.field.shape[-1] if y0.dim() else 1)
        self.taus: list[float] = [direction * t for t in grid.times.tolist()]
        self.tau, self.tau_end = ((self.taus[0], self.taus[-1]) if s.start is None
                                  else (s.tau0.item(), s.tau_end.item()))
        self.boundaries = self._boundaries()
        bounds = s.boundaries
        self.after_jump = bounds is not None and bounds.any_jump and bool(bounds.contains_jump(
            torch.full((1,), self.tau, dtype=torch.float64, device=y0.device)).any())
        self.y, self.f0, self.dt = y0, s.f0, s.dt0.item()
        self.status = Status.SUCCESS if s.finite.item() else Status.NONFINITE
        self.fevals, self.steps, self.accepted, self.rejected = s.setup_fevals, 0, 0, 0
        self.nonfinite_streak = 0  # steps in a row that were not finite
        self.next_out = 1 if s.start is None else int(s.start.next_out.item())
        width = y0.numel()
        self.rows: list[torch.Tensor] = (
            [y0.reshape(1, -1)] if s.start is None else
            [torch.full((self.next_out, width), math.nan, dtype=y0.dtype, device=y0.device)])
        self.next_boundary = 0
        self.event_tau = math.nan
        self.event_y = None if s.watcher is None else torch.full_like(y0, math.nan)
        self.event_signs = None if s.watcher is None else torch.zeros_like(s.watcher.previous)
        self.dense_steps: list[_Step] = []

    def _boundaries(self) -> list[tuple[float, bool]]:
        """(tau, is_jump) strictly inside (tau, tau_end), sorted; a jump at tau_end still
        matters (the last step then takes f from the near side)."""
        if self.s.boundaries is None:
            return []
        marks: dict[float, bool] = {}
        pairs = zip(self.s.boundaries.taus[0].tolist(), self.s.boundaries.jumps[0].tolist())
        for tau, jump in pairs:
            if self.tau < tau < self.tau_end or (jump and tau == self.tau_end):
                marks[tau] = marks.get(tau, False) or jump
        return sorted(marks.items())

    def run(self) -> LoopResult:
        while self.tau < self.tau_end and self.status is Status.SUCCESS:
            if self.steps >= self.s.max_steps:
                self.status = Status.MAX_STEPS
                break
            self._attempt_step()
        return self._result()

    def _result(self) -> LoopResult:
        y0 = self.s.y0
        t = self.clock.direction * self.tau
        where = (f"at t={t:.17g} with step size {self.dt:.3g} after {self.steps} steps "
                 f"({self.accepted} accepted, {self.rejected} rejected)")
        if self.steps == 0 and self.status is Status.NONFINITE:
            where = f"at the start (t={t:.17g}): f(t0, y0) is not finite"
        field = self.step_field
        counts = torch.tensor([self.fevals, self.steps, self.accepted, self.rejected,
                               field.jacobians, field.factorizations, field.switches])
        has_event = self.s.watcher is not None
        return LoopResult(
            ys=self._outputs().view(len(self.taus), *y0.shape), counts=counts,
            statuses=(self.status,), where=where, y_end=self.y,
            event_tau=(torch.tensor([self.event_tau], dtype=torch.float64, device=y0.device)
                       if has_event else None),
            event_y=self.event_y, event_signs=self.event_signs,
            dense=self._dense_steps() if self.s.dense else None)

    def _attempt_step(self) -> None:
        tau1, dt, boundary = self._clip(self.dt)
        control = self.s.control
        if control.observes_steps:
            control.before_step(self.clock.time(self.tau), dt, self.y)
        self.stages.begin(self.y, dt, self.f0)
        self.step_field.set(self.tau, dt, tau1 if boundary is not None and boundary[1]
                            else math.inf, self.after_jump)
        y1, fevals = self.s.solver.attempt(self.step_field, self.stages, self.coef)
        self.fevals += fevals
        self.steps += 1
        ratio = control.error_ratio(self.stages, self.y, y1, dt)
        finite = math.isfinite(ratio)
        self.nonfinite_streak = 0 if finite else self.nonfinite_streak + 1
        accept, self.dt = control.decide(ratio, dt, self.dt)
        if accept and finite:
            self._accept(_Step(self.tau, dt, self.y, y1), tau1, boundary)
            return
        self.rejected += 1
        if self.nonfinite_streak > control.nonfinite_retries:
            self.status, self.dt = self.step_field.failure_status(), dt
        elif self.dt <= TINY * abs(self.tau):
            self.status = Status.DT_UNDERFLOW if finite else self.step_field.failure_status()

    def _clip(self, dt: float) -> tuple[float, float, tuple[float, bool] | None]:
        """Shorten the step to land on the next boundary or the end: (tau1, dt, boundary).

        A step that would stop short of the limit by a sliver (round-off in accumulated time,
        e.g. ten steps of 0.1) lands on it instead.
        """
        limit, boundary = self.tau_end, None
        if self.next_boundary < len(self.boundaries):
            boundary = self.boundaries[self.next_boundary]
            limit = boundary[0]
        if self.tau + dt * (1.0 + SLIVER) >= limit:
            return limit, limit - self.tau, boundary
        return self.tau + dt, dt, None

    def _accept(self, step: _Step, tau1: float, boundary: tuple[float, bool] | None) -> None:
        s = self.s
        on_jump = boundary is not None and boundary[1]
        if self.tableau.fsal:
            f1 = self.stages.last()
        else:
            if (on_jump and self.end_unused) or self._read_by_nothing(tau1):
                f1 = torch.zeros_like(step.y1)  # a place holder, never read
            else:  # f(t1, y1), from the near side of a jump
                f1 = s.field(self.clock.beside(tau1, -1.0) if on_jump
                             else self.clock.time(tau1), step.y1)
                self.fevals += 1
            self.stages.append(f1)
        self.accepted += 1
        if s.recorder is not None:
            s.recorder.record(None, torch.full((1,), tau1, dtype=torch.float64,
                                               device=step.y1.device), step.y1)
        tau_stop = tau1
        if s.watcher is not None:
            tau_stop = self._locate_event(step, tau1)
        self._emit_outputs(step, tau1, tau_stop)
        if s.dense:
            step.stages = self._dense_stages(step).clone()
            self.dense_steps.append(step)
        if boundary is not None:
            self.next_boundary += 1
            if on_jump and tau1 < self.tau_end:  # a jump: f(t1, y1) from its far side
                f1 = s.field(self.clock.beside(tau1, 1.0), step.y1)
                self.fevals += 1
        self.after_jump = on_jump
        self.tau, self.y, self.f0 = tau1, step.y1, self.stages.hand_over(f1)

    def _read_by_nothing(self, tau1: float) -> bool:
        """Whether f(t1, y1) of an accepted step that is not FSAL goes unread: the solve ends
        there, and no output inside the step, event or dense output needs the step's
        interpolant (the ODE-RNN's one-step solves save one call of f in five)."""
        s, taus = self.s, self.taus
        return (tau1 >= self.tau_end and not s.dense and s.watcher is None
                and (self.next_out >= len(taus) or taus[self.next_out] >= tau1))

    def _dense_stages(self, step: _Step) -> torch.Tensor:
        """The step's dense stages, evaluating the interpolant's extra stages on first use."""
        if step.stages is None:
            if self.tableau.c_extra:
                times = [step.tau + c * step.dt for c in self.tableau.c_extra]
                extra_stages(self.s.field, self.clock.times(times), self.stages, self.coef)
                self.fevals += len(times)
            step.stages = self.stages.matrix()
        return step.stages

    def _interpolate(self, step: _Step, thetas: list[float]) -> torch.Tensor:
        """[len(thetas), N] flat states inside the step."""
        theta = torch.tensor(thetas, dtype=torch.float64)
        return interpolate_shared(step.y.reshape(-1), step.dt, self._dense_stages(step),
                                  self.coef.dense, theta)

    def _emit_outputs(self, step: _Step, tau1: float, tau_stop: float) -> None:
        taus, start = self.taus, self.next_out
        while self.next_out < len(taus) and taus[self.next_out] <= tau_stop:
            self.next_out += 1
        if self.next_out == start:
            return
        passed = taus[start:self.next_out]
        at_end = passed[-1] == tau1  # the step's end is exact: no interpolation
        inside = passed[:-1] if at_end else passed
        if inside:
            self.rows.append(self._interpolate(step, [(t - step.tau) / step.dt for t in inside]))
        if at_end:
            self.rows.append(step.y1.reshape(1, -1))

    def _locate_event(self, step: _Step, tau1: float) -> float:
        """Bisect for the first crossing inside the step; returns where outputs stop.

        The bisection records no graph; the state at the event does (when the steps do), so
        `tidal.events.differentiable_event` can attach the event time's gradient."""
        watcher, clock = self.s.watcher, self.clock
        assert watcher is not None
        g1 = watcher.values(clock.time(tau1), step.y1)
        crossing = watcher.crossings(g1)
        if not bool(crossing.any()):
            watcher.advance(g1)
            return tau1
        low, high = 0.0, 1.0
        halvings = bisection_steps(abs(step.dt), watcher.event.time_tol(tau1))
        if halvings:
            self._dense_stages(step)  # with the graph, if any: outputs and the event use them
        with torch.no_grad():
            for _ in range(halvings):
                mid = 0.5 * (low + high)
                y_mid = self._interpolate(step, [mid])[0].view_as(step.y1)
                g_mid = watcher.values(clock.time(step.tau + mid * step.dt), y_mid)
                crossed = watcher.margin(g_mid, crossing).item() <= 0
                low, high = (low, mid) if crossed else (mid, high)
        self.event_tau = step.tau + high * step.dt if high < 1.0 else tau1
        self.event_y = (step.y1 if high == 1.0
                        else self._interpolate(step, [high])[0].view_as(step.y1))
        self.event_signs = torch.sign(watcher.previous) * crossing
        self.status = Status.EVENT
        return self.event_tau

    def _outputs(self) -> torch.Tensor:
        missing = len(self.taus) - self.next_out
        if missing:
            y0 = self.s.y0
            self.rows.append(torch.full((missing, y0.numel()), math.nan, dtype=y0.dtype,
                                        device=y0.device))
        return torch.cat(self.rows) if len(self.rows) > 1 else self.rows[0]

    def _dense_steps(self) -> DenseSteps:
        """The accepted steps as group tensors (one group)."""
        y0, steps = self.s.y0, self.dense_steps
        width, rows = y0.numel(), self.tableau.num_dense_stages

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64, device=y0.device).view(-1, 1)

        if not steps:
            return DenseSteps(column([]), column([]), column([]).bool(),
                              y0.new_empty(0, 1, width), y0.new_empty(0, rows, 1, width))
        return DenseSteps(
            starts=column([s.tau for s in steps]), sizes=column([s.dt for s in steps]),
            accepted=torch.ones(len(steps), 1, dtype=torch.bool, device=y0.device),
            ys=torch.stack([s.y.reshape(1, -1) for s in steps]),
            stages=torch.stack([s.stages.view(-1, 1, width) for s in steps if s.stages
                                is not None]))
