"""Drop-in replacements for other libraries' entry points."""

from tidal.compat.torchdiffeq import odeint

__all__ = ["odeint"]
