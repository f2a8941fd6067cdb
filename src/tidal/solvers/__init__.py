"""Numerical methods as data. `SOLVERS` maps the names used at the edges (the torchdiffeq shim,
the command line) to solver classes."""

from tidal.solvers.base import ExplicitRungeKutta, FixedStepMethod, Solver
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.dopri8 import Dopri8
from tidal.solvers.fixed_step import RK4, Euler, Heun2, Heun3, Midpoint
from tidal.solvers.low_order import Bosh3, Fehlberg2, HeunEuler
from tidal.solvers.symplectic import ImplicitMidpoint, Leapfrog, Splitting, Yoshida4
from tidal.solvers.tableau import ButcherTableau
from tidal.solvers.tsit5 import Tsit5

SOLVERS: dict[str, type[ExplicitRungeKutta] | type[FixedStepMethod]] = {
    cls.name: cls
    for cls in (Euler, Midpoint, Heun2, Heun3, RK4, HeunEuler, Fehlberg2, Bosh3, Dopri5, Tsit5,
                Dopri8, Leapfrog, Yoshida4, ImplicitMidpoint)
}

__all__ = [
    "RK4", "SOLVERS", "Bosh3", "ButcherTableau", "Dopri5", "Dopri8", "Euler",
    "ExplicitRungeKutta", "Fehlberg2", "FixedStepMethod", "Heun2", "Heun3", "HeunEuler",
    "ImplicitMidpoint", "Leapfrog", "Midpoint", "Solver", "Splitting", "Tsit5", "Yoshida4",
]
