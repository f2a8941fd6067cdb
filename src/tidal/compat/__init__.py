"""Drop-in replacements for other libraries' entry points."""

from tidal.compat.torchdiffeq import odeint, odeint_adjoint, odeint_dense, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]
