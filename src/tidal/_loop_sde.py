"""The SDE solve loop: steps of an `SDEMethod` with increments from the problem's Brownian tree.

Why not the ODE loops (`tidal._loop`, `tidal._loop_per_sample`): their step protocol is built
around f(t0, y0) handed from step to step, stage stores, dense output and events, none of
which an SDE step has (a Brownian path has no interpolant between step ends; an SDE method
carries its own state, e.g. reversible Heun's (yh, f(yh), g(yh)), which `Stages` cannot hold),
and the fixed-step path here fetches Brownian increments for a chunk of steps at once. What is
shared with the ODE solve is everything around the steps: the `Grid`, `Start` (checkpoint
replays), `Recorder`, `LoopResult`/`solution_of`, `Status`, the step controllers
(`ConstantStepSize`, `PIDController` through `AdaptiveControl` and its `ErrorNorm`,
`RecordedSteps`) and the adjoints that drive the loop.

Steps land on every output time (and on the controller's `step_ts` / a replay's recorded step
ends): outputs are the states there, never interpolated. Two time representations, as for
ODEs: Python floats on a shared grid (the whole batch steps together; fixed steps are planned
on the host and their increments fetched 32 at a time), float64 tensors [B] on per-sample grids
(each sample steps on its own grid, its own step sizes and accept/reject decisions; a sample
that does not step has dt = 0 and keeps its state exactly).

A NaN or inf ends the solve (`Status.NONFINITE`): with fixed steps it is seen at the next
output time (one check per output, not per step); with adaptive steps a non-finite step is
rejected and retried smaller a few times first, as for ODEs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tidal._errors import Status, statuses_of
from tidal._loop import SLIVER, TINY
from tidal._loop_io import LoopResult, Recorder, raise_if_failed
from tidal.brownian import Increment
from tidal.controllers.adaptive import AdaptiveController
from tidal.controllers.base import StepControl
from tidal.solvers.sde.terms import StepSDE

if TYPE_CHECKING:
    from tidal._sde_problem import SDEProblem

CHUNK = 32  # fixed steps whose increments are fetched in one tree query


@dataclass
class SDELoopResult(LoopResult):
    """A `LoopResult` plus what the reversible adjoint needs to run the solve backwards: the
    method's state at the end and, on a shared grid, the accepted step ends in order; on
    per-sample grids, each iteration's (start, end, output row or -1) per sample."""

    method_state: Any = None
    step_ends: list[float] = field(default_factory=list)
    step_pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=list)


def run_sde_loop(problem: SDEProblem, y0: torch.Tensor, *, recorder: Recorder | None = None,
                 f0: torch.Tensor | None = None) -> SDELoopResult:
    """The loop an adjoint drives (`tidal.adjoint.base.Loop`) for an SDE problem (`f0`, the
    value of an ODE's f at the start, has no SDE counterpart: the loop calls drift and
    diffusion itself)."""
    loop = _PerSampleLoop if problem.grid.batched else _SharedLoop
    result = loop(problem, y0, recorder).run()
    raise_if_failed(problem, result)  # type: ignore[arg-type]
    return result


class ErrorSource:
    """What `AdaptiveControl` asks of a method, for an SDE method's error estimate: the error
    rows are handed in as the "stages", and the norm is taken with dt = 1 (the estimate already
    includes the step). The local error of an embedded solution of strong order q scales like
    dt^(q + 1/2), so the controller's exponent 1 / (error_order + 1) uses q - 1/2."""

    def __init__(self, error_order: float):
        self.error_order = error_order - 0.5

    def coefficients(self, dtype: torch.dtype, device: torch.device) -> None:
        return None

    def error_estimate(self, stages: torch.Tensor, coefficients: None) -> torch.Tensor:
        return stages

    def combine_error_norms(self, norms: list[Any]) -> Any:
        return norms[0]


def bind_control(problem: SDEProblem, y: torch.Tensor, groups: int) -> StepControl | None:
    """The adaptive controller bound to this solve (None for fixed steps)."""
    if not isinstance(problem.controller, AdaptiveController):
        return None
    assert problem.solver.error_order is not None
    source = ErrorSource(problem.solver.error_order)
    return problem.controller.bind(source, y, y.shape, groups)  # type: ignore[arg-type]


