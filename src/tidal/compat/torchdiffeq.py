"""`odeint` with torchdiffeq's signature, defaults and output: change the import, keep the code.

A thin translation onto `tidal.solve`: method names become solver objects through the
`SOLVERS` registry, `options` become a controller, tuple states are flattened into one vector
(with torchdiffeq's mixed norm: the largest RMS over the tuple's components).

Differences, all deliberate: fixed-step methods interpolate between steps with cubic Hermite
(torchdiffeq: linear by default), `dopri8` is Hairer's DOP853 with its 7th-order dense output,
`max_num_steps` counts the steps of the whole solve and defaults to `tidal.defaults.MAX_STEPS`
(torchdiffeq: 2^31 - 1, which let a NaN field run for hours), a NaN or inf from `func` ends the
solve at once with `SolveFailedError`, and the `dtype` option is accepted but time is always
float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tidal import defaults
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError, UnknownOptionError
from tidal.adjoint import BacksolveAdjoint
from tidal.controllers import ConstantStepSize, PIDController, StepTo
from tidal.controllers.norms import rms
from tidal.events import Event
from tidal.integrate import solve
from tidal.registry import SOLVERS

ADAPTIVE_OPTIONS = frozenset({"first_step", "safety", "ifactor", "dfactor", "max_num_steps",
                              "step_t", "jump_t", "norm", "min_step", "max_step", "dtype"})
FIXED_OPTIONS = frozenset({"step_size", "perturb", "max_num_steps"})
UNSUPPORTED = {"explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver"}

State = torch.Tensor | tuple[torch.Tensor, ...]


def odeint(func: Callable[..., State], y0: State, t: torch.Tensor, *, rtol: Any = 1e-7,
           atol: Any = 1e-9, method: str | None = None, options: dict | None = None,
           event_fn: Callable | None = None) -> Any:
    """Integrate dy/dt = func(t, y) and return y at the times `t` (torchdiffeq's `odeint`).

    Args:
        func: f(t, y) returning dy/dt; y is a tensor or a tuple of tensors.
        y0: initial state at t[0]; a tensor or a tuple of tensors.
        t: 1-D increasing or decreasing times.
        rtol, atol: tolerances; floats, per-element tensors, or tuples matching a tuple y0.
        method: one of `tidal.SOLVERS` (default "dopri5").
        options: torchdiffeq's options; an unknown key is an error listing the valid ones.
        event_fn: g(t, y); the solve runs from t[0] in the direction of t[1] until g changes
            sign. Returns (event_t, solution at [t0, event_t]).

    Returns:
        A tensor (or tuple of tensors) of shape (len(t), *y0.shape); with `event_fn`, the pair
        (event_t, solution).
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, adjoint=None)


def odeint_adjoint(func: Callable[..., State], y0: State, t: torch.Tensor, *, rtol: Any = 1e-7,
                   atol: Any = 1e-9, method: str | None = None, options: dict | None = None,
                   event_fn: Callable | None = None, adjoint_rtol: Any = None,
                   adjoint_atol: Any = None, adjoint_method: str | None = None,
                   adjoint_options: dict | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None) -> Any:
    """`odeint` whose gradients come from the continuous adjoint (torchdiffeq's
    `odeint_adjoint`): memory does not grow with the number of steps.

    `func` must be an `nn.Module` unless `adjoint_params` lists the tensors it uses; parameters
    that do not require grad are skipped, unused ones get zero gradients. The backward solve
    takes the forward settings unless `adjoint_rtol`, `adjoint_atol`, `adjoint_method` or
    `adjoint_options` say otherwise; `adjoint_options={"norm": "seminorm"}` leaves the
    parameter gradient out of its step-size control.
    """
    if adjoint_params is not None:
        params = tuple(adjoint_params)
    elif isinstance(func, torch.nn.Module):
        params = tuple(func.parameters())
    else:
        raise InvalidArgumentError(
            "`odeint_adjoint(func=...)` must be an nn.Module so that its parameters can be "
            "found, or pass adjoint_params=(tensors func uses,).")
    if event_fn is not None:
        raise IncompatibleOptionsError(
            "`odeint_adjoint(..., event_fn=...)`: gradients through events with the adjoint "
            "are not supported yet; use tidal.odeint(..., event_fn=...) instead.")
    adjoint_method = _method(adjoint_method if adjoint_method is not None else method)
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    adjoint_options = dict(adjoint_options)
    seminorm = adjoint_options.get("norm") == "seminorm"
    if seminorm:
        del adjoint_options["norm"]
    solver = SOLVERS[adjoint_method]()
    _check_options(adjoint_method, solver.adaptive, adjoint_options)
    controller = None
    if solver.adaptive:
        flat = _Flattener(y0)
        forward = _controller(
            True, adjoint_options, rtol if adjoint_rtol is None else adjoint_rtol,
            atol if adjoint_atol is None else adjoint_atol, flat, torch.as_tensor(t))
        assert isinstance(forward, PIDController)
        controller = _scalar_tolerances(forward)
    adjoint = BacksolveAdjoint(solver=solver, controller=controller, params=params,
                               seminorm=seminorm)
    return _odeint(func, y0, t, rtol, atol, method, options, None, adjoint=adjoint)


