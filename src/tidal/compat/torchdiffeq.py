"""torchdiffeq's entry points with its signatures, defaults, options and output: change the
import, keep the code. `odeint`, `odeint_adjoint`, `odeint_event`, `odeint_dense`.

A thin translation onto `tidal.solve`: method names become solver objects (`tidal.SOLVERS`
plus torchdiffeq's fixed-grid Adams methods, `tidal.solvers.adams`), `options` a controller,
tuple states one flat vector (`_tuples`), callbacks on `func` a controller wrapper
(`_callbacks`); `scipy_solver` runs scipy's `solve_ivp` (`_scipy`). The deliberate
differences from torchdiffeq are listed in docs/design.md ("Known departures").
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from tidal import defaults
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError, UnknownOptionError
from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint
from tidal.adjoint.base import Adjoint
from tidal.compat import _callbacks, _scipy
from tidal.compat._steps import METHODS, TorchdiffeqController
from tidal.compat._tuples import Flattener, State
from tidal.controllers import ConstantStepSize, PIDController, StepTo
from tidal.controllers.base import StepSizeController
from tidal.controllers.norms import rms
from tidal.events import Event
from tidal.integrate import solve
from tidal.registry import SOLVERS
from tidal.solution import Solution
from tidal.solvers.adams import AdamsBashforth, AdamsBashforthMoulton
from tidal.solvers.base import StepMethod
from tidal.solvers.tableau import ButcherTableau

#: torchdiffeq's fixed-grid multistep methods, on top of `tidal.SOLVERS`
ADAMS: dict[str, type[AdamsBashforthMoulton]] = {
    "explicit_adams": AdamsBashforth, "implicit_adams": AdamsBashforthMoulton,
    "fixed_adams": AdamsBashforthMoulton,
}
SCIPY = "scipy_solver"
ADAPTIVE_OPTIONS = frozenset({"first_step", "safety", "ifactor", "dfactor", "max_num_steps",
                              "step_t", "jump_t", "norm", "min_step", "max_step", "dtype"})
#: `norm` is accepted (torchdiffeq ignores it for fixed steps: there is no error to measure)
FIXED_OPTIONS = frozenset({"step_size", "grid_constructor", "interp", "perturb",
                           "max_num_steps", "norm"})
ADAMS_OPTIONS = FIXED_OPTIONS | {"max_order", "max_iters"}
INTERPOLATIONS = ("linear", "cubic")
#: the default `max_num_steps`, torchdiffeq's 2^31 - 1: code moved from torchdiffeq finishes
#: every solve it finished there (`tidal.solve` keeps its fail-fast `tidal.defaults.MAX_STEPS`;
#: a NaN or inf still ends either at once, `Status.NONFINITE`)
MAX_NUM_STEPS = 2**31 - 1


def odeint(func: Callable[..., State], y0: State, t: torch.Tensor, *, rtol: Any = 1e-7,
           atol: Any = 1e-9, method: str | None = None, options: dict | None = None,
           event_fn: Callable | None = None) -> Any:
    """Integrate dy/dt = func(t, y) and return y at the times `t` (torchdiffeq's `odeint`).

    Args:
        func: f(t, y) returning dy/dt; y is a tensor or a tuple of tensors. Its attributes
            `callback_step`, `callback_accept_step`, `callback_reject_step` (t0, y0, dt), if
            any, are called around every step.
        y0: initial state at t[0]; a tensor or a tuple of tensors.
        t: 1-D increasing or decreasing times.
        rtol, atol: tolerances; floats, per-element tensors, or tuples matching a tuple y0.
        method: one of `tidal.SOLVERS`, "explicit_adams", "implicit_adams" or "scipy_solver"
            (default "dopri5").
        options: torchdiffeq's options (README, "From torchdiffeq"); an unknown key is an
            error listing the valid ones.
        event_fn: g(t, y); the solve runs from t[0] in the direction of t[1] until g changes
            sign. Returns (event_t, solution at [t0, event_t]). The search takes at most
            `options['max_num_steps']` steps, default 10,000 (`tidal.defaults.MAX_STEPS`;
            torchdiffeq searches without end).

    Returns:
        A tensor (or tuple of tensors) of shape (len(t), *y0.shape); with `event_fn`, the pair
        (event_t, solution).
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, None)


