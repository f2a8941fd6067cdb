r"""`RosenbrockTableau`: a Rosenbrock–Wanner (ROW) method written down as data.

A Rosenbrock method linearises one Newton step into the stages. In its *standard form*
(Hairer & Wanner II, Sec. IV.7, eq. (7.4)), with J = f_y(t0, y0) and f_t = f_t(t0, y0),

    (I - h gamma J) k_i = f(t0 + alpha_i h, y0 + h sum_{j<i} alpha_ij k_j)
                          + h J sum_{j<i} Gamma_ij k_j + gamma_i h f_t,
    y1 = y0 + h sum_i b_i k_i,

where alpha_i = sum_j alpha_ij and gamma_i = sum_{j<=i} Gamma_ij (Gamma_ii = gamma).
Implementations use the *transformed form* (HW II eq. (7.25)), which needs no product with J:
with increments u_i = h sum_{j<=i} Gamma_ij k_j,

    (I / (h gamma) - J) u_i = f(t0 + c_i h, y0 + sum_{j<i} a_ij u_j)
                              + sum_{j<i} (C_ij / h) u_j + d_i h f_t,
    y1 = y0 + sum_i b_i u_i,        y_error = sum_i (b_i - b_hat_i) u_i,

and the two forms are related by

    a = alpha Gamma^{-1},   C = diag(1/gamma) - Gamma^{-1},   b = b_std Gamma^{-1},
    c_i = alpha_i,          d_i = gamma_i.

This class stores the transformed form (how Rodas coefficients are published) and checks on
construction the order conditions of the standard form (trees of `order_conditions`, up to
`order` for b and `embedded_order` for b_hat) after converting back.

**Dense output.** With R combinations q_r = sum_i H_ri u_i of the step's increments,

    y(t0 + theta h) = y0 + sum_r P_r(theta) q_r,    P_r(theta) = sum_k H_poly[r][k] theta^(k+1),

with no factor h (the increments already carry it). Rodas methods publish H with three (or
two) rows h_1, h_2, h_3 for y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta)(h_1 +
theta h_2 + theta^2 h_3)); `rodas_dense` turns that into this layout. The interpolant must hit
y1 at theta = 1 and satisfy the dense order conditions up to `dense_order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tidal.solvers.order_conditions import first_violation

Row = tuple[float, ...]

# Conditions are checked to this absolute tolerance. The published coefficients have 16
# digits and magnitudes up to ~100; residuals of correct methods are ~1e-14, those of a
# wrong digit ~1e-3 or larger.
_ORDER_TOL = 1e-11
# Dense-output conditions are polynomial identities in theta; checking them at more points
# than their degree checks them everywhere.
_THETAS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)


def _lower(rows: tuple[Row, ...], s: int) -> np.ndarray:
    """Strictly lower-triangular rows (row i has i entries) as an s x s matrix."""
    out = np.zeros((s, s))
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _row(values: np.ndarray) -> Row:
    """Floats, with round-off residue of a matrix inversion (|x| < 1e-14) set to exactly 0."""
    return tuple(0.0 if abs(x) < 1e-14 else float(x) for x in values)


@dataclass(frozen=True)
class RosenbrockTableau:
    """Coefficients of a Rosenbrock method in the transformed form, checked on construction.

    Args:
        a: strictly lower-triangular stage-input coefficients; row `i` has `i` entries.
        C: strictly lower-triangular coupling coefficients (same shape as `a`).
        c: nodes, one per stage (f of stage i is evaluated at t0 + c_i h).
        gamma: the diagonal of Gamma; W = I / (h gamma) - J.
        d: time-derivative coefficients gamma_i, one per stage.
        b, b_hat: weights of the solution and of the embedded solution over the increments.
        order, embedded_order: orders of b and b_hat (with the exact Jacobian).
        H: rows of the dense-output combinations over the increments.
        H_poly: per row of H, polynomial coefficients of theta^1, theta^2, ...
        dense_order: order of the interpolant.
        name: the method's name, for messages.
    """

    a: tuple[Row, ...]
    C: tuple[Row, ...]
    c: Row
    gamma: float
    d: Row
    b: Row
    b_hat: Row
    order: int
    embedded_order: int
    H: tuple[Row, ...]
    H_poly: tuple[Row, ...]
    dense_order: int
    name: str = "RosenbrockTableau"
    fsal: bool = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        for label, rows in (("a", self.a), ("C", self.C)):
            if len(rows) != s or any(len(row) != i for i, row in enumerate(rows)):
                self._fail(f"`{label}` needs {s} rows, row i with i entries "
                           "(strictly lower-triangular)")
        for label, row in (("d", self.d), ("b", self.b), ("b_hat", self.b_hat)):
            if len(row) != s:
                self._fail(f"`{label}` needs one entry per stage ({s}); got {len(row)}")
        if len(self.H) != len(self.H_poly) or any(len(row) != s for row in self.H):
            self._fail("`H` needs one row per row of `H_poly`, each with one entry per stage")
        if not self.gamma > 0:
            self._fail(f"gamma must be positive; got {self.gamma!r}")
        alpha, big_gamma = self.standard_form()
        self._check_nodes(alpha, big_gamma)
        beta = alpha + big_gamma
        for label, weights, order in (("b", self.b, self.order),
                                      ("b_hat", self.b_hat, self.embedded_order)):
            bad = first_violation(np.asarray(weights) @ big_gamma, alpha, beta, order,
                                  _ORDER_TOL)
            if bad is not None:
                self._fail(f"`{label}` violates the order-{order} condition for the tree "
                           f"{bad[0]} by {bad[1]:.3g}")
        self._check_dense(alpha, beta, big_gamma)
        object.__setattr__(self, "fsal", self._is_fsal())

    @property
    def num_stages(self) -> int:
        return len(self.c)

    def standard_form(self) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, Gamma) of the standard form: Gamma^{-1} = diag(1/gamma) - C, alpha = a Gamma."""
        s = self.num_stages
        big_gamma = np.linalg.inv(np.eye(s) / self.gamma - _lower(self.C, s))
        return _lower(self.a, s) @ big_gamma, big_gamma

    @cached_property
    def dense_weights(self) -> np.ndarray:
        """w [S, degree]: y(theta) = y0 + sum_i (sum_k w[i, k] theta^(k+1)) u_i."""
        return np.asarray(self.H).T @ np.asarray(self.H_poly)

    def _dense_at(self, theta: float) -> np.ndarray:
        powers = theta ** np.arange(1, self.dense_weights.shape[1] + 1)
        return self.dense_weights @ powers

    def _check_nodes(self, alpha: np.ndarray, big_gamma: np.ndarray) -> None:
        for label, got, want in (("c", alpha.sum(1), self.c), ("d", big_gamma.sum(1), self.d)):
            worst = int(np.argmax(np.abs(got - np.asarray(want))))
            if abs(got[worst] - want[worst]) > _ORDER_TOL * max(1.0, abs(want[worst])):
                self._fail(f"`{label}[{worst}]` is {want[worst]!r}, but the row sum of the "
                           f"standard-form coefficients is {got[worst]!r}")

    def _check_dense(self, alpha: np.ndarray, beta: np.ndarray, big_gamma: np.ndarray) -> None:
        end = self._dense_at(1.0)
        if not np.allclose(end, self.b, rtol=0.0, atol=_ORDER_TOL):
            self._fail(f"the dense output at theta = 1 has weights {end.tolist()}, not b")
        for theta in _THETAS:
            bad = first_violation(self._dense_at(theta) @ big_gamma, alpha, beta,
                                  self.dense_order, _ORDER_TOL, theta)
            if bad is not None:
                self._fail(f"the dense output violates the order-{self.dense_order} "
                           f"condition for the tree {bad[0]} at theta = {theta} by {bad[1]:.3g}")

    def _is_fsal(self) -> bool:
        """The last stage evaluates f at (t1, y1): its input weights are b, and c = 1."""
        last = self.a[-1] + (0.0,)
        return self.c[-1] == 1.0 and last == self.b

    def _fail(self, what: str) -> None:
        raise ValueError(f"RosenbrockTableau {self.name}: {what}.")

    @classmethod
    def from_standard(cls, *, alpha: tuple[Row, ...], Gamma: tuple[Row, ...], b: Row,
                      b_hat: Row, dense_k: tuple[Row, ...], H_poly: tuple[Row, ...],
                      order: int, embedded_order: int, dense_order: int, name: str
                      ) -> RosenbrockTableau:
        """Build from the standard form: `alpha` strictly lower (row i with i entries),
        `Gamma` lower triangular with its diagonal (row i with i + 1 entries), weights `b`,
        `b_hat` over the slopes k_i, and dense rows `dense_k` over h k_i (so that
        y(theta) = y0 + sum_r P_r(theta) sum_i dense_k[r][i] h k_i)."""
        s = len(b)
        big_gamma = np.zeros((s, s))
        for i, row in enumerate(Gamma):
            big_gamma[i, :len(row)] = row
        gamma = float(big_gamma[0, 0])
        inverse = np.linalg.inv(big_gamma)
        a = _lower(alpha, s) @ inverse
        coupling = np.eye(s) / gamma - inverse
        return cls(
            a=tuple(_row(a[i, :i]) for i in range(s)),
            C=tuple(_row(coupling[i, :i]) for i in range(s)),
            c=_row(_lower(alpha, s).sum(1)),
            gamma=gamma,
            d=_row(big_gamma.sum(1)),
            b=_row(np.asarray(b) @ inverse),
            b_hat=_row(np.asarray(b_hat) @ inverse),
            order=order, embedded_order=embedded_order,
            H=tuple(_row(row) for row in np.asarray(dense_k) @ inverse), H_poly=H_poly,
            dense_order=dense_order, name=name,
        )


def rodas_dense(H: tuple[Row, ...], b: Row) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
    """(H, H_poly) for the Rodas interpolant with published rows h_1..h_n:

        y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta)(h_1 + theta h_2 + ...))
                 = y0 + theta (y1 - y0) + sum_j (theta^j - theta^(j+1)) h_j,

    i.e. rows [b, h_1, ..., h_n] with polynomials theta, theta - theta^2, theta^2 - theta^3, ...
    """
    n = len(H)
    degree = n + 1
    poly = [[1.0] + [0.0] * (degree - 1)]
    for j in range(1, n + 1):
        row = [0.0] * degree
        row[j - 1], row[j] = 1.0, -1.0
        poly.append(row)
    return (tuple(b), *H), tuple(tuple(r) for r in poly)
