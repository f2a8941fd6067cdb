r"""Rosenbrock methods as adaptive solvers of `tidal.solve`: `Rodas5P` (the default stiff
method), `Rodas4P` and `Rosenbrock23`.

Each step takes the Jacobian J = df/dy (and df/dt) at its start from the loop's `StepField`
(once per step start: rejected attempts from the same point reuse it), factors
W = I - gamma h J once (`batched_lu`) and computes the stages with `rosenbrock_step`. The loop
sees the step through the usual stage store, laid out as

    K = [f(t0, y0), u_1 / h, ..., u_S / h, f(t1, y1)]

so that, like every method, the error estimate is h sum_i e_i K_i (e = b - b_hat over the
increments u_i) and the dense output y0 + h sum_i w_i(theta) K_i with w = the tableau's own
interpolant (`RosenbrockTableau.dense_weights`); f(t0, y0) and f(t1, y1) have weight 0 and are
only handed from step to step. A group (the whole state on a shared grid, a sample on
per-sample grids) whose W is singular or whose stages are not finite gets NaN stages and y1: the
controller rejects that group's step and retries it smaller, like any non-finite step; if that
ends the solve, a singular W ends it with `Status.SINGULAR` (with a hint about float32).

On a shared grid the Jacobian is that of the whole flattened state (N x N: no assumption
that rows are independent); on per-sample grids it is one D x D block per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch

from tidal._errors import InvalidArgumentError, Status
from tidal.solvers.base import StepField, StepMethod, checked_jac
from tidal.solvers.explicit_rk import RKCoefficients, Stages
from tidal.solvers.rosenbrock import RosenbrockTableau
from tidal.solvers.rosenbrock_methods import RODAS4P, RODAS5P, ROSENBROCK23
from tidal.solvers.rosenbrock_step import rosenbrock_step


@dataclass(frozen=True)
class RosenbrockLayout:
    """The loop's view of a Rosenbrock method's stages (see the module docstring)."""

    tableau: RosenbrockTableau

    @property
    def num_dense_stages(self) -> int:
        return self.tableau.num_stages + 2

    @property
    def fsal(self) -> bool:
        """The method's own last stage is f(t1, y1) (Rosenbrock23): it stores it itself."""
        return self.tableau.fsal

    @property
    def c_extra(self) -> tuple[float, ...]:
        return ()

    @property
    def end_derivative_unused(self) -> bool:
        """f(t1, y1) is a stored stage (the next step's f0): always taken."""
        return False


@lru_cache(maxsize=32)
def _coefficients(tableau: RosenbrockTableau, calibration: float, dtype: torch.dtype,
                  device: torch.device) -> RKCoefficients:
    """The loop's coefficients; the error weights are calibration x (b - b_hat)."""
    s = tableau.num_stages
    weights = tableau.dense_weights  # [S, degree] over the increments
    degree = weights.shape[1]
    dense = torch.zeros(s + 2, degree, dtype=torch.float64)
    dense[1:s + 1] = torch.as_tensor(weights, dtype=torch.float64)
    error = [0.0, *(calibration * (b - b_hat) for b, b_hat in zip(tableau.b, tableau.b_hat))]
    return RKCoefficients(
        a_rows=(),
        b=torch.tensor([0.0, *tableau.b], dtype=dtype, device=device),
        b_error=torch.tensor([error], dtype=dtype, device=device),
        dense=dense.to(device),
        extra_rows=(),
    )


def checked_calibration(value: float | None, default: float, solver: str) -> float:
    """A `tolerance_calibration=` argument, checked: None (the default) or a positive number."""
    if value is None:
        return default
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and
                                       0.0 < value < math.inf):
        raise InvalidArgumentError(
            f"`{solver}(tolerance_calibration={value!r})`: must be a positive number (the "
            "error estimate's factor; 1 is the uncalibrated method), or None for the method's "
            f"default ({default:g}).")
    return float(value)


