"""`PIDController`: adaptive step sizes from the embedded error estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tidal._constants import constant
from tidal._errors import InvalidArgumentError
from tidal.controllers._times import Times, as_time_tuple
from tidal.controllers.adaptive import AdaptiveController, History
from tidal.controllers.base import Scalar, clip


@dataclass(frozen=True)
class PIDController(AdaptiveController):
    r"""Accept a step when its scaled error ratio r <= 1 and choose the next step size.

    The error ratio is the RMS norm of the error estimate scaled elementwise by
    atol + rtol * max(|y0|, |y1|). The next step is dt * factor with (Söderlind's PID form)

    $$ \text{factor} = \text{safety}\; r_n^{-\beta_1/k}\, r_{n-1}^{-\beta_2/k}\,
       r_{n-2}^{-\beta_3/k}, $$

    beta_1 = pcoeff + icoeff + dcoeff, beta_2 = -(pcoeff + 2 dcoeff), beta_3 = dcoeff and
    k = q + 1 for an embedded method of order q, clipped to [factor_min, factor_max] (and to at
    most 1 after a rejection). The default (icoeff=1, others 0) is the classic I controller of
    Hairer, Nørsett & Wanner; pcoeff=0.2, icoeff=0.4 is a good PI choice for oscillatory
    problems.

    Args:
        rtol, atol: relative and absolute tolerances (>= 0, not both 0). Floats, or tensors that
            broadcast to the state's shape (per-element tolerances).
        pcoeff, icoeff, dcoeff: PID coefficients.
        safety: safety factor in (0, 1].
        factor_min, factor_max: bounds on the change of step size per step.
        dt0: first step size; None chooses it automatically (Hairer's algorithm).
        dt_min: smallest step; a step this small is accepted whatever its error.
        dt_max: largest step.
        step_ts: times every step must land on.
        jump_ts: times where f is discontinuous (steps land there and f is re-evaluated).
        norm: replaces the RMS norm; called on the scaled error (shape of the state) and
            returns a scalar (shared grid) or one value per sample (per-sample grids).
    """

    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    pcoeff: float = field(default=0.0, kw_only=True)
    icoeff: float = field(default=1.0, kw_only=True)
    dcoeff: float = field(default=0.0, kw_only=True)
    safety: float = field(default=0.9, kw_only=True)
    factor_min: float = field(default=0.2, kw_only=True)
    factor_max: float = field(default=10.0, kw_only=True)
    dt0: float | None = field(default=None, kw_only=True)
    dt_min: float = field(default=0.0, kw_only=True)
    dt_max: float = field(default=math.inf, kw_only=True)
    step_ts: Times = field(default=(), kw_only=True)
    jump_ts: Times = field(default=(), kw_only=True)
    norm: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, kw_only=True)

    @property
    def uses_history(self) -> bool:
        """Whether past error ratios enter the step size (PI and PID, not the I controller)."""
        return self.pcoeff != 0.0 or self.dcoeff != 0.0

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, np.ndarray)):
                raise InvalidArgumentError(
                    f"`PIDController({name}={value!r})`: per-element tolerances are a "
                    f"torch.Tensor that broadcasts to the state: {name}=torch.tensor(...).")
            if isinstance(value, torch.Tensor):
                low, high = value.min().item(), value.max().item()
            else:
                low = high = value
            if not isinstance(low, (int, float)) or not low >= 0 or not math.isfinite(high):
                raise InvalidArgumentError(
                    f"`PIDController({name}={value!r})`: {name} must be >= 0 and finite (not "
                    "NaN or inf). Typical values are rtol=1e-6, atol=1e-8.")
        if _is_zero(self.rtol) and _is_zero(self.atol):
            raise InvalidArgumentError(
                "`PIDController(rtol=0, atol=0)`: at least one tolerance must be positive.")
        self._check_range("safety", 0.0, 1.0, low_open=True)
        self._check_range("factor_min", 0.0, 1.0, low_open=True)
        self._check_range("factor_max", 1.0, math.inf)
        self._check_range("dt_min", 0.0, math.inf)
        self._check_range("dt_max", 0.0, math.inf, low_open=True)
        if self.dt_min > self.dt_max:
            raise InvalidArgumentError(
                f"`PIDController(dt_min={self.dt_min}, dt_max={self.dt_max})`: dt_min must not "
                "exceed dt_max.")
        if self.dt0 is not None:
            self._check_range("dt0", 0.0, math.inf, low_open=True)
        object.__setattr__(self, "step_ts", as_time_tuple("step_ts", "PIDController", self.step_ts))
        object.__setattr__(self, "jump_ts", as_time_tuple("jump_ts", "PIDController", self.jump_ts))

    def _check_range(self, name: str, low: float, high: float, low_open: bool = False) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, float)) and (low < value if low_open else low <= value)
        if not (ok and value <= high):
            bound = "(" if low_open else "["
            raise InvalidArgumentError(
                f"`PIDController({name}={value!r})`: {name} must lie in {bound}{low}, {high}].")

    def adapt(self, ratio: Scalar, history: History, exponent: float
              ) -> tuple[Scalar, Scalar, History]:
        """From the error ratio of a step: (accept, factor for dt, updated history).

        Works on Python floats and on float64 tensors alike. A NaN or infinite ratio rejects
        the step with the smallest factor. History (r_{n-1}, r_{n-2}) moves on accepted steps.
        """
        tensor = isinstance(ratio, torch.Tensor)
        if tensor:
            ratio = torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf, neginf=math.inf)
        elif not math.isfinite(ratio):
            ratio = math.inf
        accept = ratio <= (constant(1.0, ratio) if tensor else 1.0)
        r = clip(ratio, 1e-10, math.inf)
        b1 = self.pcoeff + self.icoeff + self.dcoeff
        b2 = -(self.pcoeff + 2.0 * self.dcoeff)
        factor = (constant(self.safety, r) if tensor else self.safety) * r ** (-b1 * exponent)
        if b2 != 0.0:
            factor = factor * history[0] ** (-b2 * exponent)
        if self.dcoeff != 0.0:
            factor = factor * history[1] ** (-self.dcoeff * exponent)
        if tensor:  # [factor_min, factor_max], or [factor_min, 1] after a rejection
            upper = torch.where(accept, constant(self.factor_max, factor), constant(1.0, factor))
            factor = torch.clamp(factor, constant(self.factor_min, factor), upper)
            if self.uses_history:
                history = (torch.where(accept, r, history[0]),
                           torch.where(accept, history[0], history[1]))
        else:
            factor = clip(factor, self.factor_min, self.factor_max)
            if accept:
                history = (r, history[0])
            else:
                factor = min(factor, 1.0)
        return accept, factor, history


def _is_zero(x: float | torch.Tensor) -> bool:
    return bool((x == 0).all()) if isinstance(x, torch.Tensor) else x == 0

