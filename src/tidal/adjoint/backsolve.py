r"""`BacksolveAdjoint`: gradients from the continuous adjoint, solved backwards in time.

For dy/dt = f(t, y, theta) and a loss L(y(t_0), ..., y(t_N)), the adjoint a(t) = dL/dy(t)
and the parameter gradient g obey, backwards from t_N,

$$ \frac{da}{dt} = -a^\top \frac{\partial f}{\partial y}, \qquad
   \frac{dg}{dt} = -a^\top \frac{\partial f}{\partial \theta}, \qquad g(t_N) = 0, $$

with a jumping by dL/dy(t_i) at every output time. The backward pass integrates the augmented
state z = [y, a, g] from each output time to the previous one (y is integrated backwards too,
and reset to the stored output at each t_i), so memory does not grow with the number of forward
steps. Then dL/dy0 = a(t_0), dL/dtheta = g(t_0), dL/dt_i = dL/dy(t_i) . f(t_i, y_i) for the
output times, and dL/dt_0 = -a(t_0^+) . f(t_0, y_0) for the initial time.

On per-sample grids every sample runs backwards over its own output intervals, all of them
mapped onto one pseudo-time s in [0, 1] per interval (t_b(s) = t_{i,b} + s (t_{i-1,b} - t_{i,b}),
see `_augmented_field`), so that the parameter gradient, shared by the batch, is one integral:
its rate is a single vector-Jacobian product over the batch. The step size in s is shared and
the error norm is the largest over samples, so each sample meets the tolerance on its own.

The gradient is that of the exact ODE solution, approximated to the backward solve's tolerance:
it converges to the discrete solve's gradient as both tolerances shrink, but is not equal to it
(use `BackpropAdjoint` for that).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tidal._errors import IncompatibleOptionsError
from tidal._grid import Grid
from tidal._loop_io import solution_of
from tidal._vector_field import VectorField
from tidal.adjoint.base import Adjoint, Loop, parameters_and_f0
from tidal.adjoint.times import flow_rate
from tidal.controllers.adaptive import AdaptiveController
from tidal.controllers.base import StepSizeController
from tidal.controllers.pid import PIDController
from tidal.solution import Solution, Stats
from tidal.solvers.base import FixedStepMethod, StepMethod

if TYPE_CHECKING:
    from tidal._problem import Problem


@dataclass(frozen=True)
class BacksolveAdjoint(Adjoint):
    """The continuous adjoint: constant memory in the number of steps.

    Args:
        solver: method of the backward solve; None uses the forward solve's.
        controller: the backward solve's controller (a `PIDController`, or a fixed step for
            a fixed-step solver); None uses the forward one's.
        params: the tensors to differentiate; None finds every tensor requiring grad that f
            depends on (a module's parameters, tensors in a closure or in `args`) by
            evaluating f once and walking its graph.
        seminorm: control the backward step size by the state and adjoint only, not the
            parameter gradient (Kidger et al. 2021): usually fewer backward steps, same accuracy.

    Shared and per-sample time grids; not with terminal events or dense output (use
    `CheckpointAdjoint` or `BackpropAdjoint` for those). On per-sample grids the backward
    solve takes one step size for the batch in a pseudo-time that maps each sample's own
    interval between outputs onto [0, 1] (see the module's docstring).
    """

    name = "backsolve"
    solver: StepMethod | None = None
    controller: StepSizeController | None = None
    params: Sequence[torch.Tensor] | None = field(default=None, hash=False)
    seminorm: bool = False

    def check(self, problem: Problem) -> None:
        super().check(problem)
        if problem.event is not None:
            raise IncompatibleOptionsError(
                "`solve(event=..., adjoint=BacksolveAdjoint())`: gradients through a terminal "
                "event are implemented for the discrete solve only; use "
                "adjoint=tidal.CheckpointAdjoint() (bounded memory, the same gradient as "
                "backprop) or tidal.BackpropAdjoint().")
        c = problem.controller
        tensor_tolerance = isinstance(c, AdaptiveController) and (
            isinstance(c.rtol, torch.Tensor) or isinstance(c.atol, torch.Tensor))
        if tensor_tolerance and self.controller is None:
            raise IncompatibleOptionsError(
                "`solve(controller=PIDController(per-element tolerances), adjoint="
                "BacksolveAdjoint())`: the backward solve runs on [y, adjoint, gradient] and "
                "needs its own tolerances; pass BacksolveAdjoint(controller=PIDController(rtol, "
                "atol)).")
        backward = self.solver if self.solver is not None else problem.solver
        if isinstance(backward, FixedStepMethod) and backward.splits_state:
            raise IncompatibleOptionsError(
                f"`solve(solver={backward!r}, adjoint=BacksolveAdjoint())`: the backward solve "
                "runs on [y, adjoint, gradient], which has no (q, p) halves for a symplectic "
                "splitting. Use adjoint=tidal.CheckpointAdjoint() (the exact gradient of the "
                "symplectic steps, bounded memory) or tidal.BackpropAdjoint(), or integrate the "
                "backward ODE with another method: BacksolveAdjoint(solver=tidal.RK4()).")

    def run(self, problem: Problem, loop: Loop) -> Solution:
        """Forward solve without a graph; gradients by the adjoint ODE."""
        grid, y0 = problem.grid, problem.y0
        params, f0 = parameters_and_f0(self.params, "BacksolveAdjoint", problem, y0)
        state = _BacksolveRun(problem=problem, loop=loop, adjoint=self, params=params, f0=f0)
        ts = problem.ts if problem.time_grad else grid.times
        ys = _Backsolve.apply(state, y0, ts, *state.params)
        assert state.solution is not None, "the forward solve ran; this is a bug in tidal"
        state.solution.ys = ys
        return state.solution

    def backward_problem(self, problem: Problem, aug: VectorField, z0: torch.Tensor,
                         ts: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor]
                         ) -> Problem:
        """The solve of the augmented system [y, a, g] over one output interval."""
        controller = self.controller if self.controller is not None else problem.controller
        if isinstance(controller, PIDController) and controller.norm is None:
            controller = dataclasses.replace(controller, norm=norm)
        # run by the loop directly: the problem's adjoint (this one) is not consulted
        return problem.replace(
            f=aug, args=None, y0=z0, ts=ts, grid=Grid.of(ts, z0.device),
            solver=self.solver if self.solver is not None else problem.solver,
            controller=controller, event=None, dense=False, throw=True, start=None)


@dataclass
class _BacksolveRun:
    """One backsolve-differentiated solve: what the autograd function needs."""

    problem: Problem
    loop: Loop
    adjoint: BacksolveAdjoint
    params: tuple[torch.Tensor, ...]
    f0: torch.Tensor | None  # f at the start, if the call that found `params` gave it
    solution: Solution | None = None


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: _BacksolveRun, y0: torch.Tensor, ts: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            run.solution = solution_of(run.problem, run.loop(run.problem, y0.detach(),
                                                             f0=run.f0))
        ctx.run = run
        ctx.ts_dtype = ts.dtype
        ys = run.solution.ys
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        (ys,) = ctx.saved_tensors
        run: _BacksolveRun = ctx.run
        grad_y0, grad_ts, grad_params, stats = _adjoint_pass(run, ys, grad_ys,
                                                             ctx.needs_input_grad[2])
        if run.solution is not None:
            run.solution.backward_stats = stats
        return (None, grad_y0, grad_ts.to(ctx.ts_dtype), *grad_params)


def _adjoint_pass(run: _BacksolveRun, ys: torch.Tensor, grad_ys: torch.Tensor,
                  time_grad: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], Stats]:
    """Integrate [y, a, g] backwards over each output interval; returns the gradients (the
    times' only with `time_grad`: f is then also called at the output times)."""
    problem, params = run.problem, run.params
    grid, f, times = problem.grid, problem.f, problem.grid.times
    shape, n = ys.shape[1:], ys[0].numel()
    sizes = [p.numel() for p in params]
    dtype, device = ys.dtype, ys.device
    a = grad_ys[-1].reshape(-1)
    g = torch.zeros(sum(sizes), dtype=dtype, device=device)
    grad_ts = torch.zeros(times.shape, dtype=torch.float64)
    stats = Stats()
    unit = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for i in range(len(times) - 1, 0, -1):
        if time_grad:
            grad_ts[i] = flow_rate(f, grid, times[i], ys[i], grad_ys[i]).cpu()
        z = torch.cat([ys[i].reshape(-1), a, g])
        if grid.batched:  # each sample over its own interval, mapped onto s in [0, 1]
            aug = _augmented_field(f, shape, params, dtype,
                                   interval=(times[i], times[i - 1] - times[i]))
            backward = run.adjoint.backward_problem(problem, aug, z, unit,
                                                    _norm(n, run.adjoint.seminorm, shape[0]))
        else:
            aug = _augmented_field(f, shape, params, dtype)
            backward = run.adjoint.backward_problem(problem, aug, z, times[i - 1:i + 1].flip(0),
                                                    _norm(n, run.adjoint.seminorm))
        sol = solution_of(backward, run.loop(backward, z))
        stats.add(sol.stats)
        z = sol.ys[-1]
        a = z[n:2 * n] + grad_ys[i - 1].reshape(-1)
        g = z[2 * n:]
    if time_grad:
        grad_ts[0] = -flow_rate(f, grid, times[0], ys[0], a.view(shape) - grad_ys[0]).cpu()
    grad_params = [part.view_as(p).to(p.dtype)
                   for part, p in zip(torch.split(g, sizes), params)]
    return a.view(shape), grad_ts, grad_params, stats


def _augmented_field(f: VectorField, shape: torch.Size, params: tuple[torch.Tensor, ...],
                     dtype: torch.dtype,
                     interval: tuple[torch.Tensor, torch.Tensor] | None = None) -> Callable:
    """dz/dt for z = [y, a, g]: [f, -a^T df/dy, -a^T df/dtheta] (one vector-Jacobian product).

    With `interval` = (start [B], length [B]) (per-sample grids), sample b runs over its own
    interval t_b(s) = start_b + s length_b while s goes from 0 to 1, so dz_b/ds = length_b
    dz_b/dt. The parameter gradient g is shared: its rate is the sum over samples of
    -length_b a_b^T df_b/dtheta, which is one vector-Jacobian product with the cotangent
    length_b a_b. This is how a shared g follows per-sample time grids without per-sample
    parameter gradients (which a closure over the parameters cannot provide cheaply).
    """
    n = math.prod(shape)
    if interval is not None:
        start, length = (x.to(torch.float64) for x in interval)
        scale = length.to(dtype).view(-1, *([1] * (len(shape) - 1)))

    def aug(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if interval is not None:
            s = t.to(torch.float64)
            t = (start.to(s.device) + s * length.to(s.device)).to(dtype=dtype, device=z.device)
        graph = z.requires_grad  # differentiated itself: an implicit method's Jacobian
        with torch.enable_grad():
            y = z[:n].view(shape)
            y = y if graph else y.detach().requires_grad_(True)
            a = z[n:2 * n].view(shape)
            dy = f(t, y)
            if interval is not None:
                a = a * scale.to(z.device)
            vjps: Sequence[torch.Tensor | None] = (
                torch.autograd.grad(dy, (y, *params), grad_outputs=a, allow_unused=True,
                                    retain_graph=bool(params) or graph, create_graph=graph)
                if dy.requires_grad else [None] * (1 + len(params)))  # f depends on neither
        dy = dy if graph else dy.detach()
        dy = dy if interval is None else dy * scale.to(z.device)
        vjp_y = vjps[0] if vjps[0] is not None else torch.zeros_like(y)
        parts = [dy.reshape(-1), -vjp_y.reshape(-1)]
        for vjp, p in zip(vjps[1:], params):
            parts.append(torch.zeros(p.numel(), dtype=dtype, device=z.device) if vjp is None
                         else -vjp.reshape(-1).to(dtype))
        return torch.cat(parts)

    return aug


def _norm(n: int, seminorm: bool, batch: int | None = None
          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Largest RMS over the parts [y, a, g] (g left out under the seminorm); with `batch`,
    the largest over samples of each sample's RMS of y and of a, so every sample meets the
    tolerance on its own, as on per-sample grids."""

    def rms(part: torch.Tensor) -> torch.Tensor:
        if batch is None:
            return torch.linalg.vector_norm(part) / math.sqrt(part.shape[-1])
        rows = part.reshape(batch, -1)
        return (torch.linalg.vector_norm(rows, dim=-1) / math.sqrt(rows.shape[-1])).max()

    def norm(scaled: torch.Tensor) -> torch.Tensor:
        parts = [rms(scaled[:n]), rms(scaled[n:2 * n])]
        if not seminorm and scaled.shape[-1] > 2 * n:
            g = scaled[2 * n:]
            parts.append(torch.linalg.vector_norm(g) / math.sqrt(g.shape[-1]))
        return torch.stack(parts).max()

    return norm