class SharedEquation:
    """The `StepSDE` of the current step on a shared grid: f and g at t0 + c dt, as 0-d time
    tensors in the state's dtype (those of the step's start and end made once per step, or
    handed in for a chunk of steps at once)."""

    def __init__(self, problem: SDEProblem, dtype: torch.dtype, device: torch.device):
        self.problem, self.dtype, self.device = problem, dtype, device
        self.tau0, self.dt = 0.0, 0.0
        self.ends: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self.sde = StepSDE(self.drift, self.diffusion, problem.noise)

    def at(self, tau0: float, dt: float, ends: tuple[torch.Tensor, torch.Tensor] | None = None
           ) -> StepSDE:
        """The step [tau0, tau0 + dt]; `ends` are its start and end as time tensors."""
        self.tau0, self.dt = tau0, dt
        self.ends = (None, None) if ends is None else ends
        return self.sde

    def time(self, c: float) -> torch.Tensor:
        if c == 0.0 or c == 1.0:
            known = self.ends[int(c)]
            if known is None:
                known = torch.full((), self.tau0 + c * self.dt, dtype=self.dtype,
                                   device=self.device)
                self.ends = (known, self.ends[1]) if c == 0.0 else (self.ends[0], known)
            return known
        return torch.full((), self.tau0 + c * self.dt, dtype=self.dtype, device=self.device)

    def times(self, taus: list[float]) -> list[torch.Tensor]:
        """Many time tensors at once (one host-to-device copy)."""
        return list(torch.tensor(taus, dtype=torch.float64).to(self.dtype).to(self.device)
                    .unbind())

    def drift(self, c: float, y: torch.Tensor) -> torch.Tensor:
        return self.problem.drift(self.time(c), y)

    def diffusion(self, c: float, y: torch.Tensor) -> torch.Tensor:
        return self.problem.diffusion(self.time(c), y)


def fixed_schedule(tau: float, marks: list[float], dt: float) -> list[float]:
    """Step ends from tau with steps of dt, landing on every mark (sorted, > tau); a step that
    would stop short of a mark by a sliver lands on it instead."""
    ends: list[float] = []
    for mark in marks:
        if math.isfinite(dt):
            count = math.ceil((mark - tau) / dt * (1 - SLIVER))
            ends.extend((tau + dt * np.arange(1, count)).tolist())
        ends.append(mark)
        tau = mark
    return ends


