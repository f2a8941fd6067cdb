r"""`ReversibleAdjoint`: the exact gradient of a reversible Heun solve in O(1) memory.

The forward solve keeps no states and no graph. The backward pass walks the steps from the
last one, rebuilding each step's start (y_n, yh_n, f(yh_n), g(yh_n)) from its end and the same
increment (asked again from the Brownian tree) by the algebra of `ReversibleHeun.backward`,
and carrying the adjoints of (y, yh, f(yh), g(yh)) and of the parameters one step back through
the step's transposed (linear) algebra plus one vector-Jacobian product of f and g at yh. The
result is the gradient of the discrete forward solve, the one `BackpropAdjoint` computes, up
to the round-off of the reconstruction (Kidger, Foster, Li & Lyons, NeurIPS 2021); memory holds one
step's graph and a chunk of increments, plus the step ends (one float per step).

Each backward step costs one drift and one diffusion evaluation (at the rebuilt yh, with a
graph) and one vector-Jacobian product of them: the forward step's cost, plus its backward.
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

    Shared grids ts [T] and per-sample grids ts [T, B] (each sample walked back through its
    own steps; a sample that did not step in an iteration keeps its state and adjoints).
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

    def run(self, problem: Any, loop: Loop) -> Solution:
        solution, run = solve_without_graph(problem, loop, self.params, "ReversibleAdjoint")
        if run is not None:
            solution.ys = ReversibleSolve.apply(run, problem.y0, *run.params)
        return solution


def solve_without_graph(problem: Any, loop: Loop,
                        params: Sequence[torch.Tensor] | None, owner: str
                        ) -> tuple[Solution, GraphlessRun | None]:
    """The solve with no graph (an O(1)-memory adjoint's forward pass), and what its backward
    pass needs: None when no gradient is asked (grad mode off, or nothing to differentiate).
    `params` are the adjoint's; None finds the tensors the drift and diffusion use (problem:
    an `SDEProblem`)."""
    with torch.no_grad():
        result: SDELoopResult = loop(problem, problem.y0.detach())  # type: ignore[assignment]
    solution = solution_of(problem, result)
    if not torch.is_grad_enabled():
        return solution, None
    t0 = problem.grid.user_time(problem.grid.taus[0], problem.y0.dtype)
    found = parameters_of(params, owner, problem.f, t0, problem.y0, problem.args)
    if not problem.y0.requires_grad and not found:
        return solution, None
    return solution, GraphlessRun(problem, result, found)


@dataclass
class GraphlessRun:
    """A solve run without a graph, for its adjoint's backward pass."""

    problem: SDEProblem
    result: SDELoopResult
    params: tuple[torch.Tensor, ...]


class GraphlessSolve(torch.autograd.Function):
    """The outputs ys of a run made without a graph, as a function of y0 and params; a
    subclass's backward computes their gradients from the run (its adjoint's method)."""

    @staticmethod
    def forward(ctx: Any, run: GraphlessRun, y0: torch.Tensor, *params: torch.Tensor
                ) -> torch.Tensor:
        ctx.run = run
        return run.result.ys.clone()


