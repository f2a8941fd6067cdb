"""How derivatives pass through a solve: `BackpropAdjoint` (autograd records every step),
`CheckpointAdjoint` (the same gradient, recomputing segments to bound memory) and
`BacksolveAdjoint` (the continuous adjoint, a second ODE solved backwards in time)."""

from tidal.adjoint.backprop import BackpropAdjoint
from tidal.adjoint.backsolve import BacksolveAdjoint
from tidal.adjoint.checkpoint import CheckpointAdjoint

__all__ = ["BackpropAdjoint", "BacksolveAdjoint", "CheckpointAdjoint"]
