"""`CheckpointAdjoint`: the exact gradient of the discrete solve with bounded memory.

The forward solve runs once without recording a graph, noting where its accepted steps ended
and keeping the states at a few of them as checkpoints (`CheckpointRecorder`: every k-th
accepted step, k doubling whenever there are too many, so the segments stay about equal without
knowing the number of steps in advance). The backward pass replays one segment at a time over
exactly the accepted steps (no error control, no rejections) with autograd on, from its saved
state, and pulls the gradient through it. The gradient is
that of the same discrete solve `BackpropAdjoint` differentiates (equal to round-off), while
memory holds the checkpointed states plus one segment's graph.
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

    Shared time grids only, without events or dense output; use `BackpropAdjoint` for those.
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


class CheckpointedSolve(torch.autograd.Function):
    """ys from y0 (and params), saving only the segments' starting states."""

    @staticmethod
    def forward(ctx, problem: CheckpointProblem, y0: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        ctx.problem = problem
        ctx.save_for_backward(*problem.starts[:len(problem.segments)])
        problem.starts = []  # saved above; do not keep them twice
        return problem.ys.clone()

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        problem: CheckpointProblem = ctx.problem
        params = problem.params
        grad_params = [torch.zeros_like(p) for p in params]
        ends = [1]
        for segment in problem.segments:
            ends.append(ends[-1] + segment.outputs)
        grad_state = torch.zeros_like(grad_ys[0])
        for j in range(len(problem.segments) - 1, -1, -1):
            segment = problem.segments[j]
            with torch.enable_grad():
                start = ctx.saved_tensors[j].detach().requires_grad_(True)
                rows = problem.replay(start, segment.times)
                grad_rows = torch.zeros_like(rows)
                grad_rows[:segment.outputs] = grad_ys[ends[j]:ends[j + 1]]
                grad_rows[-1] += grad_state
                grads = torch.autograd.grad(rows, (start, *params), grad_outputs=grad_rows,
                                            allow_unused=True, retain_graph=bool(params))
            grad_state = grads[0]
            for total, g in zip(grad_params, grads[1:]):
                if g is not None:
                    total += g
        return (None, grad_state + grad_ys[0], *grad_params)