class ReversibleSolve(GraphlessSolve):
    """The outputs ys from y0 (and params), storing nothing but the forward run's end."""

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        """Walk the steps back (module docstring). The adjoints carried are those of the
        step end's (y, yh) and of the values fh = f(yh), gh = g(yh); f and g are evaluated once
        per step, at the rebuilt yh with a graph, and pulled back by one vector-Jacobian
        product in the next iteration."""
        run: GraphlessRun = ctx.run
        if run.problem.grid.batched:
            return _per_sample_backward(run, grad_ys)
        problem, result, params = run.problem, run.result, run.params
        tree, noise = problem.brownian, problem.noise
        taus = problem.grid.taus[:, 0].tolist()
        ends = [taus[0], *result.step_ends]
        rows = {n: k for k, n in _output_steps(taus, ends).items()}
        equation = SharedEquation(problem, grad_ys.dtype, grad_ys.device)
        steps = len(ends) - 1
        y = result.y_end
        a_y = grad_ys[rows[steps]] if steps in rows else torch.zeros_like(y)
        grad_params = [torch.zeros_like(p) for p in params]
        if steps == 0:
            return (None, a_y, *grad_params)
        yh, fh, gh = _at(equation, ends[steps], result.method_state.yh)
        a_yh, a_fh, a_gh = torch.zeros_like(y), torch.zeros_like(fh), torch.zeros_like(gh)

        def outer(a: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
            """The adjoint of g from that of g dW."""
            return a.unsqueeze(-1) * dw.unsqueeze(-2) if noise.shape == "general" else a * dw

        for high in range(steps, 0, -CHUNK):
            low = max(0, high - CHUNK)
            incs = tree.increments(ends[low:high + 1])
            for n in range(high - 1, low - 1, -1):  # step n: ends[n] -> ends[n + 1]
                dt, dw = ends[n + 1] - ends[n], incs.dw[n - low]
                # y1 = y0 + (fh0 + fh1) dt/2 + (gh0 + gh1) dW/2, fh1 = f(yh1), gh1 = g(yh1)
                grads = _vjp((fh, gh), (a_fh + a_y * (0.5 * dt), a_gh + 0.5 * outer(a_y, dw)),
                             (yh, *params))
                a_yh_total = a_yh + grads[0] if grads[0] is not None else a_yh
                _accumulate(grad_params, grads[1:])
                with torch.no_grad():  # rebuild the step's start
                    yh_prev = 2 * y - yh - fh * dt - noise.product(gh, dw)
                yh_prev, fh_prev, gh_prev = _at(equation, ends[n], yh_prev)
                with torch.no_grad():
                    y = y - (fh_prev + fh) * (0.5 * dt) - 0.5 * noise.product(gh_prev + gh, dw)
                # yh1 = 2 y0 - yh0 + fh0 dt + gh0 dW
                a_fh = a_y * (0.5 * dt) + a_yh_total * dt
                a_gh = 0.5 * outer(a_y, dw) + outer(a_yh_total, dw)
                a_y, a_yh = a_y + 2 * a_yh_total, -a_yh_total
                if n in rows:
                    a_y = a_y + grad_ys[rows[n]]
                yh, fh, gh = yh_prev, fh_prev, gh_prev
        # the first state is (y0, f(y0), g(y0)): yh0 is y0 (rebuilt to round-off)
        grads = _vjp((fh, gh), (a_fh, a_gh), (yh, *params))
        a_y = a_y + a_yh + (grads[0] if grads[0] is not None else 0.0)
        _accumulate(grad_params, grads[1:])
        return (None, a_y, *grad_params)


def _at(equation: SharedEquation, tau: float, yh: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(yh as a leaf, f(tau, yh), g(tau, yh)) with a graph."""
    with torch.enable_grad():
        leaf = yh.detach().requires_grad_(True)
        sde = equation.at(tau, 0.0)
        return leaf, sde.drift(0.0, leaf), sde.diffusion(0.0, leaf)


def _vjp(outputs: Sequence[torch.Tensor], adjoints: Sequence[torch.Tensor],
         inputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor | None]:
    """sum_i adjoints_i . d outputs_i / d inputs, None where an input is not reached."""
    pairs = [(o, a) for o, a in zip(outputs, adjoints) if o.requires_grad]
    if not pairs:
        return [None] * len(inputs)
    return torch.autograd.grad([o for o, _ in pairs], inputs, [a for _, a in pairs],
                               allow_unused=True)


def _output_steps(taus: list[float], ends: list[float]) -> dict[int, int]:
    """{output row: index of the step end it was written at} (row 0 is y0 itself)."""
    index = {tau: n for n, tau in enumerate(ends)}
    return {k: index[tau] for k, tau in enumerate(taus) if tau in index}


def _accumulate(totals: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for total, g in zip(totals, grads):
        if g is not None:
            total += g


def _per_sample_backward(run: GraphlessRun, grad_ys: torch.Tensor) -> tuple[Any, ...]:
    """`ReversibleSolve.backward` on per-sample grids: the same algebra with dt [B, 1] and
    per-sample increments, walking back the loop's iterations; where a sample did not step
    (dt = 0) its state and adjoints are kept and nothing is pulled back."""
    problem, result, params = run.problem, run.result, run.params
    tree, noise = problem.brownian, problem.noise
    batch = torch.arange(grad_ys.shape[1], device=grad_ys.device)
    dtype = grad_ys.dtype
    y = result.y_end
    a_y = torch.zeros_like(y)
    grad_params = [torch.zeros_like(p) for p in params]
    pairs = result.step_pairs
    if not pairs:
        return (None, a_y + grad_ys[0], *grad_params)

    def at(tau: torch.Tensor, yh: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            leaf = yh.detach().requires_grad_(True)
            t = tau.to(dtype)
            return leaf, problem.drift(t, leaf), problem.diffusion(t, leaf)

    def outer(a: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        return a.unsqueeze(-1) * dw.unsqueeze(-2) if noise.shape == "general" else a * dw

    def keep(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)

    yh, fh, gh = at(pairs[-1][1], result.method_state.yh)
    a_yh, a_fh, a_gh = torch.zeros_like(y), torch.zeros_like(fh), torch.zeros_like(gh)
    for start, end, row in reversed(pairs):
        landed = row >= 0
        a_y = a_y + torch.where(landed[:, None], grad_ys[row.clamp(min=0), batch], 0.0)
        active = end > start
        dt = (end - start).to(dtype)[:, None]
        dw = tree.increment(start, end).dw
        # pull back through f(yh1), g(yh1) what the step's end and the pending adjoints ask
        cot_f = keep(active, a_fh + a_y * (0.5 * dt), torch.zeros_like(a_fh))
        cot_g = keep(active, a_gh + 0.5 * outer(a_y, dw), torch.zeros_like(a_gh))
        grads = _vjp((fh, gh), (cot_f, cot_g), (yh, *params))
        a_yh_total = a_yh + grads[0] if grads[0] is not None else a_yh
        _accumulate(grad_params, grads[1:])
        with torch.no_grad():
            yh_prev = keep(active, 2 * y - yh - fh * dt - noise.product(gh, dw), yh)
        yh_prev, fh_prev, gh_prev = at(start, yh_prev)
        with torch.no_grad():
            y = keep(active, y - (fh_prev + fh) * (0.5 * dt)
                     - 0.5 * noise.product(gh_prev + gh, dw), y)
        a_fh = keep(active, a_y * (0.5 * dt) + a_yh_total * dt, a_fh)
        a_gh = keep(active, 0.5 * outer(a_y, dw) + outer(a_yh_total, dw), a_gh)
        a_y, a_yh = keep(active, a_y + 2 * a_yh_total, a_y), keep(active, -a_yh_total, a_yh)
        yh, fh, gh = yh_prev, fh_prev, gh_prev
    grads = _vjp((fh, gh), (a_fh, a_gh), (yh, *params))
    a_y = a_y + a_yh + grad_ys[0] + (grads[0] if grads[0] is not None else 0.0)
    _accumulate(grad_params, grads[1:])
    return (None, a_y, *grad_params)
