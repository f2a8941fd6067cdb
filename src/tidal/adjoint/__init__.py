"""How derivatives pass through a solve. Every adjoint owns the run of the solve it
differentiates (`tidal.adjoint.base`): `BackpropAdjoint` (autograd records every step),
`CheckpointAdjoint` (the same gradient, recomputing segments to bound memory) and
`BacksolveAdjoint` (the continuous adjoint, a second ODE solved backwards in time);
`ReversibleAdjoint` (SDEs: reversible Heun's exact O(1)-memory adjoint)."""

from tidal.adjoint.backprop import BackpropAdjoint
from tidal.adjoint.backsolve import BacksolveAdjoint
from tidal.adjoint.base import Adjoint
from tidal.adjoint.checkpoint import CheckpointAdjoint
from tidal.adjoint.reversible import ReversibleAdjoint

__all__ = ["Adjoint", "BackpropAdjoint", "BacksolveAdjoint", "CheckpointAdjoint",
           "ReversibleAdjoint"]
