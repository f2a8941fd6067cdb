"""torchdiffeq's `scipy_solver`: `scipy.integrate.solve_ivp` (RK45, RK23, DOP853, Radau, BDF,
LSODA) on the flattened state, with `options={"solver": ..., "min_step": ..., "max_step":
...}`.

scipy integrates in float64 NumPy on the host, outside autograd. `odeint` returns the states
without a graph (as torchdiffeq does); `odeint_adjoint` differentiates them by the continuous
adjoint, its backward ODE [y, a, g] (`tidal.adjoint.backsolve`) solved by the same scipy
method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from tidal._errors import InvalidArgumentError, SolveFailedError, Status
from tidal.adjoint.backsolve import _augmented_field

METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
OPTIONS = frozenset({"solver", "min_step", "max_step", "norm"})


@dataclass(frozen=True)
class Backward:
    """The backward solve of `odeint_adjoint`: its tolerances, options and parameters."""

    rtol: Any
    atol: Any
    options: dict
    params: Sequence[torch.Tensor]


def scipy_solve(func: Callable, y0: torch.Tensor, t: torch.Tensor, rtol: float, atol: float,
                options: dict, backward: Backward | None = None) -> torch.Tensor:
    """The states at the times t [T], shape [T, *y0.shape]; with `backward` (odeint_adjoint),
    differentiable in y0 and its parameters by the adjoint, solved with its settings."""
    settings = _settings(options, rtol, atol)
    if backward is None:
        return _forward(func, y0.detach(), t.detach(), settings)
    backward_settings = _settings(backward.options, backward.rtol, backward.atol)
    return _ScipyAdjoint.apply(func, settings, backward_settings, y0, t, *backward.params)


def _settings(options: dict, rtol: Any, atol: Any) -> dict:
    method = options.get("solver", "LSODA")
    if method not in METHODS:
        raise InvalidArgumentError(f"`odeint(method='scipy_solver', options={{'solver': "
                                   f"{method!r}}})`: choose one of {list(METHODS)}.")
    settings = {"method": method, "rtol": _scalar("rtol", rtol), "atol": _scalar("atol", atol),
                "max_step": float(options.get("max_step", math.inf))}
    if "min_step" in options:  # only LSODA takes it; scipy warns for the others
        settings["min_step"] = float(options["min_step"])
    return settings


def _scalar(name: str, tol: Any) -> Any:
    if isinstance(tol, torch.Tensor):
        return tol.detach().cpu().double().numpy() if tol.numel() > 1 else float(tol)
    if isinstance(tol, (tuple, list)):
        raise InvalidArgumentError(f"`odeint({name}=tuple, method='scipy_solver')`: give one "
                                   "tolerance (or a tensor of one per element).")
    return tol


def _integrate(rate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z0: torch.Tensor,
               times: np.ndarray, settings: dict) -> torch.Tensor:
    """solve_ivp of dz/dt = rate(t, z) for a flat z0, states at `times` [T, N] as z0's
    dtype and device."""
    dtype, device = z0.dtype, z0.device

    def np_rate(t: float, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = rate(torch.tensor(t, dtype=dtype, device=device),
                       torch.as_tensor(z, device=device).to(dtype))
        return out.detach().reshape(-1).cpu().double().numpy()

    if len(times) == 1:
        return z0.detach().reshape(1, -1).clone()
    sol = solve_ivp(np_rate, (times[0], times[-1]), z0.detach().cpu().double().numpy(),
                    t_eval=times, **settings)
    if not sol.success:
        raise SolveFailedError(Status.DT_UNDERFLOW, f"in scipy's {settings['method']} "
                               f"(odeint(method='scipy_solver')): {sol.message}")
    return torch.from_numpy(sol.y.T.copy()).to(device=device, dtype=dtype)


def _forward(func: Callable, y0: torch.Tensor, t: torch.Tensor, settings: dict
             ) -> torch.Tensor:
    shape = y0.shape
    ys = _integrate(lambda s, z: func(s, z.view(shape)), y0.reshape(-1),
                    t.cpu().double().numpy(), settings)
    return ys.view(len(t), *shape)


class _ScipyAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: Callable, settings: dict, backward_settings: dict,
                y0: torch.Tensor, t: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ys = _forward(func, y0.detach(), t.detach(), settings)
        ctx.func, ctx.settings, ctx.params = func, backward_settings, params
        ctx.save_for_backward(ys, t)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[Any, ...]:
        ys, t = ctx.saved_tensors
        params, shape = ctx.params, ys.shape[1:]
        n = ys[0].numel()
        aug = _augmented_field(ctx.func, shape, params, ys.dtype)
        a = grad_ys[-1].reshape(-1)
        g = ys.new_zeros(sum(p.numel() for p in params))
        times = t.cpu().double().numpy()
        for i in range(len(times) - 1, 0, -1):
            z = torch.cat([ys[i].reshape(-1), a, g])
            z = _integrate(aug, z, times[i - 1:i + 1][::-1].copy(), ctx.settings)[-1]
            a, g = z[n:2 * n] + grad_ys[i - 1].reshape(-1), z[2 * n:]
        grads = [part.view_as(p).to(p.dtype)
                 for part, p in zip(torch.split(g, [p.numel() for p in params]), params)]
        grad_t = None
        if ctx.needs_input_grad[4]:  # dL/dt_i = dL/dy_i . f(t_i, y_i); t_0: -a(t_0+) . f
            with torch.no_grad():
                rates = torch.stack([ctx.func(ti.to(ys.dtype), y).reshape(-1)
                                     for ti, y in zip(t, ys)])
            grad_t = (grad_ys.reshape(len(t), -1) * rates).sum(-1)
            grad_t[0] = -((a - grad_ys[0].reshape(-1)) * rates[0]).sum()
            grad_t = grad_t.to(t.dtype)
        return (None, None, None, a.view(shape), grad_t, *grads)
