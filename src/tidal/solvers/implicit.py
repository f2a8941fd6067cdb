r"""`ImplicitTableau`: an implicit Runge–Kutta method as data, and the fixed-step implicit methods
under torchdiffeq's names.

    c_i | a_i1 ... a_is        Z_i = h sum_j a_ij f(t0 + c_j h, y0 + Z_j)   (stage increments)
    ----+----------------      y1  = y0 + h sum_j b_j f(t0 + c_j h, y0 + Z_j)
        | b_1  ... b_s

A first stage with c_1 = 0 and a zero row is explicit (Z_1 = 0, f there is f0); the remaining
m stages form the implicit block A_I (m x m, invertible for every method here) with the column
a_E of explicit couplings. Since h F_I = A_I^{-1} (Z_I - h a_E f0), the step's result needs no
further call of f:

    y1 = y0 + h e f0 + sum_j w_j Z_j,     w = b_I A_I^{-1},   e = b_E - w . a_E

(for a stiffly accurate method, w picks the last stage: y1 = y0 + Z_s). On construction the
tableau checks its row sums, that b sums to 1, and the Runge–Kutta order conditions
(`order_conditions`) up to its order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tidal.solvers.order_conditions import first_violation

Row = tuple[float, ...]
_ORDER_TOL = 1e-12


@dataclass(frozen=True)
class ImplicitTableau:
    """Coefficients of an implicit Runge–Kutta method, checked on construction.

    Args:
        c: nodes, one per stage.
        a: the full s x s coefficient matrix as rows.
        b: weights.
        order: the classical order.
        name: the method's name (torchdiffeq's string).
        l_stable: whether R(z) -> 0 as z -> -inf (else the method is only A-stable); the
            tests check it.

    Derived: `explicit_first` (the first stage is f0), `implicit` (indices of the implicit
    stages), `z_weights` (w) and `f0_weight` (e) of the module docstring.
    """

    c: Row
    a: tuple[Row, ...]
    b: Row
    order: int
    name: str
    l_stable: bool
    explicit_first: bool = field(init=False)
    z_weights: Row = field(init=False)
    f0_weight: float = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or any(len(row) != s for row in self.a) or len(self.b) != s:
            self._fail(f"`a` must be {s} x {s} and `b` have {s} entries (one per node)")
        for i, (row, ci) in enumerate(zip(self.a, self.c)):
            if abs(math.fsum(row) - ci) > _ORDER_TOL:
                self._fail(f"row {i} of `a` sums to {math.fsum(row)!r}, not c[{i}] = {ci!r}")
        a = np.asarray(self.a)
        bad = first_violation(np.asarray(self.b), a, a, self.order, _ORDER_TOL)
        if bad is not None:
            self._fail(f"`b` violates the order-{self.order} condition for the tree {bad[0]} "
                       f"by {bad[1]:.3g}")
        explicit_first = self.c[0] == 0.0 and not any(self.a[0])
        first = int(explicit_first)
        block = a[first:, first:]
        if abs(np.linalg.det(block)) < 1e-12:
            self._fail("the implicit block of `a` is singular")
        weights = np.asarray(self.b[first:]) @ np.linalg.inv(block)
        e = self.b[0] - float(weights @ a[first:, 0]) if explicit_first else 0.0
        object.__setattr__(self, "explicit_first", explicit_first)
        object.__setattr__(self, "z_weights", tuple(0.0 if abs(x) < 1e-14 else float(x)
                                                    for x in weights))
        object.__setattr__(self, "f0_weight", 0.0 if abs(e) < 1e-14 else e)

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def implicit(self) -> range:
        """Indices of the implicit stages."""
        return range(int(self.explicit_first), self.num_stages)

    def _fail(self, what: str) -> None:
        raise ValueError(f"ImplicitTableau {self.name}: {what}.")


_S2, _S3, _S6, _S15 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0), math.sqrt(15.0)

# Implicit (backward) Euler: order 1, L-stable.
IMPLICIT_EULER = ImplicitTableau(name="implicit_euler", c=(1.0,), a=((1.0,),), b=(1.0,),
                                 order=1, l_stable=True)

# Implicit midpoint rule (1-stage Gauss): order 2, A-stable, symplectic; |R(-inf)| = 1.
IMPLICIT_MIDPOINT = ImplicitTableau(name="implicit_midpoint", c=(0.5,), a=((0.5,),), b=(1.0,),
                                    order=2, l_stable=False)

# Trapezoidal rule (2-stage Lobatto IIIA, explicit first stage): order 2, A-stable; R(-inf) = -1.
TRAPEZOID = ImplicitTableau(name="trapezoid", c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)),
                            b=(0.5, 0.5), order=2, l_stable=False)

# Radau IIA, 2 stages: order 3, L-stable, stiffly accurate (Hairer & Wanner II, Table IV.5.5).
RADAU_IIA3 = ImplicitTableau(
    name="radauIIA3", c=(1.0 / 3.0, 1.0),
    a=((5.0 / 12.0, -1.0 / 12.0), (0.75, 0.25)), b=(0.75, 0.25), order=3, l_stable=True)

# Radau IIA, 3 stages: order 5, L-stable, stiffly accurate (Hairer & Wanner II, Table IV.5.6;
# the method of RADAU5).
RADAU_IIA5 = ImplicitTableau(
    name="radauIIA5", c=((4.0 - _S6) / 10.0, (4.0 + _S6) / 10.0, 1.0),
    a=(((88.0 - 7.0 * _S6) / 360.0, (296.0 - 169.0 * _S6) / 1800.0, (-2.0 + 3.0 * _S6) / 225.0),
       ((296.0 + 169.0 * _S6) / 1800.0, (88.0 + 7.0 * _S6) / 360.0, (-2.0 - 3.0 * _S6) / 225.0),
       ((16.0 - _S6) / 36.0, (16.0 + _S6) / 36.0, 1.0 / 9.0)),
    b=((16.0 - _S6) / 36.0, (16.0 + _S6) / 36.0, 1.0 / 9.0), order=5, l_stable=True)

# Gauss–Legendre, 2 stages: order 4, A-stable, symplectic (Hairer, Nørsett & Wanner I,
# Table II.7.4).
GL4 = ImplicitTableau(
    name="gl4", c=(0.5 - _S3 / 6.0, 0.5 + _S3 / 6.0),
    a=((0.25, 0.25 - _S3 / 6.0), (0.25 + _S3 / 6.0, 0.25)), b=(0.5, 0.5), order=4,
    l_stable=False)

# Gauss–Legendre, 3 stages: order 6, A-stable, symplectic (ibid.).
GL6 = ImplicitTableau(
    name="gl6", c=(0.5 - _S15 / 10.0, 0.5, 0.5 + _S15 / 10.0),
    a=((5.0 / 36.0, 2.0 / 9.0 - _S15 / 15.0, 5.0 / 36.0 - _S15 / 30.0),
       (5.0 / 36.0 + _S15 / 24.0, 2.0 / 9.0, 5.0 / 36.0 - _S15 / 24.0),
       (5.0 / 36.0 + _S15 / 30.0, 2.0 / 9.0 + _S15 / 15.0, 5.0 / 36.0)),
    b=(5.0 / 18.0, 4.0 / 9.0, 5.0 / 18.0), order=6, l_stable=False)

# Alexander's 2-stage SDIRK, gamma = 1 - 1/sqrt(2): order 2, L-stable, stiffly accurate
# (R. Alexander, SIAM J. Numer. Anal. 14 (1977) 1006; Hairer & Wanner II, Sec. IV.6).
_G = 1.0 - _S2 / 2.0
SDIRK2 = ImplicitTableau(name="sdirk2", c=(_G, 1.0), a=((_G, 0.0), (1.0 - _G, _G)),
                         b=(1.0 - _G, _G), order=2, l_stable=True)

# TR-BDF2 as a 3-stage ESDIRK (trapezoid to t0 + 2 gamma h, then BDF2), gamma = 1 - 1/sqrt(2):
# order 2, L-stable, stiffly accurate (Bank et al., IEEE Trans. CAD 4 (1985) 436; Hosea &
# Shampine, Appl. Numer. Math. 20 (1996) 21).
_W = _S2 / 4.0
TRBDF2 = ImplicitTableau(
    name="trbdf2", c=(0.0, 2.0 * _G, 1.0),
    a=((0.0, 0.0, 0.0), (_G, _G, 0.0), (_W, _W, _G)), b=(_W, _W, _G), order=2, l_stable=True)

IMPLICIT_TABLEAUS = {t.name: t for t in (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID,
                                         RADAU_IIA3, RADAU_IIA5, GL4, GL6, SDIRK2, TRBDF2)}