def _scalar_tolerances(c: PIDController) -> PIDController:
    """The backward state is [y, adjoint, gradient]: per-element tolerances become scalars
    (their smallest value)."""
    rtol = float(c.rtol.min()) if isinstance(c.rtol, torch.Tensor) else c.rtol
    atol = float(c.atol.min()) if isinstance(c.atol, torch.Tensor) else c.atol
    return dataclasses.replace(c, rtol=rtol, atol=atol, norm=None)


def _odeint(func: Callable, y0: State, t: Any, rtol: Any, atol: Any, method: str | None,
            options: dict | None, event_fn: Callable | None,
            adjoint: BacksolveAdjoint | None) -> Any:
    method = _method(method)
    solver = SOLVERS[method]()
    flat = _Flattener(y0)
    options = dict(options or {})
    _check_options(method, solver.adaptive, options)
    t = torch.as_tensor(t)
    if event_fn is not None:
        if t.dim() != 1 or len(t) != 2:
            raise InvalidArgumentError(
                f"`odeint(..., event_fn=...)` needs t = [t0, t1] (two times: the start and any "
                f"later or earlier time giving the direction); got t of shape {tuple(t.shape)}.")
        if not solver.adaptive and "step_size" not in options:
            raise InvalidArgumentError(
                f"`odeint(method={method!r}, event_fn=...)`: a fixed-step method needs "
                "options={'step_size': dt} to search for an event (there is no grid to step "
                "along).")
        t = torch.stack([t[0], t[0] + math.copysign(math.inf, float(t[1] - t[0]))])
    controller = _controller(solver.adaptive, options, rtol, atol, flat, t)
    event = Event(lambda s, y: event_fn(s, flat.unflatten(y))) if event_fn is not None else None
    sol = solve(flat.wrap(func), flat.flatten(y0), t,
                solver=solver, controller=controller, event=event, adjoint=adjoint,
                max_steps=int(options.get("max_num_steps", defaults.MAX_STEPS)))
    if event_fn is None:
        return flat.unflatten(sol.ys, leading=1)
    assert sol.event_y is not None and sol.event_t is not None
    solution = torch.stack([flat.flatten(y0), sol.event_y])
    return sol.event_t.to(t), flat.unflatten(solution, leading=1)


def _method(method: str | None) -> str:
    method = "dopri5" if method is None else method
    if method in UNSUPPORTED:
        raise InvalidArgumentError(
            f"`odeint(method={method!r})` is a torchdiffeq method tidal does not provide; use "
            f"one of {sorted(SOLVERS)} (e.g. 'dopri5' or 'tsit5').")
    if method not in SOLVERS:
        raise InvalidArgumentError(f"`odeint(method={method!r})` is not a known method; valid "
                                   f"methods: {sorted(SOLVERS)}.")
    return method


def _check_options(method: str, adaptive: bool, options: dict) -> None:
    valid = ADAPTIVE_OPTIONS if adaptive else FIXED_OPTIONS
    unknown = sorted(set(options) - valid)
    if unknown:
        raise UnknownOptionError(
            f"`odeint(method={method!r}, options=...)` got unknown option(s) {unknown}; valid "
            f"options for {method!r} are {sorted(valid)}.")


