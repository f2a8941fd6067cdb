"""The Rosenbrock methods as data: `RODAS5P` (the default stiff method), `RODAS4P` and
`ROSENBROCK23`. Each tableau checks its own order conditions and dense output on import
(`RosenbrockTableau`).

The Rodas coefficients are the published transformed form (a, C, c, d, H; b is the last row
of a followed by 1, so y1 = the last stage's input + u_S: stiffly accurate, and the embedded
solution drops u_S, so the error estimate is u_S). The 16-digit values were transcribed from
the public tableau files of OrdinaryDiffEq.jl (lib/OrdinaryDiffEqRosenbrock and
lib/OrdinaryDiffEqRosenbrockTableaus), which carry the papers' coefficients. The order
conditions check every one of them except the interpolant's weights of u_S, which multiply an
O(h^(p+1)) increment and so cannot affect the dense order (tests/test_rosenbrock.py).
"""

from __future__ import annotations

import math

from tidal.solvers.rosenbrock import RosenbrockTableau, Row, rodas_dense


def _rodas(*, name: str, gamma: float, a: tuple[Row, ...], C: tuple[Row, ...], c: Row, d: Row,
           H: tuple[Row, ...], order: int, dense_order: int) -> RosenbrockTableau:
    """A Rodas tableau from its published rows: b is the last row of a followed by 1, the
    embedded solution drops the last increment, H are the interpolant's rows h_j."""
    b = (*a[-1], 1.0)
    rows, poly = rodas_dense(H, b)
    return RosenbrockTableau(name=name, gamma=gamma, a=a, C=C, c=c, d=d, b=b,
                             b_hat=(*a[-1], 0.0), order=order, embedded_order=order - 1,
                             H=rows, H_poly=poly, dense_order=dense_order)


# ---------------------------------------------------------------------------------------------
# Rodas5P: G. Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P and numerical
# benchmarks within the Julia Differential Equations package", BIT Numer. Math. 63, 27 (2023).
# 8 stages, order 5, embedded order 4, L-stable, stiffly accurate, dense output of order 4.

_RODAS5P_LAST = (-7.502846399306121, 2.561846144803919, -11.627539656261098,
                 -0.18268767659942256, 0.030198172008377946)

RODAS5P = _rodas(
    name="Rodas5P",
    gamma=0.21193756319429014,
    a=(
        (),
        (3.0,),
        (2.849394379747939, 0.45842242204463923),
        (-6.954028509809101, 2.489845061869568, -10.358996098473584),
        (2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641),
        _RODAS5P_LAST,
        (*_RODAS5P_LAST, 1.0),
        (*_RODAS5P_LAST, 1.0, 1.0),
    ),
    C=(
        (),
        (-14.155112264123755,),
        (-17.97296035885952, -2.859693295451294),
        (147.12150275711716, -1.41221402718213, 71.68940251302358),
        (165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306),
        (24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
         -0.6610691825249471),
        (30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
         -19.097331116725623, -28.087943162872662),
        (37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
         -40.06618937091002, -54.66780262877968, -9.48861652309627),
    ),
    c=(0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664,
       1.0, 1.0, 1.0),
    d=(0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734,
       2.325825639765069, 0.0, 0.0, 0.0),
    H=(
        (25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
         0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493),
        (-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
         20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372),
        (11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
         -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722),
    ),
    order=5,
    dense_order=4,
)

# ---------------------------------------------------------------------------------------------
# Rodas4P: G. Steinebach, "Order-reduction of ROW-methods for DAEs and method of lines
# applications", Preprint 1741, FB Mathematik, TH Darmstadt (1995); a member of the Rodas4
# family of Hairer & Wanner II, Sec. VI.4, with 4th order on linear parabolic problems.
# 6 stages, order 4, embedded order 3, L-stable, stiffly accurate, dense output of order 3.

_RODAS4P_LAST = (-7.170454962423024, -4.741636671481785, -16.31002631330971,
                 -1.062004044111401)

RODAS4P = _rodas(
    name="Rodas4P",
    gamma=0.25,
    a=(
        (),
        (3.0,),
        (1.831036793486759, 0.4955183967433795),
        (2.304376582692669, -0.05249275245743001, -1.176798761832782),
        _RODAS4P_LAST,
        (*_RODAS4P_LAST, 1.0),
    ),
    C=(
        (),
        (-12.0,),
        (-8.791795173947035, -2.207865586973518),
        (10.81793056857153, 6.780270611428266, 19.5348594464241),
        (34.19095006749676, 15.49671153725963, 54.7476087596413, 14.16005392148534),
        (34.62605830930532, 15.30084976114473, 56.99955578662667, 18.40807009793095,
         -5.714285714285717),
    ),
    c=(0.0, 0.75, 0.21, 0.63, 1.0, 1.0),
    d=(0.25, -0.5, -0.023504, -0.0362, 0.0, 0.0),
    H=(
        (25.09876703708589, 11.62013104361867, 28.49148307714626, -5.664021568594133, 0.0,
         0.0),
        (1.638054557396973, -0.7373619806678748, 8.47791821923899, 15.9925314877952,
         -1.882352941176471, 0.0),
    ),
    order=4,
    dense_order=3,
)

# ---------------------------------------------------------------------------------------------
# Rosenbrock23: L. F. Shampine and M. W. Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput.
# 18 (1997) 1-22, Sec. 3 (ode23s). Published as d = 1/(2 + sqrt 2), e32 = 6 + sqrt 2 and
#
#   W = I - h d J,  W k1 = f0 + h d f_t,  W (k2 - k1) = f(t0 + h/2, y0 + h/2 k1) - k1,
#   y1 = y0 + h k2,  W k3 = f(t1, y1) - e32 (k2 - f(t0 + h/2, .)) - 2 (k1 - f0) + h d f_t,
#   error = h/6 (k1 - 2 k2 + k3),  y(theta) = y0 + h (c1(theta) k1 + c2(theta) k2)
#   with c1 = theta (1 - theta)/(1 - 2d), c2 = theta (theta - 2d)/(1 - 2d).
#
# Eliminating f0 and f(t0 + h/2, .) with the first two stage equations gives the standard form
# below: Gamma = [[d], [-d, d], [d (e32 - 2), -e32 d, d]], alpha_21 = 1/2, alpha_32 = 1. The
# propagated solution (b = e_2) has order 2 (also as a W-method, i.e. for any J) and is
# L-stable; b_hat = b + (1, -2, 1)/6 has order 3 and gives the error estimate (no local
# extrapolation). The third stage is f(t1, y1): first same as last.

_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)

ROSENBROCK23 = RosenbrockTableau.from_standard(
    name="Rosenbrock23",
    alpha=((), (0.5,), (0.0, 1.0)),
    Gamma=((_D,), (-_D, _D), (_D * (_E32 - 2.0), -_E32 * _D, _D)),
    b=(0.0, 1.0, 0.0),
    b_hat=(1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0),
    dense_k=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    H_poly=((1.0 / (1.0 - 2.0 * _D), -1.0 / (1.0 - 2.0 * _D)),
            (-2.0 * _D / (1.0 - 2.0 * _D), 1.0 / (1.0 - 2.0 * _D))),
    order=2,
    embedded_order=3,
    dense_order=2,
)

ROSENBROCK_TABLEAUS = (RODAS5P, RODAS4P, ROSENBROCK23)
