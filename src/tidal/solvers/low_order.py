"""Low-order adaptive methods: HeunEuler 2(1), Fehlberg2 2(1) and Bogacki–Shampine 3(2)."""

from __future__ import annotations

from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.tableau import ButcherTableau


class HeunEuler(ExplicitRungeKutta):
    """Heun's method with an embedded Euler step: order 2, error order 1, two stages.

    torchdiffeq calls it `adaptive_heun`. Cubic Hermite dense output.
    """

    name = "adaptive_heun"
    tableau = ButcherTableau(
        c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2,
        b_error=((-0.5, 0.5),), error_order=1,
    )


class Fehlberg2(ExplicitRungeKutta):
    """Runge–Kutta–Fehlberg 2(1): order 2, error order 1, three stages.

    Fehlberg, NASA TR R-315 (1969). Cubic Hermite dense output.
    """

    name = "fehlberg2"
    tableau = ButcherTableau(
        c=(0.0, 0.5, 1.0), a=((), (0.5,), (1 / 256, 255 / 256)),
        b=(1 / 512, 255 / 256, 1 / 512), order=2,
        b_error=((-1 / 512, 0.0, 1 / 512),), error_order=1,
    )


class Bosh3(ExplicitRungeKutta):
    """Bogacki–Shampine 3(2): order 3, error order 2, four stages, FSAL.

    Bogacki & Shampine, Appl. Math. Lett. 2 (1989). Cubic Hermite dense output (3rd order,
    which matches the method).
    """

    name = "bosh3"
    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.75, 1.0),
        a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0), order=3,
        b_error=((2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),), error_order=2,
    )
