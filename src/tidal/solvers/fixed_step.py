"""Fixed-step explicit methods (no error estimate): Euler, Midpoint, Heun2, Heun3, RK4.

Each is used with `ConstantStepSize(dt)` or `StepTo(ts)` and interpolates with cubic Hermite.
"""

from __future__ import annotations

from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.tableau import ButcherTableau


class Euler(ExplicitRungeKutta):
    """Forward Euler: order 1, one stage. y1 = y0 + dt f(t0, y0)."""

    name = "euler"
    tableau = ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1)


class Midpoint(ExplicitRungeKutta):
    """Explicit midpoint rule: order 2, two stages."""

    name = "midpoint"
    tableau = ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)


class Heun2(ExplicitRungeKutta):
    """Heun's method (explicit trapezoid): order 2, two stages."""

    name = "heun2"
    tableau = ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)


class Heun3(ExplicitRungeKutta):
    """Heun's third-order method: order 3, three stages."""

    name = "heun3"
    tableau = ButcherTableau(
        c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75), order=3
    )


class RK4(ExplicitRungeKutta):
    """The 3/8 rule variant of classic RK4 (as torchdiffeq's `rk4`): order 4, four stages.

    Kutta (1901); the 3/8 rule has a smaller error constant than the classic 1/6-1/3 rule.
    """

    name = "rk4"
    tableau = ButcherTableau(
        c=(0.0, 1 / 3, 2 / 3, 1.0),
        a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
        order=4,
    )
