r"""Stochastic Runge–Kutta methods for additive noise (Rößler's SRA family) as data.

For dy = f(t, y) dt + g(t) dW with g independent of y, a step of size h uses the increment
dW and J = I_(1,0) / h, where I_(1,0) = int_t0^t1 (W_s - W_t0) ds; in terms of the space-time
Lévy area H, J = dW / 2 + H. With stages

    Y_i = y0 + h sum_{j<i} A0_ij f(t0 + c0_j h, Y_j) + sum_{j<i} B0_ij g(t0 + c1_j h) J,

the step is

    y1 = y0 + h sum_i alpha_i f(t0 + c0_i h, Y_i) + sum_i g(t0 + c1_i h) (beta1_i dW + beta2_i J).

`SRATableau` checks the conditions for strong order 1.5 (Rößler, SIAM J. Numer. Anal. 48
(2010) 922; rederived here from the Itô–Taylor expansion, with e = (1, .., 1)):

    alpha.e = 1,  beta1.e = 1,  beta2.e = 0        (consistency: f dt, g dW, no J drift)
    alpha.(A0 e) = 1/2                              (deterministic order 2)
    alpha.(B0 e) = 1                                (the f' g I_(1,0) term)
    alpha.(B0 e)^2 = 3/2                            (the f''(g, g) term, in mean)
    beta1.c1 = 1,  beta2.c1 = -1                    (g' I_(0,1) = g' (h dW - I_(1,0)))

and c0 = A0 e. An embedded solution for step-size control is given by error weights (the
differences alpha - alpha_hat, beta1 - beta1_hat, beta2 - beta2_hat, each summing to 0, so the
embedded solution is consistent); its strong order is `error_order`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tidal._errors import IncompatibleOptionsError
from tidal.brownian import Increment
from tidal.solvers.sde.base import SDEMethod, SDEStep
from tidal.solvers.sde.terms import Calculus, Noise, StepSDE

Row = tuple[float, ...]


def _dot(x: Row, y: Row) -> float:
    return math.fsum(a * b for a, b in zip(x, y))


@dataclass(frozen=True)
class SRATableau:
    """Coefficients of an SRA method (module docstring), checked on construction.

    Args:
        c0, c1: time nodes of the drift and of the diffusion, one per stage.
        a0, b0: strictly lower-triangular stage coefficients (row i has i entries).
        alpha, beta1, beta2: weights of the step.
        alpha_error, beta1_error, beta2_error: differences to the embedded solution (each
            sums to 0); all empty for a method without one.
        error_order: strong order of the embedded solution (None without one).
    """

    c0: Row
    c1: Row
    a0: tuple[Row, ...]
    b0: tuple[Row, ...]
    alpha: Row
    beta1: Row
    beta2: Row
    alpha_error: Row = ()
    beta1_error: Row = ()
    beta2_error: Row = ()
    error_order: float | None = None

    def __post_init__(self) -> None:
        s = len(self.c0)
        rows = (self.c1, self.a0, self.b0, self.alpha, self.beta1, self.beta2)
        if any(len(r) != s for r in rows):
            raise ValueError("SRATableau: c0, c1, a0, b0, alpha, beta1 and beta2 need one entry "
                             "per stage.")
        for name, m in (("a0", self.a0), ("b0", self.b0)):
            if any(len(row) != i for i, row in enumerate(m)):
                raise ValueError(f"SRATableau: row i of {name} must have i entries (explicit "
                                 f"method).")
        a0e = tuple(math.fsum(row) for row in self.a0)
        b0e = tuple(math.fsum(row) for row in self.b0)
        if any(not _close(x, c) for x, c in zip(a0e, self.c0)):
            raise ValueError(f"SRATableau: the rows of a0 sum to {a0e}, not to c0 = {self.c0}.")
        ones = (1.0,) * s
        conditions = {
            "alpha.e = 1": (_dot(self.alpha, ones), 1.0),
            "beta1.e = 1": (_dot(self.beta1, ones), 1.0),
            "beta2.e = 0": (_dot(self.beta2, ones), 0.0),
            "alpha.(a0 e) = 1/2": (_dot(self.alpha, a0e), 0.5),
            "alpha.(b0 e) = 1": (_dot(self.alpha, b0e), 1.0),
            "alpha.(b0 e)^2 = 3/2": (_dot(self.alpha, tuple(x * x for x in b0e)), 1.5),
            "beta1.c1 = 1": (_dot(self.beta1, self.c1), 1.0),
            "beta2.c1 = -1": (_dot(self.beta2, self.c1), -1.0),
        }
        for name, (value, target) in conditions.items():
            if not _close(value, target):
                raise ValueError(f"SRATableau: the order-1.5 condition {name} fails (got "
                                 f"{value!r}).")
        errors = (self.alpha_error, self.beta1_error, self.beta2_error)
        if (self.error_order is None) != all(len(r) == 0 for r in errors):
            raise ValueError("SRATableau: give all three error rows and error_order, or none.")
        if self.error_order is not None and any(
                len(r) != s or not _close(math.fsum(r), 0.0) for r in errors):
            raise ValueError("SRATableau: each error row needs one entry per stage and must "
                             "sum to 0.")

    @property
    def num_stages(self) -> int:
        return len(self.c0)


def _close(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-12


class StochasticRungeKuttaA(SDEMethod):
    """An SRA method described by `tableau`: additive noise only, strong order 1.5, reads the
    space-time Lévy area. Subclasses set `tableau` and `name`."""

    tableau: ClassVar[SRATableau]
    calculus = Calculus.ITO  # additive noise: Itô and Stratonovich coincide
    strong_order = 1.5
    needs_area = True

    @property
    def error_order(self) -> float | None:  # type: ignore[override]
        return self.tableau.error_order

    def check(self, noise: Noise, calculus: Calculus) -> None:
        if not noise.additive:
            raise IncompatibleOptionsError(
                f"`{self!r}` needs additive noise (g independent of y: `Noise(..., "
                f"additive=True)`). Use Milstein or Heun for multiplicative noise.")

    def step(self, sde: StepSDE, y0: torch.Tensor, dt: float | torch.Tensor, dw: Increment,
             state: Any) -> SDEStep:
        tab = self.tableau
        if dw.area is None:
            raise IncompatibleOptionsError(f"`{self!r}` needs the space-time Lévy area: build "
                                           f"the Brownian tree with `levy_area=True`.")
        j = 0.5 * dw.dw + dw.area  # I_(1,0) / h
        g = [sde.diffusion(c, y0) for c in tab.c1]
        g_j = [sde.noise.product(gi, j) for gi in g]
        f: list[torch.Tensor] = []
        for i in range(tab.num_stages):
            yi = y0
            for a, b, fj, gj in zip(tab.a0[i], tab.b0[i], f, g_j):
                yi = yi + (a * dt) * fj + b * gj
            f.append(sde.drift(tab.c0[i], yi))
        y1 = y0 + self._combine(sde, dt, f, g, g_j, dw.dw, tab.alpha, tab.beta1, tab.beta2)
        error = None
        if tab.error_order is not None:
            error = self._combine(sde, dt, f, g, g_j, dw.dw, tab.alpha_error, tab.beta1_error,
                                  tab.beta2_error)
        return SDEStep(y1, error, None)

    @staticmethod
    def _combine(sde: StepSDE, dt: float | torch.Tensor, f: list[torch.Tensor],
                 g: list[torch.Tensor], g_j: list[torch.Tensor], dw: torch.Tensor,
                 alpha: Row, beta1: Row, beta2: Row) -> torch.Tensor:
        """dt sum alpha_i f_i + sum g_i (beta1_i dW + beta2_i J), skipping zero weights."""
        terms = [(a * dt) * fi for a, fi in zip(alpha, f) if a != 0]
        terms += [b1 * sde.noise.product(gi, dw) for b1, gi in zip(beta1, g) if b1 != 0]
        terms += [b2 * gj for b2, gj in zip(beta2, g_j) if b2 != 0]
        return sum(terms[1:], terms[0]) if terms else torch.zeros_like(f[0])


class SRA1(StochasticRungeKuttaA):
    r"""Rößler's SRA1: two stages, strong order 1.5 for additive noise (deterministic order 2),
    with an embedded Euler–Maruyama solution (strong order 1.0 for additive noise) for
    adaptive steps: error = y1 - y_EM, where y_EM = y0 + f(t0, y0) h + g(t0) dW uses the first
    drift stage and the diffusion at c1 = 0.

    Two drift and two diffusion evaluations per step.
    """

    name = "sra1"
    drift_evals = diffusion_evals = 2
    tableau = SRATableau(
        c0=(0.0, 0.75), c1=(1.0, 0.0),
        a0=((), (0.75,)), b0=((), (1.5,)),
        alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0),
        alpha_error=(1 / 3 - 1.0, 2 / 3), beta1_error=(1.0, -1.0), beta2_error=(-1.0, 1.0),
        error_order=1.0,
    )
