"""`MODELS`: the model classes a run directory's config.json may name, and `model_from_config`,
which rebuilds one (only registered classes are constructed; no code from files runs)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from tidal._errors import InvalidArgumentError
from tidal.models.augmented import AugmentedNeuralODE
from tidal.models.ensemble import Ensemble
from tidal.models.hamiltonian import HamiltonianNN
from tidal.models.neural_ode import NeuralODE
from tidal.models.polynomial import PolynomialODE
from tidal.models.ude import UDE

MODELS: Mapping[str, type[NeuralODE]] = types.MappingProxyType(
    {cls.__name__: cls for cls in (NeuralODE, HamiltonianNN, UDE, Ensemble, AugmentedNeuralODE,
                                       PolynomialODE)})


def model_from_config(config: Mapping[str, Any]) -> NeuralODE:
    """The model described by `model.config()` (its "type" picks the class; a config without
    one is a NeuralODE's, as written before the other models existed)."""
    kind = config.get("type", "NeuralODE")
    if kind not in MODELS:
        raise InvalidArgumentError(f"Model config names model type {kind!r}; known: "
                                   f"{sorted(MODELS)}.")
    return MODELS[kind].from_config(dict(config))
