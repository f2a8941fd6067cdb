"""Stochastic step methods: pure step functions driven by Brownian increments from
`tidal.brownian.BrownianTree` (see `tidal.solvers.sde.base` for the protocol)."""

from tidal.solvers.sde.base import SDEMethod, SDEStep
from tidal.solvers.sde.low_order import EulerMaruyama, Heun, Milstein
from tidal.solvers.sde.reversible_heun import ReversibleHeun, ReversibleHeunState
from tidal.solvers.sde.sra import SRA1, SRATableau, StochasticRungeKuttaA
from tidal.solvers.sde.terms import ADDITIVE, DIAGONAL, GENERAL, SCALAR, Calculus, Noise, StepSDE

SDE_METHODS: dict[str, type[SDEMethod]] = {
    cls.name: cls for cls in (EulerMaruyama, Milstein, Heun, SRA1, ReversibleHeun)
}

__all__ = [
    "ADDITIVE", "DIAGONAL", "GENERAL", "SCALAR", "SDE_METHODS", "SRA1", "Calculus",
    "EulerMaruyama", "Heun", "Milstein", "Noise", "ReversibleHeun", "ReversibleHeunState",
    "SDEMethod", "SDEStep", "SRATableau", "StepSDE", "StochasticRungeKuttaA",
]
