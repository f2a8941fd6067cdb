"""`ExplicitRungeKutta`: the base of every explicit RK method. A method is a tableau plus a
docstring; the stepping code lives in `tidal.solvers.explicit_rk` and is shared by all.

`FixedStepMethod`: the base of fixed-step methods with their own step routine (symplectic
splittings, implicit midpoint; `tidal.solvers.symplectic`), and the small protocol the loops
call them through."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import torch

from tidal.solvers.tableau import ButcherTableau


class ExplicitRungeKutta:
    """An explicit Runge–Kutta method described by `tableau`.

    Subclasses set `tableau` and `name` (the string used by `tidal.odeint(method=...)` and the
    command line). Instances hold no state, so one can be shared between solves.
    """

    tableau: ClassVar[ButcherTableau]
    name: ClassVar[str]

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def error_order(self) -> int | None:
        return self.tableau.error_order

    @property
    def adaptive(self) -> bool:
        return self.tableau.adaptive

    def combine_error_norms(self, norms: Sequence):
        """Error ratio of a step from the norms of its error estimates (one per b_error row)."""
        return norms[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def step_exponent(solver: ExplicitRungeKutta | FixedStepMethod) -> float:
    """Exponent 1/(q+1) of the error ratio in step-size control, q the embedded order."""
    q = solver.error_order
    return 1.0 / (q + 1) if q is not None else math.nan


# ---------------------------------------------------------------------------------------------
# Methods with their own step routine


class StepField:
    """f inside one step, as a `FixedStepMethod` sees it: `field(c, y)` is f(t0 + c dt, y).

    `y` has the loop's layout (the user's shape on a shared grid, [B, D] on per-sample grids);
    `last_dim` is the size of the user's state's last dimension, the one a method that splits
    the state into (q, p) halves works along.
    """

    __slots__ = ("at", "last_dim")

    def __init__(self, at: Callable[[float, torch.Tensor], torch.Tensor], last_dim: int):
        self.at, self.last_dim = at, last_dim

    def __call__(self, c: float, y: torch.Tensor) -> torch.Tensor:
        return self.at(c, y)


class StepResult(NamedTuple):
    """One step of a `FixedStepMethod`.

    Attributes:
        y1: the state at t0 + dt.
        slope: the step's mean slope (y1 - y0) / dt, computed without dividing by dt (each
            method knows it as a sum of the f values it used). Dense output is the cubic
            Hermite interpolant through y0, f(t0, y0), y1 and f(t1, y1).
        num_fevals: calls of f the step made (f(t0, y0) is given and not counted).
    """

    y1: torch.Tensor
    slope: torch.Tensor
    num_fevals: int


# The loop's stages for a `FixedStepMethod`: [f(t0, y0), slope, f(t1, y1)]. With b = (0, 1)
# the step is y1 = y0 + dt * slope, and `ButcherTableau.dense_weights` gives cubic Hermite.
SLOPE_TABLEAU = ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.0, 1.0), order=1)


class FixedStepMethod:
    """A fixed-step method that is not an explicit Runge–Kutta tableau (symplectic splittings,
    implicit midpoint): it brings its own `step(field, y0, f0, dt) -> StepResult`.

    The loop calls `step` once per step with f(t0, y0) (the previous step's f(t1, y1), so it
    is free), stores the result's slope as a stage and evaluates f(t1, y1) after the step, for
    the cubic Hermite dense output and as the next step's f0. `tableau` is `SLOPE_TABLEAU`,
    which only describes that dense output. Used with `ConstantStepSize(dt)` or `StepTo(ts)`;
    `dt` is a Python float on a shared grid and a tensor [B, 1] (0 for samples that do not
    step) on per-sample grids.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    tableau: ClassVar[ButcherTableau] = SLOPE_TABLEAU
    adaptive: ClassVar[bool] = False
    error_order: ClassVar[int | None] = None
    #: the method splits the state into (q, p) halves and needs a separable H (see
    #: `tidal.solvers.symplectic`); the backsolve adjoint cannot use it on [y, a, g].
    splits_state: ClassVar[bool] = False

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        raise NotImplementedError

    def combine_error_norms(self, norms: Sequence):
        return norms[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


Solver = ExplicitRungeKutta | FixedStepMethod
