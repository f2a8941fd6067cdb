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


class _FlowTimes(torch.autograd.Function):
    """The identity on states [T, ...] at times [T], whose gradient with respect to time i is
    sign * dL/dy_i . f(t_i, y_i) (rows not reached, NaN after an event, get none)."""

    @staticmethod
    def forward(ctx: Any, f: VectorField, grid: Grid, sign: float, ts: torch.Tensor,
                ys: torch.Tensor) -> torch.Tensor:
        ctx.f, ctx.grid, ctx.sign = f, grid, sign
        ctx.save_for_backward(ts, ys)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        ts, ys = ctx.saved_tensors
        grad_ts = torch.zeros_like(ts)
        for i in range(ts.shape[0]):
            if torch.isnan(ys[i]).any():
                continue
            rate = flow_rate(ctx.f, ctx.grid, ts[i], ys[i], grad_ys[i])
            grad_ts[i] = ctx.sign * rate.to(device=ts.device, dtype=ts.dtype)
        return None, None, None, grad_ts, grad_ys


def initial_time(problem: Problem) -> torch.Tensor:
    """y0, with dL/dt0 = -dL/dy0 . f(t0, y0) attached."""
    out: torch.Tensor = _FlowTimes.apply(problem.f, problem.grid, -1.0,
                                         problem.ts[0].unsqueeze(0), problem.y0.unsqueeze(0))
    return out[0]


def output_times(problem: Problem, ys: torch.Tensor) -> torch.Tensor:
    """ys, with dL/dt_i = dL/dy_i . f(t_i, y_i) attached (including i = 0, which cancels the
    initial-time term's share of the output y(t_0) = y0)."""
    out: torch.Tensor = _FlowTimes.apply(problem.f, problem.grid, 1.0, problem.ts, ys)
    return out
