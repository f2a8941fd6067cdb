"""Generate the coefficient literals of `tidal.solvers.dopri8` from scipy's DOP853 tables.

scipy (`scipy/integrate/_ivp/dop853_coefficients.py`, Hairer's DOP853 coefficients) writes the
7th-order dense output of DOP853 in nested form,

    y(t0 + theta h) = y0 + theta (F0 + (1-theta) (F1 + theta (F2 + (1-theta) (F3 + theta (F4
                      + (1-theta) (F5 + theta F6))))))

with F0 = dy = h sum_i b_i k_i, F1 = h k_0 - dy, F2 = 2 dy - h (f(t1, y1) + k_0) and
F3..F6 = h D @ K, K the 16 dense stages (12 stages, f(t1, y1), three extra stages). Everything
is linear in K, so this script expands it into tidal's polynomial-weight form
y = y0 + h sum_i w_i(theta) K_i, w_i(theta) = sum_k dense[i][k] theta^(k+1) (a 16 x 7 table).
The expansion is exact: it runs on `fractions.Fraction` copies of scipy's float64 coefficients
and rounds each result once to float64.

Usage (scipy is needed here, never by tidal itself):

    python docs/generate_dopri8_dense.py          # print the ButcherTableau(...) arguments
    python docs/generate_dopri8_dense.py --check  # compare with tidal.solvers.dopri8, bit for bit

The printed block is what `src/tidal/solvers/dopri8.py` holds inside its
`tableau = ButcherTableau(...)` (floats are written with repr(), so they round-trip exactly).
"""

from __future__ import annotations

import sys
from fractions import Fraction

from scipy.integrate._ivp import dop853_coefficients as dop

S = dop.N_STAGES  # 12 stages
N_DENSE = dop.N_STAGES_EXTENDED  # 16 dense stages: 12, f(t1, y1), 3 extra
END = S  # index of f(t1, y1) among the dense stages
POWER = dop.INTERPOLATOR_POWER  # 7


def _poly_add(p: list[list[Fraction]], q: list[list[Fraction]]) -> list[list[Fraction]]:
    """Sum of two vector-valued polynomials (lists of coefficient vectors, low power first)."""
    n = max(len(p), len(q))
    zero = [Fraction(0)] * N_DENSE
    p = p + [zero] * (n - len(p))
    q = q + [zero] * (n - len(q))
    return [[x + y for x, y in zip(u, v, strict=True)] for u, v in zip(p, q, strict=True)]


def _times_theta(p: list[list[Fraction]]) -> list[list[Fraction]]:
    return [[Fraction(0)] * N_DENSE, *p]


def _times_one_minus_theta(p: list[list[Fraction]]) -> list[list[Fraction]]:
    return _poly_add(p, [[-x for x in v] for v in _times_theta(p)])


def dense_weights() -> list[list[float]]:
    """The 16 x 7 table dense[i][k], the coefficient of theta^(k+1) in w_i."""
    b = [Fraction(float(x)) for x in dop.B] + [Fraction(0)] * (N_DENSE - S)
    unit = [[Fraction(int(i == j)) for j in range(N_DENSE)] for i in range(N_DENSE)]
    f0 = b
    f1 = [u - x for u, x in zip(unit[0], b, strict=True)]
    f2 = [2 * x - u - e for x, u, e in zip(b, unit[0], unit[END], strict=True)]
    d = [[Fraction(float(x)) for x in row] for row in dop.D]
    fs = [f0, f1, f2, *d]
    assert len(fs) == POWER
    poly = [fs[6]]
    for k in range(5, -1, -1):
        poly = _times_theta(poly) if k % 2 == 1 else _times_one_minus_theta(poly)
        poly = _poly_add([fs[k]], poly)
    poly = _times_theta(poly)  # degree 7, zero constant term
    assert len(poly) == POWER + 1 and all(x == 0 for x in poly[0])
    for i in range(N_DENSE):  # w_i(1) = b_i exactly, before rounding
        assert sum(poly[k][i] for k in range(1, POWER + 1)) == b[i]
    return [[float(poly[k][i]) for k in range(1, POWER + 1)] for i in range(N_DENSE)]


def tableau_fields() -> dict[str, object]:
    a = dop.A
    return {
        "c": tuple(float(x) for x in dop.C[:S]),
        "a": tuple(tuple(float(x) for x in a[i, :i]) for i in range(S)),
        "b": tuple(float(x) for x in dop.B),
        "b_error": (tuple(float(x) for x in dop.E5[:S]), tuple(float(x) for x in dop.E3[:S])),
        "c_extra": tuple(float(x) for x in dop.C[S + 1:]),
        "a_extra": tuple(tuple(float(x) for x in a[i, :i]) for i in range(S + 1, N_DENSE)),
        "dense": tuple(tuple(row) for row in dense_weights()),
    }


def _row(values, indent: str, width: int = 100) -> list[str]:
    """A tuple literal of floats, wrapped to `width` columns."""
    items = [repr(float(x)) for x in values]
    if not items:
        return [indent + "(),"]
    lines, line = [], indent + "("
    for j, item in enumerate(items):
        piece = item + ("," if j < len(items) - 1 or len(items) == 1 else "")
        if len(line) + len(piece) + 2 > width and line.strip() != "(":
            lines.append(line.rstrip())
            line = indent + " "
        line += piece + " "
    lines.append(line.rstrip() + "),")
    return lines


def _flat_field(name: str, values, indent: str) -> list[str]:
    """`name=(x, y, ...),` wrapped, continuation lines aligned under the first value."""
    lines = _row(values, " " * (len(indent) + len(name) + 1))
    return [indent + name + "=" + lines[0].lstrip(), *lines[1:]]


def _nested_field(name: str, rows, indent: str) -> list[str]:
    """`name=(` then one wrapped tuple per row, then `),`."""
    out = [f"{indent}{name}=("]
    for row in rows:
        out += _row(row, indent + " " * 4)
    return [*out, f"{indent}),"]


def render() -> str:
    f = tableau_fields()
    ind = " " * 8
    out = _flat_field("c", f["c"], ind) + _nested_field("a", f["a"], ind)
    out += [*_flat_field("b", f["b"], ind), f"{ind}order=8,"]
    out += [f"{ind}# E5 (order-5 estimate) first, then E3 (order 3); both are b - b_hat."]
    out += [*_nested_field("b_error", f["b_error"], ind), f"{ind}error_order=7,"]
    out += _flat_field("c_extra", f["c_extra"], ind) + _nested_field("a_extra", f["a_extra"], ind)
    out += [*_nested_field("dense", f["dense"], ind), f"{ind}dense_order=7,"]
    return "\n".join(out)


def check() -> None:
    """Compare every field with tidal's Dopri8 tableau, bit for bit."""
    from tidal.solvers.dopri8 import Dopri8

    tab = Dopri8.tableau
    for name, value in tableau_fields().items():
        if getattr(tab, name) != value:
            raise SystemExit(f"dopri8.py differs from scipy's DOP853 in `{name}`")
    print("tidal.solvers.dopri8 matches scipy's DOP853 coefficients.")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        check()
    else:
        print(render())
