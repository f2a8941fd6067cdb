"""The solve loop on per-sample time grids: every sample has its own step size.

The same sequence as the shared loop (`tidal._loop`), but time, step size, accept/reject,
status and statistics are tensors [B], and every decision is a mask applied with
`torch.where`, never a branch over samples: a sample's trajectory does not depend on the rest
of its batch. One host synchronisation per iteration reads all the flags the loop needs (any
sample still running, the most outputs any sample passed, any event, any jump). A sample whose
steps stay non-finite stops with `Status.NONFINITE` (see `tidal._loop`); the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tidal._constants import constant
from tidal._errors import Status, statuses_of
from tidal._loop import SLIVER, TINY
from tidal._loop_io import LoopResult, LoopSetup
from tidal._vector_field import Field
from tidal.events import bisection_steps
from tidal.interpolation import DenseSteps, interpolate_per_sample
from tidal.solvers.explicit_rk import (
    PerSampleBufferedStages,
    PerSampleStages,
    extra_stages,
)
from tidal.solvers.jacobian import Jacobian, StepJacobian

#: outputs inside steps wait to be interpolated together until their steps' stages hold this
#: many elements (64 MiB in float32)
PENDING_ELEMENTS = 1 << 24


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


class _StepField:
    """The `StepField` of the current step (see `tidal.solvers.base`), per sample."""

    def __init__(self, field: Field, user_time: Callable[[torch.Tensor], torch.Tensor],
                 last_dim: int, device: torch.device):
        self.f, self.last_dim, self.device = field, last_dim, device
        self.user_time = user_time
        self.nodes: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.tau0 = self.h = self.near = torch.zeros(0)
        self.on_jump: torch.Tensor | None = None
        self._jacobian: StepJacobian | None = None
        self.jacobian_tau = torch.zeros(0)  # [B] where each sample's last Jacobian was taken
        self.jacobians = self.factorizations = self.switches = torch.zeros(
            0, dtype=torch.long, device=device)
        self.state: dict[str, Any] = {}
        self.failure: torch.Tensor | int = int(Status.NONFINITE)

    def set(self, tau0: torch.Tensor, h: torch.Tensor, near: torch.Tensor,
            on_jump: torch.Tensor | None) -> None:
        """The step from tau0 [B] over h [B]; where `on_jump`, it ends on a jump and f at c = 1
        is taken at the user time `near` (just before the step's end, in the state's dtype)."""
        self.tau0, self.h, self.near, self.on_jump = tau0, h, near, on_jump

    def _nodes(self, c: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if c not in self.nodes:
            column = torch.tensor(c, dtype=torch.float64, device=self.device).unsqueeze(-1)
            self.nodes[c] = (column, column == 1.0)
        return self.nodes[c]

    def times(self, c: tuple[float, ...]) -> Sequence[torch.Tensor]:
        column, is_one = self._nodes(c)
        times = self.user_time(self.tau0 + column * self.h)  # [S, B]
        if self.on_jump is not None:
            times = torch.where(is_one & self.on_jump, self.near, times)
        return times.unbind(0)

    def at(self, c: float, y: torch.Tensor) -> torch.Tensor:
        t = self.user_time(self.tau0 + c * self.h)
        if c == 1.0 and self.on_jump is not None:
            t = torch.where(self.on_jump, self.near, t)
        return self.f(t, y)

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """Each sample is a group: y [B, D] as it is."""
        return y

    @property
    def jac_rows(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        return None if self.f.jac is None else self.f.jacobian

    def jacobian(self, y0: torch.Tensor) -> Jacobian:
        """df/dy [B, D, D] and df/dt [B, D] at each sample's step start. Computed for the
        whole batch when any sample moved, counted for the samples that step from a new
        point (as each sample's solo solve would count it)."""
        if self._jacobian is None:
            direction = self.f.sign  # the field's sign per sample [B, 1], None if all forward
            self._jacobian = StepJacobian(self.f, direction, self.jac_rows)
            self.jacobian_tau = torch.full_like(self.tau0, math.nan)
            self.jacobians = torch.zeros(len(self.tau0), dtype=torch.long, device=self.device)
        value, fresh = self._jacobian.at(self.user_time(self.tau0), y0, y0)
        if fresh:
            self.jacobians = self.jacobians + ((self.tau0 != self.jacobian_tau) & (self.h > 0))
            self.jacobian_tau = self.tau0
        return value

    def report(self, statuses: torch.Tensor) -> None:
        """Per sample, the Status its step failed with (if it did: read only when it ends)."""
        self.failure = statuses

    def count_switches(self, switched: torch.Tensor) -> None:
        switched = switched.long()
        self.switches = switched if not len(self.switches) else self.switches + switched

    def count_factorization(self) -> None:
        step = (self.h > 0).long()
        self.factorizations = step if not len(self.factorizations) else self.factorizations + step


class PerSampleLoop:
    def __init__(self, s: LoopSetup):
        self.s = s
        y0 = s.y0
        self.tableau = s.solver.tableau
        self.coef = s.solver.coefficients(y0.dtype, y0.device)
        records_graph = torch.is_grad_enabled() and (y0.requires_grad or s.f0.requires_grad)
        self.stages: PerSampleStages | PerSampleBufferedStages = (
            PerSampleStages() if records_graph
            else PerSampleBufferedStages(self.tableau.num_dense_stages, y0))
        batch, device = y0.shape[0], y0.device
        self.step_field = _StepField(s.field, self._user_time, s.field.shape[-1], device)
        self.tau, self.tau_end = s.tau0.clone(), s.tau_end
        self.y, self.f0, self.dt = y0, s.f0, s.dt0
        self.status = torch.where(s.finite, int(Status.SUCCESS), int(Status.NONFINITE))
        self.running = (self.tau < self.tau_end) & (self.status == int(Status.SUCCESS))
        self.nowhere = torch.zeros_like(self.running)  # "no sample" mask
        # some boundary is a jump (a checkpoint replay's recorded step ends usually have none)
        self.jumps = s.boundaries is not None and s.boundaries.any_jump
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        # calls of f: setup and extras here, attempt_fevals per step; steps are counted per
        # run of iterations in which the running set stays the same (see `_count_steps`)
        self.fevals = zeros + s.setup_fevals
        self.attempt_fevals: int | None = None
        self.iterations = self.counted = 0
        self.steps, self.accepted = zeros.clone(), zeros.clone()  # rejected: the difference
        self.streak_active = False  # some sample's nonfinite_streak is not 0
        self.nonfinite_streak = zeros.clone()  # steps in a row that were not finite
        self.next_out = (torch.ones(batch, dtype=torch.long, device=device) if s.start is None
                         else s.start.next_out.clone())
        self.taus_rows = s.grid.taus.T.contiguous()  # [B, T] for searchsorted
        self.slots = torch.arange(len(s.grid.taus), device=device).unsqueeze(-1)  # [T, 1]
        # emitted outputs: (rows [m, B], valid [m, B], values [m B, D]); y0 is row 0
        self.chunks: list[tuple[torch.Tensor, ...]] = [] if s.start is not None else [
            (self.slots[:1].expand(1, batch), self.running.new_ones(1, batch), y0)]
        self.event_tau = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
        self.event_y = torch.full_like(y0, math.nan)
        self.event_signs = (None if s.watcher is None
                            else torch.zeros_like(s.watcher.previous))
        self.crossing = self.g1 = torch.zeros(0)
        self.dense_steps: list[_Step] = []
        # outputs inside steps, interpolated together (see `_emit_outputs`): (rows [m, B],
        # valid [m, B], the step) and the elements of the stages they hold
        self.pending: list[tuple[torch.Tensor, torch.Tensor, _Step]] = []
        self.pending_elements = 0

    def _user_time(self, tau: torch.Tensor) -> torch.Tensor:
        """Forward times [..., B] to the user's times in the state's dtype."""
        return self.s.grid.user_time(tau, self.y.dtype)

    def run(self) -> LoopResult:
        any_running = bool(self.running.any())
        while any_running:
            if self.iterations >= self.s.max_steps:
                self.status = torch.where(self.running, int(Status.MAX_STEPS), self.status)
                break
            any_running = self._iterate()
            self.iterations += 1
        self._count_steps()
        failed = self.status >= int(Status.MAX_STEPS)
        where = "at the start" if not bool(failed.any()) else self._where(int(failed.nonzero()[0]))
        has_event = self.s.watcher is not None
        return LoopResult(
            ys=self._outputs(),
            counts=torch.stack([self.fevals + (self.attempt_fevals or 0) * self.steps, self.steps,
                                self.accepted,
                                self.steps - self.accepted,
                                *self._linear_algebra_counts()]).cpu(),
            statuses=statuses_of(self.status), where=where, y_end=self.y,
            event_tau=self.event_tau if has_event else None,
            event_y=self.event_y if has_event else None, event_signs=self.event_signs,
            dense=self._dense_steps() if self.s.dense else None)

    def _linear_algebra_counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Jacobians, factorizations and method switches per sample (zeros for methods that
        have none)."""
        field = self.step_field
        return tuple(count if len(count) else torch.zeros_like(self.steps)  # type: ignore
                     for count in (field.jacobians, field.factorizations, field.switches))

    def _where(self, b: int) -> str:
        t = float(self.tau[b] * self.s.grid.direction[b])
        if int(self.steps[b]) == 0 and int(self.status[b]) == Status.NONFINITE:
            return f"for sample {b} at the start (t={t:.17g}): f(t0, y0) is not finite"
        return (f"for sample {b} at t={t:.17g} with step size {float(self.dt[b]):.3g} after "
                f"{int(self.steps[b])} steps ({int(self.accepted[b])} accepted, "
                f"{int(self.steps[b] - self.accepted[b])} rejected)")

    def _iterate(self) -> bool:
        s, running = self.s, self.running
        limit, jump_at_limit = self._limit()
        tau = self.tau
        landing = tau + self.dt * constant(1.0 + SLIVER, tau) >= limit
        tau1 = torch.where(landing, limit, tau + self.dt)  # only used where accepted
        h = torch.where(running, tau1 - tau, constant(0.0, tau))
        h_col = h.to(self.y.dtype).unsqueeze(-1)
        if s.control.observes_steps:
            s.control.before_step(self._user_time(self.tau), h, self.y)
        self.stages.begin(self.y, h_col, self.f0)
        ends_on_jump, near = None, tau1
        if self.jumps:  # a step ending on a jump takes f from the near side
            ends_on_jump = landing & jump_at_limit
            near = s.grid.user_time_beside(tau1, self.y.dtype, -1.0)
        self.step_field.set(self.tau, h, near, ends_on_jump)
        y1, fevals = s.solver.attempt(self.step_field, self.stages, self.coef)
        if self.attempt_fevals is None:
            self.attempt_fevals = fevals
        elif fevals != self.attempt_fevals:
            self.fevals.add_(running, alpha=fevals - self.attempt_fevals)
        step = _Step(self.tau, h, h_col, tau1, self.y, y1, running)
        ratio = s.control.error_ratio(self.stages, self.y, y1, h)
        accept, dt_next = s.control.decide(ratio, h, self.dt)
        finite = ratio.abs() < constant(math.inf, ratio)  # isfinite costs four operations
        step.accept = accept = accept & running
        if s.recorder is not None:
            s.recorder.record(accept, tau1, y1)
        crossed = self._crossed(step)
        next_out = torch.where(accept, self._outputs_before(tau1, right=True), self.next_out)
        # samples with outputs strictly inside the step (theta < 1): needed to count the calls
        # of f for an interpolant's extra stages; without those, every passed output is
        # interpolated (exact y1 at theta = 1) and this costs five operations less
        inside = (accept & (self._outputs_before(tau1) > self.next_out) if self.tableau.c_extra
                  else None)
        # The common case on the device: a sample stops running when an accepted step reaches
        # its end (or an event); anything else (a step that is not finite, a rejected step too
        # small for float64 time, a run of non-finite steps) is flagged and handled on the host.
        finished = accept & (landing if s.boundaries is None else tau1 >= self.tau_end)
        running_next = running ^ finished
        if s.watcher is not None:
            running_next = running_next & ~crossed
        # accepted steps are finite; a rejected one is fine when finite and not tiny
        trouble = running > (accept | (finite & (dt_next > constant(TINY, tau) * tau.abs())))
        passed = next_out - self.next_out  # outputs passed in this step
        flags = [passed > 0, passed > 1, accept, running_next, trouble, finished]
        if inside is not None:
            flags.append(inside)
        if s.watcher is not None:
            flags.append(crossed)
        if self.jumps:
            jumped = accept & landing & jump_at_limit & (tau1 < self.tau_end)
            flags.append(jumped)
        # the one host synchronisation (all flags bool: stacking mixed dtypes costs as much as
        # six operations); a second only when some sample passed two outputs or more
        (any_passed, many_passed, any_accepted, any_running, any_trouble, any_finished,
         *more) = torch.stack(flags).any(1).tolist()
        any_inside = more.pop(0) if inside is not None else True
        any_crossed = more.pop(0) if s.watcher is not None else False
        any_jumped = more.pop(0) if self.jumps else False
        most_outputs = int(passed.max()) if many_passed else int(any_passed)
        if any_trouble or self.streak_active:
            running_next = self._update_status(step, dt_next, finite, crossed)
            any_running = bool(running_next.any())
            self.streak_active = bool(self.nonfinite_streak.any())
        elif any_crossed:
            self.status = torch.where(crossed, int(Status.EVENT), self.status)
        if any_trouble or self.streak_active or any_finished or any_crossed:
            self._count_steps(through=self.iterations + 1)  # the running set changes
        f1 = self.f0
        if any_accepted:
            needs = accept  # f(t1, y1): for the samples that go on, or interpolate inside
            if any_finished and not (self.tableau.fsal or s.dense or s.watcher is not None):
                inside_step = self._outputs_before(tau1) > self.next_out
                needs = accept & (running_next | inside_step)
            f1 = self._end_derivative(step, near, ends_on_jump, needs)
        if any_crossed:
            stops = self._locate_events(step, crossed)
            next_out = torch.where(crossed, self._outputs_before(stops, right=True), next_out)
            most_outputs = int((next_out - self.next_out).max())
        if s.watcher is not None:
            s.watcher.advance(self.g1, accept)
        if most_outputs > 0:
            self._emit_outputs(step, next_out, most_outputs,
                               (accept if inside is None else inside) if any_inside else None)
        if s.dense and any_accepted:
            self._dense_stages(step, accept)
            self.dense_steps.append(step)
        if any_jumped:
            fresh = s.field(s.grid.user_time_beside(tau1, self.y.dtype, 1.0), y1)
            f1 = torch.where(jumped.unsqueeze(-1), fresh, f1)
            self.fevals += jumped
        if any_accepted:  # else y stays the same object (a method may reuse its Jacobian)
            column = accept.unsqueeze(-1)
            self.y, self.f0 = torch.where(column, y1, self.y), self.stages.merge_first(column, f1)
            self.tau = torch.where(accept, tau1, self.tau)
            self.accepted += accept
        self.next_out, self.dt, self.running = next_out, dt_next, running_next
        return bool(any_running)

    def _count_steps(self, through: int | None = None) -> None:
        """Add the steps of iterations [counted, through) (default: all so far), in which the
        samples in `running` stepped."""
        through = self.iterations if through is None else through
        if through > self.counted:
            self.steps += (through - self.counted) * self.running
            self.counted = through

    def _outputs_before(self, tau: torch.Tensor, right: bool = False) -> torch.Tensor:
        """[B]: how many of each sample's output times lie before tau [B] (or at it too, with
        `right`)."""
        return torch.searchsorted(self.taus_rows, tau.unsqueeze(-1), right=right).squeeze(-1)

    def _limit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: where the step must stop (next boundary or the end), and is it a jump."""
        if self.s.boundaries is None:
            return self.tau_end, self.nowhere
        bounds, jumps = self.s.boundaries.taus, self.s.boundaries.jumps
        index = torch.searchsorted(bounds, self.tau.unsqueeze(-1), right=True)
        inside = index < bounds.shape[1]
        index = index.clamp(max=bounds.shape[1] - 1)
        bound = torch.where(inside, bounds.gather(1, index), math.inf).squeeze(-1)
        before_end = bound <= self.tau_end
        limit = torch.where(before_end, bound, self.tau_end)
        if not self.jumps:
            return limit, self.nowhere
        return limit, (inside & jumps.gather(1, index)).squeeze(-1) & before_end

    def _end_derivative(self, step: _Step, near: torch.Tensor, on_jump: torch.Tensor | None,
                        needs: torch.Tensor) -> torch.Tensor:
        """f(t1, y1): the last stage of an FSAL method, else a call of f (from the near side
        of a jump), counted for the samples that need it (`needs`: as a sample's solo solve,
        which does not evaluate f at the end of its last step unless an output inside the step
        needs its interpolant); no call when none does."""
        if self.tableau.fsal:
            return self.stages.last()
        if needs is not step.accept and not bool(needs.any()):
            f1 = torch.zeros_like(step.y1)  # a place holder, never read
        else:
            t1 = self._user_time(step.tau1)
            if on_jump is not None:
                t1 = torch.where(on_jump, near, t1)
            f1 = self.s.field(t1, step.y1)
            self.fevals += needs
        self.stages.append(f1)
        return f1

    def _update_status(self, step: _Step, dt_next: torch.Tensor, finite: torch.Tensor,
                       crossed: torch.Tensor) -> torch.Tensor:
        """Record failures and events; the samples still running after this step: a sample
        fails after more non-finite steps in a row than the controller retries, or when a
        rejected step's next size is one float64 time cannot resolve."""
        bad = self.running & ~finite
        self.nonfinite_streak = (self.nonfinite_streak + 1) * bad
        tiny = self.running & ~step.accept & (dt_next <= TINY * step.tau.abs())
        nonfinite = (self.nonfinite_streak > self.s.control.nonfinite_retries) | (tiny & bad)
        underflow = tiny & finite
        self.status = torch.where(underflow, int(Status.DT_UNDERFLOW), self.status)
        self.status = torch.where(nonfinite, self.step_field.failure, self.status)
        self.status = torch.where(crossed, int(Status.EVENT), self.status)
        finished = step.accept & (step.tau1 >= self.tau_end)
        return self.running & ~finished & ~underflow & ~nonfinite & ~crossed

    def _crossed(self, step: _Step) -> torch.Tensor:
        """Samples whose accepted step crossed the event; keeps which components crossed."""
        watcher = self.s.watcher
        if watcher is None:
            return self.nowhere
        g1 = watcher.values(self._user_time(step.tau1), step.y1.view(self.s.field.shape))
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
            self.fevals += new_users * len(self.tableau.c_extra)
            step.dense_users = users if step.dense_users is None else users | step.dense_users
        if step.stages is None:
            if self.tableau.c_extra:
                extra_c = torch.tensor(self.tableau.c_extra, dtype=torch.float64,
                                       device=step.h.device).unsqueeze(-1)
                times = self._user_time(step.tau + extra_c * step.h).unbind(0)
                extra_stages(self.s.field, times, self.stages, self.coef)
            step.stages = self.stages.matrix().view(-1, *step.y.shape)
            if isinstance(self.stages, PerSampleBufferedStages):  # the buffer is reused
                step.stages = step.stages.clone()
        return step.stages

    def _interpolate(self, step: _Step, theta: torch.Tensor, users: torch.Tensor
                     ) -> torch.Tensor:
        """theta [m, B] -> [m, B, D]; exact y1 where theta == 1."""
        values = interpolate_per_sample(step.y, step.h_col, self._dense_stages(step, users),
                                        self.coef.dense, theta)
        return torch.where((theta == constant(1.0, theta)).unsqueeze(-1), step.y1, values)

    def _emit_outputs(self, step: _Step, next_out: torch.Tensor, count: int,
                      inside: torch.Tensor | None) -> None:
        """Write the outputs each sample passed in this step; `inside` marks samples with an
        output strictly inside the step (None: every output lies on a step's end). Slots
        [count, B] past a sample's last output are written at the end (see `_outputs`).

        Outputs inside steps are interpolated later, many steps in one go (`_interpolate_
        pending`): on per-sample grids some sample passes an output in most iterations, and
        the interpolation's twenty-odd small operations would cost as much as the step."""
        index = self.next_out + self.slots[:count]  # [count, B] output rows
        valid = index < next_out
        if inside is None:
            values = step.y1.unsqueeze(0).expand(count, *step.y1.shape)
            self.chunks.append((index, valid, values.reshape(-1, values.shape[-1])))
            return
        stages = self._dense_stages(step, inside)  # now: the stage buffer is reused
        self.pending.append((index, valid, step))
        self.pending_elements += count * stages.numel()
        if self.pending_elements > PENDING_ELEMENTS:
            self._interpolate_pending()

    def _interpolate_pending(self) -> None:
        """Interpolate the pending outputs: their M slots [M, B] as one batch of M B states."""
        if not self.pending:
            return
        pending, self.pending, self.pending_elements = self.pending, [], 0
        index = torch.cat([rows for rows, _, _ in pending])  # [M, B]
        valid = torch.cat([v for _, v, _ in pending])
        steps = [step for rows, _, step in pending for _ in range(len(rows))]  # one per slot
        slots, batch = index.shape

        def per_slot(values: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
            return torch.stack(values, dim) if len(values) > 1 else values[0].unsqueeze(dim)

        tau, h = per_slot([s.tau for s in steps]), per_slot([s.h for s in steps])  # [M, B]
        stages = per_slot([s.stages for s in steps if s.stages is not None], dim=1)
        # slots past a sample's last output interpolate at theta = 0 (times = the step's
        # start), not at a far (or infinite) time whose weights would turn their zero
        # gradient into NaN; samples that did not step (h = 0) have no valid slot
        taus = self.s.grid.taus
        times = torch.where(valid, taus.gather(0, index.clamp(max=len(taus) - 1)), tau)
        theta = (times - tau) / torch.where(h > constant(0.0, h), h, constant(1.0, h))
        flat = slots * batch
        values = interpolate_per_sample(
            per_slot([s.y for s in steps]).reshape(flat, -1),
            per_slot([s.h_col for s in steps]).reshape(flat, 1),
            stages.reshape(len(stages), flat, -1), self.coef.dense, theta.view(1, flat))[0]
        at_end = (theta == constant(1.0, theta)).view(flat, 1)  # exact y1 there
        values = torch.where(at_end, per_slot([s.y1 for s in steps]).reshape(flat, -1), values)
        self.chunks.append((index, valid, values))

    def _locate_events(self, step: _Step, crossed: torch.Tensor) -> torch.Tensor:
        """Bisect each crossed sample's step for its event; returns where outputs stop.

        The bisection records no graph; the state at the event does (when the steps do), so
        `tidal.events.differentiable_event` can attach the event time's gradient."""
        watcher, shape = self.s.watcher, self.s.field.shape
        assert watcher is not None
        widest = float(torch.where(crossed, step.h, 0.0).max())
        latest = float(torch.where(crossed, step.tau1.abs(), 0.0).max())
        low, high = torch.zeros_like(step.h), torch.ones_like(step.h)
        self._dense_stages(step, crossed)  # with the graph, if any
        with torch.no_grad():
            for _ in range(bisection_steps(widest, watcher.event.time_tol(latest))):
                mid = 0.5 * (low + high)
                y_mid = self._interpolate(step, mid.unsqueeze(0), crossed)[0]
                g_mid = watcher.values(self._user_time(step.tau + mid * step.h),
                                       y_mid.view(shape))
                before = watcher.margin(g_mid, self.crossing) > 0
                low, high = torch.where(before, mid, low), torch.where(before, high, mid)
        event_tau = torch.where(high < 1.0, step.tau + high * step.h, step.tau1)
        event_y = self._interpolate(step, high.unsqueeze(0), crossed)[0]
        self.event_tau = torch.where(crossed, event_tau, self.event_tau)
        self.event_y = torch.where(crossed.unsqueeze(-1), event_y, self.event_y)
        signs = torch.sign(watcher.previous) * self.crossing
        assert self.event_signs is not None
        self.event_signs = torch.where(crossed.unsqueeze(-1), signs, self.event_signs)
        return torch.where(crossed, event_tau, step.tau1)

    def _outputs(self) -> torch.Tensor:
        """[T, B, D]: the emitted slots scattered into place; NaN where none was written."""
        self._interpolate_pending()
        num_times, batch = self.s.grid.taus.shape
        y0 = self.s.y0
        width = y0.shape[1]
        if not self.chunks:
            return torch.full((num_times, batch, width), math.nan, dtype=y0.dtype,
                              device=y0.device)
        index = torch.cat([c[0].reshape(-1) for c in self.chunks])
        valid = torch.cat([c[1].reshape(-1) for c in self.chunks])
        values = torch.cat([c[2] for c in self.chunks])
        samples = torch.arange(len(index), device=index.device) % batch
        flat = torch.where(valid, index * batch + samples, num_times * batch)
        base = torch.full((num_times * batch + 1, width), math.nan, dtype=values.dtype,
                          device=values.device)
        return base.index_copy(0, flat, values)[:-1].view(num_times, batch, width)

    def _dense_steps(self) -> DenseSteps:
        """The loop's iterations as group tensors."""
        steps, y0 = self.dense_steps, self.s.y0
        if not steps:
            empty = torch.empty(0, len(self.tau), dtype=torch.float64, device=y0.device)
            return DenseSteps(empty, empty, empty.bool(), y0.new_empty(0, *y0.shape),
                              y0.new_empty(0, self.tableau.num_dense_stages, *y0.shape))
        stages = [s.stages for s in steps if s.stages is not None]
        return DenseSteps(
            starts=torch.stack([s.tau for s in steps]), sizes=torch.stack([s.h for s in steps]),
            accepted=torch.stack([s.accept for s in steps]),
            ys=torch.stack([s.y for s in steps]), stages=torch.stack(stages))
