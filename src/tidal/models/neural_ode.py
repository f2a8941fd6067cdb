"""`NeuralODE`: a learned vector field together with the configuration of its solve, and what
every model kind shares: solver/controller/adjoint objects with the models' defaults
(`tidal.defaults`), and their config as plain values (names through `tidal.registry`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from tidal import _checks as check
from tidal import defaults, registry
from tidal._errors import InvalidArgumentError, TidalError
from tidal.adjoint.base import Adjoint
from tidal.controllers import ConstantStepSize, PIDController
from tidal.controllers.base import StepSizeController
from tidal.integrate import solve
from tidal.nn import MLP
from tidal.solution import Solution, Stats
from tidal.solvers.base import StepMethod

VECTOR_FIELDS: dict[str, type[nn.Module]] = {"MLP": MLP}


def dtype_mismatch(subject: str, name: str, x: Any, model: nn.Module, cause: str = ""
                   ) -> InvalidArgumentError | None:
    """The error naming both dtypes when the input `x` (`name`, as `subject` introduces it)
    is of another dtype than the model's parameters (`cause`: what torch said, if it failed),
    else None."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not (isinstance(x, torch.Tensor) and dtypes and x.dtype not in dtypes):
        return None
    said = f" ({cause})" if cause else ""
    return InvalidArgumentError(
        f"{subject} is {x.dtype} but the model's parameters are "
        f"{', '.join(sorted(map(str, dtypes)))}{said}; convert one to the other: "
        f"model.to({name}.dtype) or {name}.to(model's dtype).")


def raise_dtype_mismatch(call: str, name: str, x: Any, model: nn.Module,
                         error: RuntimeError) -> None:
    """Raise `dtype_mismatch`'s error when `error` (from inside torch) came with an input of
    another dtype than the model's parameters; return otherwise."""
    mismatch = None if isinstance(error, TidalError) else dtype_mismatch(
        f"`{call}`: {name}", name, x, model, str(error))
    if mismatch is not None:
        raise mismatch from error


def network_size(network: Any) -> int | None:
    """The input size a `tidal.nn` network declares (its config's in_features), else None."""
    config = getattr(network, "config", None)
    size = config().get("in_features") if callable(config) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


