"""The name registries (`tidal.registry`) and the test registries (`solver_db.py`): every
solver, adjoint, controller and model kind a name can reach has a test entry, names map to
objects in one place with a clear error for unknown ones, and every entry's bad inputs raise
the error they must (name the argument, say what to do)."""

from __future__ import annotations

import pytest
import torch

import tidal
from solver_db import (
    ADJOINT_DB,
    CONTROLLER_DB,
    GENERAL_DB,
    MODEL_DB,
    SOLVER_DB,
    SYMPLECTIC_DB,
    ErrorInput,
)
from tidal import registry


def test_every_solver_has_a_test_entry() -> None:
    assert sorted(info.id for info in SOLVER_DB) == sorted(tidal.SOLVERS)
    assert len({info.id for info in SOLVER_DB}) == len(SOLVER_DB)


def test_every_adjoint_has_a_test_entry() -> None:
    assert sorted(info.id for info in ADJOINT_DB) == sorted(tidal.ADJOINTS)
    assert all(tidal.ADJOINTS[info.id] is info.cls for info in ADJOINT_DB)


def test_every_controller_has_a_test_entry() -> None:
    assert sorted(info.name for info in CONTROLLER_DB) == sorted(tidal.CONTROLLERS)
    for info in CONTROLLER_DB:
        assert type(info.make()) is tidal.CONTROLLERS[info.name]


@pytest.mark.parametrize("info", SOLVER_DB, ids=lambda i: i.id)
def test_solver_entry_matches_the_method(info) -> None:
    solver = registry.solver(info.id)
    assert type(solver) is info.cls is tidal.SOLVERS[info.id]
    assert solver.name == info.id
    assert solver.order == info.order
    assert solver.adaptive == info.adaptive
    assert (solver.error_order is not None) == info.adaptive
    # Splittings are the only methods that need a separable H; every other one is general.
    assert info.general == (not getattr(info.cls, "splits_state", False))


def test_the_symplectic_methods_are_registered() -> None:
    assert {info.id for info in SYMPLECTIC_DB} == {"leapfrog", "yoshida4", "implicit_midpoint"}
    assert "implicit_midpoint" in {info.id for info in GENERAL_DB}


@pytest.mark.parametrize("info", ADJOINT_DB, ids=lambda i: i.id)
def test_adjoint_entry_matches_the_adjoint(info) -> None:
    """What the entry claims holds: events and dense output are accepted or refused."""
    adjoint = registry.adjoint(info.id)
    assert type(adjoint) is info.cls and adjoint.name == info.id
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)

    def solve(**options: object) -> tidal.Solution:
        return tidal.solve(lambda t, y: -y, y0, ts, adjoint=info.make([]), **options)

    for supported, options in ((info.dense, {"dense": True}),
                               (info.events, {"event": lambda t, y: y.sum() - 1.0})):
        if supported:
            solve(**options)
        else:
            with pytest.raises(tidal.IncompatibleOptionsError):
                solve(**options)


@pytest.mark.parametrize(("kind", "lookup", "table"), [
    ("Solver", registry.solver, tidal.SOLVERS),
    ("Adjoint", registry.adjoint, tidal.ADJOINTS),
    ("Controller", registry.controller, tidal.CONTROLLERS),
])
def test_unknown_names_list_the_known_ones(kind, lookup, table) -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=rf"{kind} 'nope' is not known") as info:
        lookup("nope")
    assert all(name in str(info.value) for name in table)


def test_names_take_options() -> None:
    assert registry.solver("implicit_midpoint", tol=1e-9).tol == 1e-9
    assert registry.adjoint("checkpoint", checkpoints=5).checkpoints == 5
    controller = registry.controller("pid", rtol=1e-3, atol=1e-5)
    assert (controller.rtol, controller.atol) == (1e-3, 1e-5)


def test_every_model_kind_has_a_test_entry() -> None:
    """Every model class `tidal.models` exports, and every kind `tidal fit --model` builds."""
    import tidal.models
    from tidal.models.registry import MODELS
    from tidal.training.pipeline import MODEL_KINDS, ModelOptions

    exported = {name for name in tidal.models.__all__
                if isinstance(getattr(tidal.models, name), type)
                and issubclass(getattr(tidal.models, name), torch.nn.Module)}
    assert sorted(info.id for info in MODEL_DB) == sorted(exported)
    assert set(MODELS) <= {info.id for info in MODEL_DB if info.saveable}
    built = {type(ModelOptions(kind=kind, known="lotka-volterra-linear").build(2, 0)).__name__
             for kind in MODEL_KINDS}
    assert built <= {info.id for info in MODEL_DB}


@pytest.mark.parametrize("info", MODEL_DB, ids=lambda i: i.id)
def test_model_entry_uses_the_shared_defaults_and_round_trips(info) -> None:
    """One set of defaults (`tidal.defaults`) for every model kind; a saveable model's config
    is plain JSON and rebuilds a model that gives the same output."""
    import json

    from tidal import defaults
    from tidal.models.registry import model_from_config

    torch.manual_seed(0)
    model = info.make()
    if info.solves_odes:
        assert type(model.adjoint) is type(defaults.model_adjoint())
        assert model.max_steps == defaults.MAX_STEPS
        if model.solver.adaptive:
            assert model.controller == defaults.model_controller()
            assert type(model.solver) is type(defaults.model_solver())
        else:  # the Hamiltonian model's symplectic default
            assert model.controller == tidal.ConstantStepSize(defaults.HAMILTONIAN_DT)
    out = info.call(model)
    assert torch.isfinite(out).all()
    if info.saveable:
        config = json.loads(json.dumps(model.config()))
        rebuilt = model_from_config(config)
        rebuilt.load_state_dict(model.state_dict())
        assert type(rebuilt) is type(model) and rebuilt.config() == config
        assert torch.equal(info.call(rebuilt), out)


def _error_inputs() -> list:
    cases = []
    for kind, db, key in (("solver", SOLVER_DB, "id"), ("adjoint", ADJOINT_DB, "id"),
                          ("controller", CONTROLLER_DB, "name"), ("model", MODEL_DB, "id")):
        for info in db:
            for error_input in info.error_inputs():
                cases.append(pytest.param(error_input,
                                          id=f"{kind}-{getattr(info, key)}-{error_input.desc}"))
    return cases


@pytest.mark.parametrize("error_input", _error_inputs())
def test_error_inputs(error_input: ErrorInput) -> None:
    with pytest.raises(error_input.error, match=error_input.match):
        error_input.call()


def test_options_a_registered_object_does_not_take_are_named() -> None:
    error = tidal.InvalidArgumentError
    with pytest.raises(error, match=r"Solver 'dopri5': .*'foo'.*options are none"):
        registry.solver("dopri5", foo=1)
    with pytest.raises(error, match=r"Controller 'pid': .*'atol'.*'rtol', 'atol'"):
        registry.controller("pid", rtol=1e-3)
    assert registry.solver("implicit_midpoint", tol=1e-10).tol == 1e-10
