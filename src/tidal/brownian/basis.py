r"""The Brownian tree as a sum of fixed functions times independent normals.

On the unit interval (tree time tau in [0, 1]) the path is

    w(tau) = sum over nodes v on tau's branch of  sum_j psi_{v,j}(tau) Z_{v,j}

with Z_{v,j} independent standard normals (`tidal.brownian.random`) and psi_{v,j} fixed
functions supported on node v's interval. A node at depth n covers [k 2^-n, (k+1) 2^-n];
tau meets one node per level, so a point value costs one term per level and no level is
visited twice. There are three kinds of level:

* the root (the whole interval): w(1), and with Lévy area the root's space-time area;
* split levels 0 .. L-1: node v adds the conditional law of the path at its midpoint given
  everything coarser (a Brownian bridge). Each psi_{v,j} vanishes at both ends of v, so the
  values at all coarser dyadic points stay exact;
* the leaf level L (width 2^-L): the exact conditional law of the path at tau given the
  leaf's end values (and area), so that w(tau) has exactly the Brownian law at every tau, and
  the joint law is exact for points in different leaves. Two points in one leaf share the
  leaf's normals, and their joint law is only approximate: that is what `tol` bounds.

Without Lévy area (one normal per node) this is Lévy's construction: psi is a tent of height
sqrt(h)/2 on a split node of width h, and sqrt(h x (1 - x)) at local coordinate x in a leaf.

With Lévy area (two normals per node) the functions follow Foster's midpoint construction of
(W, H) (J. Foster, PhD thesis, Oxford 2020, Thm 6.1.4 and 6.1.6; also used by diffrax's
`VirtualBrownianTree`). Given a node's increment and its area bar-H = h H, the conditional
mean of the path is its chord plus the parabola 6 (r - s)(u - r) bar-H / h^3; the midpoint
adds z = sqrt(h)/4 Z_1 and n = sqrt(h/12) Z_2 as

    W_left = W/2 + 3 bar-H/(2h) + z,         bar-H_left  = bar-H/8 + h (n - z)/4,
    W_right = W/2 - 3 bar-H/(2h) - z,        bar-H_right = bar-H/8 - h (n + z)/4,

and the node's functions are that perturbation spread over each half as chord plus parabola.
The space-time Lévy area of [s, t] (h_q = t - s) follows from the antiderivatives
F_{v,j}(tau) = integral of psi_{v,j} from the node's start to tau (each vanishes at both node
ends, so a node strictly inside [s, t] contributes nothing):

    h_q H(s, t) = int_s^t w - h_q (w_s + w_t) / 2
                = sum_v,j Z_{v,j} [F(t) - F(s) - h_q (psi(s) + psi(t)) / 2].

The functions below use only arithmetic operators (and `abs`, and for `interval_weights` the
array module `xp`), so they evaluate on torch tensors and numpy arrays alike: numpy on the host
for a query shared by the batch, torch on the device for per-sample queries. In `root`, `split`
and `leaf`, `x` is the local coordinate in [0, 1] and `h` the node width in tree time; each
returns one (psi, F) pair per normal of the node, F None without area.
"""

from __future__ import annotations

from typing import Any

Array = Any  # a torch tensor or a numpy array of float64
Pair = tuple[Array, Array | None]

SQRT3 = 3.0**0.5


def root(x: Array, area: bool) -> list[Pair]:
    """The whole interval (h = 1): w(1) = Z_0, and bar-H(0, 1) = Z_1 / sqrt(12)."""
    if not area:
        return [(x, None)]
    x2 = x * x
    return [(x, x2 / 2), (SQRT3 * (x - x2), SQRT3 * (x2 / 2 - x2 * x / 3))]