def _controller(adaptive: bool, options: dict, rtol: Any, atol: Any, flat: _Flattener,
                t: torch.Tensor) -> PIDController | ConstantStepSize:
    if not adaptive:
        step_size = options.get("step_size")
        if step_size is None:
            return StepTo(t[torch.isfinite(t)])
        step_size = float(step_size)
        if not options.get("perturb", False):
            return ConstantStepSize(step_size)
        step = math.copysign(step_size, float(t[-1] - t[0]))
        grid = torch.arange(float(t[0]), float(t[-1]), step, dtype=torch.float64)
        # torchdiffeq's perturb: every step takes f from inside itself (t0+ and t1-)
        return ConstantStepSize(step_size, jump_ts=[*grid[1:].tolist(), float(t[-1])])
    norm = options.get("norm")
    if norm is not None:
        norm = flat.wrap_norm(norm)
    elif flat.shapes is not None:
        norm = flat.mixed_norm
    return PIDController(
        rtol=flat.tolerance("rtol", rtol), atol=flat.tolerance("atol", atol),
        safety=float(options.get("safety", 0.9)), factor_max=float(options.get("ifactor", 10.0)),
        factor_min=float(options.get("dfactor", 0.2)), dt0=_float(options.get("first_step")),
        dt_min=float(options.get("min_step", 0.0)),
        dt_max=float(options.get("max_step", math.inf)), step_ts=_times(options.get("step_t")),
        jump_ts=_times(options.get("jump_t")), norm=norm)


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def _times(x: Any) -> Any:
    """A time option as a controller takes it: None gives no times."""
    return () if x is None else x


class _Flattener:
    """Tuple states <-> one flat vector. A plain tensor passes through unchanged."""

    shapes: list[torch.Size] | None
    sizes: list[int]

    def __init__(self, y0: State):
        self.sizes = []
        if isinstance(y0, torch.Tensor):
            self.shapes = None
            return
        if not isinstance(y0, tuple) or not all(isinstance(y, torch.Tensor) for y in y0):
            raise InvalidArgumentError(f"`odeint(y0=...)` must be a tensor or a tuple of "
                                       f"tensors; got {type(y0).__name__}.")
        self.shapes = [y.shape for y in y0]
        self.sizes = [y.numel() for y in y0]

    def flatten(self, y: State) -> torch.Tensor:
        if self.shapes is None:
            assert isinstance(y, torch.Tensor)
            return y
        return torch.cat([part.reshape(-1) for part in y])

    def unflatten(self, y: torch.Tensor, leading: int = 0) -> State:
        if self.shapes is None:
            return y
        parts = torch.split(y, self.sizes, dim=leading)
        return tuple(part.reshape(y.shape[:leading] + shape)
                     for part, shape in zip(parts, self.shapes))

    def wrap(self, func: Callable) -> Callable:
        shapes = self.shapes
        if shapes is None:
            return func

        def flat_func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = func(t, self.unflatten(y))
            if not isinstance(out, tuple) or len(out) != len(shapes):
                raise InvalidArgumentError(
                    f"`odeint(func=...)` with a tuple state of {len(shapes)} tensors must "
                    f"return a tuple of {len(shapes)} tensors; got {type(out).__name__}.")
            for i, (part, shape) in enumerate(zip(out, shapes)):
                if part.shape != shape:
                    raise InvalidArgumentError(
                        f"`odeint(func=...)` returned shape {tuple(part.shape)} for tuple "
                        f"element {i} of shape {tuple(shape)}.")
            return self.flatten(out)

        return flat_func

    def tolerance(self, name: str, tol: Any) -> Any:
        if isinstance(tol, (tuple, list)):
            if self.shapes is None or len(tol) != len(self.shapes):
                raise InvalidArgumentError(
                    f"`odeint({name}=tuple)` needs one tolerance per tuple element of y0.")
            return torch.cat([torch.as_tensor(v, dtype=torch.float64).expand(size)
                              for v, size in zip(tol, self.sizes)])
        if isinstance(tol, torch.Tensor) and tol.numel() == 1:
            return float(tol)
        if isinstance(tol, torch.Tensor) and self.shapes is not None:
            return tol.reshape(-1)
        return tol

    def mixed_norm(self, scaled: torch.Tensor) -> torch.Tensor:
        return torch.stack([rms(part) for part in torch.split(scaled, self.sizes)]).max()

    def wrap_norm(self, norm: Callable) -> Callable:
        if self.shapes is None:
            return norm
        return lambda scaled: norm(self.unflatten(scaled))
