"""tidal: neural differential equations on PyTorch.

The public API is what this module exports; everything in `_private` modules may change.
"""

from tidal import data, defaults, nn, registry
from tidal._errors import (
    IncompatibleOptionsError,
    InvalidArgumentError,
    SolveFailedError,
    Status,
    TidalError,
    UnknownOptionError,
)
from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint
from tidal.compat import odeint, odeint_adjoint
from tidal.controllers import ConstantStepSize, PIDController, StepTo
from tidal.data import Trajectories, read_table, simulate, write_table
from tidal.events import Event
from tidal.integrate import solve
from tidal.models import CNF, UDE, HamiltonianNN, NeuralODE
from tidal.registry import ADJOINTS, CONTROLLERS, SOLVERS
from tidal.solution import Solution, Stats
from tidal.solvers import (
    RK4,
    Bosh3,
    ButcherTableau,
    Dopri5,
    Dopri8,
    Euler,
    ExplicitRungeKutta,
    Fehlberg2,
    Heun2,
    Heun3,
    HeunEuler,
    ImplicitMidpoint,
    Leapfrog,
    Midpoint,
    Rodas4P,
    Rodas5P,
    Rosenbrock23,
    Tsit5,
    Yoshida4,
)
from tidal.training import FitResult, TrainConfig, fit, load_run

__version__ = "0.1.0"

__all__ = [
    "ADJOINTS",
    "CNF",
    "CONTROLLERS",
    "RK4",
    "SOLVERS",
    "UDE",
    "BackpropAdjoint",
    "BacksolveAdjoint",
    "Bosh3",
    "ButcherTableau",
    "CheckpointAdjoint",
    "ConstantStepSize",
    "Dopri5",
    "Dopri8",
    "Euler",
    "Event",
    "ExplicitRungeKutta",
    "Fehlberg2",
    "FitResult",
    "HamiltonianNN",
    "Heun2",
    "Heun3",
    "HeunEuler",
    "ImplicitMidpoint",
    "IncompatibleOptionsError",
    "InvalidArgumentError",
    "Leapfrog",
    "Midpoint",
    "NeuralODE",
    "PIDController",
    "Rodas4P",
    "Rodas5P",
    "Rosenbrock23",
    "Solution",
    "SolveFailedError",
    "Stats",
    "Status",
    "StepTo",
    "TidalError",
    "TrainConfig",
    "Trajectories",
    "Tsit5",
    "UnknownOptionError",
    "Yoshida4",
    "data",
    "defaults",
    "fit",
    "load_run",
    "nn",
    "odeint",
    "odeint_adjoint",
    "read_table",
    "registry",
    "simulate",
    "solve",
    "write_table",
]
