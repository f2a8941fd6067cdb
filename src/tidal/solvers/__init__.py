"""Numerical methods as data. Every method is a `StepMethod` (see `tidal.solvers.base` for the
protocol); the names used at the edges map to the classes in `tidal.registry`."""

from tidal.solvers.auto import Auto
from tidal.solvers.base import ExplicitRungeKutta, FixedStepMethod, Solver, StepMethod
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.dopri8 import Dopri8
from tidal.solvers.fixed_step import RK4, Euler, Heun2, Heun3, Midpoint
from tidal.solvers.implicit_solver import (
    GL4,
    GL6,
    SDIRK2,
    TRBDF2,
    ImplicitEuler,
    ImplicitRungeKutta,
    RadauIIA3,
    RadauIIA5,
    Trapezoid,
)
from tidal.solvers.low_order import Bosh3, Fehlberg2, HeunEuler
from tidal.solvers.rosenbrock_solver import Rodas4P, Rodas5P, Rosenbrock, Rosenbrock23
from tidal.solvers.symplectic import ImplicitMidpoint, Leapfrog, Splitting, Yoshida4
from tidal.solvers.tableau import ButcherTableau
from tidal.solvers.tsit5 import Tsit5

__all__ = [
    "GL4",
    "GL6",
    "RK4",
    "SDIRK2",
    "TRBDF2",
    "Auto",
    "Bosh3",
    "ButcherTableau",
    "Dopri5",
    "Dopri8",
    "Euler",
    "ExplicitRungeKutta",
    "Fehlberg2",
    "FixedStepMethod",
    "Heun2",
    "Heun3",
    "HeunEuler",
    "ImplicitEuler",
    "ImplicitMidpoint",
    "ImplicitRungeKutta",
    "Leapfrog",
    "Midpoint",
    "RadauIIA3",
    "RadauIIA5",
    "Rodas4P",
    "Rodas5P",
    "Rosenbrock",
    "Rosenbrock23",
    "Solver",
    "Splitting",
    "StepMethod",
    "Trapezoid",
    "Tsit5",
    "Yoshida4",
]
