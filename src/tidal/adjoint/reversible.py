r"""`ReversibleAdjoint`: the exact gradient of a reversible Heun solve in O(1) memory.

The forward solve keeps no states and no graph. The backward pass walks the steps from the
last one: `ReversibleHeun.backward` rebuilds the step's start (y_n, yh_n, f(yh_n), g(yh_n)) from
its end and the same increment (asked again from the Brownian tree), the step is retaken from
the rebuilt start with autograd on, and the vector-Jacobian product of that one step carries
the adjoints of (y, yh, f(yh), g(yh)) and of the parameters one step back. The result is the
gradient of the discrete forward solve, the one `BackpropAdjoint` computes, up to the
round-off of the reconstruction (Kidger, Foster, Li & Lyons, NeurIPS 2021); memory holds one
step's graph and a chunk of increments, plus the step ends (one float per step).

Each backward step costs one drift and diffusion evaluation to rebuild and one to retake the
step, plus its backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tidal._errors import IncompatibleOptionsError
from tidal._loop_io import solution_of
from tidal._loop_sde import SharedEquation
from tidal.adjoint.base import Adjoint, Loop, parameters_of
from tidal.brownian import Increment
from tidal.solution import Solution
from tidal.solvers.sde import ReversibleHeun

if TYPE_CHECKING:
    from tidal._loop_sde import SDELoopResult
    from tidal._sde_problem import SDEProblem

CHUNK = 32  # increments fetched from the tree at once in the backward pass


@dataclass(frozen=True)
class ReversibleAdjoint(Adjoint):
    """Gradients of `sdeint(..., solver=ReversibleHeun())` in O(1) memory, equal to
    `BackpropAdjoint`'s to round-off (tidal's tests: 1e-6 relative in float64 over hundreds of
    steps).

    Args:
        params: the tensors to differentiate; None finds every tensor requiring grad that the
            drift or the diffusion uses (by evaluating both once and walking the graph).

    Shared time grids and fixed steps only (per-sample grids: use `BackpropAdjoint` or
    `CheckpointAdjoint` with another method).
    """

    name = "reversible"
    params: Sequence[torch.Tensor] | None = field(default=None, hash=False)

    def check(self, problem: Any) -> None:
        solver = getattr(problem, "solver", None)
        if not isinstance(solver, ReversibleHeun):
            raise IncompatibleOptionsError(
                f"`ReversibleAdjoint()` differentiates the reversible Heun method only; got "
                f"solver={solver!r}. Use sdeint(..., solver=tidal.ReversibleHeun()), or "
                f"BackpropAdjoint()/CheckpointAdjoint() for other methods.")
        if problem.grid.batched:
            raise IncompatibleOptionsError(
                "`ReversibleAdjoint()` supports shared time grids (ts of shape [T]) only; use "
                "BackpropAdjoint() with per-sample grids.")

    def run(self, problem: Any, loop: Loop) -> Solution:
        sde: SDEProblem = problem
        with torch.no_grad():
            result: SDELoopResult = loop(problem, sde.y0.detach())  # type: ignore[assignment]
        solution = solution_of(problem, result)
        if not torch.is_grad_enabled():
            return solution
        grid = sde.grid
        t0 = grid.user_time(grid.taus[0], sde.y0.dtype)
        params = parameters_of(self.params, "ReversibleAdjoint", sde.f, t0, sde.y0, sde.args)
        if not sde.y0.requires_grad and not params:
            return solution
        run = _Run(sde, result, params)
        solution.ys = ReversibleSolve.apply(run, sde.y0, *params)
        return solution


@dataclass
class _Run:
    problem: SDEProblem
    result: SDELoopResult
    params: tuple[torch.Tensor, ...]


class ReversibleSolve(torch.autograd.Function):
    """The outputs ys from y0 (and params), storing nothing but the forward run's end."""

    @staticmethod
    def forward(ctx: Any, run: _Run, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.run = run
        return run.result.ys.clone()

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        run: _Run = ctx.run
        problem, result, params = run.problem, run.result, run.params
        method, tree = problem.solver, problem.brownian
        assert isinstance(method, ReversibleHeun)  # ReversibleAdjoint.check
        taus = problem.grid.taus[:, 0].tolist()
        ends = [taus[0], *result.step_ends]
        rows = {n: k for k, n in _output_steps(taus, ends).items()}
        equation = SharedEquation(problem, grad_ys.dtype, grad_ys.device)
        y, state = result.y_end, result.method_state
        a_y = torch.zeros_like(y)
        a_state = [torch.zeros_like(s) for s in state]
        grad_params = [torch.zeros_like(p) for p in params]
        steps = len(ends) - 1
        if steps in rows:
            a_y = a_y + grad_ys[rows[steps]]
        for high in range(steps, 0, -CHUNK):
            low = max(0, high - CHUNK)
            incs = tree.increments(ends[low:high + 1])
            for n in range(high - 1, low - 1, -1):  # step n: ends[n] -> ends[n + 1]
                dt = ends[n + 1] - ends[n]
                sde = equation.at(ends[n], dt)
                inc = Increment(incs.dw[n - low], None)
                with torch.no_grad():
                    y, state = method.backward(sde, y, dt, inc, state)
                with torch.enable_grad():
                    inputs = [x.detach().requires_grad_(True) for x in (y, *state)]
                    out = method.step(sde, inputs[0], dt, inc, type(state)(*inputs[1:]))
                    grads = torch.autograd.grad((out.y1, *out.state), (*inputs, *params),
                                                (a_y, *a_state), allow_unused=True)
                a_y, *a_state = (torch.zeros_like(x) if g is None else g
                                 for x, g in zip(inputs, grads))
                _accumulate(grad_params, grads[len(inputs):])
                if n in rows:
                    a_y = a_y + grad_ys[rows[n]]
        with torch.enable_grad():  # the first state (y0, f(y0), g(y0)) from y0
            y0 = problem.y0.detach().requires_grad_(True)
            first = method.init(equation.at(ends[0], 0.0), y0)
            grads = torch.autograd.grad(tuple(first), (y0, *params), tuple(a_state),
                                        allow_unused=True)
        if grads[0] is not None:
            a_y = a_y + grads[0]
        _accumulate(grad_params, grads[1:])
        return (None, a_y, *grad_params)


def _output_steps(taus: list[float], ends: list[float]) -> dict[int, int]:
    """{output row: index of the step end it was written at} (row 0 is y0 itself)."""
    index = {tau: n for n, tau in enumerate(ends)}
    return {k: index[tau] for k, tau in enumerate(taus) if tau in index}


def _accumulate(totals: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for total, g in zip(totals, grads):
        if g is not None:
            total += g
