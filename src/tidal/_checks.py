"""Argument checks for `tidal.solve`. Each raises an error that names the argument, shows what
arrived and says what to do. (Turning checked arguments into a problem is `tidal._problem`.)"""

from __future__ import annotations

import contextlib
import inspect
import types
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tidal import defaults
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers.base import StepSizeController
from tidal.solvers.base import StepMethod

if TYPE_CHECKING:
    from tidal.solvers.base import Solver


def callable_field(f: Any) -> None:
    if not callable(f):
        raise InvalidArgumentError(f"`solve(f=...)` must be callable as f(t, y); got "
                                   f"{type(f).__name__}.")


#: callables (or the code of plain functions) whose signature takes (t, y) / (t, y, args):
#: `inspect.signature` costs ~20 us, a tenth of a sequence model's small solve, and a
#: sequence model makes a new closure for each of its solves
_fits: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def _signature_key(fn: Any) -> Any:
    """What a plain function's signature depends on, its code (closures of one `def` share
    it), unless defaults or a wrapper change it; any other callable itself."""
    plain = (isinstance(fn, types.FunctionType) and not fn.__defaults__
             and not fn.__kwdefaults__ and not hasattr(fn, "__wrapped__")
             and not hasattr(fn, "__signature__"))
    return fn.__code__ if plain else fn


def takes_args(fn: Any, args: Any, owner: str = "solve", name: str = "f") -> None:
    """fn can be called as fn(t, y), or fn(t, y, args) when `args` is given, as far as its
    signature tells (a callable without one is left to its first call)."""
    count, key = 2 if args is None else 3, _signature_key(fn)
    try:
        if count in _fits.get(key, ()):
            return
    except TypeError:  # not hashable or not weakly referenceable: checked every time
        pass
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(count))
        with contextlib.suppress(TypeError):
            _fits.setdefault(key, set()).add(count)
    except TypeError:
        if args is None:
            raise InvalidArgumentError(
                f"`{owner}({name}=...)` is called as {name}(t, y), but its signature is "
                f"{signature}; pass its third argument with `{owner}(..., args=...)`, or give it "
                "a default.") from None
        raise InvalidArgumentError(
            f"`{owner}(args=...)` is passed to {name} as its third argument, {name}(t, y, args), "
            f"but its signature is {signature}; add that parameter, or leave out `args`."
        ) from None


def state(y0: Any, owner: str = "solve") -> None:
    if not isinstance(y0, torch.Tensor):
        raise InvalidArgumentError(
            f"`{owner}(y0=...)` must be a torch.Tensor; got {type(y0).__name__}. Use "
            "torch.as_tensor(y0, dtype=torch.float64), or tidal.odeint for a tuple of tensors.")
    if y0.dtype not in (torch.float32, torch.float64):
        hint = ("half precision is too coarse for the solvers' error control; use y0.float() "
                "(and cast the result back)" if y0.dtype in (torch.float16, torch.bfloat16)
                else "use y0.double()")
        raise InvalidArgumentError(f"`{owner}(y0=...)` must have a real floating dtype "
                                   f"(float32 or float64); got {y0.dtype}: {hint}.")
    if y0.numel() == 0:
        raise InvalidArgumentError(
            f"`{owner}(y0=...)` has no elements (shape {tuple(y0.shape)}); there is nothing "
            "to integrate.")
    bad = ~torch.isfinite(y0)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise InvalidArgumentError(
            f"`{owner}(y0=...)` contains NaN or infinite values (first at index {index}: "
            f"{y0[index].item()}). Every initial state must be finite.")


def times(ts: Any, y0: torch.Tensor, allow_infinite_end: bool, owner: str = "solve"
          ) -> torch.Tensor:
    """`ts` as float64 [T] or [T, B], finite (but for an event-only end) and monotonic."""
    if isinstance(ts, torch.Tensor) and (ts.is_complex() or ts.dtype == torch.bool):
        raise InvalidArgumentError(f"`{owner}(ts=...)` must hold real times; got dtype "
                                   f"{ts.dtype}.")
    try:  # Python floats straight to float64 (as_tensor alone would round them to float32)
        out = (ts.detach().to(torch.float64) if isinstance(ts, torch.Tensor)
               else torch.as_tensor(ts, dtype=torch.float64))
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidArgumentError(f"`{owner}(ts=...)` must be a tensor or sequence of times; "
                                   f"got {type(ts).__name__} ({error}).") from None
    if out.dim() not in (1, 2) or out.shape[0] == 0:
        raise InvalidArgumentError(
            f"`{owner}(ts=...)` must have shape [T] (one grid for the batch) or [T, B] (one "
            f"grid per sample), T >= 1; got shape {tuple(out.shape)}.")
    if out.dim() == 2 and (y0.dim() == 0 or y0.shape[0] != out.shape[1]):
        raise InvalidArgumentError(
            f"`{owner}(ts=...)` of shape {tuple(out.shape)} gives one time grid per sample, so "
            f"y0 must have B = {out.shape[1]} samples in its first dimension; got y0 of shape "
            f"{tuple(y0.shape)}.")
    values = out.cpu().numpy()  # one transfer: the checks are numpy's (a few us, not tens)
    if np.isnan(values).any():
        raise InvalidArgumentError(f"`{owner}(ts=...)` contains NaN (at index "
                                   f"{tuple(int(i) for i in np.argwhere(np.isnan(values))[0])}).")
    finite_part = values[:-1] if allow_infinite_end else values
    if not np.isfinite(finite_part).all() or not np.isfinite(values[0]).all():
        raise InvalidArgumentError(
            f"`{owner}(ts=...)` contains infinite times. Only the last time may be +-inf, and "
            "only together with `event=` (the event then ends the solve).")
    _monotonic(values, owner)
    return out


