"""Models: `nn.Module`s that own a vector field and the configuration of its solve."""

from tidal.models.cnf import CNF
from tidal.models.neural_ode import NeuralODE

__all__ = ["CNF", "NeuralODE"]