class _SharedLoop:
    """One grid for the batch: Python-float time; fixed steps planned ahead, or adaptive."""

    def __init__(self, problem: SDEProblem, y0: torch.Tensor, recorder: Recorder | None):
        self.problem, self.recorder = problem, recorder
        self.taus: list[float] = problem.grid.taus[:, 0].tolist()
        start = problem.start
        if start is None:
            self.tau, self.tau_end, self.next_out = self.taus[0], self.taus[-1], 1
        else:
            self.tau, self.tau_end = start.tau.item(), start.tau_end.item()
            self.next_out = int(start.next_out.item())
        self.y = y0
        self.rows = ([y0.unsqueeze(0)] if start is None else
                     [torch.full((self.next_out, *y0.shape), math.nan, dtype=y0.dtype,
                                 device=y0.device)])
        self.equation = SharedEquation(problem, y0.dtype, y0.device)
        self.control = bind_control(problem, y0, 1)
        self.status = Status.SUCCESS
        self.fevals = self.steps = self.accepted = self.rejected = 0
        self.step_ends: list[float] = []

    def _marks(self) -> list[float]:
        """Times steps must land on in (tau, tau_end]: outputs, boundaries and the end."""
        marks = {t for t in self.taus[self.next_out:] if self.tau < t <= self.tau_end}
        bounds = self.problem.controller.boundaries(self.problem.grid)
        if bounds is not None:
            marks.update(t for t in bounds.taus[0].tolist() if self.tau < t <= self.tau_end)
        marks.add(self.tau_end)
        return sorted(marks)

    def run(self) -> SDELoopResult:
        method = self.problem.solver
        state = None
        if self.tau < self.tau_end:
            state = method.init(self.equation.at(self.tau, 0.0), self.y)
            self.fevals += int(method.stateful)
            state = self._fixed(state) if self.control is None else self._adaptive(state)
        return self._result(state)

    def _fixed(self, state: Any) -> Any:
        method, tree = self.problem.solver, self.problem.brownian
        ends = fixed_schedule(self.tau, self._marks(), self.problem.dt)
        if len(ends) > self.problem.max_steps:
            ends = ends[:self.problem.max_steps]
            self.status = Status.MAX_STEPS
        for first in range(0, len(ends), CHUNK):
            chunk = ends[first:first + CHUNK]
            incs = tree.increments([self.tau, *chunk])
            times = self.equation.times([self.tau, *chunk])
            for i, tau1 in enumerate(chunk):
                dt = tau1 - self.tau
                inc = Increment(incs.dw[i], None if incs.area is None else incs.area[i])
                sde = self.equation.at(self.tau, dt, (times[i], times[i + 1]))
                out = method.step(sde, self.y, dt, inc, state)
                state = out.state
                self._accept(tau1, out.y1)
                if self.status is Status.NONFINITE:
                    return state
        if self.status is Status.SUCCESS and not bool(torch.isfinite(self.y).all()):
            self.status = Status.NONFINITE
        return state

    def _adaptive(self, state: Any) -> Any:
        method, tree, control = self.problem.solver, self.problem.brownian, self.control
        assert control is not None
        marks, dt, streak = self._marks(), self.problem.dt, 0
        while self.tau < self.tau_end:
            if self.steps >= self.problem.max_steps:
                self.status = Status.MAX_STEPS
                break
            limit = next(m for m in marks if m > self.tau)
            tau1 = limit if self.tau + dt * (1 + SLIVER) >= limit else self.tau + dt
            taken = tau1 - self.tau
            out = method.step(self.equation.at(self.tau, taken), self.y, taken,
                              tree.increment(self.tau, tau1), state)
            self.fevals += method.drift_evals
            self.steps += 1
            assert out.error is not None
            rows = out.error.reshape(1, -1).clone()  # the ErrorSource's "stages"
            ratio = control.error_ratio(rows, self.y, out.y1, 1.0)  # type: ignore[arg-type]
            finite = math.isfinite(ratio)
            streak = 0 if finite else streak + 1
            accept, dt = control.decide(ratio, taken, dt)
            if accept and finite:
                self.steps -= 1  # counted again by _accept
                self.fevals -= method.drift_evals
                state = out.state
                self._accept(tau1, out.y1)
                continue
            self.rejected += 1
            if streak > control.nonfinite_retries:
                self.status = Status.NONFINITE
                break
            if dt <= TINY * abs(self.tau):
                self.status = Status.DT_UNDERFLOW if finite else Status.NONFINITE
                break
        return state

    def _accept(self, tau1: float, y1: torch.Tensor) -> None:
        self.fevals += self.problem.solver.drift_evals
        self.steps += 1
        self.accepted += 1
        self.tau, self.y = tau1, y1
        self.step_ends.append(tau1)
        if self.recorder is not None:
            self.recorder.record(torch.ones(1, dtype=torch.bool, device=y1.device),
                                 torch.full((1,), tau1, dtype=torch.float64, device=y1.device),
                                 y1)
        if self.next_out < len(self.taus) and self.taus[self.next_out] == tau1:
            self.next_out += 1
            self.rows.append(y1.unsqueeze(0))
            if self.control is None and not bool(torch.isfinite(y1).all()):
                self.status = Status.NONFINITE

    def _result(self, state: Any) -> SDELoopResult:
        y = self.y
        missing = len(self.taus) - self.next_out
        if missing:
            self.rows.append(torch.full((missing, *y.shape), math.nan, dtype=y.dtype,
                                        device=y.device))
        where = (f"at t={self.tau:.17g} after {self.steps} steps ({self.accepted} accepted, "
                 f"{self.rejected} rejected)")
        return SDELoopResult(
            ys=torch.cat(self.rows), counts=torch.tensor([self.fevals, self.steps,
                                                          self.accepted, self.rejected]),
            statuses=(self.status,), where=where, y_end=y, event_tau=None, event_y=None,
            event_signs=None, dense=None, method_state=state, step_ends=self.step_ends)


