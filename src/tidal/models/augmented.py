"""`AugmentedNeuralODE`: a neural ODE with extra, unobserved state dimensions (Dupont et al.
2019, "Augmented Neural ODEs").

An autonomous ODE in the observed states alone cannot do everything data can: one observed
variable that oscillates is impossible for dy/dt = f(y) in one dimension (trajectories of a
1-D autonomous ODE are monotone). With `augment` extra states a, the model solves
d(y, a)/dt = f(y, a) from (y0, 0) and returns y; a can carry, say, the velocity of an
oscillating position. The extra states start at zero from every initial state, so they hold
what the model needs to remember along a trajectory, not information about the start.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.models.neural_ode import NeuralODE, build_network, solve_options

#: The most extra states (config.json is checked against it).
MAX_AUGMENT = 64


class AugmentedNeuralODE(NeuralODE):
    """dz/dt = f(t, z) on z = (y, a) with `augment` extra states a; `model(y0, ts)` solves from
    (y0, 0) and returns y [T, *y0.shape]. `vector_field` takes and returns the full z
    (D + augment entries); `solve` works on z too.

    Args:
        vector_field: a field on D + augment states.
        augment: the number of extra states (>= 1).
        **options: solver, controller, adjoint, max_steps as for `NeuralODE`.
    """

    def __init__(self, vector_field: nn.Module, augment: int, **options: Any) -> None:
        if isinstance(augment, bool) or not isinstance(augment, int) \
                or not 1 <= augment <= MAX_AUGMENT:
            raise InvalidArgumentError(f"`AugmentedNeuralODE(augment={augment!r})`: give 1 to "
                                       f"{MAX_AUGMENT} extra states.")
        super().__init__(vector_field, **options)
        self.augment = augment

    def forward(self, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        extra = y0.new_zeros((*y0.shape[:-1], self.augment))
        return self.solve(torch.cat([y0, extra], -1), ts).ys[..., :-self.augment]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "type": "AugmentedNeuralODE", "augment": self.augment}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AugmentedNeuralODE:
        return cls(build_network(config["vector_field"]), int(config["augment"]),
                   **solve_options(config))


def extra_states(model: nn.Module) -> int:
    """How many extra states `model`'s vector field takes beyond the observed ones: an
    `AugmentedNeuralODE`'s `augment`, an ensemble's members', else 0."""
    members = getattr(model, "members", None)
    if members is not None and len(members):
        model = members[0]
    return model.augment if isinstance(model, AugmentedNeuralODE) else 0
