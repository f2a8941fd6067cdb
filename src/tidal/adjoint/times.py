r"""Gradients with respect to the time grid, for adjoints that differentiate the state only.

Moving an output time t_i (i >= 1) moves only y(t_i), along the flow: dL/dt_i = dL/dy_i . f(t_i,
y_i). Moving the initial time t_0 shifts the whole trajectory the other way:
dL/dt_0 = -a(t_0^+) . f(t_0, y_0), where a(t_0^+) = dL/dy0 through the later outputs (the output
y(t_0) = y0 itself does not depend on t_0). Two identity functions carry these rules into
autograd: `initial_time` wraps y0 before the solve, `output_times` wraps ys after it. On
per-sample grids the times are [T, B] and every dot product is per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _dot(grad: torch.Tensor, velocity: torch.Tensor, per_sample: bool) -> torch.Tensor:
    if per_sample:
        return (grad * velocity).reshape(grad.shape[0], -1).sum(-1)
    return (grad * velocity).sum()


class _InitialTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call_f: Callable, y0: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        ctx.call_f, ctx.per_sample = call_f, t0.dim() == 1
        ctx.save_for_backward(y0, t0)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y0, t0 = ctx.saved_tensors
        with torch.no_grad():
            velocity = ctx.call_f(t0.to(y0.dtype), y0)
        grad_t0 = -_dot(grad, velocity, ctx.per_sample).to(t0.dtype)
        return None, grad, grad_t0


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call_f: Callable, ts: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        ctx.call_f, ctx.per_sample = call_f, ts.dim() == 2
        ctx.save_for_backward(ts, ys)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        ts, ys = ctx.saved_tensors
        grad_ts = torch.zeros_like(ts)
        with torch.no_grad():
            for i in range(ts.shape[0]):
                if torch.isnan(ys[i]).any():  # not reached (after an event): no gradient
                    continue
                velocity = ctx.call_f(ts[i].to(ys.dtype), ys[i])
                grad_ts[i] = _dot(grad_ys[i], velocity, ctx.per_sample)
        return None, grad_ts, grad_ys


def initial_time(call_f: Callable, y0: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """y0, with dL/dt0 = -dL/dy0 . f(t0, y0) attached."""
    return _InitialTime.apply(call_f, y0, t0)


def output_times(call_f: Callable, ts: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """ys, with dL/dt_i = dL/dy_i . f(t_i, y_i) attached (including i = 0, which cancels the
    initial-time term's share of the output y(t_0) = y0)."""
    return _OutputTimes.apply(call_f, ts, ys)