def odeint_adjoint(func: Callable[..., State], y0: State, t: torch.Tensor, *, rtol: Any = 1e-7,
                   atol: Any = 1e-9, method: str | None = None, options: dict | None = None,
                   event_fn: Callable | None = None, adjoint_rtol: Any = None,
                   adjoint_atol: Any = None, adjoint_method: str | None = None,
                   adjoint_options: dict | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None) -> Any:
    """`odeint` whose gradients come from the continuous adjoint (torchdiffeq's
    `odeint_adjoint`): memory does not grow with the number of steps.

    `func` must be an `nn.Module` unless `adjoint_params` lists the tensors it uses (`()` for
    none); parameters that do not require grad are left out. The backward solve takes the
    forward settings unless `adjoint_rtol`, `adjoint_atol`, `adjoint_method` or
    `adjoint_options` say otherwise; its error norm is torchdiffeq's (the largest of the
    state's, the adjoint's and each parameter's), `adjoint_options={"norm": "seminorm"}`
    leaves the parameters out, a callable gets the tuple (t, *y, *adj_y, *adj_params).
    `func.callback_*_adjoint` are called around the backward steps. With `event_fn`, the
    gradient is that of the discrete solve, by `CheckpointAdjoint` (memory bounded likewise).
    """
    if adjoint_params is not None:
        params = tuple(adjoint_params)
    elif isinstance(func, torch.nn.Module):
        params = tuple(func.parameters())
    else:
        raise InvalidArgumentError(
            "`odeint_adjoint(func=...)` must be an nn.Module so that its parameters can be "
            "found, or pass adjoint_params=(tensors func uses,), () for none.")
    strays = [type(p).__name__ for p in params if not isinstance(p, torch.Tensor)]
    if strays:
        raise InvalidArgumentError(
            f"`odeint_adjoint(adjoint_params=...)` must hold tensors (the parameters func "
            f"uses); got {', '.join(sorted(set(strays)))}. Pass e.g. tuple(model.parameters()).")
    params = tuple(p for p in params if p.requires_grad)
    if adjoint_options is not None and not isinstance(adjoint_options, Mapping):
        raise InvalidArgumentError(
            f"`odeint_adjoint(adjoint_options=...)` must be a dict of torchdiffeq's options; "
            f"got {type(adjoint_options).__name__}.")
    if adjoint_method is not None and adjoint_method != method and options is not None \
            and adjoint_options is None:
        raise InvalidArgumentError(
            f"`odeint_adjoint(method={method!r}, adjoint_method={adjoint_method!r}, "
            "options=...)`: the forward options may not fit the backward method; pass "
            "adjoint_options too.")
    backward = _Backward(
        method=adjoint_method if adjoint_method is not None else method,
        options=(dict(adjoint_options) if adjoint_options is not None else
                 {k: v for k, v in (options or {}).items() if k != "norm"}),
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol, params=params, func=func)
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, backward)


def odeint_event(func: Callable[..., State], y0: State, t0: Any, *, event_fn: Callable,
                 reverse_time: bool = False, odeint_interface: Callable = odeint,
                 **kwargs: Any) -> Any:
    """Solve from t0 until `event_fn(t, y)` changes sign (torchdiffeq's `odeint_event`):
    returns (event_t, solution at [t0, event_t]). Gradients reach event_t and the state at
    it (implicit function theorem); `reverse_time` solves towards earlier times;
    `odeint_interface` is `odeint` or `odeint_adjoint`, `kwargs` go to it."""
    t0 = torch.as_tensor(t0).reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)


def odeint_dense(func: Callable[..., State], y0: State, t0: Any, t1: Any, *,
                 rtol: Any = 1e-7, atol: Any = 1e-9, method: str | None = None,
                 options: dict | None = None) -> Callable[[torch.Tensor], State]:
    """Solve from t0 to t1 and return the solution as a function of time (torchdiffeq's
    `odeint_dense`): `fn(t)` for times t of any shape in [t0, t1] gives [*t.shape,
    *y0.shape] from the steps' own interpolants. Any method; tensor or tuple states."""
    t = torch.stack([torch.as_tensor(t0), torch.as_tensor(t1)]).reshape(2)
    sol, flat, _ = _solve(func, y0, t, rtol, atol, method, options, None, None, dense=True)

    def dense_output(t_eval: torch.Tensor) -> State:
        t_eval = torch.as_tensor(t_eval)
        return flat.unflatten(sol.evaluate(t_eval), leading=t_eval.dim())

    return dense_output


