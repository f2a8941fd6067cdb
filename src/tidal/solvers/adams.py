r"""Adams–Bashforth(–Moulton) on a fixed grid, variable order: torchdiffeq's `explicit_adams`
and `implicit_adams`.

A linear multistep method reuses the slopes of earlier steps. With the last k slopes
f_n, f_{n-1}, ..., f_{n-k+1} (one per step, all steps of one size h),

$$ y_{n+1} = y_n + h \sum_{j<k} \beta_j f_{n-j}, \qquad
   \beta_j = \int_0^1 \ell_j(u)\, du $$

(Adams–Bashforth, order k), where l_j is the Lagrange basis polynomial of the nodes
u = 0, -1, ..., -(k-1) (the step's start is u = 0, its end u = 1). Adams–Moulton adds the node
u = 1: the corrector y_{n+1} = y_n + h (beta*_0 f(t_{n+1}, y_{n+1}) + sum_j beta*_{j+1}
f_{n-j}), order k + 1, solved by fixed-point iteration from the predictor until two iterates
of the increment agree to (rtol, atol) in the max norm, at most `max_iters` times.

The order grows with the history: the first two steps are RK4 (3/8 rule), then order 3, 4, ...
up to `max_order`. Slopes are kept per solve (one `Stages` store of a loop run is one solve),
so an instance must not be stepped by two loops at once; `tidal.odeint` makes one per call.
"""

from __future__ import annotations

import collections
import functools
import warnings
from fractions import Fraction

import torch

from tidal._errors import InvalidArgumentError
from tidal.solvers.base import FixedStepMethod, StepField, StepResult
from tidal.solvers.explicit_rk import RKCoefficients, Stages

#: the highest order (torchdiffeq's limit)
MAX_ORDER = 12


@functools.cache
def adams_weights(nodes: tuple[int, ...]) -> tuple[float, ...]:
    """beta_j = integral over [0, 1] of the Lagrange basis polynomial of node j, exactly (in
    rationals) and then rounded once."""
    weights = []
    for j, node in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients, lowest power first
        for i, other in enumerate(nodes):
            if i == j:
                continue
            scale = Fraction(1, node - other)
            shifted = [Fraction(0), *poly]  # u * poly
            poly = [(hi - other * lo) * scale for hi, lo in zip(shifted, [*poly, Fraction(0)])]
        weights.append(float(sum(c / (k + 1) for k, c in enumerate(poly))))
    return tuple(weights)


def bashforth(order: int) -> tuple[float, ...]:
    """Adams–Bashforth weights of `order` over f_n, f_{n-1}, ..."""
    return adams_weights(tuple(-j for j in range(order)))


def moulton(order: int) -> tuple[float, ...]:
    """Adams–Moulton weights of `order` over f_{n+1}, f_n, f_{n-1}, ..."""
    return adams_weights(tuple(1 - j for j in range(order)))


class AdamsBashforthMoulton(FixedStepMethod):
    """Variable-order Adams–Bashforth predictor with an Adams–Moulton corrector (see the
    module docstring); `implicit=False` gives the Adams–Bashforth method alone.

    Args:
        implicit: iterate the Adams–Moulton corrector.
        max_order: highest order, 4 to 12 (below 4 every step is RK4).
        max_iters: corrector iterations per step at most; a step whose corrector has not
            converged warns and forgets its oldest slope.
        rtol, atol: when two corrector iterates agree.
    """

    name = "implicit_adams"
    order = 4

    def __init__(self, implicit: bool = True, max_order: int = MAX_ORDER, max_iters: int = 4,
                 rtol: float = 1e-3, atol: float = 1e-4):
        if not 1 <= int(max_order) <= MAX_ORDER:
            raise InvalidArgumentError(f"`AdamsBashforthMoulton(max_order={max_order!r})`: give "
                                       f"an order from 1 to {MAX_ORDER} (odeint: options="
                                       "{'max_order': n}).")
        self.implicit, self.max_order, self.max_iters = implicit, int(max_order), int(max_iters)
        self.rtol, self.atol = float(rtol), float(atol)
        self._run: Stages | None = None
        self._slopes: collections.deque[torch.Tensor] = collections.deque()

    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        if stages is not self._run:  # a new solve: no history
            self._run = stages
            self._slopes = collections.deque(maxlen=max(self.max_order - 1, 1))
        return super().attempt(field, stages, coefficients)

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        slopes = self._slopes
        slopes.appendleft(f0.clone())  # the loop reuses its stage buffers
        order = min(len(slopes), self.max_order - 1)
        if order < 3:
            return _rk4(field, y0, f0, dt)
        slope = _combine(bashforth(order), slopes)
        if not self.implicit:
            return StepResult(y0 + dt * slope, slope, 0)
        weights = moulton(order + 1)
        history = _combine(weights[1:], slopes)
        fevals, converged = 0, False
        for _ in range(self.max_iters):
            previous = slope
            f1 = field.at(1.0, y0 + dt * slope)
            fevals += 1
            slope = weights[0] * f1 + history
            converged = _agree(dt * previous, dt * slope, self.rtol, self.atol)
            if converged:
                break
        if not converged:
            warnings.warn(f"{type(self).__name__}: the Adams–Moulton corrector did not converge "
                          f"in {self.max_iters} iterations; take a smaller step_size or raise "
                          "max_iters.", RuntimeWarning, stacklevel=2)
            slopes.pop()
        return StepResult(y0 + dt * slope, slope, fevals)


def _combine(weights: tuple[float, ...], slopes: collections.deque[torch.Tensor]
             ) -> torch.Tensor:
    total = weights[0] * slopes[0]
    for w, f in zip(weights[1:], list(slopes)[1:]):
        total = total + w * f
    return total


def _agree(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    """Max-norm test |a - b| <= atol + rtol max(|a|, |b|), elementwise."""
    return bool(((a - b).abs() < atol + rtol * torch.maximum(a.abs(), b.abs())).all())


def _rk4(field: StepField, y0: torch.Tensor, f0: torch.Tensor, dt: float | torch.Tensor
         ) -> StepResult:
    """One step of the 3/8-rule RK4 (the start-up of the multistep method)."""
    k2 = field.at(1 / 3, y0 + dt * f0 / 3)
    k3 = field.at(2 / 3, y0 + dt * (k2 - f0 / 3))
    k4 = field.at(1.0, y0 + dt * (f0 - k2 + k3))
    slope = (f0 + 3 * (k2 + k3) + k4) / 8
    return StepResult(y0 + dt * slope, slope, 3)


class AdamsBashforth(AdamsBashforthMoulton):
    """The Adams–Bashforth predictor alone (torchdiffeq's `explicit_adams`)."""

    name = "explicit_adams"

    def __init__(self, max_order: int = MAX_ORDER, max_iters: int = 4, rtol: float = 1e-3,
                 atol: float = 1e-4):
        super().__init__(False, max_order, max_iters, rtol, atol)
