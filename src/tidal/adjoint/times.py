r"""Gradients with respect to the time grid, for adjoints that differentiate the state only.

Moving an output time t_i (i >= 1) moves only y(t_i), along the flow: dL/dt_i = dL/dy_i . f(t_i,
y_i). Moving the initial time t_0 shifts the whole trajectory the other way:
dL/dt_0 = -a(t_0^+) . f(t_0, y_0), where a(t_0^+) = dL/dy0 through the later outputs (the output
y(t_0) = y0 itself does not depend on t_0). Two identity functions carry these rules into
autograd: `initial_time` wraps y0 before the solve, `output_times` wraps ys after it. On
per-sample grids the times are [T, B] and every dot product is per sample (`Grid.dot`).
`BacksolveAdjoint` applies the same two rules inside its own backward pass (`flow_rate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from tidal._grid import Grid
from tidal._vector_field import VectorField

if TYPE_CHECKING:
    from tidal._problem import Problem


@torch.no_grad()
def flow_rate(f: VectorField, grid: Grid, t: torch.Tensor, y: torch.Tensor,
              grad: torch.Tensor) -> torch.Tensor:
    """dL/dy . f(t, y) per group (float64): the rate of the loss as the time t moves."""
    return grid.dot(grad, f(t.to(dtype=y.dtype, device=y.device), y))


class _InitialTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, f: VectorField, grid: Grid, y0: torch.Tensor, t0: torch.Tensor
                ) -> torch.Tensor:
        ctx.f, ctx.grid = f, grid
        ctx.save_for_backward(y0, t0)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        y0, t0 = ctx.saved_tensors
        grad_t0 = -flow_rate(ctx.f, ctx.grid, t0, y0, grad).to(t0.dtype)
        return None, None, grad, grad_t0


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, f: VectorField, grid: Grid, ts: torch.Tensor, ys: torch.Tensor
                ) -> torch.Tensor:
        ctx.f, ctx.grid = f, grid
        ctx.save_for_backward(ts, ys)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        ts, ys = ctx.saved_tensors
        grad_ts = torch.zeros_like(ts)
        for i in range(ts.shape[0]):
            if torch.isnan(ys[i]).any():  # not reached (after an event): no gradient
                continue
            grad_ts[i] = flow_rate(ctx.f, ctx.grid, ts[i], ys[i], grad_ys[i]).to(ts.device)
        return None, None, grad_ts, grad_ys


def initial_time(problem: Problem) -> torch.Tensor:
    """y0, with dL/dt0 = -dL/dy0 . f(t0, y0) attached."""
    out: torch.Tensor = _InitialTime.apply(problem.f, problem.grid, problem.y0, problem.ts[0])
    return out


def output_times(problem: Problem, ys: torch.Tensor) -> torch.Tensor:
    """ys, with dL/dt_i = dL/dy_i . f(t_i, y_i) attached (including i = 0, which cancels the
    initial-time term's share of the output y(t_0) = y0)."""
    out: torch.Tensor = _OutputTimes.apply(problem.f, problem.grid, problem.ts, ys)
    return out