@dataclasses.dataclass(frozen=True)
class _Backward:
    """What `odeint_adjoint` says about the backward solve."""

    method: str | None
    options: dict
    rtol: Any
    atol: Any
    params: tuple[torch.Tensor, ...]
    func: Any


def _odeint(func: Callable, y0: State, t: Any, rtol: Any, atol: Any, method: str | None,
            options: dict | None, event_fn: Callable | None, backward: _Backward | None
            ) -> Any:
    t = torch.as_tensor(t)
    if _method(method) == SCIPY:
        return _scipy_odeint(func, y0, t, rtol, atol, _options(options), event_fn, backward)
    sol, flat, t = _solve(func, y0, t, rtol, atol, method, options, event_fn, backward)
    if event_fn is None:
        return flat.unflatten(sol.ys, leading=1)
    assert sol.event_y is not None and sol.event_t is not None
    solution = torch.stack([flat.flatten(y0), sol.event_y])
    return sol.event_t.to(t), flat.unflatten(solution, leading=1)


def _solve(func: Callable, y0: State, t: torch.Tensor, rtol: Any, atol: Any,
           method: str | None, options: dict | None, event_fn: Callable | None,
           backward: _Backward | None, dense: bool = False
           ) -> tuple[Solution, Flattener, torch.Tensor]:
    method = _method(method)
    options = _options(options)
    flat = Flattener(y0)
    y0_flat = flat.flatten(y0)
    solver = _solver(method, options, rtol, atol)
    _check_options(method, solver.adaptive, options)
    t = torch.as_tensor(t)
    if event_fn is not None:
        t = _event_times(t, method, solver.adaptive, options)
    controller = _controller(method, solver.adaptive, options, rtol, atol, flat, t,
                             flat.wrap(func), y0_flat)
    controller = _with_callbacks(controller, func, method, solver.adaptive)
    event = Event(lambda s, y: event_fn(s, flat.unflatten(y))) if event_fn is not None else None
    adjoint = _adjoint(backward, flat, y0_flat, t, options, event_fn is not None)
    sol = solve(flat.wrap(func), y0_flat, t, solver=solver, controller=controller, event=event,
                adjoint=adjoint, dense=dense,
                max_steps=_max_steps(options, t, event_fn is not None))
    return sol, flat, t


def _options(options: Any) -> dict:
    """`options` as a dict of its own (None: none)."""
    if options is not None and not isinstance(options, Mapping):
        raise InvalidArgumentError(
            f"`odeint(options=...)` must be a dict of torchdiffeq's options, e.g. "
            f"options={{'max_num_steps': 1000}}; got {type(options).__name__}.")
    return dict(options or {})


def _max_steps(options: dict, t: torch.Tensor, event: bool = False) -> int:
    """torchdiffeq bounds the steps of each output interval by `max_num_steps`; tidal bounds
    the whole solve, by max_num_steps x intervals: it stops only where some interval took more
    than max_num_steps steps, so never where torchdiffeq would not. An event search runs
    towards an infinite time: without `max_num_steps` it takes tidal's default
    (`tidal.defaults.MAX_STEPS`), so an event that never comes fails instead of hanging."""
    if event and "max_num_steps" not in options:
        return defaults.MAX_STEPS
    steps = _number(options, "max_num_steps", MAX_NUM_STEPS)
    if not steps >= 1:  # (NaN too)
        raise InvalidArgumentError(f"`odeint(options={{'max_num_steps': {steps!r}}})` must be at "
                                   "least 1: the most steps an output interval may take.")
    return int(min(steps, MAX_NUM_STEPS)) * max(1, len(t) - 1)


def _event_times(t: torch.Tensor, method: str, adaptive: bool, options: dict) -> torch.Tensor:
    """[t0, +-inf]: an event search runs from t[0] in the direction of t[1]."""
    if t.dim() != 1 or len(t) != 2:
        raise InvalidArgumentError(
            f"`odeint(..., event_fn=...)` needs t = [t0, t1] (two times: the start and any "
            f"later or earlier time giving the direction); got t of shape {tuple(t.shape)}.")
    if not adaptive and "step_size" not in options:
        raise InvalidArgumentError(
            f"`odeint(method={method!r}, event_fn=...)`: a fixed-step method needs "
            "options={'step_size': dt} to search for an event (there is no grid to step "
            "along).")
    direction = math.copysign(math.inf, float((t[1] - t[0]).detach()))
    return torch.stack([t[0], t[0] + direction])


