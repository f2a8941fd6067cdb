"""torchdiffeq's interpolant between the ends of an adaptive step, as dense weights.

torchdiffeq (`_impl/interp.py`, `_interp_fit`) fits the quartic p(theta) through y0, y1 and
y_mid = y0 + dt sum_i m_i k_i, with slopes dt f0 and dt f1 at the ends, where f0 = k_0 and
f1 = k_L is the last stage. With y1 = y0 + dt sum_i b_i k_i this is p(theta) = y0 + dt sum_i
w_i(theta) k_i with

    w_i = d_i0 theta + (d_iL - 4 d_i0 - 5 b_i + 16 m_i) theta^2
          + (5 d_i0 - 3 d_iL + 14 b_i - 32 m_i) theta^3 + (2 d_iL - 2 d_i0 - 8 b_i + 16 m_i) theta^4

(d the Kronecker delta); at theta = 1 the weights sum to b_i, at theta = 1/2 to m_i.
"""

from __future__ import annotations

from collections.abc import Sequence


def quartic_through_midpoint(b: Sequence[float], mid: Sequence[float]
                             ) -> tuple[tuple[float, float, float, float], ...]:
    """Dense weights (coefficients of theta, ..., theta^4 per stage) of torchdiffeq's quartic
    for a method whose last stage is handed on as f(t1, y1)."""
    last = len(b) - 1

    def weights(i: int) -> tuple[float, float, float, float]:
        first, end, bi, mi = float(i == 0), float(i == last), b[i], mid[i]
        return (first, end - 4 * first - 5 * bi + 16 * mi, 5 * first - 3 * end + 14 * bi - 32 * mi,
                2 * end - 2 * first - 8 * bi + 16 * mi)

    return tuple(weights(i) for i in range(len(b)))
