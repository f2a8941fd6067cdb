"""Exceptions and the per-sample `Status` of a solve.

Messages follow one recipe: name the argument as a call snippet, show what arrived, give the
reason, then a concrete fix.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tidal.solution import Solution


class TidalError(Exception):
    """Root of every error tidal raises on purpose."""


class InvalidArgumentError(TidalError, ValueError):
    """A single argument has a bad value, shape or dtype."""


class IncompatibleOptionsError(TidalError, ValueError):
    """Two arguments that are fine alone cannot be used together."""


class Status(enum.IntEnum):
    """How a solve (or one sample of a per-sample solve) ended.

    `Status.message` says what happened and what to try; `ok` is true for the two endings that
    are not failures.
    """

    SUCCESS = 0
    EVENT = 1
    MAX_STEPS = 2
    DT_UNDERFLOW = 3
    NONFINITE = 4
    NOT_CONVERGED = 5
    SINGULAR = 6

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCESS, Status.EVENT)

    @property
    def message(self) -> str:
        return _STATUS_MESSAGES[self]


_BY_VALUE = tuple(Status)  # the values are 0, 1, 2, ...: the member of value v is _BY_VALUE[v]
assert all(status.value == value for value, status in enumerate(_BY_VALUE))


def statuses_of(codes: torch.Tensor) -> tuple[Status, ...]:
    """The Status of each code in a tensor of them, fast for large batches (`Status(v)` costs
    about half a microsecond each: 30 ms for 65,536 samples)."""
    return tuple(map(_BY_VALUE.__getitem__, codes.tolist()))


def overall_status(statuses: tuple[Status, ...]) -> Status:
    """A solve's status from its samples' (or groups'): the first failure, else EVENT if any
    stopped at one, else SUCCESS. The failures come after EVENT in value: `max` finds whether
    there is one at C speed (a Python loop costs milliseconds at 65,536 samples)."""
    worst = max(statuses, default=Status.SUCCESS)
    if worst <= Status.EVENT:
        return worst
    return next(s for s in statuses if s > Status.EVENT)


_STATUS_MESSAGES = {
    Status.SUCCESS: "The solve reached the last requested time.",
    Status.EVENT: "The solve stopped at a terminal event.",
    Status.MAX_STEPS: (
        "The solve took `max_steps` steps (default 10,000) without reaching the last requested "
        "time. Raise the limit with `solve(..., max_steps=n)` (`odeint(..., options="
        "{'max_num_steps': n})`), or loosen `rtol`/`atol`; if the problem is stiff (very "
        "different time scales), an explicit method needs very many steps: use the stiff "
        "solver `solver=tidal.Rodas5P()` (`odeint(method='rodas5p')`)."
    ),
    Status.DT_UNDERFLOW: (
        "The step size fell below what float64 time can resolve: the solution is changing too "
        "fast to follow (a singularity, a discontinuity not declared in `jump_ts=`, or a stiff "
        "problem). Try declaring discontinuities with `jump_ts=`, a looser `rtol`/`atol`, or, "
        "for a stiff problem, the stiff solver `solver=tidal.Rodas5P()` (`odeint(method="
        "'rodas5p')`)."
    ),
    Status.NONFINITE: (
        "The vector field returned NaN or infinite values (or the state overflowed). Check "
        "f(t, y) near this time for divisions by zero, logarithms or square roots of negative "
        "numbers, overflow, or NaN in its parameters (a diverged training run); tidal stops "
        "there rather than searching with ever smaller steps."
    ),
    Status.NOT_CONVERGED: (
        "An implicit method's iteration did not converge within its step. Take a smaller "
        "`dt` (fixed-point iteration converges when dt times the Lipschitz constant of f is "
        "below 2; Newton iteration when the step's linearisation is good), or allow more "
        "iterations (e.g. `ImplicitMidpoint(max_iters=...)`)."
    ),
    Status.SINGULAR: (
        "The linear system of a stiff step (I - gamma h J, J = df/dy) was singular or not "
        "finite at every step size tried. In float32 this happens when J's entries span more "
        "than float32's ~7 digits (ROBER's rates 0.04 to 3e7): solve in float64 "
        "(`y0.double()` and a float64 f), which is recommended for stiff problems; otherwise "
        "check df/dy near this time for NaN or inf."
    ),
}


class SolveFailedError(TidalError, RuntimeError):
    """A solve could not finish. Carries `status`, `where` it stopped (words: the time, step
    size and steps taken) and the partial `solution` (`throw=False` returns the same
    solution instead of raising)."""

    def __init__(self, status: Status, where: str, solution: Solution | Any = None):
        self.status, self.where = status, where
        self.solution = solution
        super().__init__(f"Solve failed ({status.name}) {where}. {status.message}")


class UnknownOptionError(InvalidArgumentError, TypeError):
    """An option key that the function does not know (the message lists the valid keys)."""


class MissingExtraError(TidalError, ModuleNotFoundError):
    """A feature needs an optional dependency that is not installed; the message names the
    modules and the extra that brings them (e.g. `pip install "tidal[cli]"`)."""
