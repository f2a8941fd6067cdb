"""Models: `nn.Module`s that own a vector field and the configuration of its solve."""

from tidal.models.augmented import AugmentedNeuralODE
from tidal.models.cnf import CNF
from tidal.models.ensemble import Ensemble
from tidal.models.hamiltonian import HamiltonianNN
from tidal.models.latent_ode import LatentODE
from tidal.models.latent_sde import LatentSDE
from tidal.models.neural_cde import NeuralCDE
from tidal.models.neural_ode import NeuralODE
from tidal.models.neural_sde import NeuralSDE, PositiveDiffusion
from tidal.models.ode_block import ODEBlock
from tidal.models.polynomial import PolynomialODE
from tidal.models.recurrent import ODERNN, GRUDelta
from tidal.models.ude import UDE

__all__ = ["CNF", "ODERNN", "UDE", "AugmentedNeuralODE", "Ensemble", "GRUDelta",
           "HamiltonianNN", "LatentODE", "LatentSDE", "NeuralCDE", "NeuralODE", "NeuralSDE",
           "ODEBlock", "PolynomialODE", "PositiveDiffusion"]