class Rosenbrock(StepMethod):
    """A Rosenbrock–Wanner method described by `rosenbrock` (a `RosenbrockTableau`); the
    subclasses set it, `name` and `default_calibration`. Adaptive: use with `PIDController`.

    **Tolerance calibration.** The step-size controller sees the embedded error estimate
    multiplied by c = `tolerance_calibration`: the method steps as if asked for rtol / c and
    atol / c, so that the error it delivers at the user's rtol is comparable with that of
    scipy's (and Hairer's) Radau, which is often 10-100x below its rtol while uncalibrated
    Rodas5P's is about its rtol (Hairer's RADAU5 likewise maps the user's rtol to an internal
    one). Each method's default was measured on the classical stiff test set
    (docs/benchmarks.md, "Stiff solvers, fifth part"): Rodas5P 4; Rodas4P and Rosenbrock23 1,
    since no c brings them within 10x of Radau without more calls of f than Radau. c = 1
    gives the uncalibrated method.

    Args:
        jac: the Jacobian df/dy as `jac(t, y)` (`jac(t, y, args)` when the solve has `args`),
            returning one D x D matrix per row of the state (shape (*y.shape, D),
            J[..., i, j] = df_i/dy_j), differentiable if gradients should flow through it.
            Default: reverse-mode autodiff of f (see `tidal.solvers.jacobian`). df/dt still
            comes from autodiff (one product per step) unless f ignores t.
        tolerance_calibration: c above (positive); default: the method's
            `default_calibration`.
    """

    rosenbrock: ClassVar[RosenbrockTableau]
    tableau: ClassVar[RosenbrockLayout]
    default_calibration: ClassVar[float] = 1.0
    adaptive = True
    uses_jacobian = True

    def __init__(self, jac: Callable[..., torch.Tensor] | None = None,
                 tolerance_calibration: float | None = None) -> None:
        self.jac = checked_jac(jac, type(self).__name__)
        self.tolerance_calibration = checked_calibration(
            tolerance_calibration, self.default_calibration, type(self).__name__)

    def __repr__(self) -> str:
        options = [] if self.jac is None else [f"jac={getattr(self.jac, '__name__', self.jac)!s}"]
        if self.tolerance_calibration != self.default_calibration:
            options.append(f"tolerance_calibration={self.tolerance_calibration!r}")
        return f"{type(self).__name__}({', '.join(options)})"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "rosenbrock" in cls.__dict__:
            cls.tableau = RosenbrockLayout(cls.rosenbrock)
            cls.order = cls.rosenbrock.order
            cls.error_order = min(cls.rosenbrock.order, cls.rosenbrock.embedded_order)

    def coefficients(self, dtype: torch.dtype, device: torch.device) -> RKCoefficients:
        return _coefficients(self.rosenbrock, self.tolerance_calibration, dtype, device)

    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        y0 = stages.y0
        rows = field.rows(y0)
        J, dfdt = field.jacobian(y0)
        h = torch.as_tensor(stages.dt, dtype=y0.dtype, device=y0.device).reshape(-1)
        if len(h) != len(rows):  # a shared grid: one step size for the one group
            h = h.expand(len(rows))
        times = field.times(self.rosenbrock.c)
        shape = y0.shape

        def f_rows(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return field.rows(field.f(t, y.view(shape)))

        step = rosenbrock_step(f_rows, times[0], rows, field.rows(stages.first()), h,
                               self.rosenbrock, J, dfdt, times=times)
        field.count_factorization()
        field.report(torch.where(step.regular, int(Status.NONFINITE), int(Status.SINGULAR)))
        # K_i = u_i / h (0 where a sample does not step); NaN where the step failed, so that
        # the controller rejects it.
        scale = torch.where(h > 0, 1.0 / torch.where(h > 0, h, 1.0), 0.0)
        scale = torch.where(step.ok, scale, math.nan)[:, None, None]
        for k in (step.increments * scale).unbind(1):
            stages.append(k.view(shape))
        if step.f1 is not None:
            stages.append(step.f1.view(shape))
        y1 = torch.where(step.ok.unsqueeze(-1), step.y1, math.nan)
        return y1.view(shape), step.num_fevals

    def error_estimate(self, stages: Stages, coefficients: RKCoefficients) -> torch.Tensor:
        count = self.rosenbrock.num_stages + 1
        return coefficients.b_error @ stages.matrix()[:count]


class Rodas5P(Rosenbrock):
    """Rodas5P (Steinebach 2023): 8 stages, order 5 with an embedded order-4 estimate,
    L-stable and stiffly accurate, dense output of order 4. The default stiff method: use it
    at rtol 1e-3 to 1e-10 on stiff problems (chemical kinetics, Van der Pol with large mu).

    Uncalibrated by default (c = 1: rtol means what it means in DifferentialEquations.jl and
    diffrax): its final-time error at rtol 1e-6 is about rtol (1.3x on HIRES), 13-43x scipy
    Radau's on HIRES and OREGO, where Radau delivers 10-100x less than its rtol. With
    `tolerance_calibration=4` its error is within 10x of Radau's at the same rtol on all six
    problems of the classical stiff test set (HIRES narrowly: 9.3x; c = 3 gives 15x) with
    0.65-0.97x Radau's calls of f, for 23-37% more calls than uncalibrated; c = 4 is not the
    default because it is tuned to rtol 1e-6 (at 1e-4 and 1e-8 it misses one criterion or the
    other) and makes ROBER on [0, 100] at 1e-8 take 63 steps instead of 48
    (docs/benchmarks.md, "Stiff solvers, fifth part"; docs/design.md, the lead's decision)."""

    name = "rodas5p"
    rosenbrock = RODAS5P


class Rodas4P(Rosenbrock):
    """Rodas4P (Steinebach 1995): 6 stages, order 4 (also on linear parabolic problems),
    embedded order 3, L-stable, stiffly accurate, dense output of order 3."""

    name = "rodas4p"
    rosenbrock = RODAS4P


class Rosenbrock23(Rosenbrock):
    """Rosenbrock23 (Shampine–Reichelt, MATLAB's ode23s): 3 stages, order 2 (also with an
    inexact Jacobian), order-3 error estimate, L-stable; for loose tolerances (rtol ~1e-2 to
    1e-4)."""

    name = "rosenbrock23"
    rosenbrock = ROSENBROCK23
