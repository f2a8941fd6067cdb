"""torchdiffeq's step sequence, so that `odeint` takes torchdiffeq's steps (and calls f and the
step callbacks as often): its step-size rule, its dopri5 error estimate and its reuse of the
last stage in adaptive_heun and fehlberg2.

torchdiffeq 0.2.5 (`_impl/misc.py`, `_optimal_step_size`) differs from tidal's I controller in
one point: after an accepted step (error ratio r < 1) the step never shrinks. The next step is
dt * factor with

$$ \\text{factor} = \\min\\bigl(\\text{ifactor}, \\max(\\text{safety}\\, r^{-1/k},\\;
   d)\\bigr), \\qquad d = 1 \\text{ if } r < 1 \\text{ else dfactor}, $$

k = q + 1 for an embedded method of order q (torchdiffeq's `order`), and ifactor for r = 0.
Everything else (Hairer's first step, the error norm, `min_step`, `max_step`) is already the
same in `PIDController`.

Its dopri5 estimates the error with Dormand and Prince's other 4th-order embedded solution,
b_hat = (1951/21600, 0, 22642/50085, 451/720, -12231/42400, 649/6300, 1/60), where tidal's
`Dopri5` (like Hairer's DOPRI5 and scipy's RK45) takes (5179/57600, 0, 7571/16695, 393/640,
-92097/339200, 187/2100, 1/40); both are 4th order, the solution and interpolant are the same.

Its `_runge_kutta_step` hands the last stage to the next step as f(t1, y1) for every method. For
FSAL methods (dopri5, bosh3, dopri8) that stage is f(t1, y1); for adaptive_heun and fehlberg2 it
is f at another state (the Euler predictor; Fehlberg's first-order solution), so torchdiffeq's
methods of those names are not the textbook ones tidal's `HeunEuler` and `Fehlberg2` are (still
second order, one call of f fewer per step). `reuse_last_stage` reproduces them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from tidal.controllers.adaptive import History
from tidal.controllers.base import Scalar
from tidal.controllers.pid import PIDController
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.low_order import Fehlberg2, HeunEuler


@dataclass(frozen=True)
class TorchdiffeqController(PIDController):
    """`PIDController` (I form) whose step does not shrink after an accepted step, as in
    torchdiffeq; `factor_min` is torchdiffeq's `dfactor`, `factor_max` its `ifactor`."""

    def adapt(self, ratio: Scalar, history: History, exponent: float
              ) -> tuple[Scalar, Scalar, History]:
        """(accept, factor, history) on floats or float64 tensors; a NaN or infinite ratio
        rejects the step with the smallest factor."""
        if isinstance(ratio, torch.Tensor):
            r = torch.where(torch.isfinite(ratio), ratio, math.inf)
            floor = torch.where(r < 1.0, 1.0, self.factor_min)
            factor = torch.minimum(torch.maximum(self.safety * r.clamp(min=1e-300) ** -exponent,
                                                 floor), torch.full_like(r, self.factor_max))
            return r <= 1.0, torch.where(r == 0.0, self.factor_max, factor), history
        value = float(ratio) if math.isfinite(ratio) else math.inf
        if value == 0.0:
            return True, self.factor_max, history
        lower = 1.0 if value < 1.0 else self.factor_min
        return value <= 1.0, min(self.factor_max, max(self.safety * value ** -exponent, lower)), \
            history


class TorchdiffeqDopri5(Dopri5):
    """`Dopri5` with torchdiffeq's error estimate b - b_hat (the module's docstring)."""

    tableau = dataclasses.replace(Dopri5.tableau, b_error=((
        35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
        -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60),))


class TorchdiffeqHeunEuler(HeunEuler):
    """`adaptive_heun` as torchdiffeq runs it: the second stage, f(t1, y0 + dt f0), is handed
    to the next step as f(t1, y1) (one call of f per step instead of two)."""

    tableau = dataclasses.replace(HeunEuler.tableau, reuse_last_stage=True)


class TorchdiffeqFehlberg2(Fehlberg2):
    """`fehlberg2` as torchdiffeq runs it: the third stage, taken at the first-order solution,
    is handed to the next step as f(t1, y1) (two calls of f per step instead of three)."""

    tableau = dataclasses.replace(Fehlberg2.tableau, reuse_last_stage=True)


#: methods that torchdiffeq runs differently from tidal's textbook forms
METHODS = {"dopri5": TorchdiffeqDopri5, "adaptive_heun": TorchdiffeqHeunEuler,
           "fehlberg2": TorchdiffeqFehlberg2}