def _method(method: str | None) -> str:
    method = "dopri5" if method is None else method
    if method not in SOLVERS and method not in ADAMS and method != SCIPY:
        raise InvalidArgumentError(
            f"`odeint(method={method!r})` is not a known method; valid methods: "
            f"{sorted([*SOLVERS, *ADAMS, SCIPY])}.")
    return method


def _solver(method: str, options: dict, rtol: Any, atol: Any) -> StepMethod:
    """The method, with linear interpolation between fixed steps unless `interp="cubic"`."""
    cls: type[StepMethod] = ADAMS.get(method) or METHODS.get(method) or SOLVERS[method]
    if cls.adaptive:
        return cls()
    interp = options.get("interp", "linear")
    if interp not in INTERPOLATIONS:
        raise InvalidArgumentError(f"`odeint(options={{'interp': {interp!r}}})`: choose one "
                                   f"of {list(INTERPOLATIONS)}.")
    if interp == "linear":
        cls = _linear_interpolation(cls)
    if method in ADAMS:
        return cls(max_order=options.get("max_order", 12),  # type: ignore[call-arg]
                   max_iters=options.get("max_iters", 4), rtol=_smallest(rtol),
                   atol=_smallest(atol))
    return cls()


@functools.cache
def _linear_interpolation(cls: type[StepMethod]) -> type[StepMethod]:
    """`cls` interpolating linearly between y0 and y1 (torchdiffeq's default for fixed
    steps): the dense weights w_i(theta) = b_i theta."""
    tableau = cls.tableau
    assert isinstance(tableau, ButcherTableau)  # fixed-step explicit methods only
    rows = tuple((b,) for b in tableau.b)
    rows += ((0.0,),) * (tableau.num_dense_stages - len(rows))
    linear = dataclasses.replace(tableau, dense=rows, dense_order=1)
    return type(cls.__name__, (cls,), {"tableau": linear, "__doc__": cls.__doc__,
                                        "__module__": __name__})


def _smallest(tol: Any) -> float:
    if isinstance(tol, (tuple, list)):
        return min(_smallest(x) for x in tol)
    return float(torch.as_tensor(tol).min())


def _check_options(method: str, adaptive: bool, options: dict) -> None:
    valid = (_scipy.OPTIONS if method == SCIPY else ADAMS_OPTIONS if method in ADAMS
             else ADAPTIVE_OPTIONS if adaptive else FIXED_OPTIONS)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise UnknownOptionError(
            f"`odeint(method={method!r}, options=...)` got unknown option(s) {unknown}; valid "
            f"options for {method!r} are {sorted(valid)}.")


def _controller(method: str, adaptive: bool, options: dict, rtol: Any, atol: Any,
                flat: Flattener, t: torch.Tensor, func: Callable, y0: torch.Tensor
                ) -> StepSizeController:
    if not adaptive:
        return _fixed_controller(options, t, func, y0)
    norm = options.get("norm")
    if norm is not None and not callable(norm):
        raise InvalidArgumentError(f"`odeint(options={{'norm': {norm!r}}})` must be a function "
                                   "of the state returning one number (e.g. an RMS norm).")
    if norm is not None:
        norm = flat.wrap_norm(norm)
    elif flat.shapes is not None:
        norm = flat.mixed_norm
    try:
        return TorchdiffeqController(
            rtol=flat.tolerance("rtol", rtol), atol=flat.tolerance("atol", atol),
            safety=_number(options, "safety", 0.9), factor_max=_number(options, "ifactor", 10.0),
            factor_min=_number(options, "dfactor", 0.2),
            dt0=_number(options, "first_step", None), dt_min=_number(options, "min_step", 0.0),
            dt_max=_number(options, "max_step", math.inf), step_ts=_times(options, "step_t"),
            jump_ts=_times(options, "jump_t"), norm=norm)
    except InvalidArgumentError as error:
        raise _in_odeint_terms(error) from None


#: the controller's fields under the names odeint takes them by (options, or rtol/atol)
_OPTION_NAMES = {"dt0": "first_step", "factor_max": "ifactor", "factor_min": "dfactor",
                 "dt_min": "min_step", "dt_max": "max_step", "safety": "safety",
                 "step_ts": "step_t", "jump_ts": "jump_t", "rtol": "rtol", "atol": "atol"}