def _monotonic(ts: np.ndarray, owner: str) -> None:
    if ts.shape[0] < 2:
        return
    steps = np.diff(ts, axis=0)
    if (steps == 0).any():
        i = int(np.argwhere(steps == 0)[0][0])
        raise InvalidArgumentError(
            f"`{owner}(ts=...)` has duplicate times at indices {i} and {i + 1} "
            f"(t={ts[i].tolist()}). Times must be strictly increasing or strictly decreasing; "
            "drop the duplicate.")
    monotonic = (steps > 0).all(0) | (steps < 0).all(0)
    if not np.all(monotonic):
        column = steps if ts.ndim == 1 else steps[:, int(np.argwhere(~monotonic)[0][0])]
        i = int(np.argwhere(np.sign(column) != np.sign(column[0]))[0][0])
        raise InvalidArgumentError(
            f"`{owner}(ts=...)` is not monotonic: it changes direction at index {i + 1}. Times "
            "must be strictly increasing (forward) or strictly decreasing (reverse time); sort "
            "them first.")


def solver(s: Any) -> Solver:
    if s is None:
        return defaults.solver()
    if isinstance(s, StepMethod):
        return s
    from tidal.registry import SOLVERS

    if isinstance(s, type) and issubclass(s, StepMethod):
        raise InvalidArgumentError(f"`solve(solver={s.__name__})` needs an instance: "
                                   f"solver={s.__name__}().")
    if isinstance(s, str):
        hint = (f"solver=tidal.SOLVERS[{s!r}]()" if s in SOLVERS
                else f"one of {sorted(SOLVERS)}")
        raise InvalidArgumentError(f"`solve(solver={s!r})` takes a solver object, not a name; "
                                   f"use {hint}.")
    raise InvalidArgumentError(f"`solve(solver=...)` must be a solver such as tidal.Dopri5(); "
                               f"got {type(s).__name__}.")


def controller(c: Any, s: Solver) -> StepSizeController:
    if c is None:
        if s.adaptive:
            return defaults.controller()
        raise InvalidArgumentError(
            f"`solve(solver={s!r})` has no error estimate, so it needs a fixed step: pass "
            "controller=tidal.ConstantStepSize(dt) or controller=tidal.StepTo(ts).")
    if isinstance(c, type) and issubclass(c, StepSizeController):
        raise InvalidArgumentError(f"`solve(controller={c.__name__})` needs an instance: "
                                   f"controller={c.__name__}(...).")
    if not isinstance(c, StepSizeController):
        raise InvalidArgumentError(
            f"`solve(controller=...)` must be tidal.PIDController(rtol, atol), "
            f"tidal.ConstantStepSize(dt) or tidal.StepTo(ts); got {type(c).__name__}.")
    if c.adaptive and not s.adaptive:
        raise IncompatibleOptionsError(
            f"`solve(solver={s!r}, controller={type(c).__name__}(...))`: {s!r} has no error "
            "estimate to control. Use controller=tidal.ConstantStepSize(dt), or an adaptive "
            "solver such as tidal.Dopri5().")
    return c


def adjoint(a: Any) -> Adjoint:
    """The adjoint object (its own `check` then refuses what it cannot differentiate)."""
    if a is None:
        return defaults.adjoint()
    if isinstance(a, type) and issubclass(a, Adjoint):
        raise InvalidArgumentError(f"`solve(adjoint={a.__name__})` needs an instance: "
                                   f"adjoint={a.__name__}().")
    if not isinstance(a, Adjoint):
        raise InvalidArgumentError(
            f"`solve(adjoint=...)` must be tidal.BackpropAdjoint(), tidal.CheckpointAdjoint() "
            f"or tidal.BacksolveAdjoint(); got {type(a).__name__}.")
    return a


def max_steps(n: Any, owner: str = "solve") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"`{owner}(max_steps={n!r})` must be a positive integer: "
                                   "the most solver steps per solve.")
    return n


def solve_objects(owner: str, solver: Any, controller: Any, adjoint: Any) -> None:
    """A model's solver, controller and adjoint (each may be None) are objects of their
    kinds, not names or classes; `owner` is the model, for messages."""
    for argument, value, base, example in (
            ("solver", solver, StepMethod, "tidal.Tsit5()"),
            ("controller", controller, StepSizeController, "tidal.PIDController(1e-4, 1e-6)"),
            ("adjoint", adjoint, Adjoint, "tidal.CheckpointAdjoint()")):
        if value is not None and not isinstance(value, base):
            hint = (f"; names are for config files and the command line: "
                    f"tidal.registry.{argument}({value!r})" if isinstance(value, str) else "")
            raise InvalidArgumentError(
                f"`{owner}({argument}={value!r})` must be a {base.__name__} object such as "
                f"{example}{hint}.")


def compile_steps(compile: Any) -> int:
    """`solve(compile=...)` as steps per compiled call: False -> 0 (eager), True -> 1, n -> n."""
    if isinstance(compile, bool):
        return int(compile)
    if isinstance(compile, int) and compile >= 1:
        return compile
    raise InvalidArgumentError(
        f"`solve(compile={compile!r})`: give True (compiled), False (eager) or a positive "
        "integer: the number of steps each compiled call takes when the solve records a graph.")
