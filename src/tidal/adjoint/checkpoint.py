"""`CheckpointAdjoint`: the exact gradient of the discrete solve with bounded memory.

The forward solve runs once without recording a graph while a `CheckpointRecorder` notes where
every accepted step ended and keeps the states at a few of them as checkpoints: every k-th
accepted step, k doubling whenever there are too many, so the segments stay about equal without
knowing the number of steps in advance. Counts are per group (see `tidal._grid`): on per-sample
grids every sample keeps its own checkpoints, counted in its own accepted steps.

The backward pass replays one segment at a time from its saved state with autograd on, over
exactly the accepted steps (the loop with `RecordedSteps`: each group steps from one recorded
end to the next, no error control, no rejections), and pulls the gradient through it. The
gradient is that of the same discrete solve `BackpropAdjoint` differentiates (equal to
round-off), while memory holds the checkpointed states plus one segment's graph. After a
terminal event the segment holding it replays the event's step whole and interpolates the event
time as one more output row, as the forward solve did; the event time's own gradient is then
attached by `tidal.events.differentiable_event`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch._functorch.config

from tidal._errors import InvalidArgumentError
from tidal._grid import Grid
from tidal._loop_io import Start, solution_of
from tidal.adjoint.base import DiscreteAdjoint, Loop, parameters_and_f0
from tidal.controllers.base import Boundaries
from tidal.controllers.constant import RecordedSteps
from tidal.solution import Solution

if TYPE_CHECKING:
    from tidal._problem import Problem


@dataclass(frozen=True)
class CheckpointAdjoint(DiscreteAdjoint):
    """Recompute segments of the solve in the backward pass instead of storing every step.

    Args:
        checkpoints: number of segments. Memory holds one state per segment plus one
            segment's graph; the backward pass replays every step once whatever the number.
            None keeps about sqrt(8 x steps): a step's graph holds several states' worth of
            stages and f's intermediates, so more, shorter segments pay off.
        params: the tensors to differentiate; None finds every tensor requiring grad that f
            depends on (a module's parameters, tensors in a closure or in `args`) by
            evaluating f once and walking its graph.

    Shared and per-sample time grids, terminal events included; not with dense output (use
    `BackpropAdjoint` for that). On per-sample grids the checkpoints are counted in each
    sample's accepted steps and their number follows the loop's iterations.
    """

    name = "checkpoint"
    checkpoints: int | None = None
    params: Sequence[torch.Tensor] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        n = self.checkpoints
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidArgumentError(
                f"`CheckpointAdjoint(checkpoints={n!r})` must be a positive integer or None.")

    def limit(self, num_steps: int) -> int:
        """Most checkpoints to keep after `num_steps` accepted steps."""
        n = self.checkpoints if self.checkpoints is not None else math.isqrt(8 * num_steps)
        return max(1, n)

    def states(self, problem: Problem, loop: Loop, y0: torch.Tensor
               ) -> tuple[Solution, torch.Tensor | None]:
        grid = problem.grid
        start = grid.rows(y0.detach())
        forward, choice = problem, None
        if getattr(problem.solver, "keeps_state", False):  # (SDE methods have no such flag)
            method, choice = problem.solver.recording()
            forward = problem.replace(solver=method)
        recorder = CheckpointRecorder(self, grid.taus[0], start, choice)
        params, f0 = parameters_and_f0(self.params, "CheckpointAdjoint", problem, y0)
        with torch.no_grad():
            result = loop(forward, y0.detach(), recorder=recorder, f0=f0)
        solution = solution_of(problem, result)
        if not recorder.ends:  # no step: the only output reached is y0 itself
            solution.ys = torch.cat([y0.unsqueeze(0), solution.ys[1:]])
            return solution, result.event_signs
        event_tau = (result.event_tau if result.event_tau is not None
                     else torch.full_like(grid.taus[0], math.nan))
        replay_taus, reached, event_row = _replay_rows(grid.taus, event_tau, recorder.last_end)
        spans, starts = recorder.segments(grid.taus[0], start)
        replay_grid = grid.with_taus(replay_taus)
        step_ends, choices = recorder.steps()
        controller = RecordedSteps(math.inf, recorded=Boundaries(
            step_ends, _jumps(problem, step_ends)))
        solver = (problem.solver if choices is None
                  else problem.solver.replaying(step_ends, choices))

        def replay(j: int, y_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tau_start, tau_end = spans[j]
            segment = problem.replace(
                grid=replay_grid, controller=controller, solver=solver, event=None,
                dense=False, throw=True,
                start=Start(tau_start, (replay_taus <= tau_start).sum(0), tau_end))
            out = loop(segment, y_start.view(y0.shape))
            return out.ys.reshape(len(replay_taus), grid.groups, -1), grid.rows(out.y_end)

        event_y = (solution.event_y if solution.event_y is not None
                   else torch.full_like(y0, math.nan))
        state = _Replay(
            replay=replay, segments=len(spans), params=params, ys=solution.ys.detach(),
            event_y=event_y.detach(), starts=starts, grid=grid, reached=reached,
            event_row=event_row, compiled=bool(problem.compile))
        solution.ys, event_y = CheckpointedSolve.apply(state, y0, *state.params)
        if problem.event is not None:
            solution.event_y = event_y
        return solution, result.event_signs


def _jumps(problem: Problem, ends: torch.Tensor) -> torch.Tensor:
    """[G, J]: which recorded step ends are jump times of the problem's controller."""
    bounds = problem.controller.boundaries(problem.grid)
    if bounds is None:
        return torch.zeros_like(ends, dtype=torch.bool)
    jump_taus = torch.where(bounds.jumps, bounds.taus, math.nan)
    return (ends.unsqueeze(-1) == jump_taus.unsqueeze(1)).any(-1)


def _replay_rows(taus: torch.Tensor, event_tau: torch.Tensor, last_end: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output grid a replay writes: each group's reached outputs, then its event time if
    it had one (inf after). Returns (grid [T, G], reached outputs [G], the event's row [G],
    -1 without an event); an event on the last output time shares its row."""
    has_event = torch.isfinite(event_tau)
    reached = (taus <= torch.where(has_event, event_tau, last_end)).sum(0)
    index = torch.arange(len(taus), device=taus.device).unsqueeze(-1)
    grid = torch.where(index < reached, taus, math.inf)
    grid = torch.where((index == reached) & has_event, event_tau, grid)
    event_row = torch.where(has_event, reached.clamp(max=len(taus) - 1), -1)
    return grid, reached, event_row


class CheckpointRecorder:
    """Checkpoints of a solve, fed by the loop (a `tidal._loop_io.Recorder`).

    Every group keeps its own count of accepted steps; slot c holds each group's state (and
    time) after its ((c + 1) x stride)-th accepted step. The number of slots follows the number
    of calls (an upper bound on every group's count, known without asking the device); when
    the slots reach the adjoint's limit they are halved and the stride doubled. Slot c is
    filled for group g exactly when g took at least (c + 1) x stride accepted steps. Also
    notes where every accepted step ended, per group, for the replay, and for a method that
    keeps state (`choice`: its `recording` function) what it chose for each accepted step.
    """

    def __init__(self, adjoint: CheckpointAdjoint, tau0: torch.Tensor, y0: torch.Tensor,
                 choice: Callable[[], torch.Tensor] | None = None):
        self.adjoint, self.stride, self.calls, self.choice = adjoint, 1, 0, choice
        groups = len(tau0)
        self.groups = torch.arange(groups, device=y0.device)
        self.count = torch.zeros(groups, dtype=torch.long, device=y0.device)
        self.ends: list[torch.Tensor] = []
        self.choices: list[torch.Tensor] = []
        self.last_end = tau0.clone()
        self.taus = torch.empty(0, groups, dtype=torch.float64, device=y0.device)
        self.states = torch.empty(0, *y0.shape, dtype=y0.dtype, device=y0.device)

    def record(self, accept: torch.Tensor | None, tau1: torch.Tensor, y1: torch.Tensor
               ) -> None:
        y1 = y1.reshape(len(self.groups), -1)
        self.calls += 1
        if self.choice is not None:  # (only accepted steps' choices are ever read)
            self.choices.append(self.choice().expand(len(self.groups)))
        if self.calls // self.stride > len(self.taus):  # a slot some group may reach
            self.taus = torch.cat([self.taus, torch.full_like(tau1, math.nan)[None]])
            self.states = torch.cat([self.states, torch.full_like(y1, math.nan)[None]])
        if accept is None:  # every group accepted: its count is the number of calls
            self._record_all(tau1, y1)
        else:
            self._record_some(accept, tau1, y1)
        if len(self.taus) >= self.adjoint.limit(self.calls):
            self.taus, self.states = self.taus[1::2].clone(), self.states[1::2].clone()
            self.stride *= 2

    def _record_all(self, tau1: torch.Tensor, y1: torch.Tensor) -> None:
        """The shared grid's case, with no masks: every count equals `calls`."""
        self.count += 1
        self.ends.append(tau1)
        self.last_end = tau1
        if self.calls % self.stride == 0:
            self.taus[self.calls // self.stride - 1] = tau1
            self.states[self.calls // self.stride - 1] = y1

    def _record_some(self, accept: torch.Tensor, tau1: torch.Tensor, y1: torch.Tensor) -> None:
        self.count += accept
        self.ends.append(torch.where(accept, tau1, math.inf))
        self.last_end = torch.where(accept, tau1, self.last_end)
        if not len(self.taus):  # every count is still below the stride
            return
        due = accept & (self.count % self.stride == 0)
        slot = (self.count // self.stride - 1).clamp(0, len(self.taus) - 1)
        self.taus[slot, self.groups] = torch.where(due, tau1, self.taus[slot, self.groups])
        self.states[slot, self.groups] = torch.where(due.unsqueeze(-1), y1,
                                                     self.states[slot, self.groups])

    def steps(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([G, J] each group's accepted step ends in order, padded with inf; [G, J] a stateful
        method's choice for each of those steps, None without one)."""
        shape = (len(self.groups), 1)
        device = self.groups.device
        if not self.ends:
            return (torch.full(shape, math.inf, dtype=torch.float64, device=device),
                    None if self.choice is None
                    else torch.zeros(shape, dtype=torch.bool, device=device))
        ends, order = torch.stack(self.ends).sort(dim=0)  # accepted first, inf after
        used = max(1, int(self.count.max()))
        choices = (None if self.choice is None
                   else torch.stack(self.choices).gather(0, order).T[:, :used].contiguous())
        return ends.T[:, :used].contiguous(), choices

    def segments(self, tau0: torch.Tensor, y0: torch.Tensor
                 ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        """([(start tau, end tau) per segment], [start state per segment]), each [G] or
        [G, N]. A group with fewer checkpoints sits still (start = end = its last step end)
        in the segments after its own last one; a segment in which every group sits still (a
        checkpoint at the last step) is left out."""
        slots = len(self.taus)
        filled = self.count.unsqueeze(0) >= self.stride * torch.arange(
            1, slots + 1, device=self.count.device).unsqueeze(-1)  # [C, G]
        used = int(filled.sum(0).max()) if slots else 0
        bounds, starts = [], []
        for j in range(used + 1):
            if j == 0:
                start_tau, start_y = tau0, y0
            else:
                start_tau = torch.where(filled[j - 1], self.taus[j - 1], self.last_end)
                start_y = torch.where(filled[j - 1].unsqueeze(-1), self.states[j - 1], y0)
            end_tau = (torch.where(filled[j], self.taus[j], self.last_end) if j < slots
                       else self.last_end)
            if j and bool((start_tau == end_tau).all()):
                continue
            bounds.append((start_tau, end_tau))
            starts.append(start_y)
        return bounds, starts


@dataclass
class _Replay:
    """What the backward pass needs: `replay(j, start rows)` reruns segment j from its saved
    start and returns (output rows [T, G, N], NaN where the segment wrote none; end rows)."""

    replay: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    segments: int
    params: tuple[torch.Tensor, ...]
    ys: torch.Tensor  # [T, *shape] the forward solve's outputs
    event_y: torch.Tensor  # [*shape] (NaN where no event)
    starts: list[torch.Tensor]  # each segment's starting rows [G, N]
    grid: Grid
    reached: torch.Tensor  # [G] outputs each group reached
    event_row: torch.Tensor  # [G] replayed row of the event state, -1 without an event
    compiled: bool  # the replays run compiled (`solve(compile=...)`)


class CheckpointedSolve(torch.autograd.Function):
    """(ys, event state) from y0 (and params), saving only the segments' starting states."""

    @staticmethod
    def forward(ctx: Any, state: _Replay, y0: torch.Tensor, *params: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.state = state
        ctx.save_for_backward(*state.starts)
        state.starts = []  # saved above; do not keep them twice
        return state.ys.clone(), state.event_y.clone()

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor, grad_event: torch.Tensor) -> tuple[Any, ...]:
        state: _Replay = ctx.state
        grid, params = state.grid, state.params
        rows = grad_ys.reshape(len(grad_ys), grid.groups, -1)  # [T, G, N]
        index = torch.arange(len(rows), device=rows.device).unsqueeze(-1)  # [T, 1]
        grad_rows = torch.where((index < state.reached).unsqueeze(-1), rows, 0.0)
        event_hit = (index == state.event_row) & (state.event_row >= 0)  # [T, G]
        event_rows = grid.rows(grad_event.nan_to_num())
        grad_rows = grad_rows + event_hit.unsqueeze(-1) * event_rows.unsqueeze(0)
        grad_params = [torch.zeros_like(p) for p in params]
        grad_state = torch.zeros_like(grad_rows[0])
        # compiled replays (`tidal.compiled.CompiledReplay`) give none of their backward's
        # buffers up, so the graph outside f can be retained across segments
        with (torch._functorch.config.patch(donated_buffer=False) if state.compiled
              else contextlib.nullcontext()):
            for j in range(state.segments - 1, -1, -1):
                with torch.enable_grad():
                    start = ctx.saved_tensors[j].detach().requires_grad_(True)
                    out_rows, end = state.replay(j, start)
                    pairs = [(out, grad) for out, grad in ((out_rows, grad_rows),
                                                           (end, grad_state))
                             if out.requires_grad]
                    grads = torch.autograd.grad(
                        [out for out, _ in pairs], (start, *params),
                        grad_outputs=[grad for _, grad in pairs], allow_unused=True,
                        retain_graph=bool(params))
                grad_state = grads[0] if grads[0] is not None else torch.zeros_like(grad_state)
                for total, g in zip(grad_params, grads[1:]):
                    if g is not None:
                        total += g
        grad_y0 = (grad_state + grad_rows[0]).view_as(grad_ys[0])
        return (None, grad_y0, *grad_params)
