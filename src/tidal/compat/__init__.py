"""Drop-in replacements for other libraries' entry points."""

from tidal.compat.torchdiffeq import odeint, odeint_adjoint

__all__ = ["odeint", "odeint_adjoint"]
