"""The fixed-step implicit Runge–Kutta methods under torchdiffeq's names, as solvers of
`tidal.solve` and `tidal.odeint`: `ImplicitEuler`, `Trapezoid`, `RadauIIA3`, `RadauIIA5`,
`GL4`, `GL6`, `SDIRK2`, `TRBDF2` (tableaus in `tidal.solvers.implicit`).

Each step solves its stage equations by simplified Newton iteration (`implicit_step`) with the
Jacobian at the step's start from the loop's `StepField` (one Jacobian and one batched LU per
step) and differentiates the converged step by the implicit function theorem. A group whose
iteration fails (diverges, is not finite, or does not converge in `max_iters`) gets a NaN
result: with a fixed step it ends there with `Status.NOT_CONVERGED`, the other samples of a
per-sample solve go on. Dense output is the cubic Hermite interpolant of every
`FixedStepMethod`.

The implicit midpoint rule keeps its name for `tidal.ImplicitMidpoint` (fixed-point iteration,
symplectic; see docs/design.md); its Newton form is the tableau `IMPLICIT_MIDPOINT`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from tidal._errors import Status
from tidal.solvers.base import (
    FixedStepMethod,
    IterativeStep,
    StepField,
    StepResult,
    checked_jac,
)
from tidal.solvers.implicit import (
    GL4 as GL4_TABLEAU,
)
from tidal.solvers.implicit import (
    GL6 as GL6_TABLEAU,
)
from tidal.solvers.implicit import (
    IMPLICIT_EULER,
    RADAU_IIA3,
    RADAU_IIA5,
    TRAPEZOID,
    ImplicitTableau,
)
from tidal.solvers.implicit import (
    SDIRK2 as SDIRK2_TABLEAU,
)
from tidal.solvers.implicit import (
    TRBDF2 as TRBDF2_TABLEAU,
)
from tidal.solvers.implicit_step import implicit_step
from tidal.solvers.jacobian import BatchedJacobian


class ImplicitRungeKutta(IterativeStep, FixedStepMethod):
    """A fixed-step implicit Runge–Kutta method described by `implicit`; subclasses set it and
    `name`.

    Args:
        tol: Newton tolerance on the increment, relative to 1 + |y0|; default 100 machine
            epsilons of the state's dtype.
        max_iters: the most Newton iterations per step.
        jac: the Jacobian df/dy as `jac(t, y)` (see `tidal.Rosenbrock`); default: autodiff.
    """

    implicit: ClassVar[ImplicitTableau]
    default_max_iters = 50
    uses_jacobian = True

    def __init__(self, tol: float | None = None, max_iters: int | None = None,
                 jac: Callable[..., torch.Tensor] | None = None) -> None:
        super().__init__(tol, max_iters)
        self.jac = checked_jac(jac, type(self).__name__)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "implicit" in cls.__dict__:
            cls.order = cls.implicit.order

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        rows, shape = field.rows(y0), y0.shape
        J, _ = field.jacobian(y0)
        h = torch.as_tensor(dt, dtype=y0.dtype, device=y0.device).reshape(-1)
        h = h.expand(len(rows)) if len(h) != len(rows) else h

        def f_rows(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return field.rows(field.f(t, y.view(shape)))

        tableau = self.implicit
        times = field.times(tableau.c)
        stage_times = [times[i] for i in tableau.implicit]
        step = implicit_step(f_rows, times[0], rows, field.rows(f0), h, tableau, J,
                             BatchedJacobian(f_rows, jac=field.jac_rows, autonomous=True),
                             self.tol,
                             self.max_iters, times=stage_times)
        field.count_factorization()
        field.report(torch.full_like(step.iterations, int(Status.NOT_CONVERGED)))
        ok = step.ok.unsqueeze(-1)
        y1 = torch.where(ok, step.y1, math.nan)
        slope = torch.where(ok & (h > 0).unsqueeze(-1),
                            (step.y1 - rows) / torch.where(h > 0, h, 1.0).unsqueeze(-1), 0.0)
        return StepResult(y1.view(shape), slope.view(shape), step.num_fevals)


class ImplicitEuler(ImplicitRungeKutta):
    """Backward Euler: order 1, L-stable."""

    name = "implicit_euler"
    implicit = IMPLICIT_EULER


class Trapezoid(ImplicitRungeKutta):
    """The trapezoidal rule (Crank–Nicolson): order 2, A-stable (not L-stable)."""

    name = "trapezoid"
    implicit = TRAPEZOID


class RadauIIA3(ImplicitRungeKutta):
    """Radau IIA, 2 stages: order 3, L-stable, stiffly accurate."""

    name = "radauIIA3"
    implicit = RADAU_IIA3


class RadauIIA5(ImplicitRungeKutta):
    """Radau IIA, 3 stages: order 5, L-stable, stiffly accurate (RADAU5's method)."""

    name = "radauIIA5"
    implicit = RADAU_IIA5


class GL4(ImplicitRungeKutta):
    """Gauss–Legendre, 2 stages: order 4, A-stable, symplectic."""

    name = "gl4"
    implicit = GL4_TABLEAU


class GL6(ImplicitRungeKutta):
    """Gauss–Legendre, 3 stages: order 6, A-stable, symplectic."""

    name = "gl6"
    implicit = GL6_TABLEAU


class SDIRK2(ImplicitRungeKutta):
    """Alexander's 2-stage SDIRK: order 2, L-stable, stiffly accurate."""

    name = "sdirk2"
    implicit = SDIRK2_TABLEAU


class TRBDF2(ImplicitRungeKutta):
    """TR-BDF2: order 2, L-stable, stiffly accurate."""

    name = "trbdf2"
    implicit = TRBDF2_TABLEAU
