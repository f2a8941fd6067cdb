"""torchdiffeq's adaptive methods as it runs them, so that `odeint` takes torchdiffeq's steps
(and calls f and the step callbacks as often) and interpolates as it does: its step-size rule,
its dopri5 error estimate, its reuse of the last stage in adaptive_heun and fehlberg2, its
dopri8 (`_dopri8`) and its quartic interpolant through a midpoint (`_interpolant`). bosh3 keeps
tidal's cubic Hermite: torchdiffeq's quartic through a second-order midpoint is less accurate
(its bosh3 places the event of tests/test_compat.py's falling body at t = 1.27 instead of
1.66).

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
from typing import Any

import torch

from tidal.compat._dopri8 import TorchdiffeqDopri8
from tidal.compat._interpolant import quartic_through_midpoint
from tidal.controllers.adaptive import History
from tidal.controllers.base import Scalar
from tidal.controllers.pid import PIDController
from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.low_order import Fehlberg2, HeunEuler
from tidal.solvers.tableau import ButcherTableau


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


def _torchdiffeq_form(tableau: ButcherTableau, mid: tuple[float, ...], dense_order: int,
                      **changes: Any) -> ButcherTableau:
    """`tableau` with torchdiffeq's quartic interpolant through y0 + dt sum_i mid_i k_i."""
    return dataclasses.replace(tableau, dense=quartic_through_midpoint(tableau.b, mid),
                               dense_order=dense_order, **changes)


class TorchdiffeqDopri5(Dopri5):
    """`Dopri5` with torchdiffeq's error estimate b - b_hat (the module's docstring) and its
    quartic interpolant (order 4, as tidal's own)."""

    tableau = _torchdiffeq_form(
        Dopri5.tableau, (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2,
                         -2691868925 / 45128329728 / 2, 187940372067 / 1594534317056 / 2,
                         -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2), 4,
        b_error=((35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085,
                  125 / 192 - 451 / 720, -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300,
                  -1 / 60),))


class TorchdiffeqHeunEuler(HeunEuler):
    """`adaptive_heun` as torchdiffeq runs it: the second stage, f(t1, y0 + dt f0), is handed
    to the next step as f(t1, y1) (one call of f per step instead of two); its interpolant
    (midpoint y0 + dt k_0 / 2)."""

    tableau = _torchdiffeq_form(HeunEuler.tableau, (0.5, 0.0), 1, reuse_last_stage=True)


class TorchdiffeqFehlberg2(Fehlberg2):
    """`fehlberg2` as torchdiffeq runs it: the third stage, taken at the first-order solution,
    is handed to the next step as f(t1, y1) (two calls of f per step instead of three); its
    interpolant (midpoint y0 + dt k_1 / 2)."""

    tableau = _torchdiffeq_form(Fehlberg2.tableau, (0.0, 0.5, 0.0), 2, reuse_last_stage=True)


#: methods that torchdiffeq runs differently from tidal's textbook forms
METHODS: dict[str, type[ExplicitRungeKutta]] = {
    "dopri5": TorchdiffeqDopri5, "adaptive_heun": TorchdiffeqHeunEuler,
    "fehlberg2": TorchdiffeqFehlberg2, "dopri8": TorchdiffeqDopri8}
