"""A neural ODE on stiff data (issue 12): per-species rate scales of the network's outputs
(`tidal.training.rates`, `MLP(output_scale=)`), saving a model solved by a stiff method, and
a GELU field trained on ROBER through Rodas5P against a scipy Radau reference."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tidal
from stiff_problems import load_example
from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories, simulate
from tidal.models import NeuralODE
from tidal.nn import MLP
from tidal.training import ModelOptions, TrainConfig, fit, load_run, save_run
from tidal.training.rates import time_scales, with_rate_scales


def _relaxations(taus: tuple[float, ...]) -> tuple[Trajectories, np.ndarray]:
    """Two trajectories of y_i = a exp(-t / tau_i) (a = 1 and 3) at 41 log-spaced times, and
    the expected T_i. The range is 3, so only trajectory a = 3 moves half of it (1.5), first
    at the first grid time >= tau_i ln 2 (where y_i <= 1.5); a = 1 never does, and the
    median over the trajectories that do is that time."""
    times = np.concatenate([[0.0], np.geomspace(1e-5, 1e5, 40)])
    values = [a * np.exp(-times[:, None] / np.array(taus)) for a in (1.0, 3.0)]
    expected = np.array([times[times >= tau * math.log(2)][0] for tau in taus])
    return Trajectories([times, times], values), expected


def test_time_scales_are_the_half_range_times_of_exponential_relaxations() -> None:
    data, expected = _relaxations((1e-3, 50.0))
    np.testing.assert_array_equal(time_scales(data), expected)


def test_auto_scales_the_outputs_only_when_time_scales_are_decades_apart() -> None:
    apart, expected = _relaxations((1e-3, 50.0))
    close, _ = _relaxations((1.0, 3.0))
    identity = Scaling((0.0, 0.0), (1.0, 1.0))
    scaled = with_rate_scales(ModelOptions(), apart, identity)
    # range 3 over T_i
    np.testing.assert_allclose(scaled.output_scale, 3.0 / expected, rtol=1e-12)
    assert with_rate_scales(ModelOptions(), close, identity).output_scale is None
    assert with_rate_scales(ModelOptions(rate_scale="off"), apart, identity).output_scale is None
    forced = with_rate_scales(ModelOptions(rate_scale="species"), close, identity)
    assert forced.output_scale is not None
    # in the model's units: time / 10 makes every rate 10x larger
    slow = with_rate_scales(ModelOptions(), apart, dataclasses.replace(identity, time_scale=10))
    np.testing.assert_allclose(slow.output_scale, 30.0 / expected, rtol=1e-12)
    # the default solver ("auto") switches to Rodas5P on stiff data (Tsit5 stops at
    # max_steps there)
    assert isinstance(scaled.build(2, seed=0).solver, tidal.Auto)
    assert isinstance(with_rate_scales(ModelOptions(), close, identity).build(2, seed=0).solver,
                      tidal.Tsit5)


@pytest.mark.parametrize("kind, augment", [("hamiltonian", 0), ("ude", 0), ("neural-ode", 1)])
def test_species_rate_scale_is_refused_where_it_does_not_apply(kind: str, augment: int) -> None:
    data, _ = _relaxations((1e-3, 50.0))
    options = ModelOptions(kind=kind, augment=augment, rate_scale="species")
    with pytest.raises(InvalidArgumentError, match="--rate-scale species"):
        with_rate_scales(options, data, Scaling((0.0, 0.0), (1.0, 1.0)))
    # auto leaves them alone
    assert with_rate_scales(dataclasses.replace(options, rate_scale="auto"), data,
                            Scaling((0.0, 0.0), (1.0, 1.0))).output_scale is None


def test_mlp_output_scale_multiplies_each_output_and_survives_json() -> None:
    torch.manual_seed(0)
    plain = MLP(3, width=8, activation="gelu")
    torch.manual_seed(0)
    scaled = MLP(3, width=8, activation="gelu", output_scale=[1e-3, 1e4, 2.0])
    y = torch.randn(5, 3)
    np.testing.assert_allclose((scaled(0.0, y) / plain(0.0, y)).detach().numpy(),
                               np.broadcast_to([1e-3, 1e4, 2.0], (5, 3)), rtol=1e-6)
    rebuilt = MLP(**json.loads(json.dumps(scaled.config())))
    rebuilt.load_state_dict(scaled.state_dict())
    assert torch.equal(rebuilt(0.0, y), scaled(0.0, y))
    with pytest.raises(InvalidArgumentError, match="output_scale"):
        MLP(3, output_scale=[1.0, 0.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="output_scale"):
        MLP(3, output_scale=[1.0, 2.0])


@pytest.mark.parametrize("solver", ["rodas5p", "auto", "radauIIA5", "implicit_midpoint"])
def test_a_model_solved_by_an_implicit_or_stiff_method_saves_and_loads(tmp_path: Path,
                                                                       solver: str) -> None:
    """config.json held the solver's unset options as null (jac, tol), which the run schema
    refuses, and Auto's inner solvers as objects."""
    field = MLP(3, width=8, output_scale=[1.0, 1e3, 1.0])
    method = tidal.registry.solver(solver)
    model = NeuralODE(field, solver=method,
                      controller=None if method.adaptive else tidal.ConstantStepSize(0.1))
    save_run(tmp_path, model, Scaling((0.0,) * 3, (1.0,) * 3),
             data={"state_names": ["A", "B", "C"]}, train_config=TrainConfig().to_dict())
    run = load_run(tmp_path)
    assert type(run.model.solver) is type(model.solver)
    assert run.model.vector_field.config() == field.config()
    with pytest.raises(InvalidArgumentError, match="jac="):
        NeuralODE(field, solver=tidal.Rodas5P(jac=lambda t, y: y)).config()



