r"""`UDE`: a universal differential equation, known physics plus a learned correction.

$$ \frac{dy}{dt} = f_\text{known}(t, y; \theta_\text{phys}) + g_\text{NN}(t, y), $$

where the physical parameters theta_phys (named, with initial values) are learned together
with the network. The correction can then be turned into a formula with
`tidal.models.symbolic.recover`.

Rackauckas et al., "Universal Differential Equations for Scientific Machine Learning" (2020).
"""

from __future__ import annotations

import keyword
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tidal import defaults
from tidal._errors import InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers.base import StepSizeController
from tidal.models.neural_ode import NeuralODE, build_network, network_config, solve_options
from tidal.solvers.base import StepMethod

Known = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class KnownPhysics:
    """Known terms with a name, so that a UDE using them can be saved as data (`UDE.config`)
    and built from the command line.

    Attributes:
        name: the registry key, e.g. "lotka-volterra-linear".
        equations: known(t, y, params).
        params: typical initial values of the parameters.
        description: the terms in one line.
    """

    name: str
    equations: Known
    params: Mapping[str, float]
    description: str


def _lotka_volterra_linear(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, torch.Tensor]
                           ) -> torch.Tensor:
    return torch.stack((p["alpha"] * y[..., 0], -p["gamma"] * y[..., 1]), -1)


#: Known terms by name (`UDE.config` / `from_config` and the command line use these).
KNOWN_PHYSICS: Mapping[str, KnownPhysics] = types.MappingProxyType({
    "lotka-volterra-linear": KnownPhysics(
        "lotka-volterra-linear", _lotka_volterra_linear, {"alpha": 1.0, "gamma": 1.0},
        "dx/dt = alpha x, dy/dt = -gamma y: Lotka-Volterra's birth and death terms, the "
        "interactions left to the correction"),
})


class UDEField(nn.Module):
    """known(t, y, params) + correction(t, y), with the physical parameters as
    `nn.Parameter`s (float scalars) in `physical`."""

    def __init__(self, known: Known, correction: nn.Module | None,
                 params: Mapping[str, float]) -> None:
        super().__init__()
        if not callable(known):
            raise InvalidArgumentError(f"`UDE(known=...)` must be callable as known(t, y, "
                                       f"params); got {type(known).__name__}.")
        if correction is not None and not callable(correction):
            raise InvalidArgumentError(f"`UDE(correction=...)` must be a module called as "
                                       f"correction(t, y), or None; got "
                                       f"{type(correction).__name__}.")
        if not isinstance(params, Mapping):
            raise InvalidArgumentError(
                f"`UDE(params=...)` must map each physical parameter's name to its initial "
                f"value, e.g. {{'k': 0.5}}; got {type(params).__name__}.")
        values = {}
        for name, value in dict(params).items():
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise InvalidArgumentError(f"`UDE(params=...)`: parameter names must be Python "
                                           f"identifiers; got {name!r}.")
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise InvalidArgumentError(f"`UDE(params={{{name!r}: {value!r}}})`: the initial "
                                           "value must be a finite number.")
            values[name] = nn.Parameter(torch.tensor(float(value)))
        self.known = known
        self.correction = correction
        self.physical = nn.ParameterDict(values)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {name: value.to(y.dtype) for name, value in self.physical.items()}
        dy = self.known(t, y, params)
        return dy if self.correction is None else dy + self.correction(t, y)


class UDE(NeuralODE):
    """dy/dt = known(t, y, theta_phys) + correction(t, y), trained like a `NeuralODE`.

    Args:
        known: the physics you trust, `known(t, y, params)` on tensors y [..., D], where
            `params` maps each name of `params` to a 0-d tensor (the same signature as
            `tidal.data.System.equations`, so a built-in system's equations can serve).
        correction: a network called as `correction(t, y)` returning [..., D], e.g.
            `tidal.nn.MLP(D)` (its small initial output starts the model near the known
            physics); None fits the physical parameters alone.
        params: the physical parameters' names and initial values; each becomes a learned
            `nn.Parameter`. Freeze one with `model.vector_field.physical[name]
            .requires_grad_(False)`.
        solver, controller, adjoint, max_steps: as for `NeuralODE` (the models' defaults,
            `tidal.defaults`).

    Known terms are written in the data's units, so train with an identity scaling:
    `tidal.fit(model, data, scaling=Scaling((0.0,) * D, (1.0,) * D))`; `fit`'s default
    standardization would feed them scaled states.

    A correction flexible enough to absorb part of the known terms makes the split between
    them ambiguous (e.g. alpha x in either place); constrain the correction (inputs, form,
    or a penalty) where the physics says how.

    Example:
        >>> def linear(t, y, p):  # Lotka-Volterra's birth and death terms
        ...     return torch.stack([p["alpha"] * y[..., 0], -p["gamma"] * y[..., 1]], -1)
        >>> model = UDE(linear, MLP(2), {"alpha": 1.0, "gamma": 2.0})
        >>> model.physical_parameters()
        {'alpha': 1.0, 'gamma': 2.0}
    """

    vector_field: UDEField

    def __init__(self, known: Known, correction: nn.Module | None,
                 params: Mapping[str, float], *, solver: StepMethod | None = None,
                 controller: StepSizeController | None = None, adjoint: Adjoint | None = None,
                 max_steps: int = defaults.MAX_STEPS) -> None:
        super().__init__(UDEField(known, correction, params), solver=solver,
                         controller=controller, adjoint=adjoint, max_steps=max_steps)

    @property
    def correction(self) -> nn.Module | None:
        return self.vector_field.correction

    def known(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        """The known terms at the current physical parameters, for states y [..., D]."""
        field = self.vector_field
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        return field.known(t, y, {n: v.to(y.dtype) for n, v in field.physical.items()})

    def physical_parameters(self) -> dict[str, float]:
        """The physical parameters' current values by name."""
        return {name: float(value.detach()) for name, value in self.vector_field.physical.items()}

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model, as plain JSON values; only for known terms
        from `KNOWN_PHYSICS` and a registered correction network (`tidal.nn.MLP`)."""
        field = self.vector_field
        name = next((key for key, entry in KNOWN_PHYSICS.items()
                     if entry.equations is field.known), None)
        if name is None:
            raise InvalidArgumentError(
                "`UDE.config()`: the known terms are Python code, which a run directory does "
                "not store (it holds data only); use known terms from "
                f"tidal.models.ude.KNOWN_PHYSICS ({sorted(KNOWN_PHYSICS)}), or save "
                "`model.state_dict()` and rebuild the UDE with the same known function.")
        correction = (None if field.correction is None
                      else network_config(field.correction, "`UDE.config()`: the correction"))
        return {"type": "UDE", "known": name, "params": self.physical_parameters(),
                "correction": correction, **self._solve_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UDE:
        """Rebuild a model from `config()`; only registered terms and networks are built."""
        if config["known"] not in KNOWN_PHYSICS:
            raise InvalidArgumentError(f"Model config names known terms {config['known']!r}; "
                                       f"known: {sorted(KNOWN_PHYSICS)}.")
        correction = (None if config.get("correction") is None
                      else build_network(config["correction"]))
        return cls(KNOWN_PHYSICS[config["known"]].equations, correction, config["params"],
                   **solve_options(config))
