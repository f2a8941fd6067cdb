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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers.pid import PIDController
from tidal.solution import Solution, Stats


@dataclass(frozen=True)
class BacksolveAdjoint:
    """The continuous adjoint: constant memory in the number of steps.

    Args:
        solver: method of the backward solve; None uses the forward solve's.
        controller: `PIDController` of the backward solve; None uses the forward one's
            tolerances.
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

    solver: Any = None
    controller: PIDController | None = None
    params: Sequence[torch.Tensor] | None = field(default=None, hash=False)
    seminorm: bool = False


def parameters_of(adjoint: Any, call_f: Callable, t0: torch.Tensor, y0: torch.Tensor,
                  args: Any = None) -> tuple[torch.Tensor, ...]:
    """The tensors to differentiate: `params=` (plus the tensors in `args`) when given, else
    every leaf tensor that requires grad and that f's value depends on, found by evaluating f
    once and walking its graph: an nn.Module's parameters, tensors in a closure or in `args`."""
    if adjoint.params is not None:
        params = tuple(adjoint.params)
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise InvalidArgumentError(f"`{type(adjoint).__name__}(params=...)` must be a "
                                       "sequence of tensors.")
        found = (*params, *_tensors_in(args))
        return tuple({id(p): p for p in found if p.requires_grad}.values())
    with torch.enable_grad():
        y = y0.detach().requires_grad_(True)
        out = call_f(t0, y)
    return tuple(leaf for leaf in _leaves(out.grad_fn) if leaf is not y)


def _tensors_in(args: Any) -> list[torch.Tensor]:
    """Every tensor in `args`, looking inside (nested) tuples, lists and dicts."""
    if isinstance(args, torch.Tensor):
        return [args]
    if isinstance(args, dict):
        args = list(args.values())
    if isinstance(args, (tuple, list)):
        return [t for item in args for t in _tensors_in(item)]
    return []


def _leaves(root: Any) -> list[torch.Tensor]:
    """Leaf tensors (those autograd accumulates into) reachable from a graph node."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return list(found.values())


@dataclass
class BacksolveProblem:
    """What the backward pass needs besides the saved outputs."""

    forward: Callable[[torch.Tensor], Solution]  # y0 -> Solution of the forward solve
    call_f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(t, y) with args bound
    backward_solve: Callable[..., Solution]  # solve(aug, z0, ts) for the augmented system
    times: torch.Tensor  # [T] float64
    params: tuple[torch.Tensor, ...]
    seminorm: bool
    solution: Solution | None = None


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: BacksolveProblem, y0: torch.Tensor, ts: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            problem.solution = problem.forward(y0.detach())
        ctx.problem = problem
        ctx.ts_dtype = ts.dtype
        ys = problem.solution.ys
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        (ys,) = ctx.saved_tensors
        problem: BacksolveProblem = ctx.problem
        grad_y0, grad_ts, grad_params, stats = _adjoint_pass(problem, ys, grad_ys)
        if problem.solution is not None:
            problem.solution.backward_stats = stats
        return (None, grad_y0, grad_ts.to(ctx.ts_dtype), *grad_params)


def _adjoint_pass(problem: BacksolveProblem, ys: torch.Tensor, grad_ys: torch.Tensor):
    """Integrate [y, a, g] backwards over each output interval; returns the gradients."""
    times, params = problem.times, problem.params
    per_sample = times.dim() == 2
    shape, n = ys.shape[1:], ys[0].numel()
    sizes = [p.numel() for p in params]
    dtype, device = ys.dtype, ys.device
    a = grad_ys[-1].reshape(-1)
    g = torch.zeros(sum(sizes), dtype=dtype, device=device)
    grad_ts = torch.zeros(times.shape, dtype=torch.float64)
    stats = Stats()
    unit = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for i in range(len(times) - 1, 0, -1):
        with torch.no_grad():
            f_i = problem.call_f(times[i].to(dtype=dtype, device=device), ys[i])
        grad_ts[i] = _dot(grad_ys[i], f_i, per_sample).cpu()
        z = torch.cat([ys[i].reshape(-1), a, g])
        if per_sample:  # each sample over its own interval, mapped onto s in [0, 1]
            aug = _augmented_field(problem.call_f, shape, params, dtype,
                                   interval=(times[i], times[i - 1] - times[i]))
            sol = problem.backward_solve(aug, z, unit, _norm(n, problem.seminorm, shape[0]))
        else:
            aug = _augmented_field(problem.call_f, shape, params, dtype)
            sol = problem.backward_solve(aug, z, times[i - 1:i + 1].flip(0),
                                         _norm(n, problem.seminorm))
        _add_stats(stats, sol.stats)
        z = sol.ys[-1]
        a = z[n:2 * n] + grad_ys[i - 1].reshape(-1)
        g = z[2 * n:]
    with torch.no_grad():
        f_0 = problem.call_f(times[0].to(dtype=dtype, device=device), ys[0])
    grad_ts[0] = -_dot(a.view(shape) - grad_ys[0], f_0, per_sample).cpu()
    grad_params = [part.view_as(p).to(p.dtype)
                   for part, p in zip(torch.split(g, sizes), params)]
    return a.view(shape), grad_ts, grad_params, stats


def _dot(u: torch.Tensor, v: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """u . v in float64: one number, or one per sample (the leading dimension)."""
    product = (u * v).double()
    return product.reshape(product.shape[0], -1).sum(-1) if per_sample else product.sum()


def _augmented_field(call_f: Callable, shape: torch.Size, params: tuple[torch.Tensor, ...],
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
        with torch.enable_grad():
            y = z[:n].view(shape).detach().requires_grad_(True)
            a = z[n:2 * n].view(shape)
            dy = call_f(t, y)
            if interval is not None:
                a = a * scale.to(z.device)
            vjps = torch.autograd.grad(dy, (y, *params), grad_outputs=a, allow_unused=True,
                                       retain_graph=bool(params))
        dy = dy.detach() if interval is None else dy.detach() * scale.to(z.device)
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


def _add_stats(total: Stats, more: Stats) -> None:
    total.num_fevals += more.num_fevals
    total.num_steps += more.num_steps
    total.num_accepted += more.num_accepted
    total.num_rejected += more.num_rejected
