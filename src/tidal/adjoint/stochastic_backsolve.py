r"""The stochastic backsolve adjoint (Li, Wong, Chen & Duvenaud 2020): gradients of a
Stratonovich SDE solve from the adjoint SDE, solved backwards in time on the same Brownian
path, in memory that does not grow with the number of steps.

For dy = f(y, theta) dt + g(y, theta) o dW and a loss of the outputs, the state y, its adjoint
a = dL/dy and the parameter gradient a_theta obey, backwards from the last output time,

$$ dy = f\,dt + g \circ dW, \quad
   -da = a^\top \partial_y f\,dt + a^\top \partial_y (g \circ dW), \quad
   -da_\theta = a^\top \partial_\theta f\,dt + a^\top \partial_\theta (g \circ dW), $$

with a jumping by dL/dy(t_i) at every output time. The backward pass takes Heun steps
(Stratonovich, strong order 1 for commutative noise) over the forward solve's step ends,
asking the tree for the same increments; y is reset to the stored output at every output
time. The gradient converges to the discrete solve's (`BackpropAdjoint`'s) as dt shrinks but
is not equal to it; tests compare the two on the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import IncompatibleOptionsError
from tidal.adjoint.base import Adjoint, Loop
from tidal.adjoint.reversible import GraphlessRun, GraphlessSolve, solve_without_graph
from tidal.solution import Solution
from tidal.solvers.sde import Calculus

CHUNK = 32  # increments fetched from the tree at once in the backward pass


@dataclass(frozen=True)
class StochasticBacksolveAdjoint(Adjoint):
    """The adjoint SDE solved backwards on the same Brownian path (module docstring).

    Args:
        params: the tensors to differentiate; None finds every tensor requiring grad that the
            drift or the diffusion uses.

    `sdeint(adjoint=BacksolveAdjoint())` uses it. Stratonovich equations, shared grids ts [T]
    and fixed steps only; the forward solve may use any Stratonovich method.
    """

    name = "stochastic_backsolve"
    params: Sequence[torch.Tensor] | None = field(default=None, hash=False)

    def check(self, problem: Any) -> None:
        if problem.calculus is not Calculus.STRATONOVICH:
            raise IncompatibleOptionsError(
                "`sdeint(adjoint=BacksolveAdjoint())` solves the Stratonovich adjoint SDE; "
                "pass calculus='stratonovich' (with a Stratonovich method such as Heun() or "
                "ReversibleHeun()), or use BackpropAdjoint()/CheckpointAdjoint() for Itô.")
        if problem.grid.batched or problem.controller.adaptive:
            raise IncompatibleOptionsError(
                "`sdeint(adjoint=BacksolveAdjoint())` supports shared grids (ts [T]) and fixed "
                "steps only; use BackpropAdjoint() or CheckpointAdjoint() otherwise.")

    def run(self, problem: Any, loop: Loop) -> Solution:
        solution, run = solve_without_graph(problem, loop, self.params, "BacksolveAdjoint")
        if run is not None:
            solution.ys = _AdjointSolve.apply(run, problem.y0, *run.params)
        return solution


class _AdjointSolve(GraphlessSolve):
    """The outputs ys; their gradients from the adjoint SDE (module docstring)."""

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        run: GraphlessRun = ctx.run
        problem, result, params = run.problem, run.result, run.params
        tree, noise = problem.brownian, problem.noise
        taus = problem.grid.taus[:, 0].tolist()
        ends = [taus[0], *result.step_ends]
        row_at = {tau: k for k, tau in enumerate(taus)}
        dtype = grad_ys.dtype

        def rates(tau: float, y: torch.Tensor, a: torch.Tensor, dt: float, dw: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor | None]]:
            """Over [tau - dt, tau] backwards: the change of y (-(f dt + g dW)), and a^T of
            the Jacobians of f dt + g dW with respect to y and the parameters."""
            with torch.enable_grad():
                leaf = y.detach().requires_grad_(True)
                t = torch.full((), tau, dtype=dtype, device=y.device)
                move = problem.drift(t, leaf) * dt + noise.product(
                    problem.diffusion(t, leaf), dw)
                grads = torch.autograd.grad(move, (leaf, *params), a, allow_unused=True)
            a_y = grads[0] if grads[0] is not None else torch.zeros_like(a)
            return -move.detach(), a_y, grads[1:]

        y = result.y_end
        a = grad_ys[row_at[ends[-1]]].clone()
        grad_params = [torch.zeros_like(p) for p in params]
        steps = len(ends) - 1
        for high in range(steps, 0, -CHUNK):
            low = max(0, high - CHUNK)
            incs = tree.increments(ends[low:high + 1])
            for n in range(high - 1, low - 1, -1):  # step n: ends[n] -> ends[n + 1]
                dt, dw = ends[n + 1] - ends[n], incs.dw[n - low]
                dy1, da1, dp1 = rates(ends[n + 1], y, a, dt, dw)
                dy2, da2, dp2 = rates(ends[n], y + dy1, a + da1, dt, dw)
                y, a = y + 0.5 * (dy1 + dy2), a + 0.5 * (da1 + da2)
                for total, g1, g2 in zip(grad_params, dp1, dp2):
                    for g in (g1, g2):
                        if g is not None:
                            total.add_(g, alpha=0.5)
                if ends[n] in row_at:  # an output time: reset y, add that output's gradient
                    row = row_at[ends[n]]
                    y = result.ys[row]
                    a = a + grad_ys[row]
        return (None, a, *grad_params)
