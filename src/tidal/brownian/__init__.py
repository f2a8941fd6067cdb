"""Brownian motion for SDE solvers: `BrownianTree` answers W(s, t) (and the space-time Lévy area
H(s, t)) for any interval in any order, per sample, reproducibly from per-sample seeds."""

from tidal.brownian.random import sample_seeds
from tidal.brownian.tree import BrownianTree, Increment

__all__ = ["BrownianTree", "Increment", "sample_seeds"]
