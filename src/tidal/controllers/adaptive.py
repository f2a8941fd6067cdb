"""What every error-controlled step-size controller shares: the error norm, the first step and
the clamps. A subclass (e.g. `PIDController`) supplies `adapt`, the rule that turns error ratios
into a step-size factor."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from tidal.controllers.base import Scalar, StepControl, StepSizeController, TrialField, clip
from tidal.controllers.norms import ErrorNorm, Tolerance, initial_step

if TYPE_CHECKING:
    from tidal.solvers.base import StepMethod
    from tidal.solvers.explicit_rk import Stages

#: (r_{n-1}, r_{n-2}): the error ratios of the last two accepted steps
History = tuple[Scalar, Scalar]


class AdaptiveController(StepSizeController):
    """Base of controllers that adapt the step to an error estimate (fields set by subclasses,
    which are frozen dataclasses)."""

    adaptive = True
    rtol: Tolerance
    atol: Tolerance
    dt0: float | None
    dt_min: float
    dt_max: float
    norm: Callable[[torch.Tensor], torch.Tensor] | None

    @abstractmethod
    def adapt(self, ratio: Scalar, history: History, exponent: float
              ) -> tuple[Scalar, Scalar, History]:
        """(accept, factor for the step size, updated history) from a step's error ratio;
        floats or float64 tensors [G] alike."""

    def bind(self, solver: StepMethod, y0: torch.Tensor, shape: torch.Size, groups: int
             ) -> AdaptiveControl:
        return AdaptiveControl(self, solver, y0, shape, groups)


class AdaptiveControl(StepControl):
    """An `AdaptiveController` bound to one solve.

    A step that is not finite is rejected with the smallest factor and retried, up to
    `nonfinite_retries` times in a row: a long step can overshoot into a region where f is not
    defined (a square root of a negative number, an overflow) while shorter ones stay inside.
    Ten retries shrink the step by 0.2^10 ~ 1e-7 with the default `factor_min`; a field that is
    still not finite then is not finite there. (A NaN at the start ends the solve at once.)
    """

    nonfinite_retries = 10

    def __init__(self, controller: AdaptiveController, solver: StepMethod, y0: torch.Tensor,
                 shape: torch.Size, groups: int):
        self.controller, self.solver = controller, solver
        self.coefficients = solver.coefficients(y0.dtype, y0.device)
        q = solver.error_order
        assert q is not None, "an adaptive solver has an error order"
        self.exponent = 1.0 / (q + 1)
        self.norm = ErrorNorm(controller.rtol, controller.atol, y0, shape, groups,
                              solver.combine_error_norms, controller.norm)
        self.history: History = (1.0, 1.0)

    def first_step(self, trial: TrialField, y: torch.Tensor, f0: torch.Tensor
                   ) -> tuple[torch.Tensor, int]:
        c = self.controller
        if c.dt0 is not None:
            dt0, fevals = torch.full((len(y),), c.dt0, dtype=torch.float64, device=y.device), 1
        else:
            q = self.solver.error_order
            assert q is not None
            # the tolerances the method's (calibrated) error estimate is controlled to
            calibration = self.solver.tolerance_calibration
            dt0 = initial_step(trial, y, f0, self.norm.rows(self.norm.rtol) / calibration,
                               self.norm.rows(self.norm.atol) / calibration, q)
            fevals = 2
        return dt0.clamp(c.dt_min, c.dt_max), fevals

    def error_ratio(self, stages: Stages, y0: torch.Tensor, y1: torch.Tensor, dt: Scalar
                    ) -> Scalar:
        # the ratio is never differentiated: keep it out of the step's graph, if the step
        # records one (switching the grad mode costs ~3 us a step)
        if torch.is_grad_enabled() and y1.requires_grad:
            with torch.no_grad():
                return self.error_ratio(stages, y0, y1, dt)
        errors = self.solver.error_estimate(stages, self.coefficients)
        return self.norm(errors, y0, y1, dt)

    def decide(self, ratio: Scalar, taken: Scalar, proposed: Scalar) -> tuple[Scalar, Scalar]:
        accept, dt, self.history = next_step(self.controller, ratio, taken, self.history,
                                             self.exponent)
        return accept, dt


def next_step(c: AdaptiveController, ratio: Scalar, taken: Scalar, history: History,
              exponent: float) -> tuple[Scalar, Scalar, History]:
    """(accept, next step size, updated history) from the error ratio of a step of size
    `taken`; pure, so the compiled loop (`tidal.compiled`) traces it. A rejected step at
    `dt_min` is accepted if it is finite (torchdiffeq's `min_step` rule)."""
    accept, factor, history = c.adapt(ratio, history, exponent)
    dt = taken * factor
    if c.dt_min > 0.0:
        accept = accept | ((taken <= c.dt_min) & _finite(ratio))
    if c.dt_min > 0.0 or c.dt_max < math.inf:
        dt = clip(dt, c.dt_min, c.dt_max)
    return accept, dt, history


def _finite(x: Scalar) -> Scalar:
    return torch.isfinite(x) if isinstance(x, torch.Tensor) else math.isfinite(x)

