"""Names to objects: the one place where the strings of the edges (`tidal.odeint(method=...)`,
config files, the command line) become solvers, controllers and adjoints. The Python API takes
the objects themselves."""

from __future__ import annotations

import inspect
from typing import Any

from tidal import solvers as m
from tidal._errors import InvalidArgumentError
from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint
from tidal.adjoint.base import Adjoint
from tidal.controllers import ConstantStepSize, PIDController, StepTo
from tidal.controllers.base import StepSizeController
from tidal.solvers.base import StepMethod

#: Every method, by its `name`.
SOLVERS: dict[str, type[StepMethod]] = {
    cls.name: cls
    for cls in (m.Euler, m.Midpoint, m.Heun2, m.Heun3, m.RK4, m.HeunEuler, m.Fehlberg2, m.Bosh3,
                m.Dopri5, m.Tsit5, m.Dopri8, m.Leapfrog, m.Yoshida4, m.ImplicitMidpoint,
                m.Rodas5P, m.Rodas4P, m.Rosenbrock23, m.ImplicitEuler, m.Trapezoid, m.RadauIIA3,
                m.RadauIIA5, m.GL4, m.GL6, m.SDIRK2, m.TRBDF2, m.Auto)
}
#: Every adjoint, by its `name`.
ADJOINTS: dict[str, type[Adjoint]] = {
    cls.name: cls for cls in (BackpropAdjoint, CheckpointAdjoint, BacksolveAdjoint)
}
#: Every public step-size controller, by name.
CONTROLLERS: dict[str, type[StepSizeController]] = {
    "pid": PIDController, "constant": ConstantStepSize, "step_to": StepTo,
}


def _lookup(kind: str, table: dict[str, Any], name: Any, options: dict[str, Any]) -> Any:
    if not isinstance(name, str) or name not in table:
        raise InvalidArgumentError(
            f"{kind} {name!r} is not known; choose one of {sorted(table)}.")
    make = table[name]
    try:
        signature = inspect.signature(make)
    except ValueError:  # no signature to check: the call itself will say
        return make(**options)
    try:
        signature.bind(**options)
    except TypeError as error:
        raise InvalidArgumentError(f"{kind} {name!r}: {error}; its options are "
                                   f"{list(signature.parameters) or 'none'}.") from None
    return make(**options)


def solver(name: str, **options: Any) -> StepMethod:
    """The solver called `name`, e.g. `solver("tsit5")` or `solver("implicit_midpoint",
    tol=1e-10)`."""
    made: StepMethod = _lookup("Solver", SOLVERS, name, options)
    return made


def adjoint(name: str, **options: Any) -> Adjoint:
    """The adjoint called `name` ("backprop", "checkpoint" or "backsolve")."""
    made: Adjoint = _lookup("Adjoint", ADJOINTS, name, options)
    return made


def controller(name: str, **options: Any) -> StepSizeController:
    """The controller called `name`, e.g. `controller("pid", rtol=1e-6, atol=1e-8)`."""
    made: StepSizeController = _lookup("Controller", CONTROLLERS, name, options)
    return made