@pytest.mark.slow
def test_gelu_field_learns_rober_through_rodas5p() -> None:
    """3 clean ROBER trajectories on [0, 10] (12 log-spaced times from 1e-5): the pipeline's
    model (`with_rate_scales`, `ModelOptions.build`: a 3-16-16-3 GELU MLP with per-species
    output scales, Rodas5P at rtol 1e-4, CheckpointAdjoint) trained by `fit` for EPOCHS
    epochs finishes without a solver failure, and its error on 2 held-out initial states
    against scipy's Radau (rtol 1e-10), the largest over species and times as a fraction of
    each species' range, falls below 25 %, far below the untrained model's (~1e13: its
    random B output times B's rate scale grows without bound) and below a third of the error
    of predicting no change at all (y(t) = y0: ~1, as B rises from 0 to its range).
    Measured: 0.092 (median 0.0014) after 40 epochs, ~10 s CPU for the fit."""
    example = load_example("stiff_rober_neural")
    data = simulate("rober", 3, t_span=(0.0, 10.0), n_obs=12, noise=0.0, irregular=False,
                    seed=0)
    scaling = Scaling.fit(data)
    options = with_rate_scales(ModelOptions(width=16, depth=2, activation="gelu",
                                            solver="rodas5p"), data, scaling)
    assert options.output_scale is not None
    model = options.build(3, seed=0)

    def predict(y0: np.ndarray, times: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            scaled = model(scaling.scale_values(torch.from_numpy(y0)), torch.from_numpy(times))
        return scaling.unscale_values(scaled).numpy()

    held_out, times = np.array([0.7, 1.3]), np.concatenate([[0.0], np.geomspace(1e-5, 10, 12)])
    model.double()
    before = example.held_out_errors(predict, held_out, times).max()
    unchanged = example.held_out_errors(lambda y0, t: np.broadcast_to(y0, (len(t), 3)),
                                        held_out, times).max()
    config = TrainConfig(epochs=EPOCHS, lr=3e-2, horizons=(1.0,), patience=None,
                         eval_every=EPOCHS, seed=0)
    result = fit(model, data, config=config, scaling=scaling, progress=False)
    assert result.status == "finished", result.message
    after = example.held_out_errors(predict, held_out, times).max()
    assert after < 0.25 and after < before / 100 and after < unchanged / 3, (
        before, unchanged, after)


EPOCHS = 40


def test_the_report_solves_a_stiff_true_system_with_a_stiff_method() -> None:
    """The report's truth for ROBER (it compares a run with `--system rober`): Dopri5 took
    minutes to reach its step limit; against scipy's Radau at rtol 1e-10."""
    from tidal.data import SYSTEMS
    from tidal.report.metrics import true_trajectories

    ts = np.array([0.0, 1e-4, 1.0, 1e2, 1e4, 1e5])
    y0 = np.array([[1.0, 0.0, 0.0], [0.6, 0.0, 0.0]])
    ours = true_trajectories(SYSTEMS["rober"], y0, ts)
    example = load_example("stiff_rober_neural")
    for b in range(2):
        reference = example.reference(y0[b], ts)
        np.testing.assert_allclose(ours[:, b], reference, rtol=1e-5, atol=1e-9)
