"""`CheckpointAdjoint`: the exact gradient of the discrete solve with bounded memory.

The forward solve runs once without recording a graph and notes where its accepted steps
ended. The solve is then cut into `checkpoints` segments of about equal numbers of steps and
replayed over exactly those steps (no error control, no rejections), still without a graph,
keeping only each segment's starting state. The backward pass replays one segment at a time
with autograd on, from its saved state, and pulls the gradient through it. The gradient is
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
            None picks about sqrt(8 x steps): a step's graph holds several states' worth of
            stages and f's intermediates, so segments a few times shorter than sqrt(steps)
            balance the two.
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

    def segments(self, num_steps: int) -> int:
        n = self.checkpoints if self.checkpoints is not None else math.isqrt(8 * num_steps)
        return max(1, min(n, num_steps))


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


class CheckpointedSolve(torch.autograd.Function):
    """ys from y0 (and params), saving only the segments' starting states."""

    @staticmethod
    def forward(ctx, problem: CheckpointProblem, y0: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        state, starts, outputs = y0.detach(), [], [y0.detach().unsqueeze(0)]
        with torch.no_grad():
            for segment in problem.segments:
                starts.append(state)
                rows = problem.replay(state, segment.times)
                outputs.append(rows[:segment.outputs])
                state = rows[-1]
        ctx.problem = problem
        ctx.save_for_backward(*starts)
        return torch.cat(outputs)

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
