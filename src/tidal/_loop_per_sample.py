"""The solve loop on per-sample time grids: every sample has its own step size.

The same sequence as the shared loop (`tidal._loop`), but time, step size, accept/reject,
status and statistics are tensors [B], and every decision is a mask applied with
`torch.where`, never a branch over samples: a sample's trajectory does not depend on the rest
of its batch. One host synchronisation per step reads all the flags the loop needs (any sample
still running, the most outputs any sample passed, any event, any jump).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import Status
from tidal._loop import SLIVER
from tidal._vector_field import PerSampleField
from tidal.controllers.norms import error_scale, rms
from tidal.events import EventWatcher, bisection_steps
from tidal.interpolation import interpolate_per_sample
from tidal.solution import Stats
from tidal.solvers.base import FixedStepMethod, Solver, StepField, step_exponent
from tidal.solvers.explicit_rk import (
    PerSampleBufferedStages,
    PerSampleStages,
    extra_stages,
    rk_coefficients,
    rk_stages,
)

EPS = torch.finfo(torch.float64).eps


@dataclass
class PerSampleProblem:
    field: PerSampleField
    solver: Solver
    controller: Any
    y0: torch.Tensor  # [B, D]
    f0: torch.Tensor  # [B, D]
    taus: torch.Tensor  # [T, B] float64, forward time, increasing per sample
    boundaries: tuple[torch.Tensor, torch.Tensor] | None  # ([B, J] taus, [B, J] is-jump)
    dt0: torch.Tensor  # [B] float64
    setup_fevals: int  # calls of f made while setting up (f0, and the initial-step trial)
    rtol: Any
    atol: Any
    norm: Any
    watcher: EventWatcher | None
    max_steps: int
    dense: bool
    on_accept: Any = None  # optional callback (accept [B], tau1 [B], y1 [B, D]) after each step
    start: tuple[torch.Tensor, torch.Tensor] | None = None  # resume at (tau [B], next output
    #   index [B]) from y0, f0, without writing y0 as output row 0 (checkpoint replays)
    tau_end: torch.Tensor | None = None  # [B] where to stop, if not at taus[-1]


@dataclass
class PerSampleResult:
    ys: torch.Tensor  # [T, B, D]
    stats: Stats
    status: torch.Tensor  # [B] int64 Status codes
    where: str
    event_tau: torch.Tensor  # [B]
    event_y: torch.Tensor  # [B, D]
    dense_steps: list = field(default_factory=list)
    event_signs: torch.Tensor | None = None  # [B, K]: sign of g before the event where crossed
    y: torch.Tensor | None = None  # [B, D] the state where each sample stopped


@dataclass
class _Step:
    """One attempted step of the whole batch; `accept` says for which samples it counts."""

    tau: torch.Tensor  # [B]
    h: torch.Tensor  # [B] float64 (0 for samples that did not step)
    h_col: torch.Tensor  # [B, 1] h in the state's dtype
    tau1: torch.Tensor
    y: torch.Tensor
    y1: torch.Tensor
    accept: torch.Tensor
    stages: torch.Tensor | None = None  # [S_dense, B, D], filled on first use
    dense_users: torch.Tensor | None = None  # samples counted for the extra stages


class PerSampleLoop:
    def __init__(self, p: PerSampleProblem):
        self.p = p
        self.tableau = p.solver.tableau
        self.coef = rk_coefficients(self.tableau, p.y0.dtype, p.y0.device)
        self.adaptive = p.controller.adaptive and p.solver.adaptive
        self.exponent = step_exponent(p.solver)
        records_graph = torch.is_grad_enabled() and (p.y0.requires_grad or p.f0.requires_grad)
        self.stages = (PerSampleStages() if records_graph
                       else PerSampleBufferedStages(self.tableau.num_dense_stages, p.y0))
        batch, device = p.y0.shape[0], p.y0.device
        self.c = torch.tensor(self.tableau.c, dtype=torch.float64, device=device).unsqueeze(-1)
        self.c_is_one = self.c == 1.0  # [S, 1]
        self.tau = (p.taus[0] if p.start is None else p.start[0]).clone()
        self.tau_end = p.taus[-1] if p.tau_end is None else p.tau_end
        self.y, self.f0, self.dt = p.y0, p.f0, p.dt0
        self.running = self.tau < self.tau_end
        self.nowhere = torch.zeros_like(self.running)  # "no sample" mask
        self.status = torch.zeros(batch, dtype=torch.long, device=device)
        ones = torch.ones(batch, dtype=torch.long, device=device)
        self.stats = Stats(p.setup_fevals * ones, 0 * ones, 0 * ones, 0 * ones)
        self.history = (torch.ones(batch, dtype=torch.float64, device=device),) * 2
        self.next_out = ones.clone() if p.start is None else p.start[1].clone()
        self.samples = torch.arange(batch, device=device)
        self.chunks = [(self.samples, p.y0)] if p.start is None else []
        self.event_tau = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
        self.event_y = torch.full_like(p.y0, math.nan)
        self.event_signs = (None if p.watcher is None
                            else torch.zeros_like(p.watcher.previous))
        self.dense_steps: list[_Step] = []
        self.method = p.solver if isinstance(p.solver, FixedStepMethod) else None
        if self.method is not None:
            self.step_field = StepField(self._field_in_step, p.field.shape[-1])

    def run(self) -> PerSampleResult:
        iterations, any_running = 0, bool(self.running.any())
        while any_running:
            if iterations >= self.p.max_steps:
                self.status = torch.where(self.running, int(Status.MAX_STEPS), self.status)
                break
            any_running = self._iterate()
            iterations += 1
        failed = self.status >= int(Status.MAX_STEPS)
        where = "at the start" if not bool(failed.any()) else self._where(int(failed.nonzero()[0]))
        return PerSampleResult(self._outputs(), self.stats, self.status, where, self.event_tau,
                               self.event_y, self.dense_steps, self.event_signs, self.y)

    def _where(self, b: int) -> str:
        t = float(self.tau[b] * self.p.field.direction[b])
        return (f"for sample {b} at t={t:.17g} with step size {float(self.dt[b]):.3g} after "
                f"{int(self.stats.num_steps[b])} steps ({int(self.stats.num_accepted[b])} "
                f"accepted, {int(self.stats.num_rejected[b])} rejected)")

    def _iterate(self) -> bool:
        p, running = self.p, self.running
        limit, jump_at_limit = self._limit()
        landing = self.tau + self.dt * (1.0 + SLIVER) >= limit
        tau1 = torch.where(landing, limit, self.tau + self.dt)  # only used where accepted
        h = (tau1 - self.tau) * running
        h_col = h.to(self.y.dtype).unsqueeze(-1)
        self.stages.begin(self.y, h_col, self.f0)
        if self.method is not None:
            y1 = self._method_step(h, h_col, tau1, landing & jump_at_limit)
        else:
            taus = self.tau + self.c * h  # [S, B]
            if p.boundaries is not None:  # a step ending on a jump takes f from the near side
                near = torch.nextafter(tau1, torch.full_like(tau1, -math.inf))
                taus = torch.where(self.c_is_one & (landing & jump_at_limit), near, taus)
            times = p.field.user_time(taus).unbind(0)
            y1 = rk_stages(p.field, times, self.stages, self.tableau, self.coef)
            self.stats.num_fevals += running * (self.tableau.num_stages - 1)
        self.stats.num_steps += running
        step = _Step(self.tau, h, h_col, tau1, self.y, y1, running)
        accept, dt_next, ratio = self._decide(step)
        step.accept = accept = accept & running
        if p.on_accept is not None:
            p.on_accept(accept, tau1, y1)
        crossed = self._crossed(step)
        next_out = torch.where(accept, (p.taus <= tau1).sum(0), self.next_out)
        inside = accept & ((p.taus < tau1).sum(0) > self.next_out)  # outputs with theta < 1
        jumped = accept & landing & jump_at_limit & (tau1 < self.tau_end)
        running_next = self._update_status(step, dt_next, ratio, crossed)
        flags = torch.stack([(next_out - self.next_out).max(), accept.any(), inside.any(),
                             crossed.any(), jumped.any(), running_next.any()]).tolist()
        most_outputs, any_accepted, any_inside, any_crossed, any_jumped, any_running = flags
        f1 = self._end_derivative(step) if any_accepted else self.f0
        if any_crossed:
            stops = self._locate_events(step, crossed)
            next_out = torch.where(crossed, (p.taus <= stops).sum(0), next_out)
            most_outputs = int((next_out - self.next_out).max())
        if p.watcher is not None:
            p.watcher.advance(self.g1, accept)
        if most_outputs > 0:
            self._emit_outputs(step, next_out, most_outputs, inside if any_inside else None)
        if p.dense and any_accepted:
            self._dense_stages(step, accept)
            self.dense_steps.append(step)
        if any_jumped:
            after = torch.nextafter(tau1, torch.full_like(tau1, math.inf))
            fresh = p.field(p.field.user_time(after), y1)
            f1 = torch.where(jumped.unsqueeze(-1), fresh, f1)
            self.stats.num_fevals += jumped
        column = accept.unsqueeze(-1)
        self.y, self.f0 = torch.where(column, y1, self.y), torch.where(column, f1, self.f0)
        self.tau, self.next_out = torch.where(accept, tau1, self.tau), next_out
        self.dt = dt_next
        self.stats.num_accepted += accept
        self.stats.num_rejected += running & ~accept
        self.running = running_next
        return bool(any_running)

    def _method_step(self, h: torch.Tensor, h_col: torch.Tensor, tau1: torch.Tensor,
                     on_jump: torch.Tensor) -> torch.Tensor:
        """A `FixedStepMethod`'s step for the batch (samples that do not step have h = 0);
        its slope becomes the stage after f(t0, y0)."""
        assert self.method is not None
        near = None
        if self.p.boundaries is not None:  # a step ending on a jump: f(t1) from the near side
            near = torch.where(on_jump, torch.nextafter(tau1, torch.full_like(tau1, -math.inf)),
                               self.tau + h)
        self.step_span = (self.tau, h, near)
        out = self.method.step(self.step_field, self.y, self.f0, h_col)
        self.stages.append(out.slope)
        self.stats.num_fevals += self.running * out.num_fevals
        return out.y1

    def _field_in_step(self, c: float, y: torch.Tensor) -> torch.Tensor:
        """f at tau0 + c h of the current step, per sample."""
        tau0, h, near = self.step_span
        tau = near if c == 1.0 and near is not None else tau0 + c * h
        return self.p.field(self.p.field.user_time(tau), y)

    def _limit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: where the step must stop (next boundary or the end), and is it a jump."""
        if self.p.boundaries is None:
            return self.tau_end, self.nowhere
        bounds, jumps = self.p.boundaries
        index = torch.searchsorted(bounds, self.tau.unsqueeze(-1), right=True)
        inside = index < bounds.shape[1]
        index = index.clamp(max=bounds.shape[1] - 1)
        bound = torch.where(inside, bounds.gather(1, index), math.inf).squeeze(-1)
        jump = (inside & jumps.gather(1, index)).squeeze(-1)
        before_end = bound <= self.tau_end
        return torch.where(before_end, bound, self.tau_end), jump & before_end

    def _decide(self, step: _Step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(accept, next step size, error ratio) per sample. The history of samples that no
        longer run changes too, which is harmless: they take no more steps."""
        if not self.adaptive:
            finite = torch.isfinite(step.y1).all(-1)
            return finite, self.dt, torch.where(finite, 0.0, math.inf).double()
        ratio = self._error_ratio(step)
        controller = self.p.controller
        accept, factor, self.history = controller.adapt(ratio, self.history, self.exponent)
        dt_next = (step.h * factor).clamp(controller.dt_min, controller.dt_max)
        return accept | (step.h <= controller.dt_min), dt_next, ratio

    @torch.no_grad()
    def _error_ratio(self, step: _Step) -> torch.Tensor:
        errors = (self.coef.b_error @ self.stages.matrix()).view(-1, *step.y1.shape)  # [R, B, D]
        errors = errors * step.h_col
        scaled = errors / error_scale(self.y, step.y1, self.p.rtol, self.p.atol)
        if self.p.norm is None:
            norms = rms(scaled).double()
        else:
            norms = torch.stack([self.p.norm(row).reshape(-1).double() for row in scaled])
        return self.p.solver.combine_error_norms(norms.unbind(0))

    def _end_derivative(self, step: _Step) -> torch.Tensor:
        if self.tableau.fsal:
            return self.stages.last()
        f1 = self.p.field(self.p.field.user_time(step.tau1), step.y1)
        self.stats.num_fevals += step.accept
        self.stages.append(f1)
        return f1

    def _update_status(self, step: _Step, dt_next: torch.Tensor, ratio: torch.Tensor,
                       crossed: torch.Tensor) -> torch.Tensor:
        """Record failures and events; the samples still running after this step."""
        rejected = self.running & ~step.accept
        finite = torch.isfinite(ratio)
        if self.adaptive:
            tiny = (0.1 * dt_next <= EPS * step.tau.abs()) | (dt_next == 0)
            failed = rejected & tiny
        else:
            failed = rejected
        code = torch.where(finite, int(Status.DT_UNDERFLOW), int(Status.NONFINITE))
        self.status = torch.where(failed, code, self.status)
        self.status = torch.where(crossed, int(Status.EVENT), self.status)
        finished = step.accept & (step.tau1 >= self.tau_end)
        return self.running & ~finished & ~failed & ~crossed

    def _crossed(self, step: _Step) -> torch.Tensor:
        """Samples whose accepted step crossed the event; keeps which components crossed."""
        watcher = self.p.watcher
        if watcher is None:
            return self.nowhere
        g1 = watcher.values(self.p.field.user_time(step.tau1), step.y1.view(self.p.field.shape))
        self.crossing = watcher.crossings(g1) & step.accept.unsqueeze(-1)
        self.g1 = g1
        return self.crossing.any(-1)

    def _dense_stages(self, step: _Step, users: torch.Tensor) -> torch.Tensor:
        """The step's dense stages, evaluating the interpolant's extra stages on first use.

        The extra stages are evaluated for the whole batch but counted only for `users`, the
        samples that needed the interpolant (as a lone solve of that sample would).
        """
        if self.tableau.c_extra:
            new_users = users if step.dense_users is None else users & ~step.dense_users
            self.stats.num_fevals += new_users * len(self.tableau.c_extra)
            step.dense_users = users if step.dense_users is None else users | step.dense_users
        if step.stages is None:
            if self.tableau.c_extra:
                extra_c = torch.tensor(self.tableau.c_extra, dtype=torch.float64,
                                       device=step.h.device).unsqueeze(-1)
                times = self.p.field.user_time(step.tau + extra_c * step.h).unbind(0)
                extra_stages(self.p.field, times, self.stages, self.coef)
            step.stages = self.stages.matrix().view(-1, *step.y.shape)
            if self.p.dense and isinstance(self.stages, PerSampleBufferedStages):
                step.stages = step.stages.clone()
        return step.stages

    def _interpolate(self, step: _Step, theta: torch.Tensor, users: torch.Tensor
                     ) -> torch.Tensor:
        """theta [m, B] -> [m, B, D]; exact y1 where theta == 1."""
        values = interpolate_per_sample(step.y, step.h_col, self._dense_stages(step, users),
                                        self.coef.dense, theta)
        return torch.where((theta == 1.0).unsqueeze(-1), step.y1, values)

    def _theta(self, step: _Step, tau: torch.Tensor) -> torch.Tensor:
        safe_h = torch.where(step.h > 0, step.h, 1.0)
        return torch.where(step.h > 0, (tau - step.tau) / safe_h, 0.0)

    def _emit_outputs(self, step: _Step, next_out: torch.Tensor, count: int,
                      inside: torch.Tensor | None) -> None:
        """Write the outputs each sample passed in this step; `inside` marks samples with an
        output strictly inside the step (None: every output lies on a step's end)."""
        num_times, batch = self.p.taus.shape
        index = self.next_out + torch.arange(count, device=next_out.device).unsqueeze(-1)
        valid = index < next_out
        index = index.clamp(max=num_times - 1)
        if inside is None:
            values = step.y1.unsqueeze(0).expand(count, *step.y1.shape)
        else:
            # slots past a sample's last output interpolate at theta = 0, not at a far (or
            # infinite) time whose weights would turn their zero gradient into NaN
            times = torch.where(valid, self.p.taus.gather(0, index), step.tau)
            values = self._interpolate(step, self._theta(step, times), inside)
        flat = torch.where(valid, index * batch + self.samples, num_times * batch)
        self.chunks.append((flat.reshape(-1), values.reshape(-1, values.shape[-1])))

    def _locate_events(self, step: _Step, crossed: torch.Tensor) -> torch.Tensor:
        """Bisect each crossed sample's step for its event; returns where outputs stop.

        The bisection records no graph; the state at the event does (when the steps do), so
        `tidal.events.differentiable_event` can attach the event time's gradient."""
        watcher, field_ = self.p.watcher, self.p.field
        assert watcher is not None
        widest = float(torch.where(crossed, step.h, 0.0).max())
        latest = float(torch.where(crossed, step.tau1.abs(), 0.0).max())
        low, high = torch.zeros_like(step.h), torch.ones_like(step.h)
        self._dense_stages(step, crossed)  # with the graph, if any
        with torch.no_grad():
            for _ in range(bisection_steps(widest, watcher.event.time_tol(latest))):
                mid = 0.5 * (low + high)
                y_mid = self._interpolate(step, mid.unsqueeze(0), crossed)[0]
                g_mid = watcher.values(field_.user_time(step.tau + mid * step.h),
                                       y_mid.view(field_.shape))
                before = watcher.margin(g_mid, self.crossing) > 0
                low, high = torch.where(before, mid, low), torch.where(before, high, mid)
        event_tau = torch.where(high < 1.0, step.tau + high * step.h, step.tau1)
        event_y = self._interpolate(step, high.unsqueeze(0), crossed)[0]
        self.event_tau = torch.where(crossed, event_tau, self.event_tau)
        self.event_y = torch.where(crossed.unsqueeze(-1), event_y, self.event_y)
        signs = torch.sign(watcher.previous) * self.crossing
        self.event_signs = torch.where(crossed.unsqueeze(-1), signs, self.event_signs)
        return torch.where(crossed, event_tau, step.tau1)

    def _outputs(self) -> torch.Tensor:
        num_times, batch = self.p.taus.shape
        width = self.p.y0.shape[1]
        if not self.chunks:
            return torch.full((num_times, batch, width), math.nan, dtype=self.p.y0.dtype,
                              device=self.p.y0.device)
        index = torch.cat([c[0] for c in self.chunks])
        values = torch.cat([c[1] for c in self.chunks])
        base = torch.full((num_times * batch + 1, width), math.nan, dtype=values.dtype,
                          device=values.device)
        return base.index_copy(0, index, values)[:-1].view(num_times, batch, width)
