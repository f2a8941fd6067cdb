"""`CheckpointAdjoint`: the exact gradient of the discrete solve with bounded memory.

The forward solve runs once without recording a graph, noting where its accepted steps ended
and keeping the states at a few of them as checkpoints (`CheckpointRecorder`: every k-th
accepted step, k doubling whenever there are too many, so the segments stay about equal without
knowing the number of steps in advance). The backward pass replays one segment at a time over
exactly the accepted steps (no error control, no rejections) with autograd on, from its saved
state, and pulls the gradient through it. The gradient is
that of the same discrete solve `BackpropAdjoint` differentiates (equal to round-off), while
memory holds the checkpointed states plus one segment's graph.

On per-sample grids (`PerSampleRecorder`) every sample keeps its own checkpoints, counted in its
own accepted steps, and the replay is a per-sample loop whose step ends are each sample's
recorded ones. After a terminal event the segment holding it replays the event's step whole
and interpolates the event time as one more output, as the forward solve did; the event
time's own gradient is then attached by `tidal.events.differentiable_event`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tidal._errors import InvalidArgumentError


@dataclass(frozen=True)
class CheckpointAdjoint:
    """Recompute segments of the solve in the backward pass instead of storing every step.

    Args:
        checkpoints: number of segments. Memory holds one state per segment plus one
            segment's graph; the backward pass replays every step once whatever the number.
            None keeps about sqrt(8 x steps): a step's graph holds several states' worth of
            stages and f's intermediates, so segments a few times shorter than sqrt(steps)
            balance the two. With a number k, between k/2 and k segments are kept.
        params: the tensors to differentiate; None finds every tensor requiring grad that f
            depends on (a module's parameters, tensors in a closure or in `args`) by
            evaluating f once and walking its graph.

    Shared and per-sample time grids, terminal events included; not with dense output (use
    `BackpropAdjoint` for that). On per-sample grids the checkpoints are counted in each
    sample's accepted steps and their number follows the loop's iterations.
    """

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


class CheckpointRecorder:
    """Notes where every accepted step ended (user time) and keeps the state after every
    `stride`-th one, halving the list and doubling the stride when it exceeds the adjoint's
    limit. Jump times are skipped: a replay starting there would evaluate f on the wrong side
    of the jump."""

    def __init__(self, adjoint: CheckpointAdjoint, direction: float, jumps: set[float]):
        self.adjoint, self.direction, self.jumps = adjoint, direction, jumps
        self.stride = 1
        self.step_ends: list[float] = []
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []

    def record(self, tau: float, y: torch.Tensor) -> None:
        t = self.direction * tau
        self.step_ends.append(t)
        if len(self.step_ends) % self.stride or t in self.jumps:
            return
        self.times.append(t)
        self.states.append(y)
        if len(self.times) >= self.adjoint.limit(len(self.step_ends)):
            self.times, self.states = self.times[1::2], self.states[1::2]
            self.stride *= 2

    def segment_starts(self, y0: torch.Tensor) -> tuple[list[float], list[torch.Tensor]]:
        """(where each segment ends, the state each one starts from); the last segment ends
        at the last step, whether or not a checkpoint was kept there."""
        end = self.step_ends[-1]
        kept = [(t, y) for t, y in zip(self.times, self.states) if t != end]
        return [t for t, _ in kept] + [end], [y0, *(y for _, y in kept)]


@dataclass
class Segment:
    """Replay from `times[0]` over `times[1:]`: its first `outputs` rows are requested outputs,
    its last row is the state where the next segment starts."""

    times: list[float]
    outputs: int


@dataclass
class CheckpointProblem:
    replay: Callable[[torch.Tensor, list[float]], torch.Tensor]  # (y start, times) -> rows
    segments: list[Segment]
    params: tuple[torch.Tensor, ...]
    ys: torch.Tensor  # the forward solve's outputs
    starts: list[torch.Tensor]  # each segment's starting state
    event_y: torch.Tensor  # the state at the event (NaN without one)
    reached: int  # outputs the solve reached (all but those after an event or a failure)
    event_row: int | None = None  # replayed row of the event state (after the reached ones)


class CheckpointedSolve(torch.autograd.Function):
    """(ys, event state) from y0 (and params), saving only the segments' starting states.

    The replayed rows are the reached outputs and, after an event, the event state (one more
    row unless an output falls on the event time)."""

    @staticmethod
    def forward(ctx, problem: CheckpointProblem, y0: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.problem = problem
        ctx.save_for_backward(*problem.starts[:len(problem.segments)])
        problem.starts = []  # saved above; do not keep them twice
        return problem.ys.clone(), problem.event_y.clone()

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor, grad_event: torch.Tensor):
        problem: CheckpointProblem = ctx.problem
        params = problem.params
        grad_params = [torch.zeros_like(p) for p in params]
        grad_rows = grad_ys[:problem.reached]
        if problem.event_row is not None:
            if problem.event_row == len(grad_rows):
                grad_rows = torch.cat([grad_rows, torch.zeros_like(grad_rows[:1])])
            grad_rows = grad_rows.index_add(0, torch.tensor([problem.event_row],
                                                            device=grad_rows.device),
                                            grad_event.unsqueeze(0))
        ends = [1]
        for segment in problem.segments:
            ends.append(ends[-1] + segment.outputs)
        grad_state = torch.zeros_like(grad_ys[0])
        for j in range(len(problem.segments) - 1, -1, -1):
            segment = problem.segments[j]
            with torch.enable_grad():
                start = ctx.saved_tensors[j].detach().requires_grad_(True)
                rows = problem.replay(start, segment.times)
                grad_seg = torch.zeros_like(rows)
                grad_seg[:segment.outputs] = grad_rows[ends[j]:ends[j + 1]]
                grad_seg[-1] += grad_state
                grads = torch.autograd.grad(rows, (start, *params), grad_outputs=grad_seg,
                                            allow_unused=True, retain_graph=bool(params))
            grad_state = grads[0] if grads[0] is not None else torch.zeros_like(grad_state)
            for total, g in zip(grad_params, grads[1:]):
                if g is not None:
                    total += g
        return (None, grad_state + grad_rows[0], *grad_params)


# ---------------------------------------------------------------------------------------------
# Per-sample time grids


class PerSampleRecorder:
    """Checkpoints on per-sample grids, fed by the per-sample loop after every iteration.

    Every sample keeps its own count of accepted steps; slot c holds each sample's state (and
    time) after its ((c + 1) x stride)-th accepted step. The number of slots follows the
    number of loop iterations (an upper bound on every sample's count, known without asking
    the device), and as on a shared grid the slots are halved and the stride doubled when
    they reach the adjoint's limit; slot c is filled for sample b exactly when b took at least
    (c + 1) x stride accepted steps. Also notes where every accepted step ended, per sample,
    for the replay.
    """

    def __init__(self, adjoint: CheckpointAdjoint, tau0: torch.Tensor, y0: torch.Tensor):
        self.adjoint, self.stride, self.iterations = adjoint, 1, 0
        batch = y0.shape[0]
        self.rows = torch.arange(batch, device=y0.device)
        self.count = torch.zeros(batch, dtype=torch.long, device=y0.device)
        self.ends: list[torch.Tensor] = []
        self.last_end = tau0.clone()
        self.taus = torch.empty(0, batch, dtype=torch.float64, device=y0.device)
        self.states = torch.empty(0, *y0.shape, dtype=y0.dtype, device=y0.device)

    def record(self, accept: torch.Tensor, tau1: torch.Tensor, y1: torch.Tensor) -> None:
        self.iterations += 1
        self.count += accept
        self.ends.append(torch.where(accept, tau1, math.inf))
        self.last_end = torch.where(accept, tau1, self.last_end)
        if self.iterations // self.stride > len(self.taus):  # a slot some sample may reach
            self.taus = torch.cat([self.taus, torch.full_like(tau1, math.nan)[None]])
            self.states = torch.cat([self.states, torch.full_like(y1, math.nan)[None]])
        if not len(self.taus):  # every count is still below the stride
            return
        due = accept & (self.count % self.stride == 0)
        slot = (self.count // self.stride - 1).clamp(0, len(self.taus) - 1)
        self.taus[slot, self.rows] = torch.where(due, tau1, self.taus[slot, self.rows])
        self.states[slot, self.rows] = torch.where(due.unsqueeze(-1), y1,
                                                   self.states[slot, self.rows])
        if len(self.taus) >= self.adjoint.limit(self.iterations):
            self.taus, self.states = self.taus[1::2].clone(), self.states[1::2].clone()
            self.stride *= 2

    def step_ends(self) -> torch.Tensor:
        """[B, J]: each sample's accepted step ends in order, padded with inf."""
        if not self.ends:
            return torch.full((len(self.rows), 1), math.inf, dtype=torch.float64,
                              device=self.rows.device)
        ends = torch.stack(self.ends).sort(0).values.T  # accepted ends first, inf after
        return ends[:, :max(1, int(self.count.max()))].contiguous()

    def segments(self, tau0: torch.Tensor, y0: torch.Tensor
                 ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        """([(start tau, end tau) per segment], [start state per segment]), each [B] or
        [B, D]. A sample with fewer checkpoints sits still (start = end = its last step end)
        in the segments after its own last one."""
        slots = len(self.taus)
        filled = self.count.unsqueeze(0) >= self.stride * torch.arange(
            1, slots + 1, device=self.count.device).unsqueeze(-1)  # [C, B]
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
            bounds.append((start_tau, end_tau))
            starts.append(start_y)
        return bounds, starts


@dataclass
class PerSampleCheckpointProblem:
    replay: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
    # (start state, segment) -> (outputs [T, B, D], NaN where the segment wrote none; end state)
    num_segments: int
    params: tuple[torch.Tensor, ...]
    ys: torch.Tensor  # [T, B, D] the forward solve's outputs
    event_y: torch.Tensor  # [B, D] (NaN where no event)
    starts: list[torch.Tensor]  # each segment's starting state [B, D]
    reached: torch.Tensor  # [B] outputs each sample reached
    event_row: torch.Tensor  # [B] replayed row of the event state, -1 without an event


class PerSampleCheckpointedSolve(torch.autograd.Function):
    """(ys, event state) on per-sample grids, saving only the segments' starting states."""

    @staticmethod
    def forward(ctx, problem: PerSampleCheckpointProblem, y0: torch.Tensor,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.problem = problem
        ctx.save_for_backward(*problem.starts)
        problem.starts = []
        return problem.ys.clone(), problem.event_y.clone()

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor, grad_event: torch.Tensor):
        problem: PerSampleCheckpointProblem = ctx.problem
        params = problem.params
        grad_params = [torch.zeros_like(p) for p in params]
        index = torch.arange(len(grad_ys), device=grad_ys.device).unsqueeze(-1)  # [T, 1]
        grad_rows = torch.where((index < problem.reached).unsqueeze(-1), grad_ys, 0.0)
        has_event = problem.event_row >= 0
        event_hit = (index == problem.event_row) & has_event  # [T, B]
        grad_rows = grad_rows + event_hit.unsqueeze(-1) * grad_event.nan_to_num().unsqueeze(0)
        grad_state = torch.zeros_like(grad_ys[0])
        for j in range(problem.num_segments - 1, -1, -1):
            with torch.enable_grad():
                start = ctx.saved_tensors[j].detach().requires_grad_(True)
                rows, end = problem.replay(start, j)
                pairs = [(out, grad) for out, grad in ((rows, grad_rows), (end, grad_state))
                         if out.requires_grad]
                grads = torch.autograd.grad([out for out, _ in pairs], (start, *params),
                                            grad_outputs=[grad for _, grad in pairs],
                                            allow_unused=True, retain_graph=bool(params))
            grad_state = grads[0] if grads[0] is not None else torch.zeros_like(grad_state)
            for total, g in zip(grad_params, grads[1:]):
                if g is not None:
                    total += g
        return (None, grad_state + grad_rows[0], *grad_params)
