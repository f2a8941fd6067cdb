"""One entry per solver: generic tests are parametrized over `SOLVER_DB`, so a new method is
tested by adding one line here."""

from __future__ import annotations

from dataclasses import dataclass

import tidal


@dataclass(frozen=True)
class SolverInfo:
    cls: type[tidal.ExplicitRungeKutta]
    order: int
    adaptive: bool
    dense_order: int

    @property
    def id(self) -> str:
        return self.cls.name


SOLVER_DB = [
    SolverInfo(tidal.Euler, 1, False, 3),
    SolverInfo(tidal.Midpoint, 2, False, 3),
    SolverInfo(tidal.Heun2, 2, False, 3),
    SolverInfo(tidal.Heun3, 3, False, 3),
    SolverInfo(tidal.RK4, 4, False, 3),
    SolverInfo(tidal.HeunEuler, 2, True, 3),
    SolverInfo(tidal.Fehlberg2, 2, True, 3),
    SolverInfo(tidal.Bosh3, 3, True, 3),
    SolverInfo(tidal.Dopri5, 5, True, 4),
    SolverInfo(tidal.Tsit5, 5, True, 4),
    SolverInfo(tidal.Dopri8, 8, True, 7),
]
ADAPTIVE_DB = [info for info in SOLVER_DB if info.adaptive]
