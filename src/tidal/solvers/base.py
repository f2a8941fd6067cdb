"""The step-method protocol: what a loop asks of a numerical method, and the two families that
implement it today.

A loop keeps a `Stages` store from step to step (row 0 holds f(t0, y0)) and, for each attempted
step, calls `attempt(field, stages, coefficients)`: the method fills in its stages and returns
y1 and the calls of f it made. Everything else the loop does is described by the method's
`tableau` as data:

- `error_estimate(stages)`: the rows of error estimates (default: the tableau's `b_error`
  weights over the stages), which the controller's norm turns into an error ratio;
- the dense output y(t0 + theta dt) = y0 + dt sum_i w_i(theta) K_i over the "dense stages" K
  (the stages, f(t1, y1) unless the method is FSAL, and any extra stages of the interpolant),
  with polynomial weights w_i stored in the tableau.

A new family (implicit, Rosenbrock, stochastic) is one new module with a `StepMethod` subclass:
its `attempt` may evaluate Jacobians or draw Brownian increments through the `StepField` it is
given, store whatever vectors its error estimate and interpolant are linear in as stages, and
describe them with a tableau-like object (see docs/design.md).

Families today:

- `ExplicitRungeKutta`: a tableau and a docstring; the stages are `rk_stages`.
- `FixedStepMethod`: a method with its own step routine (symplectic splittings, implicit
  midpoint), `step(field, y0, f0, dt) -> StepResult`; its mean slope is stored as a stage so
  that the cubic Hermite interpolant, dense output, events and replays work unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import torch

from tidal._errors import InvalidArgumentError
from tidal.solvers.explicit_rk import RKCoefficients, Stages, rk_coefficients, rk_stages
from tidal.solvers.jacobian import Jacobian
from tidal.solvers.tableau import ButcherTableau


class StepField(Protocol):
    """f inside one step, as a method sees it (made by the loop for each attempted step).

    Times are the user's (a 0-d tensor on a shared grid, [B] on per-sample grids); states have
    the loop's layout (the user's shape on a shared grid, [B, D] on per-sample grids); f comes
    back in forward time. A step that ends on a jump (a declared discontinuity) takes f at
    c = 1 from the near side.
    """

    #: size of the user's state's last dimension (a method splitting the state into (q, p)
    #: halves works along it)
    last_dim: int

    @property
    def tau0(self) -> float | torch.Tensor:
        """The step's start in the loop's own time (forward, float64): a float on a shared
        grid, [B] on per-sample grids (a checkpoint replay finds a recorded step by it)."""

    @property
    def f(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """f(t, y) at a time made by `times`."""

    def times(self, c: tuple[float, ...]) -> Sequence[torch.Tensor]:
        """The user times t0 + c_i dt of the current step, one per node."""

    def at(self, c: float, y: torch.Tensor) -> torch.Tensor:
        """f(t0 + c dt, y)."""

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """A state in the loop's layout as group rows [G, N] (the layout of `jacobian`)."""

    def jacobian(self, y0: torch.Tensor) -> Jacobian:
        """df/dy [G, N, N] and df/dt [G, N] at the step's start (t0, y0): computed once per
        step start, reused by rejected attempts from the same point, counted in the stats
        (from the method's `jac` when it has one, else by autodiff)."""

    @property
    def jac_rows(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The method's `jac` at any (t, group rows) as [G, N, N] in forward time, or None."""

    def count_factorization(self) -> None:
        """Count one factorization of the step's matrix (for the stats)."""

    def count_switches(self, switched: torch.Tensor) -> None:
        """Count the groups [G] (bool) whose method switched (`Auto`, for the stats)."""

    @property
    def state(self) -> dict[str, Any]:
        """Per-solve state a method may keep between its steps (`Auto`'s modes)."""

    def report(self, statuses: torch.Tensor) -> None:
        """Per group [G], the `Status` to end with if this attempt's failure ends the solve
        (a non-finite step otherwise ends it with NONFINITE)."""


class StageLayout(Protocol):
    """What a loop reads of a method's `tableau`: how many dense stages it stores, whether
    its last stage is f(t1, y1), and the nodes of extra interpolation stages (a
    `ButcherTableau` is one)."""

    @property
    def num_dense_stages(self) -> int: ...

    @property
    def fsal(self) -> bool: ...

    @property
    def c_extra(self) -> tuple[float, ...]: ...

    @property
    def end_derivative_unused(self) -> bool: ...


class StepMethod(ABC):
    """Base of every numerical method (see the module docstring). Instances hold no state
    across solves, so one can be shared."""

    #: the name used by `tidal.odeint(method=...)`, config files and the command line
    name: ClassVar[str]
    #: its stages and dense output, as data
    tableau: ClassVar[StageLayout]
    order: ClassVar[int]
    #: order of the embedded error estimate (sets the step-size exponent); None without one
    error_order: ClassVar[int | None] = None
    adaptive: ClassVar[bool] = False
    #: the method forms df/dy (Rosenbrock, implicit Runge–Kutta)
    uses_jacobian: ClassVar[bool] = False
    #: the method chooses how to step from state it keeps across steps (`Auto`'s modes),
    #: which a checkpoint replay, starting mid-solve, cannot rebuild: such a method
    #: implements `recording` and `replaying`
    keeps_state: ClassVar[bool] = False
    #: the user's Jacobian df/dy, jac(t, y) (or jac(t, y, args)), for a method that uses one
    #: (Rosenbrock, implicit Runge–Kutta); None: the method differentiates f itself
    jac: Callable[..., torch.Tensor] | None = None
    #: c: the method's error estimates (its `coefficients`' b_error) carry the factor c, so
    #: that the controller steps as if asked for rtol / c and atol / c; the first step is
    #: chosen for those tolerances too (a `Rosenbrock` method's calibration; 1 for others)
    tolerance_calibration: float = 1.0

    def recording(self) -> tuple[StepMethod, Callable[[], torch.Tensor]]:
        """For a method that `keeps_state`: a copy for one forward solve that notes its choice
        at every attempt, and a function returning the latest attempt's choice per group
        [G] (what a checkpoint recorder keeps for every accepted step)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state across steps")

    def replaying(self, step_ends: torch.Tensor, choices: torch.Tensor) -> StepMethod:
        """For a method that `keeps_state`: a copy that retakes recorded accepted steps
        making the recorded choices: `choices` [G, J] of the steps ending at `step_ends`
        [G, J] (loop time, each group's ends increasing), found by each step's start."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state across steps")

    def coefficients(self, dtype: torch.dtype, device: torch.device) -> RKCoefficients:
        """The tableau as tensors (cached per dtype and device): what the loop, the error
        estimate and dense output read. The default reads a `ButcherTableau`; a family with
        another kind of tableau overrides it."""
        assert isinstance(self.tableau, ButcherTableau)
        return rk_coefficients(self.tableau, dtype, device)

    @abstractmethod
    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        """One step from `stages.y0` (with f(t0, y0) as stage 0) over `stages.dt`: fills the
        stages and returns (y1, calls of f made)."""

    def error_estimate(self, stages: Stages, coefficients: RKCoefficients) -> torch.Tensor:
        """The step's error estimates before the factor dt, [R, N] (one row per estimate)."""
        return coefficients.b_error @ stages.matrix()

    def combine_error_norms(self, norms: Sequence[Any]) -> Any:
        """Error ratio of a step from the norms of its error estimates (one per b_error row),
        floats or float64 tensors [G] alike."""
        return norms[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


class ExplicitRungeKutta(StepMethod):
    """An explicit Runge–Kutta method described by `tableau`.

    Subclasses set `tableau` and `name`; `order`, `error_order` and `adaptive` follow from the
    tableau.
    """

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tableau = cls.__dict__.get("tableau")
        if tableau is not None:
            cls.order, cls.error_order, cls.adaptive = (tableau.order, tableau.error_order,
                                                        tableau.adaptive)

    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        y1 = rk_stages(field.f, field.times(self.tableau.c), stages, self.tableau, coefficients)
        return y1, self.tableau.num_stages - 1


def checked_jac(jac: Any, solver: str) -> Callable[..., torch.Tensor] | None:
    """A solver's `jac=` argument, checked: None or a callable."""
    if jac is not None and not callable(jac):
        raise InvalidArgumentError(
            f"`{solver}(jac={jac!r})`: must be a function jac(t, y) returning df/dy (one D x D "
            "matrix per row of the state), or None to differentiate f automatically.")
    return jac


class IterativeStep:
    """Options of a fixed-step method that solves its step iteratively (`ImplicitMidpoint` by
    fixed-point iteration, `ImplicitRungeKutta` by Newton), checked on construction.

    Args:
        tol: tolerance on the iteration's increment, relative to 1 + |y|; default 100 machine
            epsilons of the state's dtype.
        max_iters: the most iterations per step.
    """

    default_max_iters: ClassVar[int] = 100

    def __init__(self, tol: float | None = None, max_iters: int | None = None) -> None:
        name = type(self).__name__
        max_iters = self.default_max_iters if max_iters is None else max_iters
        if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise InvalidArgumentError(f"`{name}(tol={tol!r})`: must be in (0, 1), or None "
                                       "for 100 machine epsilons of the state's dtype.")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise InvalidArgumentError(f"`{name}(max_iters={max_iters!r})`: must be a "
                                       "positive integer.")
        self.tol = None if tol is None else float(tol)
        self.max_iters = max_iters

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tol={self.tol}, max_iters={self.max_iters})"


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


class FixedStepMethod(StepMethod):
    """A fixed-step method that is not an explicit Runge–Kutta tableau (symplectic splittings,
    implicit midpoint): it brings its own `step(field, y0, f0, dt) -> StepResult`.

    The loop calls `step` once per step with f(t0, y0) (the previous step's f(t1, y1), so it
    is free), stores the result's slope as a stage and evaluates f(t1, y1) after the step, for
    the cubic Hermite dense output and as the next step's f0. `tableau` is `SLOPE_TABLEAU`,
    which only describes that dense output. Used with `ConstantStepSize(dt)` or `StepTo(ts)`;
    `dt` is a Python float on a shared grid and a tensor [B, 1] (0 for samples that do not
    step) on per-sample grids.
    """

    tableau = SLOPE_TABLEAU

    #: the method splits the state into (q, p) halves and needs a separable H (see
    #: `tidal.solvers.symplectic`); the backsolve adjoint cannot use it on [y, a, g].
    splits_state: ClassVar[bool] = False

    @abstractmethod
    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        """One step of size dt from y0, given f0 = f(t0, y0)."""

    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        out = self.step(field, stages.y0, stages.first(), stages.dt)
        stages.append(out.slope)
        return out.y1, out.num_fevals


#: Every method the loops can step with.
Solver = StepMethod
