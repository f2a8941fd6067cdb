"""Dormand–Prince 5(4), the default adaptive method."""

from __future__ import annotations

from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.tableau import ButcherTableau


class Dopri5(ExplicitRungeKutta):
    """Dormand–Prince 5(4): order 5, error order 4, seven stages, FSAL.

    The step propagates the 5th-order solution (local extrapolation). Dense output is the
    4th-order continuous extension of Hairer & Wanner / Shampine (the one in DOPRI5, MATLAB's
    ode45 and scipy's RK45), whose weights are quartic in theta over the seven stages.

    Dormand & Prince, J. Comput. Appl. Math. 6 (1980); Shampine, Math. Comp. 46 (1986);
    Hairer, Nørsett & Wanner, Solving ODEs I, Sec. II.5–II.6.
    """

    name = "dopri5"
    tableau = ButcherTableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        order=5,
        # b - b_hat, with b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200,
        # 187/2100, 1/40) the 4th-order solution.
        b_error=(
            (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
        ),
        error_order=4,
        # w_i(theta) = sum_k dense[i][k] theta^(k+1); the last stage is f(t1, y1) (FSAL).
        dense=(
            (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608,
             -12715105075 / 11282082432),
            (0.0, 0.0, 0.0, 0.0),
            (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933,
             87487479700 / 32700410799),
            (0.0, -1754552775 / 470086768, 14199869525 / 1410260304,
             -10690763975 / 1880347072),
            (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
             701980252875 / 199316789632),
            (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
            (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
        ),
        dense_order=4,
    )
