"""Argument checks for `tidal.solve`. Each raises an error that names the argument, shows what
arrived and says what to do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal.controllers import ConstantStepSize, PIDController
from tidal.solvers import SOLVERS, ExplicitRungeKutta, FixedStepMethod, Solver


def callable_field(f: Any) -> None:
    if not callable(f):
        raise InvalidArgumentError(f"`solve(f=...)` must be callable as f(t, y); got "
                                   f"{type(f).__name__}.")


def state(y0: Any) -> None:
    if not isinstance(y0, torch.Tensor):
        raise InvalidArgumentError(
            f"`solve(y0=...)` must be a torch.Tensor; got {type(y0).__name__}. Use "
            "torch.as_tensor(y0, dtype=torch.float64), or tidal.odeint for a tuple of tensors.")
    if not y0.is_floating_point() or y0.is_complex():
        raise InvalidArgumentError(f"`solve(y0=...)` must have a real floating dtype "
                                   f"(float32 or float64); got {y0.dtype}. Use y0.double().")
    if y0.numel() == 0:
        raise InvalidArgumentError(
            f"`solve(y0=...)` has no elements (shape {tuple(y0.shape)}); there is nothing to "
            "integrate.")
    bad = ~torch.isfinite(y0)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise InvalidArgumentError(
            f"`solve(y0=...)` contains NaN or infinite values (first at index {index}: "
            f"{y0[index].item()}). Every initial state must be finite.")


def times(ts: Any, y0: torch.Tensor, allow_infinite_end: bool) -> torch.Tensor:
    """`ts` as float64 [T] or [T, B], finite (but for an event-only end) and monotonic."""
    try:
        out = torch.as_tensor(ts).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidArgumentError(f"`solve(ts=...)` must be a tensor or sequence of times; "
                                   f"got {type(ts).__name__} ({error}).") from None
    if out.dim() not in (1, 2) or out.shape[0] == 0:
        raise InvalidArgumentError(
            f"`solve(ts=...)` must have shape [T] (one grid for the batch) or [T, B] (one grid "
            f"per sample), T >= 1; got shape {tuple(out.shape)}.")
    if out.dim() == 2 and (y0.dim() == 0 or y0.shape[0] != out.shape[1]):
        raise InvalidArgumentError(
            f"`solve(ts=...)` of shape {tuple(out.shape)} gives one time grid per sample, so "
            f"y0 must have B = {out.shape[1]} samples in its first dimension; got y0 of shape "
            f"{tuple(y0.shape)}.")
    if bool(out.isnan().any()):
        raise InvalidArgumentError(f"`solve(ts=...)` contains NaN (at index "
                                   f"{tuple(int(i) for i in out.isnan().nonzero()[0])}).")
    finite_part = out[:-1] if allow_infinite_end else out
    if not bool(torch.isfinite(finite_part).all()) or not bool(torch.isfinite(out[0]).all()):
        raise InvalidArgumentError(
            "`solve(ts=...)` contains infinite times. Only the last time may be +-inf, and only "
            "together with `event=` (the event then ends the solve).")
    _monotonic(out)
    return out


def _monotonic(ts: torch.Tensor) -> None:
    if ts.shape[0] < 2:
        return
    steps = np.diff(ts.cpu().numpy(), axis=0)
    if (steps == 0).any():
        i = int(np.argwhere(steps == 0)[0][0])
        raise InvalidArgumentError(
            f"`solve(ts=...)` has duplicate times at indices {i} and {i + 1} "
            f"(t={ts[i].tolist()}). Times must be strictly increasing or strictly decreasing; "
            "drop the duplicate.")
    monotonic = (steps > 0).all(0) | (steps < 0).all(0)
    if not np.all(monotonic):
        column = steps if ts.dim() == 1 else steps[:, int(np.argwhere(~monotonic)[0][0])]
        i = int(np.argwhere(np.sign(column) != np.sign(column[0]))[0][0])
        raise InvalidArgumentError(
            f"`solve(ts=...)` is not monotonic: it changes direction at index {i + 1}. Times must "
            "be strictly increasing (forward) or strictly decreasing (reverse time); sort them "
            "first.")


def forward_times(ts: list[float]) -> tuple[list[float], float]:
    """(tau, direction): times mapped to forward time tau = direction * t."""
    direction = -1.0 if len(ts) > 1 and ts[-1] < ts[0] else 1.0
    return [direction * t for t in ts], direction


def solver(s: Any) -> Solver:
    if isinstance(s, (ExplicitRungeKutta, FixedStepMethod)):
        return s
    if isinstance(s, type) and issubclass(s, (ExplicitRungeKutta, FixedStepMethod)):
        raise InvalidArgumentError(f"`solve(solver={s.__name__})` needs an instance: "
                                   f"solver={s.__name__}().")
    if isinstance(s, str):
        hint = (f"solver=tidal.SOLVERS[{s!r}]()" if s in SOLVERS
                else f"one of {sorted(SOLVERS)}")
        raise InvalidArgumentError(f"`solve(solver={s!r})` takes a solver object, not a name; "
                                   f"use {hint}.")
    raise InvalidArgumentError(f"`solve(solver=...)` must be a solver such as tidal.Dopri5(); "
                               f"got {type(s).__name__}.")


def controller(c: Any, s: Solver) -> PIDController | ConstantStepSize:
    if c is None:
        if s.adaptive:
            return PIDController(rtol=1e-6, atol=1e-8)
        raise InvalidArgumentError(
            f"`solve(solver={s!r})` has no error estimate, so it needs a fixed step: pass "
            "controller=tidal.ConstantStepSize(dt) or controller=tidal.StepTo(ts).")
    if not isinstance(c, (PIDController, ConstantStepSize)):
        raise InvalidArgumentError(
            f"`solve(controller=...)` must be tidal.PIDController(rtol, atol), "
            f"tidal.ConstantStepSize(dt) or tidal.StepTo(ts); got {type(c).__name__}.")
    if isinstance(c, PIDController) and not s.adaptive:
        raise IncompatibleOptionsError(
            f"`solve(solver={s!r}, controller=PIDController(...))`: {s!r} has no error "
            "estimate to control. Use controller=tidal.ConstantStepSize(dt), or an adaptive "
            "solver such as tidal.Dopri5().")
    return c


def adjoint(a: Any, ts: torch.Tensor, event: Any, dense: bool, c: Any,
            s: Solver | None = None) -> Any:
    from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint

    if a is None:
        return BackpropAdjoint()
    if not isinstance(a, (BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint)):
        raise InvalidArgumentError(
            f"`solve(adjoint=...)` must be tidal.BackpropAdjoint(), tidal.CheckpointAdjoint() "
            f"or tidal.BacksolveAdjoint(); got {type(a).__name__}.")
    if not isinstance(a, BackpropAdjoint):
        name, fix = type(a).__name__, "use adjoint=tidal.BackpropAdjoint() instead"
        if event is not None and isinstance(a, BacksolveAdjoint):
            raise IncompatibleOptionsError(
                "`solve(event=..., adjoint=BacksolveAdjoint())`: gradients through a terminal "
                "event are implemented for the discrete solve only; use "
                "adjoint=tidal.CheckpointAdjoint() (bounded memory, the same gradient as "
                "backprop) or tidal.BackpropAdjoint().")
        if dense:
            raise IncompatibleOptionsError(
                f"`solve(dense=True, adjoint={name}())` is not supported; {fix}.")
    if isinstance(a, BacksolveAdjoint):
        tensor_tolerance = isinstance(c, PIDController) and (
            isinstance(c.rtol, torch.Tensor) or isinstance(c.atol, torch.Tensor))
        if tensor_tolerance and a.controller is None:
            raise IncompatibleOptionsError(
                "`solve(controller=PIDController(per-element tolerances), adjoint="
                "BacksolveAdjoint())`: the backward solve runs on [y, adjoint, gradient] and "
                "needs its own tolerances; pass BacksolveAdjoint(controller=PIDController(rtol, "
                "atol)).")
        backward = a.solver if a.solver is not None else s
        if isinstance(backward, FixedStepMethod) and backward.splits_state:
            raise IncompatibleOptionsError(
                f"`solve(solver={backward!r}, adjoint=BacksolveAdjoint())`: the backward solve "
                "runs on [y, adjoint, gradient], which has no (q, p) halves for a symplectic "
                "splitting. Use adjoint=tidal.CheckpointAdjoint() (the exact gradient of the "
                "symplectic steps, bounded memory) or tidal.BackpropAdjoint(), or integrate the "
                "backward ODE with another method: BacksolveAdjoint(solver=tidal.RK4()).")
    return a


def max_steps(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"`solve(max_steps={n!r})` must be a positive integer.")
    return n


def field_output(f0: Any, y0: torch.Tensor) -> None:
    if not isinstance(f0, torch.Tensor):
        raise InvalidArgumentError(
            f"The vector field f(t, y) must return a tensor shaped like y; it returned "
            f"{type(f0).__name__}.")
    if f0.shape != y0.shape:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned shape {tuple(f0.shape)} for y of shape "
            f"{tuple(y0.shape)}; dy/dt must have the state's shape.")
    if f0.dtype != y0.dtype:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned dtype {f0.dtype} for y of dtype {y0.dtype}; "
            "cast its output (or the parameters it uses) to the state's dtype.")
    if f0.device != y0.device:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned a tensor on {f0.device} for y on {y0.device}; "
            "move its parameters to the state's device.")


def event_output(g0: Any, batch: int | None) -> None:
    """The event function's value at the start: a real tensor, [B] or [B, k] per sample."""
    if not isinstance(g0, torch.Tensor) or not (g0.is_floating_point() or g0.dtype == torch.long
                                                or g0.dtype == torch.int):
        raise InvalidArgumentError(
            f"`Event(fn=...)` must return a real tensor g(t, y); it returned "
            f"{type(g0).__name__ if not isinstance(g0, torch.Tensor) else g0.dtype}.")
    if batch is not None and (g0.dim() == 0 or g0.shape[0] != batch):
        raise InvalidArgumentError(
            f"`Event(fn=...)` on per-sample grids must return one value per sample, shape [B] or "
            f"[B, k] with B = {batch}; it returned shape {tuple(g0.shape)}.")