def _in_odeint_terms(error: InvalidArgumentError) -> InvalidArgumentError:
    """The controller's message about one of its fields, naming odeint's argument instead
    (`PIDController(dt0=0.0)`: dt0 ... -> `odeint(options={'first_step': 0.0})`: first_step
    ...)."""
    text = str(error)
    match = re.match(r"`PIDController\((\w+)=(.*?)\)`", text)
    if match is None or match.group(1) not in _OPTION_NAMES:
        return error
    field, value = match.groups()
    name = _OPTION_NAMES[field]
    call = (f"odeint({name}={value})" if name in ("rtol", "atol")
            else f"odeint(options={{{name!r}: {value}}})")
    return InvalidArgumentError(f"`{call}`" + re.sub(rf"\b{field}\b", name, text[match.end():]))


def _fixed_controller(options: dict, t: torch.Tensor, func: Callable, y0: torch.Tensor
                      ) -> StepSizeController:
    """Steps of `step_size`, or along `grid_constructor(func, y0, t)`, or from one time of t
    to the next; `perturb` makes every step end a jump (f from inside each step)."""
    step_size, constructor = options.get("step_size"), options.get("grid_constructor")
    if step_size is not None and constructor is not None:
        raise IncompatibleOptionsError(
            "`odeint(options={'step_size': ..., 'grid_constructor': ...})`: give one of them "
            "(both say where the steps go).")
    finite = t[torch.isfinite(t)].detach()
    if constructor is not None:
        try:
            grid = torch.as_tensor(constructor(func, y0, t.detach())).detach()
        except (TypeError, ValueError, RuntimeError):  # None, strings, ...
            grid = torch.empty(0)
        forward = grid.diff() * torch.sign(t[-1] - t[0]).to(grid.dtype) > 0
        if (grid.dim() != 1 or len(grid) < 1 or grid[0] != t[0] or grid[-1] != t[-1]
                or not forward.all()):
            raise InvalidArgumentError(
                "`odeint(options={'grid_constructor': g})`: g(func, y0, t) must return a 1-D "
                f"tensor of times from t[0] = {float(t[0])} to t[-1] = {float(t[-1])}, in "
                "t's direction.")
        finite = grid
    if step_size is None:
        times = finite.double().tolist()
        return (ConstantStepSize(math.inf, jump_ts=times) if options.get("perturb")
                else StepTo(times))
    step = float(step_size)
    if not options.get("perturb", False) or not torch.isfinite(t).all():
        return ConstantStepSize(step)
    span = float(t[-1] - t[0])
    ends = [float(t[0]) + math.copysign(k * step, span)
            for k in range(math.ceil(abs(span) / step))]
    return ConstantStepSize(step, jump_ts=[*ends, float(t[-1])])


def _number(options: dict, key: str, default: float | None) -> Any:
    """A numeric option as a float (None stays None)."""
    value = options.get(key, default)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentError(f"`odeint(options={{{key!r}: {value!r}}})` must be a "
                                   "number.") from None


def _times(options: dict, key: str) -> Any:
    """A time option as a controller takes it: None gives no times."""
    value = options.get(key)
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"`odeint(options={{{key!r}: {value!r}}})` must be a "
                                   "sequence or tensor of times.")
    return () if value is None else value


def _with_callbacks(controller: StepSizeController, func: Any, method: str, adaptive: bool,
                    adjoint: bool = False) -> StepSizeController:
    supported = _callbacks.NAMES if adaptive else _callbacks.FIXED_NAMES
    callbacks = _callbacks.Callbacks.of(func, method, supported, adjoint)
    return _callbacks.WithCallbacks(controller, callbacks) if callbacks else controller


