"""The solve loop on a shared time grid: one step size for the whole state.

Time is a Python float (float64) in forward direction tau = direction * t; the state keeps the
user's shape. Per step: the stages, one error norm (the only host synchronisation), the
controller's decision, and, for accepted steps, outputs by dense interpolation, events and
the hand-over of f(t1, y1) to the next step. Nothing else happens here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import Status
from tidal._vector_field import SharedField
from tidal.events import EventWatcher, bisection_steps
from tidal.interpolation import interpolate_shared
from tidal.solution import Stats
from tidal.solvers.base import FixedStepMethod, Solver, StepField, step_exponent
from tidal.solvers.explicit_rk import (
    BufferedStages,
    StackedStages,
    extra_stages,
    rk_coefficients,
    rk_stages,
)

EPS = torch.finfo(torch.float64).eps
SLIVER = 1e-10  # relative length of a leftover step not worth taking


@dataclass
class SharedProblem:
    """Everything the loop needs, validated and converted by `tidal.solve`."""

    field: SharedField
    solver: Solver
    controller: Any  # PIDController or ConstantStepSize
    y0: torch.Tensor  # the user's shape
    f0: torch.Tensor  # f(t0, y0) in forward time
    taus: list[float]  # output times in forward time, increasing; taus[0] is the start
    tau_end: float  # where the solve ends (taus[-1], or inf when only an event stops it)
    boundaries: list[tuple[float, bool]]  # (tau, is_jump) strictly inside the span, increasing
    dt0: float  # first step size (> 0)
    setup_fevals: int  # calls of f made while setting up (f0, and the initial-step trial)
    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    norm: Any  # None (RMS) or a callable on the scaled error
    watcher: EventWatcher | None
    max_steps: int
    dense: bool
    on_accept: Any = None  # optional callback (tau1, y1) after each accepted step


@dataclass
class LoopResult:
    ys: torch.Tensor  # [T, N], flat states
    stats: Stats
    status: Status
    where: str
    event_tau: float = math.nan
    event_y: torch.Tensor | None = None
    dense_steps: list = field(default_factory=list)
    event_signs: torch.Tensor | None = None  # [1, K]: sign of g before the event where it crossed


@dataclass
class _Step:
    """An accepted step; `stages` [S_dense, N] is filled on first use (extra stages too)."""

    tau: float
    dt: float
    y: torch.Tensor
    y1: torch.Tensor
    stages: torch.Tensor | None = None


class SharedLoop:
    def __init__(self, p: SharedProblem):
        self.p = p
        self.tableau = p.solver.tableau
        self.coef = rk_coefficients(self.tableau, p.y0.dtype, p.y0.device)
        self.adaptive = p.controller.adaptive and p.solver.adaptive
        self.exponent = step_exponent(p.solver)
        self.records_graph = torch.is_grad_enabled() and (p.y0.requires_grad
                                                          or p.f0.requires_grad)
        self.stages = (StackedStages() if self.records_graph
                       else BufferedStages(self.tableau.num_dense_stages, p.y0))
        self.abs_y = p.y0.detach().abs()
        self.tau, self.y, self.f0, self.dt = p.taus[0], p.y0, p.f0, p.dt0
        self.history = (1.0, 1.0)
        self.stats = Stats(num_fevals=p.setup_fevals)
        self.rows: list[torch.Tensor] = [p.y0.reshape(1, -1)]
        self.next_out = 1
        self.next_boundary = 0
        self.status = Status.SUCCESS
        self.event_tau, self.event_y, self.event_signs = math.nan, None, None
        self.dense_steps: list[_Step] = []
        self.method = p.solver if isinstance(p.solver, FixedStepMethod) else None
        if self.method is not None:
            last_dim = p.y0.shape[-1] if p.y0.dim() else 1
            self.step_field = StepField(self._field_in_step, last_dim)
            self.step_span = (0.0, 0.0, math.inf)  # (tau0, dt, tau1 if a jump, else inf)

    def run(self) -> LoopResult:
        p = self.p
        while self.tau < p.tau_end and self.status is Status.SUCCESS:
            if self.stats.num_steps >= p.max_steps:
                self.status = Status.MAX_STEPS
                break
            self._attempt_step()
        where = (f"at t={p.field.direction * self.tau:.17g} with step size {self.dt:.3g} after "
                 f"{self.stats.num_steps} steps ({self.stats.num_accepted} accepted, "
                 f"{self.stats.num_rejected} rejected)")
        return LoopResult(self._outputs(), self.stats, self.status, where, self.event_tau,
                          self.event_y, self.dense_steps, self.event_signs)

    def _attempt_step(self) -> None:
        tau1, dt, boundary = self._clip(self.dt)
        self.stages.begin(self.y, dt, self.f0)
        ends_on_jump = boundary is not None and boundary[1]
        if self.method is not None:
            y1 = self._method_step(dt, tau1 if ends_on_jump else math.inf)
        else:
            taus = [self.tau + ci * dt for ci in self.tableau.c]
            if ends_on_jump:  # f from the near side
                near = math.nextafter(tau1, -math.inf)
                taus = [near if ci == 1.0 else tau for ci, tau in zip(self.tableau.c, taus)]
            times = self.p.field.user_times(taus)
            y1 = rk_stages(self.p.field, times, self.stages, self.tableau, self.coef)
            self.stats.num_fevals += self.tableau.num_stages - 1
        self.stats.num_steps += 1
        if self.adaptive:
            ratio = self._error_ratio(y1, dt)
            accept, factor, self.history = self.p.controller.adapt(ratio, self.history,
                                                                   self.exponent)
            accept = accept or dt <= self.p.controller.dt_min
            self.dt = min(max(dt * factor, self.p.controller.dt_min), self.p.controller.dt_max)
        else:
            ratio = 0.0 if bool(torch.isfinite(y1).all()) else math.inf
            accept = ratio == 0.0
        if accept:
            self._accept(_Step(self.tau, dt, self.y, y1), tau1, boundary)
        else:
            self.stats.num_rejected += 1
            self._check_underflow(ratio)

    def _method_step(self, dt: float, jump: float) -> torch.Tensor:
        """A `FixedStepMethod`'s step; its slope becomes the stage after f(t0, y0)."""
        assert self.method is not None
        self.step_span = (self.tau, dt, jump)
        out = self.method.step(self.step_field, self.y, self.f0, dt)
        self.stages.append(out.slope)
        self.stats.num_fevals += out.num_fevals
        return out.y1

    def _field_in_step(self, c: float, y: torch.Tensor) -> torch.Tensor:
        """f at tau0 + c dt of the current step (from the near side of a jump at its end)."""
        tau0, dt, jump = self.step_span
        tau = math.nextafter(jump, -math.inf) if c == 1.0 and jump < math.inf else tau0 + c * dt
        return self.p.field(tau, y)

    def _clip(self, dt: float) -> tuple[float, float, tuple[float, bool] | None]:
        """Shorten the step to land on the next boundary or the end: (tau1, dt, boundary).

        A step that would stop short of the limit by a sliver (round-off in accumulated time,
        e.g. ten steps of 0.1) lands on it instead.
        """
        limit, boundary = self.p.tau_end, None
        if self.next_boundary < len(self.p.boundaries):
            boundary = self.p.boundaries[self.next_boundary]
            limit = boundary[0]
        if self.tau + dt * (1.0 + SLIVER) >= limit:
            return limit, limit - self.tau, boundary
        return self.tau + dt, dt, None

    def _error_ratio(self, y1: torch.Tensor, dt: float) -> float:
        """Scaled RMS of each error estimate, combined by the solver; one host sync."""
        if self.records_graph:
            with torch.no_grad():
                return self._untracked_error_ratio(y1, dt)
        return self._untracked_error_ratio(y1, dt)

    def _untracked_error_ratio(self, y1: torch.Tensor, dt: float) -> float:
        errors = self.coef.b_error @ self.stages.matrix()  # [R, N]
        self.abs_y1 = y1.abs()
        scale = torch.maximum(self.abs_y, self.abs_y1).mul_(self.p.rtol).add_(self.p.atol)
        scaled = errors.div_(scale.view(-1))
        if self.p.norm is not None:
            norms = [float(self.p.norm(row)) for row in scaled.mul_(abs(dt))]
        else:
            size = abs(dt) / math.sqrt(scaled.shape[-1])
            norms = [size * n for n in torch.linalg.vector_norm(scaled, dim=-1).tolist()]
        return self.p.solver.combine_error_norms(norms)

    def _check_underflow(self, ratio: float) -> None:
        if not math.isfinite(ratio) and not self.adaptive:
            self.status = Status.NONFINITE
        elif 0.1 * self.dt <= EPS * abs(self.tau) or self.dt == 0.0:
            self.status = Status.NONFINITE if not math.isfinite(ratio) else Status.DT_UNDERFLOW

    def _accept(self, step: _Step, tau1: float, boundary: tuple[float, bool] | None) -> None:
        p = self.p
        if self.tableau.fsal:
            f1 = self.stages.last()
        else:
            f1 = p.field(tau1, step.y1)
            self.stats.num_fevals += 1
            self.stages.append(f1)
        self.stats.num_accepted += 1
        if p.on_accept is not None:
            p.on_accept(tau1, step.y1)
        tau_stop = tau1
        if p.watcher is not None:
            tau_stop = self._locate_event(step, tau1)
        self._emit_outputs(step, tau1, tau_stop)
        if p.dense:
            step.stages = self._dense_stages(step).clone()
            self.dense_steps.append(step)
        if boundary is not None:
            self.next_boundary += 1
            if boundary[1] and tau1 < p.tau_end:  # a jump: f(t1, y1) from its far side
                f1 = p.field(math.nextafter(tau1, math.inf), step.y1)
                self.stats.num_fevals += 1
        self.tau, self.y, self.f0 = tau1, step.y1, self.stages.hand_over(f1)
        if self.adaptive:
            self.abs_y = self.abs_y1

    def _dense_stages(self, step: _Step) -> torch.Tensor:
        """The step's dense stages, evaluating the interpolant's extra stages on first use."""
        if step.stages is None:
            times = [step.tau + c * step.dt for c in self.tableau.c_extra]
            extra_stages(self.p.field, times, self.stages, self.coef)
            self.stats.num_fevals += len(times)
            step.stages = self.stages.matrix()
        return step.stages

    def _interpolate(self, step: _Step, thetas: list[float]) -> torch.Tensor:
        """[len(thetas), N] flat states inside the step."""
        theta = torch.tensor(thetas, dtype=torch.float64)
        return interpolate_shared(step.y.reshape(-1), step.dt, self._dense_stages(step),
                                  self.coef.dense, theta)

    def _emit_outputs(self, step: _Step, tau1: float, tau_stop: float) -> None:
        taus, start = self.p.taus, self.next_out
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
        watcher, field_ = self.p.watcher, self.p.field
        assert watcher is not None
        g1 = watcher.values(field_.user_time(tau1), step.y1)
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
                g_mid = watcher.values(field_.user_time(step.tau + mid * step.dt), y_mid)
                crossed = watcher.margin(g_mid, crossing).item() <= 0
                low, high = (low, mid) if crossed else (mid, high)
        self.event_tau = step.tau + high * step.dt if high < 1.0 else tau1
        self.event_y = step.y1 if high == 1.0 else self._interpolate(step, [high])[0]
        self.event_signs = torch.sign(watcher.previous) * crossing
        self.status = Status.EVENT
        return self.event_tau

    def _outputs(self) -> torch.Tensor:
        missing = len(self.p.taus) - self.next_out
        if missing:
            nan = torch.full((missing, self.p.y0.numel()), math.nan, dtype=self.p.y0.dtype,
                             device=self.p.y0.device)
            self.rows.append(nan)
        return torch.cat(self.rows) if len(self.rows) > 1 else self.rows[0]
