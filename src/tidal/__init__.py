"""tidal: neural differential equations on PyTorch.

The public API is what this module exports; everything in `_private` modules may change.
Training (`fit`, `TrainConfig`, `FitResult`, `load_run`) needs the `cli` extra and is imported
on first use, so `import tidal` needs only torch, numpy and scipy.
"""

from typing import TYPE_CHECKING, Any

from tidal import data, defaults, nn, registry
from tidal._errors import (
    IncompatibleOptionsError,
    InvalidArgumentError,
    SolveFailedError,
    Status,
    TidalError,
    UnknownOptionError,
)
from tidal._extras import CLI_MODULES, import_layer, missing
from tidal.adjoint import BackpropAdjoint, BacksolveAdjoint, CheckpointAdjoint, ReversibleAdjoint
from tidal.compat import odeint, odeint_adjoint, odeint_dense, odeint_event
from tidal.controllers import ConstantStepSize, PIDController, StepTo
from tidal.data import Trajectories, read_table, simulate, write_table
from tidal.events import Event
from tidal.integrate import solve
from tidal.integrate_sde import sdeint
from tidal.models import CNF, UDE, HamiltonianNN, NeuralODE
from tidal.registry import ADJOINTS, CONTROLLERS, SOLVERS
from tidal.solution import Solution, Stats
from tidal.solvers import (
    RK4,
    Auto,
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
from tidal.solvers.sde import SRA1, Calculus, EulerMaruyama, Heun, Milstein, Noise, ReversibleHeun

if TYPE_CHECKING:
    from tidal.training import FitResult, TrainConfig, load_run
    from tidal.training.fit import fit

__version__ = "0.1.0"

__all__ = [
    "ADJOINTS",
    "CNF",
    "CONTROLLERS",
    "RK4",
    "SOLVERS",
    "SRA1",
    "UDE",
    "Auto",
    "BackpropAdjoint",
    "BacksolveAdjoint",
    "Bosh3",
    "ButcherTableau",
    "Calculus",
    "CheckpointAdjoint",
    "ConstantStepSize",
    "Dopri5",
    "Dopri8",
    "Euler",
    "EulerMaruyama",
    "Event",
    "ExplicitRungeKutta",
    "Fehlberg2",
    "HamiltonianNN",
    "Heun",
    "Heun2",
    "Heun3",
    "HeunEuler",
    "ImplicitMidpoint",
    "IncompatibleOptionsError",
    "InvalidArgumentError",
    "Leapfrog",
    "Midpoint",
    "Milstein",
    "NeuralODE",
    "Noise",
    "PIDController",
    "ReversibleAdjoint",
    "ReversibleHeun",
    "Rodas4P",
    "Rodas5P",
    "Rosenbrock23",
    "Solution",
    "SolveFailedError",
    "Stats",
    "Status",
    "StepTo",
    "TidalError",
    "Trajectories",
    "Tsit5",
    "UnknownOptionError",
    "Yoshida4",
    "data",
    "defaults",
    "nn",
    "odeint",
    "odeint_adjoint",
    "odeint_dense",
    "odeint_event",
    "read_table",
    "registry",
    "sdeint",
    "simulate",
    "solve",
    "write_table",
]

_TRAINING = ("FitResult", "TrainConfig", "fit", "load_run")
# `from tidal import *` takes the training names only where the `cli` extra is installed
if not missing(CLI_MODULES):
    __all__ += ["FitResult", "TrainConfig", "fit", "load_run"]


def __getattr__(name: str) -> Any:
    """The training layer's names, imported when first used (PEP 562)."""
    if name not in _TRAINING:
        raise AttributeError(f"module 'tidal' has no attribute {name!r}")
    value = getattr(import_layer("tidal.training", f"tidal.{name}"), name)
    globals()[name] = value
    return value