def tolerances(c: Any, y0: torch.Tensor, layout: Sequence[int]) -> tuple[Any, Any]:
    """rtol, atol as floats or tensors of y0's dtype reshaped to the loop's layout."""
    if not isinstance(c, PIDController):
        return 0.0, 0.0
    out = []
    for name in ("rtol", "atol"):
        value = getattr(c, name)
        if isinstance(value, torch.Tensor):
            try:
                value = torch.broadcast_to(value.to(y0.dtype), y0.shape)
            except RuntimeError:
                raise InvalidArgumentError(
                    f"`PIDController({name}=tensor of shape {tuple(value.shape)})` does not "
                    f"broadcast to the state's shape {tuple(y0.shape)}.") from None
            value = value.to(y0.device).reshape(tuple(layout))
        else:
            value = float(value)
        out.append(value)
    return out[0], out[1]


def boundaries(c: Any, direction: float, tau0: float, tau_end: float
               ) -> list[tuple[float, bool]]:
    """Step and jump times in forward time inside (tau0, tau_end], sorted. A jump at tau_end
    still matters: the last step then takes f from the near side."""
    marks = {direction * t: False for t in c.step_ts}
    marks.update({direction * t: True for t in c.jump_ts})
    return sorted((tau, jump) for tau, jump in marks.items()
                  if tau0 < tau < tau_end or (jump and tau == tau_end))


def per_sample_boundaries(c: Any, direction: torch.Tensor, taus: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """([B, J] boundary taus sorted per sample, [B, J] is-jump), or None without any."""
    times = [*c.step_ts, *c.jump_ts]
    if not times:
        return None
    t = torch.tensor(times, dtype=torch.float64, device=taus.device)
    jump = torch.tensor([False] * len(c.step_ts) + [True] * len(c.jump_ts), device=taus.device)
    tau = direction.to(taus.device).unsqueeze(-1) * t  # [B, J]
    tau, order = torch.sort(tau, dim=-1, stable=True)
    return tau, jump[order]


def norm(c: Any, shape: torch.Size) -> Callable | None:
    """The user's norm, called on the scaled error in the state's own shape."""
    user_norm = getattr(c, "norm", None)
    if user_norm is None:
        return None

    def wrapped(scaled: torch.Tensor) -> torch.Tensor:
        return user_norm(scaled.reshape(shape))

    return wrapped