def select(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """new where mask [B] else old, for a tensor [B, ...] or a tuple of them (a method state)."""
    if old is None:
        return None
    if isinstance(old, torch.Tensor):
        return torch.where(mask.view(-1, *([1] * (old.dim() - 1))), new, old)
    return type(old)(*(select(mask, n, o) for n, o in zip(new, old)))


class _PerSampleLoop:
    """One grid per sample: float64 time tensors [B], every decision a mask."""

    def __init__(self, problem: SDEProblem, y0: torch.Tensor, recorder: Recorder | None):
        self.problem, self.recorder, self.y = problem, recorder, y0
        grid, start = problem.grid, problem.start
        self.taus = grid.taus  # [T, B] forward time
        batch, device = y0.shape[0], y0.device
        if start is None:
            self.tau, self.tau_end = grid.taus[0].clone(), grid.taus[-1]
            self.next_out = torch.ones(batch, dtype=torch.long, device=device)
        else:
            self.tau, self.tau_end = start.tau.clone(), start.tau_end
            self.next_out = start.next_out.to(device).clone()
        bounds = problem.controller.boundaries(grid)
        self.bounds = None if bounds is None else bounds.taus.contiguous()
        self.control = bind_control(problem, y0, batch)
        self.dt = torch.full((batch,), problem.dt, dtype=torch.float64, device=device)
        # fixed steps end at anchor + k dt (the last landing point plus k steps), computed as
        # on a shared grid: the same step ends to the last bit (a Brownian path moves by
        # sqrt(|dt|) when a time moves by dt, so rounding in accumulated time would show)
        self.anchor, self.count = self.tau.clone(), torch.zeros_like(self.next_out)
        self.codes = torch.zeros(batch, dtype=torch.long, device=device)  # Status values
        self.counts = torch.zeros(4, batch, dtype=torch.long, device=device)
        self.streak = torch.zeros(batch, dtype=torch.long, device=device)
        rows = len(self.taus) * batch
        self.index: list[torch.Tensor] = []  # flat output rows (next_out * B + b), dump = rows
        self.values: list[torch.Tensor] = []
        if start is None:
            self.index.append(torch.arange(batch, device=device))
            self.values.append(y0)
        self.dump = rows
        # per iteration: (start [B], end [B], output row landed on at the end or -1), what
        # the reversible adjoint walks back through (3 numbers per sample and iteration)
        self.step_pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _limit(self) -> torch.Tensor:
        """[B]: where each sample's next step must end at the latest."""
        last = len(self.taus) - 1
        out = self.taus.gather(0, self.next_out.clamp(max=last).unsqueeze(0))[0]
        limit = torch.minimum(torch.where(self.next_out <= last, out, math.inf), self.tau_end)
        if self.bounds is not None:
            k = torch.searchsorted(self.bounds, self.tau.unsqueeze(-1), right=True)
            k = k.clamp(max=self.bounds.shape[1] - 1)
            nxt = self.bounds.gather(1, k)[:, 0]
            limit = torch.minimum(limit, torch.where(nxt > self.tau, nxt, math.inf))
        return limit

    def _equation(self, tau0: torch.Tensor, h: torch.Tensor) -> StepSDE:
        problem, dtype = self.problem, self.y.dtype

        def time(c: float) -> torch.Tensor:
            return (tau0 + c * h).to(dtype)

        return StepSDE(lambda c, y: problem.drift(time(c), y),
                       lambda c, y: problem.diffusion(time(c), y), problem.noise)

    def run(self) -> SDELoopResult:
        problem, method, tree = self.problem, self.problem.solver, self.problem.brownian
        zero = torch.zeros_like(self.tau)
        active = self.tau < self.tau_end
        state = method.init(self._equation(self.tau, zero), self.y)
        self.counts[0] += int(method.stateful) * active
        ok = Status.SUCCESS.value
        running = bool(active.any())
        while running:
            over = active & (self.counts[1] >= problem.max_steps)
            self.codes = torch.where(over, Status.MAX_STEPS.value, self.codes)
            active = active & ~over
            limit = self._limit()
            if self.control is None:
                ahead = self.anchor + (self.count + 1) * self.dt
                need = torch.ceil((limit - self.anchor) / self.dt * (1 - SLIVER))
                near = self.count + 1 >= need
            else:
                ahead = self.tau + self.dt
                near = ahead + self.dt * SLIVER >= limit
            tau1 = torch.where(active, torch.where(near, limit, ahead), self.tau)
            h = tau1 - self.tau
            out = method.step(self._equation(self.tau, h), self.y, h.to(self.y.dtype)[:, None],
                              tree.increment(self.tau, tau1), state)
            finite = torch.isfinite(out.y1).all(-1)
            if self.control is None:
                accept = active & finite
                failed = active & ~finite
            else:
                assert out.error is not None
                rows = out.error.reshape(1, -1).clone()  # the ErrorSource's "stages"
                ratio = self.control.error_ratio(rows, self.y, out.y1,  # type: ignore[arg-type]
                                                 torch.ones_like(h))
                decided, dt_next = self.control.decide(ratio, h, self.dt)
                self.dt = torch.where(active, dt_next, self.dt)
                good = torch.isfinite(ratio)
                accept = active & decided & good
                self.streak = torch.where(active, torch.where(good, 0, self.streak + 1),
                                          self.streak)
                underflow = active & ~accept & (self.dt <= TINY * self.tau.abs())
                failed = active & (self.streak > self.control.nonfinite_retries)
                self.codes = torch.where(underflow & ~failed & good,
                                         Status.DT_UNDERFLOW.value, self.codes)
                failed = failed | (underflow & ~good)
                active = active & ~(underflow & good)
            self.codes = torch.where(failed, Status.NONFINITE.value, self.codes)
            self.counts += torch.stack([method.drift_evals * active, active, accept,
                                        active & ~accept])
            self.y = torch.where(accept.unsqueeze(-1), out.y1, self.y)
            state = select(accept, out.state, state)
            start = self.tau
            self.tau = torch.where(accept, tau1, self.tau)
            self.anchor = torch.where(accept & near, tau1, self.anchor)
            self.count = torch.where(accept, torch.where(near, 0, self.count + 1), self.count)
            out_next = self.taus.gather(
                0, self.next_out.clamp(max=len(self.taus) - 1).unsqueeze(0))[0]
            landed = accept & (self.next_out < len(self.taus)) & (tau1 == out_next)
            if self.recorder is not None:
                self.recorder.record(accept, tau1, self.y)
            self.step_pairs.append((start, self.tau, torch.where(landed, self.next_out, -1)))
            active = (self.tau < self.tau_end) & (self.codes == ok) & ~failed
            running, any_landed = torch.stack([active.any(), landed.any()]).tolist()
            if any_landed:  # one host synchronisation per iteration, for both flags
                batch = torch.arange(len(landed), device=landed.device)
                self.index.append(torch.where(landed, self.next_out * len(landed) + batch,
                                              self.dump))
                self.values.append(self.y)
            self.next_out = self.next_out + landed
        return self._result(state)

    def _result(self, state: Any) -> SDELoopResult:
        y, steps = self.y, len(self.taus)
        base = torch.full((self.dump + 1, y.shape[1]), math.nan, dtype=y.dtype, device=y.device)
        ys = base.index_copy(0, torch.cat(self.index), torch.cat(self.values))[:-1]
        statuses = statuses_of(self.codes)
        failed = (self.codes > int(Status.EVENT)).nonzero()[:1].flatten().tolist()  # first
        where = (f"for sample {failed[0]} at t={self.tau[failed[0]].item():.17g}" if failed
                 else "")
        return SDELoopResult(
            ys=ys.view(steps, *y.shape), counts=self.counts.cpu(), statuses=statuses,
            where=where, y_end=y, event_tau=None, event_y=None, event_signs=None, dense=None,
            method_state=state, step_pairs=self.step_pairs)
