"""The schema of a run's config.json, with bounds, checked before anything is built from it.

A config.json may have been edited or damaged; every value that decides what is built (which
classes, how large, with which tolerances) is checked here first, so a bad file gives one line
naming the file, the key and the problem, never a traceback or a huge allocation.

A schema is a function `check(value, key)` that raises `_Invalid(key, problem)`; the helpers
below build them. `validate(value, schema, file)` turns the first problem into an
`InvalidArgumentError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from tidal._errors import InvalidArgumentError
from tidal._files import read_json

Schema = Callable[[Any, str], None]

MAX_STATES = 10_000
MAX_WIDTH = 65_536
MAX_DEPTH = 100
MAX_STEPS = 2**31 - 1
MAX_DEGREE = 6  # of a PolynomialODE's monomials
MAX_TERMS = 100_000  # monomials of a PolynomialODE


class _Invalid(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key, self.problem = key, problem


def validate(value: Any, schema: Schema, file: Path) -> None:
    """Raise `InvalidArgumentError` naming `file` and the key when `value` breaks `schema`."""
    try:
        schema(value, "")
    except _Invalid as error:
        where = f"{file}: {error.key}: " if error.key else f"{file}: "
        raise InvalidArgumentError(f"{where}{error.problem} (the file was edited or damaged; "
                                   "start the run again with --overwrite).") from None


def read_checked(path: Path, schema: Schema) -> Any:
    """The strict JSON in `path`, checked against `schema`."""
    try:
        value = read_json(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"{path} is not valid JSON: {error}.") from error
    validate(value, schema, path)
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def integer(low: int, high: int) -> Schema:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(key, f"expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(key, f"{value} is outside [{low}, {high}]")
    return check


def number(low: float = -math.inf, high: float = math.inf, *, positive: bool = False
           ) -> Schema:
    """A finite real number in [low, high] (and > 0 when `positive`)."""
    def check(value: Any, key: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid(key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise _Invalid(key, f"{value} is not finite")
        if not low <= value <= high or (positive and value <= 0):
            bound = "> 0" if positive and low <= 0 else f"in [{low:g}, {high:g}]"
            raise _Invalid(key, f"{value!r} must be {bound}")
    return check


def text(choices: Collection[str] | None = None) -> Schema:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, str):
            raise _Invalid(key, f"expected a string, got {_kind(value)}")
        if choices is not None and value not in choices:
            raise _Invalid(key, f"{value!r} is not one of {sorted(choices)}")
    return check


def boolean(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise _Invalid(key, f"expected true or false, got {_kind(value)}")


def anything(value: Any, key: str) -> None:
    """Any JSON value (for free-form sections such as the outcome of training)."""


def optional(schema: Schema) -> Schema:
    """`schema`, or null."""
    def check(value: Any, key: str) -> None:
        if value is not None:
            schema(value, key)
    return check


def list_of(item: Schema, low: int = 0, high: int = MAX_STATES, *, unique: bool = False
            ) -> Schema:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, list):
            raise _Invalid(key, f"expected a list, got {_kind(value)}")
        if not low <= len(value) <= high:
            raise _Invalid(key, f"has {len(value)} entries; expected {low} to {high}")
        for i, entry in enumerate(value):
            item(entry, f"{key}[{i}]")
        if unique and len(set(map(str, value))) != len(value):
            raise _Invalid(key, "entries must be distinct")
    return check


def mapping(values: Schema) -> Schema:
    """An object with any string keys, each value checked by `values`."""
    def check(value: Any, key: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(key, f"expected an object, got {_kind(value)}")
        for name, entry in value.items():
            values(entry, _join(key, name))
    return check


def record(required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None, *,
           extra: bool = False) -> Schema:
    """An object with the `required` keys, maybe the `optional` ones, and others only when
    `extra`."""
    optional = optional or {}

    def check(value: Any, key: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(key, f"expected an object, got {_kind(value)}")
        for name, schema in required.items():
            if name not in value:
                raise _Invalid(_join(key, name), "missing")
            schema(value[name], _join(key, name))
        for name, schema in optional.items():
            if name in value:
                schema(value[name], _join(key, name))
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown and not extra:
            raise _Invalid(key, f"unknown key(s) {unknown}")
    return check


def tagged(tag: str, kinds: Mapping[str, Schema]) -> Schema:
    """An object whose `tag` key picks its schema among `kinds`."""
    def check(value: Any, key: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(key, f"expected an object, got {_kind(value)}")
        text(kinds)(value.get(tag), _join(key, tag))
        kinds[value[tag]](value, key)
    return check


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else str(name)


def _run_config() -> Schema:
    """config.json of a NeuralODE-family run (`tidal fit`, `tidal demo`)."""
    from tidal.data import SYSTEMS
    from tidal.models.augmented import MAX_AUGMENT
    from tidal.models.ensemble import MAX_MEMBERS
    from tidal.models.neural_ode import VECTOR_FIELDS
    from tidal.models.ude import KNOWN_PHYSICS
    from tidal.nn import ACTIVATIONS
    from tidal.registry import ADJOINTS, SOLVERS

    network = record({"type": text(VECTOR_FIELDS), "in_features": integer(1, MAX_STATES),
                      "out_features": integer(1, MAX_STATES), "width": integer(1, MAX_WIDTH),
                      "depth": integer(1, MAX_DEPTH), "activation": text(ACTIVATIONS),
                      "time_input": boolean, "final_scale": number(-1e6, 1e6)},
                     {"output_scale": list_of(number(0.0, 1e300, positive=True), 1),
                      "linear_term": boolean})
    solve = {"solver": text(SOLVERS), "adjoint": text(ADJOINTS),
             "max_steps": integer(1, MAX_STEPS)}
    scaling = record({"state_offset": list_of(number(), 1),
                      "state_scale": list_of(number(positive=True), 1),
                      "time_scale": number(positive=True)})
    # rtol and atol for a PIDController, dt for a ConstantStepSize (runs written before
    # issue 11 hold all three; dt wins)
    solve_optional = {"rtol": number(1e-13, 1.0), "atol": number(0.0, 1e6),
                      "dt": number(0.0, 1e6, positive=True),
                      "solver_options": mapping(number(0.0, 1e9))}
    models = {
        "NeuralODE": record({"type": text(), "vector_field": network, **solve},
                            solve_optional),
        "HamiltonianNN": record({"type": text(), **solve},
                                {"hamiltonian": network, "kinetic": network,
                                 "potential": network, **solve_optional}),
        "UDE": record({"type": text(), "known": text(KNOWN_PHYSICS),
                       "params": mapping(number(-1e12, 1e12)),
                       "correction": optional(network), **solve}, solve_optional),
        "PolynomialODE": record(  # tidal.models.polynomial (a formula, --discover)
            {"type": text(), "degree": integer(1, MAX_DEGREE),
             "state_names": list_of(text(), 1, MAX_STATES, unique=True),
             "active": list_of(list_of(boolean, 1, MAX_TERMS), 1, MAX_STATES),
             "scaling": scaling, **solve}, solve_optional),
        "AugmentedNeuralODE": record(  # tidal.models.augmented
            {"type": text(), "vector_field": network, "augment": integer(1, MAX_AUGMENT),
             **solve}, solve_optional),
    }
    models["Ensemble"] = record(  # tidal.models.ensemble: K members of one of the kinds above
        {"type": text(), "members": integer(1, MAX_MEMBERS), "member": tagged("type", dict(models)),
         "seeds": list_of(integer(0, 2**63 - 1), 1, MAX_MEMBERS), "bootstrap": boolean},
        {"observation_noise": list_of(number(0.0, 1e300), 1),
         "band_calibration": record({"scale": number(0.0, 1e300, positive=True),
                                     "points": integer(1, 2**63 - 1), "data": text()},
                                    {"source": text(("validation", "out-of-bag"))})})
    states = list_of(text(), 1, MAX_STATES, unique=True)
    return record({
        "tidal_version": text(),
        "model": tagged("type", models),
        "scaling": scaling,
        "train": mapping(anything),  # checked by TrainConfig.from_dict
        "data": record({"state_names": states}, {"system": text(SYSTEMS),
                                                 "split": text(("time", "trajectory"))},
                       extra=True),
        "fit": mapping(anything),
    })


def _flow_config() -> Schema:
    """config.json of a flow run (`tidal flow fit`)."""
    from tidal.nn import ACTIVATIONS

    options = record({
        "width": integer(1, MAX_WIDTH), "depth": integer(1, MAX_DEPTH),
        "activation": text(ACTIVATIONS), "trace": text(("exact", "hutchinson")),
        "kinetic": number(0.0, 1e6), "jacobian": number(0.0, 1e6),
        "train_tol": number(1e-13, 1.0), "eval_tol": number(1e-13, 1.0),
        "steps": integer(1, 10**9), "batch_size": integer(1, 10**9),
        "lr": number(0.0, 1e3, positive=True), "val_fraction": number(0.0, 1.0, positive=True),
        "seed": integer(0, 2**63 - 1)}, {"checkpoint_every": integer(1, 10**9)})
    return record({"type": text(("CNF",)), "options": options,
                   "columns": list_of(text(), 1, MAX_STATES, unique=True),
                   "offset": list_of(number(), 1), "scale": list_of(number(positive=True), 1),
                   "source": mapping(anything)}, {"fit": mapping(anything)})


def _sequence_config() -> Schema:
    """config.json of a sequence run (`tidal fit --model latent-ode|ode-rnn|cde|gru`); the
    options' own checks (`SequenceOptions`) run after this one."""
    from tidal.training.sequence_fit import SEQUENCE_MODELS, TASKS

    size = integer(1, MAX_WIDTH)
    options = record({
        "model": text(SEQUENCE_MODELS), "task": text(TASKS), "hidden": size, "latent": size,
        "width": size, "context": number(0.0, 1.0), "obs_std": number(0.0, 1e6, positive=True),
        "epochs": integer(1, 10**9), "lr": number(0.0, 1e3, positive=True),
        "batch_size": integer(1, 10**9), "patience": optional(integer(1, 10**9)),
        "grad_clip": number(0.0, 1e12, positive=True), "seed": integer(0, 2**63 - 1),
        "checkpoint_every": integer(1, 10**9)}, {"refine": optional(integer(0, 10**9))})
    names = list_of(text(), 1, MAX_STATES, unique=True)
    return record({"type": text(("sequence",)), "options": options, "features": names,
                   "time": text(), "id": text(), "label": optional(text()),
                   "classes": optional(names),
                   "scaling": record({"state_offset": list_of(number(), 1),
                                      "state_scale": list_of(number(positive=True), 1),
                                      "time_scale": number(positive=True)}),
                   "decoder_dt": number(0.0, 1e300, positive=True),
                   "source": mapping(anything)},
                  {"fit": record({}, {"refine": integer(0, 10**9),
                                      "refine_val_loss": mapping(number())}, extra=True)})


RUN_CONFIG = _run_config()
FLOW_CONFIG = _flow_config()
SEQUENCE_CONFIG = _sequence_config()


def _sde_config() -> Schema:
    """config.json of an SDE run (`tidal fit --model sde|latent-sde`, training/sde_run.py)."""
    from tidal.nn import ACTIVATIONS

    options = record({
        "kind": text(("sde", "latent-sde")), "width": integer(1, MAX_WIDTH),
        "depth": integer(1, MAX_DEPTH), "activation": text(ACTIVATIONS),
        "dt": number(0.0, 1e12, positive=True), "latent_size": integer(1, MAX_STATES),
        "context_size": integer(1, MAX_WIDTH), "hidden_size": integer(1, MAX_WIDTH)})
    return record({
        "tidal_version": text(), "type": text(("NeuralSDE", "LatentSDE")), "options": options,
        "state_names": list_of(text(), 1, MAX_STATES, unique=True),
        "scaling": record({"state_offset": list_of(number(), 1),
                           "state_scale": list_of(number(positive=True), 1),
                           "time_scale": number(positive=True)}),
        "train": mapping(anything), "data": mapping(anything), "fit": mapping(anything)})


SDE_CONFIG = _sde_config()