class NeuralODE(nn.Module):
    """dy/dt = f_theta(t, y), solved from y0 and returned at the times ts.

    Args:
        vector_field: an `nn.Module` called as `f(t, y)`, e.g. `tidal.nn.MLP(d)`.
        solver: a solver object; default `Tsit5()`.
        controller: a step-size controller; default `PIDController(rtol=1e-4, atol=1e-6)`
            (`tidal.defaults`). A fixed-step solver (`RK4`, `Leapfrog`, ...) has no error
            estimate and needs `ConstantStepSize(dt)`.
        adjoint: an adjoint object; default `CheckpointAdjoint()` (the exact gradient with
            bounded memory); `BackpropAdjoint()` or `BacksolveAdjoint()` (constant memory,
            approximate gradient).
        max_steps: most solver steps per solve.
        compile: solve with the compiled loop (`tidal.solve(compile=...)`: True, or steps per
            compiled call); the first solve pays the compilation.

    Strings name these objects only in config files and on the command line
    (`tidal.registry`). `model(y0, ts)` returns the states [T, *y0.shape]; ts is [T] (one grid
    for the batch) or [T, B] (every trajectory its own grid).
    """

    #: `tidal.solve(compile=...)` for this model's solves (not `nn.Module.compile`)
    compile_solve: bool | int = False

    def __init__(self, vector_field: nn.Module, *, solver: StepMethod | None = None,
                 controller: StepSizeController | None = None, adjoint: Adjoint | None = None,
                 max_steps: int = defaults.MAX_STEPS, compile: bool | int = False) -> None:
        super().__init__()
        _check_model_arguments(type(self).__name__, vector_field, max_steps)
        self.vector_field = vector_field
        self.solver, self.controller, self.adjoint = solve_objects(
            type(self).__name__, solver if solver is not None else defaults.model_solver(),
            controller, adjoint)
        self.max_steps = max_steps
        self.compile_solve = compile
        self.last_stats: Stats | None = None

    def forward(self, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return self.solve(y0, ts).ys

    def solve(self, y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> Solution:
        """The full `Solution` (statistics, status, events, dense output with `dense=True`).

        `options` override this model's solve configuration (see `tidal.solve`); the model's
        adjoint is used unless `adjoint=` is given (`CheckpointAdjoint` handles events, not
        dense output: pass `adjoint=BackpropAdjoint()` with `dense=True`).
        """
        settings: dict[str, Any] = {"solver": self.solver, "controller": self.controller,
                                    "adjoint": self.adjoint, "max_steps": self.max_steps,
                                    "compile": self.compile_solve, **options}
        try:
            solution = solve(self.vector_field, y0, ts, **settings)
        except RuntimeError as error:
            raise_dtype_mismatch(f"{type(self).__name__}(y0, ts)", "y0", y0, self, error)
            size = self.state_size()
            if isinstance(y0, torch.Tensor) and y0.dim() and size not in (None, y0.shape[-1]) \
                    and not isinstance(error, TidalError):
                raise InvalidArgumentError(
                    f"`{type(self).__name__}(y0, ts)`: y0 has {y0.shape[-1]} states in its last "
                    f"dimension but the model's network takes {size} ({error}); give states of "
                    f"that size or build the model for {y0.shape[-1]}.") from error
            raise
        self.last_stats = solution.stats
        return solution

    def state_size(self) -> int | None:
        """The state size the vector field declares (a `tidal.nn` network's in_features), else
        None."""
        return network_size(self.vector_field)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (with `from_config`), as plain JSON values."""
        return {"type": "NeuralODE",
                "vector_field": network_config(
                    self.vector_field, f"`{type(self).__name__}.config()`: the vector field"),
                **self._solve_config()}

    def _solve_config(self) -> dict[str, Any]:
        """The solve configuration as plain values (shared by the models built on this one):
        the solver's and adjoint's names (`tidal.registry`), the solver's options, rtol and
        atol of a `PIDController` or dt of a `ConstantStepSize`."""
        name = type(self).__name__
        controller = self.controller
        config: dict[str, Any] = {"solver": self.solver.name, "adjoint": self.adjoint.name,
                                  "max_steps": self.max_steps}
        if type(controller) is PIDController and _plain(controller, "rtol", "atol") \
                and all(isinstance(getattr(controller, k), float | int)
                        for k in ("rtol", "atol")):
            config.update(rtol=controller.rtol, atol=controller.atol)
        elif type(controller) is ConstantStepSize and _plain(controller, "dt"):
            config["dt"] = controller.dt
        else:
            raise InvalidArgumentError(
                f"`{name}.config()`: the controller {controller!r} cannot be saved as data; "
                "use PIDController(rtol=..., atol=...) or ConstantStepSize(dt) with their "
                "other options at their defaults, or save the state_dict yourself.")
        options = solver_options(self.solver, name)
        if options:
            config["solver_options"] = options
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NeuralODE:
        """Rebuild a model from `config()`; only registered classes are constructed."""
        return cls(build_network(config["vector_field"]), **solve_options(config))


def _check_model_arguments(name: str, vector_field: Any, max_steps: Any) -> None:
    if not callable(vector_field):
        raise InvalidArgumentError(f"`{name}(vector_field=...)` must be an nn.Module called as "
                                   f"f(t, y), e.g. tidal.nn.MLP(d); got "
                                   f"{type(vector_field).__name__}.")
    check.max_steps(max_steps, owner=name)


def solve_objects(name: str, solver: StepMethod, controller: StepSizeController | None,
                  adjoint: Adjoint | None) -> tuple[StepMethod, StepSizeController, Adjoint]:
    """A model's solver, controller and adjoint, checked, with the models' defaults
    (`tidal.defaults`) filled in. `name` is the model class, for messages."""
    check.solve_objects(name, solver, controller, adjoint)
    if controller is None:
        if not solver.adaptive:
            raise InvalidArgumentError(
                f"`{name}(solver={solver!r})` has no error estimate to adapt its step; give a "
                f"fixed step: {name}(..., controller=tidal.ConstantStepSize(0.05)) (in the "
                "model's time units).")
        controller = defaults.model_controller()
    return solver, controller, adjoint if adjoint is not None else defaults.model_adjoint()


def solver_options(solver: StepMethod, name: str) -> dict[str, float]:
    """The solver's options as plain numbers (`registry.solver(solver.name, **options)`
    rebuilds it): its public attributes, less those left at None (the default of every
    optional one: `tol`, `jac`). Private attributes (`Auto`'s inner solvers) are built from
    the others. A function given as an option (`jac=`) cannot be saved as data."""
    options = {key: value for key, value in vars(solver).items()
               if not key.startswith("_") and value is not None}
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(
                f"`{name}.config()`: the solver's option {key}={value!r} cannot be saved as "
                f"data; build the model with {type(solver).__name__}() without it to save it, "
                "or save the state_dict yourself.")
    return options


def _plain(controller: Any, *kept: str) -> bool:
    """Whether every field of the (dataclass) controller but `kept` has its default."""
    return all(getattr(controller, f.name) == f.default for f in dataclasses.fields(controller)
               if f.name not in kept)


def network_config(network: nn.Module, what: str) -> dict[str, Any]:
    """A registered network's config with its "type" (`VECTOR_FIELDS`); `what` (e.g.
    "`UDE.config()`: the correction") names it in the error when it is not registered."""
    name = type(network).__name__
    config = getattr(network, "config", None)
    if config is None or VECTOR_FIELDS.get(name) is not type(network):
        raise InvalidArgumentError(
            f"{what} {name} cannot be described as data; use one of "
            f"{sorted(VECTOR_FIELDS)}, or save its state_dict yourself.")
    return {"type": name, **config()}


def build_network(spec: dict[str, Any]) -> nn.Module:
    """The network `network_config` described; only registered classes are built."""
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in VECTOR_FIELDS:
        raise InvalidArgumentError(f"Model config names network {kind!r}; known: "
                                   f"{sorted(VECTOR_FIELDS)}.")
    return VECTOR_FIELDS[kind](**spec)


def solve_options(config: dict[str, Any]) -> dict[str, Any]:
    """The solver, controller, adjoint and max_steps of a model's `config()`, as objects
    (through `tidal.registry`, the one place names become objects)."""
    solver = registry.solver(config["solver"], **config.get("solver_options", {}))
    if config.get("dt") is not None:
        controller: StepSizeController = ConstantStepSize(config["dt"])
    else:
        controller = PIDController(rtol=config.get("rtol", defaults.MODEL_RTOL),
                                   atol=config.get("atol", defaults.MODEL_ATOL))
    return {"solver": solver, "controller": controller,
            "adjoint": registry.adjoint(config["adjoint"]), "max_steps": config["max_steps"]}