def _adjoint(backward: _Backward | None, flat: Flattener, y0: torch.Tensor, t: torch.Tensor,
             options: dict, event: bool) -> Adjoint:
    if backward is None:
        return BackpropAdjoint()
    if event:  # the discrete gradient through the event, with bounded memory
        return CheckpointAdjoint(params=backward.params)
    method = _method(backward.method)
    if method == SCIPY:
        raise IncompatibleOptionsError(
            f"`odeint_adjoint(adjoint_method={method!r})` with a tidal forward method: give a "
            "tidal method for the backward solve, or method='scipy_solver' for both.")
    solver = _solver(method, backward.options, backward.rtol, backward.atol)
    _check_options(method, solver.adaptive, backward.options)
    # the backward solve runs from t[-1] to t[0]: fixed steps and grids start from there;
    # its norm ("seminorm" or a callable of the adjoint's tuple) is `_adjoint_norm`'s
    plain = {key: value for key, value in backward.options.items() if key != "norm"}
    controller = _controller(method, solver.adaptive, plain, backward.rtol, backward.atol,
                             flat, t.flip(0), flat.wrap(backward.func), y0)
    if isinstance(controller, PIDController):
        controller = dataclasses.replace(
            controller, rtol=_smallest(controller.rtol), atol=_smallest(controller.atol),
            norm=_adjoint_norm(backward.options.get("norm"), _state_norm(options, flat),
                               flat, backward.params))
    controller = _with_callbacks(controller, backward.func, method, solver.adaptive, True)
    return BacksolveAdjoint(solver=solver, controller=controller, params=backward.params)


def _state_norm(options: dict, flat: Flattener) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward solve's norm of a flat scaled state: the user's, the tuple's mixed norm,
    or the RMS."""
    norm = options.get("norm")
    if norm is not None:
        wrapped = flat.wrap_norm(norm)
        return lambda part: torch.as_tensor(wrapped(part.view(flat.shape_of_flat())))
    return flat.mixed_norm if flat.shapes is not None else rms


def _adjoint_norm(choice: Any, state_norm: Callable, flat: Flattener,
                  params: tuple[torch.Tensor, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchdiffeq's norm of the backward state [y, adjoint, parameter gradient] (scaled):
    by default the largest of the state's norm, the adjoint's and each parameter's RMS;
    "seminorm" leaves the parameters out; a callable gets (t, *y, *adj_y, *adj_params) as
    torchdiffeq gives it (t: a zero, tidal integrates no time adjoint)."""
    n, sizes = flat.size, [p.numel() for p in params]

    def parts(scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return scaled[:n], scaled[n:2 * n], list(torch.split(scaled[2 * n:], sizes))

    if choice is None or choice == "seminorm":
        seminorm = choice == "seminorm"

        def norm(scaled: torch.Tensor) -> torch.Tensor:
            y, a, gs = parts(scaled)
            norms = [state_norm(y), state_norm(a)]
            if not seminorm:
                norms += [rms(g) for g in gs]
            return torch.stack([torch.as_tensor(x).to(scaled.dtype) for x in norms]).max()

        return norm
    if not callable(choice):
        raise InvalidArgumentError(
            f"`odeint_adjoint(adjoint_options={{'norm': {choice!r}}})`: give 'seminorm' or a "
            "callable of the tuple (t, *y, *adj_y, *adj_params).")

    def user_norm(scaled: torch.Tensor) -> torch.Tensor:
        y, a, gs = parts(scaled)
        return choice((scaled.new_zeros(()), *flat.parts(y), *flat.parts(a),
                       *(g.view_as(p) for g, p in zip(gs, params))))

    return user_norm


def _scipy_odeint(func: Callable, y0: State, t: torch.Tensor, rtol: Any, atol: Any,
                  options: dict | None, event_fn: Callable | None,
                  backward: _Backward | None) -> Any:
    options = dict(options or {})
    _check_options(SCIPY, False, options)
    _callbacks.Callbacks.of(func, SCIPY, ())
    if event_fn is not None:
        raise IncompatibleOptionsError(
            "`odeint(method='scipy_solver', event_fn=...)`: events need one of tidal's "
            "methods (e.g. method='dopri5'), as in torchdiffeq.")
    flat = Flattener(y0)
    if backward is not None and _method(backward.method) != SCIPY:
        raise IncompatibleOptionsError(
            f"`odeint_adjoint(method='scipy_solver', adjoint_method={backward.method!r})`: "
            "the backward solve of scipy_solver is scipy_solver too.")
    if backward is not None:
        _check_options(SCIPY, False, backward.options)
    ys = _scipy.scipy_solve(
        flat.wrap(func), flat.flatten(y0), t, rtol, atol, options,
        None if backward is None else _scipy.Backward(backward.rtol, backward.atol,
                                                      backward.options, backward.params))
    return flat.unflatten(ys, leading=1)
