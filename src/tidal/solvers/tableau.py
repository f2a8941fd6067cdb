"""`ButcherTableau`: an explicit Runge–Kutta method written down as data.

    c_0 = 0 |
    c_1     | a_10
    c_2     | a_20  a_21
     ...    |  ...         ...
    c_{S-1} | a_{S-1,0} ...  a_{S-1,S-2}
    --------+-------------------------------
            | b_0   b_1  ...  b_{S-1}          y1      = y0 + dt * sum_i b_i k_i
            | e_0   e_1  ...  e_{S-1}          y_error =      dt * sum_i e_i k_i   (e = b - b_hat)

with stages k_i = f(t0 + c_i dt, y0 + dt * sum_{j<i} a_ij k_j).

Dense output between t0 and t1 = t0 + dt is linear in the "dense stages"

    K = [k_0, ..., k_{S-1}, f(t1, y1) unless the method is FSAL, extra stages]

as y(t0 + theta dt) = y0 + dt * sum_i w_i(theta) K_i, with polynomial weights
w_i(theta) = sum_k dense[i][k] theta^(k+1). A method without its own interpolant gets the cubic
Hermite one (3rd order), built here from `b`. Extra stages (DOP853 needs three) are evaluated
only when an output falls inside a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Row = tuple[float, ...]


def _close(x: float, y: float, scale: float = 1.0) -> bool:
    return abs(x - y) <= 1e-12 * max(1.0, scale)


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method, checked on construction.

    Args:
        c: nodes, one per stage; `c[0]` must be 0.
        a: strictly lower-triangular coefficients as rows; row `i` has `i` entries.
        b: weights of the propagated solution.
        order: order of the propagated solution.
        b_error: rows of error weights `b - b_hat` (each sums to 0); empty for fixed-step
            methods. Several rows are combined by the solver (DOP853 uses two).
        error_order: order of the embedded solution `b_hat`; sets the step-size exponent.
        dense: polynomial weights of the interpolant over the dense stages (see module doc);
            `None` gives cubic Hermite.
        dense_order: order of the interpolant.
        c_extra, a_extra: nodes and rows of extra stages used only by the interpolant; row `r`
            has one entry per dense stage before it.
        reuse_last_stage: hand the last stage to the next step as f(t1, y1) although it is not
            taken at y1 (torchdiffeq's `adaptive_heun` and `fehlberg2` do; the drop-in
            reproduces them with it: `tidal.compat._steps`).

    `fsal` (derived): the last stage is handed to the next step as its first, f(t1, y1), and
    is not evaluated again: a true FSAL method (its last row of `a` is `b`), or
    `reuse_last_stage`.
    """

    c: Row
    a: tuple[Row, ...]
    b: Row
    order: int
    b_error: tuple[Row, ...] = ()
    error_order: int | None = None
    dense: tuple[Row, ...] | None = None
    dense_order: int = 3
    c_extra: Row = ()
    a_extra: tuple[Row, ...] = ()
    reuse_last_stage: bool = False
    fsal: bool = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s:
            raise ValueError(f"ButcherTableau: c, a and b need one entry per stage; got "
                             f"{len(self.c)}, {len(self.a)} and {len(self.b)}.")
        if self.c[0] != 0:
            raise ValueError(f"ButcherTableau: an explicit method starts at c[0] = 0; got "
                             f"{self.c[0]}.")
        for i, (row, ci) in enumerate(zip(self.a, self.c)):
            if len(row) != i:
                raise ValueError(f"ButcherTableau: row {i} of `a` must have {i} entries "
                                 f"(strictly lower-triangular); got {len(row)}.")
            if not _close(sum(row), ci, sum(map(abs, row))):
                raise ValueError(f"ButcherTableau: row {i} of `a` sums to {sum(row)!r}, "
                                 f"not c[{i}] = {ci!r}.")
        if not _close(sum(self.b), 1.0, sum(map(abs, self.b))):
            raise ValueError(f"ButcherTableau: b sums to {sum(self.b)!r}, not 1.")
        for row in self.b_error:
            if len(row) != s or not _close(sum(row), 0.0, sum(map(abs, row))):
                raise ValueError("ButcherTableau: each b_error row needs one entry per stage "
                                 f"and must sum to 0; got {row}.")
        if bool(self.b_error) != (self.error_order is not None):
            raise ValueError("ButcherTableau: give both b_error and error_order, or neither.")
        fsal = s > 1 and self.c[-1] == 1.0 and self.a[-1] == self.b[:-1] and self.b[-1] == 0
        object.__setattr__(self, "fsal", fsal or self.reuse_last_stage)
        self._check_extra_stages()
        if self.dense is not None:
            self._check_dense()

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return bool(self.b_error)

    @property
    def num_dense_stages(self) -> int:
        """Stages the interpolant reads: S, plus f(t1, y1) unless FSAL, plus extra stages."""
        return self.num_stages + (0 if self.fsal else 1) + len(self.c_extra)

    @property
    def end_index(self) -> int:
        """Index of f(t1, y1) among the dense stages."""
        return self.num_stages - 1 if self.fsal else self.num_stages

    @property
    def end_derivative_unused(self) -> bool:
        """Whether nothing reads f(t1, y1) of a step: not FSAL, no extra stages, and the
        interpolant gives it no weight (linear interpolation)."""
        return (not self.fsal and not self.c_extra
                and not any(self.dense_weights()[self.end_index]))

    def dense_weights(self) -> tuple[Row, ...]:
        """Rows w_i as polynomial coefficients of theta^1, theta^2, ... (Hermite if not given).

        Cubic Hermite through (y0, f0) and (y1, f1): with y1 - y0 = dt * sum_i b_i k_i,
        y(theta) = y0 + (3 theta^2 - 2 theta^3)(y1 - y0)
                      + dt [(theta - 2 theta^2 + theta^3) f0 + (theta^3 - theta^2) f1].
        """
        if self.dense is not None:
            return self.dense
        rows = [[0.0, 3.0 * bi, -2.0 * bi] for bi in self.b]
        rows += [[0.0, 0.0, 0.0] for _ in range(self.num_dense_stages - len(rows))]
        rows[0] = [rows[0][0] + 1.0, rows[0][1] - 2.0, rows[0][2] + 1.0]
        end = self.end_index
        rows[end] = [rows[end][0], rows[end][1] - 1.0, rows[end][2] + 1.0]
        return tuple(tuple(r) for r in rows)

    def _check_extra_stages(self) -> None:
        if len(self.a_extra) != len(self.c_extra):
            raise ValueError("ButcherTableau: c_extra and a_extra need the same length.")
        first = self.num_stages + (0 if self.fsal else 1)
        for r, (row, cr) in enumerate(zip(self.a_extra, self.c_extra)):
            if len(row) != first + r:
                raise ValueError(f"ButcherTableau: extra stage {r} needs {first + r} entries.")
            if not _close(sum(row), cr, sum(map(abs, row))):
                raise ValueError(f"ButcherTableau: extra stage {r} sums to {sum(row)!r}, "
                                 f"not its node {cr!r}.")

    def _check_dense(self) -> None:
        """The interpolant must start at y0, end at y1 and reproduce y' = const exactly."""
        dense = self.dense
        assert dense is not None
        if len(dense) != self.num_dense_stages:
            raise ValueError(f"ButcherTableau: dense needs {self.num_dense_stages} rows (one per "
                             f"dense stage); got {len(dense)}.")
        b_full = list(self.b) + [0.0] * (self.num_dense_stages - self.num_stages)
        for i, row in enumerate(dense):
            if not _close(math.fsum(row), b_full[i], sum(map(abs, row))):
                raise ValueError(f"ButcherTableau: dense row {i} gives w_{i}(1) = "
                                 f"{math.fsum(row)!r}, but the step's weight is {b_full[i]!r}.")
        linear = [math.fsum(row[k] for row in dense) for k in range(len(dense[0]))]
        if not _close(linear[0], 1.0) or any(not _close(x, 0.0) for x in linear[1:]):
            raise ValueError("ButcherTableau: the dense weights must sum to theta (so that a "
                             f"constant f is interpolated exactly); got coefficients {linear}.")