def split(x: Array, h: Array, area: bool) -> list[Pair]:
    """A split node of width h: the bridge at its midpoint (module doc)."""
    if not area:
        return [(h**0.5 / 2 * (1 - abs(2 * x - 1)), None)]
    left, right = x <= 0.5, x > 0.5
    y = x - 0.5
    # Z_1 (scaled by sqrt(h)/4): chord up to the midpoint and back, minus parabolas.
    psi1 = left * (12 * x * x - 4 * x) + right * (1 - 8 * y + 12 * y * y)
    int1 = left * (4 * x**3 - 2 * x * x) + right * (y - 4 * y * y + 4 * y**3)
    # Z_2 (scaled by sqrt(h/12)): moves area from one half to the other.
    psi2 = left * (6 * x - 12 * x * x) + right * (12 * y * y - 6 * y)
    int2 = left * (3 * x * x - 4 * x**3) + right * (0.25 - 3 * y * y + 4 * y**3)
    s1, s2 = h**0.5 / 4, (h / 12) ** 0.5
    return [(s1 * psi1, h * s1 * int1), (s2 * psi2, h * s2 * int2)]


def leaf(x: Array, h: Array, area: bool) -> list[Pair]:
    """A leaf of width h: the point's exact conditional law given the leaf's end values (and
    area). With area this is Foster's Thm 6.1.4: with a = r - s, b = u - r,
    d = sqrt(a^3 + b^3), rho = sqrt(a b), the point adds d rho / h^2 X_1 to w and
    (a d rho / (2 h^2) - a^3 rho / (2 h d)) X_1 + sqrt(3) rho^3 / (6 d) X_2 to int_s^r w."""
    if not area:
        return [((h * x * (1 - x)) ** 0.5, None)]
    a, b = x * h, (1 - x) * h
    d = (a**3 + b**3) ** 0.5
    rho = (a * b) ** 0.5
    psi1 = d * rho / (h * h)
    int1 = a * psi1 / 2 - a**3 * rho / (2 * h * d)
    int2 = SQRT3 * rho**3 / (6 * d)
    return [(psi1, int1), (0 * x, int2)]


def interval_weights(taus: Array, widths: Array, area: bool, xp: Any) -> tuple[Array, Array]:
    """Node ids and weights of the intervals [s, t] given as tree times `taus` [N, 2] = (t, s).

    Args:
        taus: float64 [N, 2], tree times (in [0, 1]) of each interval's end and start.
        widths: float64 [levels], the node width of each level: 1 for the root, 2^-n for split
            level n, 2^-L for the leaf level (powers of two, so tau / width is exact).
        area: also weigh the space-time area.
        xp: the array module of `taus` (numpy or torch).

    Returns:
        ids [N, 2, levels] (float64 holding integers: heap numbers 2^depth + index) and weights
        [N, 2, levels, J, C]. Channel 0 gives w(t) - w(s), channel 1 (with area) h_q H(s, t),
        both in tree units. A node on both branches carries the merged weight on the t side
        and 0 on the s side, so a short interval far from 0 is not the difference of two
        large values.
    """
    pos = taus[..., None] / widths
    count = 1.0 / widths
    index = xp.minimum(xp.floor(pos), count - 1)  # tau = 1 belongs to each level's last node
    x = pos - index
    values = [root(x[..., :1], area), split(x[..., 1:-1], widths[1:-1], area),
              leaf(x[..., -1:], widths[-1:], area)]
    psi = xp.concatenate([xp.stack([p for p, _ in v], axis=-1) for v in values], axis=-2)
    psi_t, psi_s = psi[:, 0], psi[:, 1]  # [N, levels, J]
    c_t, c_s = [psi_t], [-psi_s]
    if area:
        f = xp.concatenate([xp.stack([q for _, q in v], axis=-1) for v in values], axis=-2)
        half = (taus[:, 0] - taus[:, 1])[:, None, None] / 2
        c_t.append(f[:, 0] - half * psi_t)
        c_s.append(-f[:, 1] - half * psi_s)
    ids = count + index
    same = (ids[:, 0] == ids[:, 1])[..., None, None]
    w_t, w_s = xp.stack(c_t, axis=-1), xp.stack(c_s, axis=-1)
    return ids, xp.stack((w_t + w_s * same, w_s - w_s * same), axis=1)
