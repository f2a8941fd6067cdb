"""Discovered equations: `PolynomialODE` (a sparse polynomial field with learned
coefficients) and `tidal.training.discovery` (SINDy on a fitted field, the formula refitted,
the simpler model kept unless the network validates clearly better)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.integrate
import torch
from click.testing import CliRunner
from torch import nn

from tidal import PIDController
from tidal._errors import InvalidArgumentError, SolveFailedError, Status
from tidal.cli.main import main
from tidal.data import Scaling, Trajectories, simulate, write_table
from tidal.models.polynomial import PolynomialODE
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.report import write_report
from tidal.training import TrainConfig, discovery, load_run, save_run
from tidal.training.fit import FitResult
from tidal.training.pipeline import train_run
from tidal.training.time_split import split_in_time

LV = {"dx": {"x": 1.5, "x y": -1.0}, "dy": {"y": -3.0, "x y": 1.0}}  # SYSTEMS' parameters
TIGHT = PIDController(rtol=1e-10, atol=1e-12)


def lotka_volterra(y0: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The reference: scipy's DOP853 at tight tolerance."""
    def f(t: float, z: np.ndarray) -> list[float]:
        return [1.5 * z[0] - z[0] * z[1], z[0] * z[1] - 3.0 * z[1]]
    return scipy.integrate.solve_ivp(f, (ts[0], ts[-1]), y0, t_eval=ts, method="DOP853",
                                     rtol=1e-12, atol=1e-12).y.T


def test_polynomial_ode_solves_lotka_volterra() -> None:
    model = PolynomialODE.from_terms(LV, ("x", "y"), controller=TIGHT).double()
    assert model.equations() == ["dx = 1.5 x - 1 x y", "dy = -3 y + 1 x y"]
    ts = np.linspace(0.0, 5.0, 21)
    ys = model(torch.tensor([[1.5, 1.0]], dtype=torch.float64), torch.tensor(ts))[:, 0]
    np.testing.assert_allclose(ys.detach().numpy(), lotka_volterra(np.array([1.5, 1.0]), ts),
                               atol=1e-8)


def test_coefficients_keep_the_data_units_under_a_scaling() -> None:
    """Trained in standardized units (a shifted, scaled state and a scaled time), the field
    still holds the coefficients in the data's units and gives the same trajectory."""
    plain = PolynomialODE.from_terms(LV, ("x", "y"))
    scaling = Scaling((2.0, 1.0), (3.0, 0.5), 2.0)
    model = PolynomialODE(plain.vector_field.matrix().detach().numpy(), 2, scaling,
                          state_names=("x", "y"), controller=TIGHT).double()
    assert model.terms() == plain.terms()
    ts = np.linspace(0.0, 5.0, 21)
    start = (np.array([1.5, 1.0]) - np.array([2.0, 1.0])) / np.array([3.0, 0.5])
    scaled = model(torch.tensor(start[None]), torch.tensor(ts / 2.0))[:, 0].detach().numpy()
    np.testing.assert_allclose(scaled * [3.0, 0.5] + [2.0, 1.0],
                               lotka_volterra(np.array([1.5, 1.0]), ts), atol=1e-8)


def test_a_cubic_field_in_three_states_matches_its_formula() -> None:
    """Degree 3 in 3 states (20 monomials, about half learned), shifted, scaled states and
    scaled time: the field against numpy's evaluation of sum_k c_k theta_k(state) in the
    data's units, rates scaled back, for a batch and for a batch of batches."""
    from tidal.models.polynomial import PolynomialField, monomial_factors

    rng = np.random.default_rng(0)
    coefficients = rng.normal(size=(3, 20)) * (rng.random((3, 20)) < 0.5)
    scaling = Scaling((0.5, -1.0, 2.0), (2.0, 0.5, 3.0), 1.7)
    field = PolynomialField(coefficients, 3, scaling).double()
    y = rng.normal(size=(2, 4, 3))
    state = np.asarray(scaling.state_offset) + np.asarray(scaling.state_scale) * y
    monomials = np.stack([np.prod(state[..., list(combo)], axis=-1) for combo in
                          monomial_factors(3, 3)], -1)  # the empty product is 1
    expected = (monomials @ field.matrix().detach().numpy().T * scaling.time_scale
                / np.asarray(scaling.state_scale))
    t = torch.tensor(0.0, dtype=torch.float64)
    for batch in (y, y.reshape(8, 3)):
        found = field(t, torch.as_tensor(batch)).detach().numpy()
        np.testing.assert_allclose(found.reshape(expected.shape), expected, rtol=1e-13,
                                   atol=1e-13 * np.abs(expected).max())


def test_gradients_of_the_coefficients_match_finite_differences() -> None:
    model = PolynomialODE.from_terms(LV, ("x", "y"), degree=3).double()
    y = torch.rand(5, 2, dtype=torch.float64) + 0.5
    coefficients = model.vector_field.coefficients
    assert torch.autograd.gradcheck(
        lambda c, s: torch.func.functional_call(model.vector_field, {"coefficients": c},
                                                (torch.zeros(()), s)),
        (coefficients.detach().clone().requires_grad_(), y.requires_grad_()))


def test_config_round_trip_through_a_run_directory(tmp_path) -> None:
    model = PolynomialODE.from_terms(LV, ("x", "y"), controller=TIGHT).double()
    data = Trajectories([np.array([0.0, 1.0])], [np.array([[1.5, 1.0], [1.0, 1.0]])],
                        state_names=("x", "y"))
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "y"]}, train_config=TrainConfig().to_dict(),
             splits={"train": data})
    run = load_run(tmp_path)
    assert isinstance(run.model, PolynomialODE)
    assert run.model.equations() == model.equations()
    ts = np.linspace(0.0, 3.0, 7)
    np.testing.assert_allclose(run.predict(np.array([1.5, 1.0]), ts),
                               lotka_volterra(np.array([1.5, 1.0]), ts), atol=1e-7)


def test_an_edited_config_is_refused_before_anything_is_built(tmp_path) -> None:
    import json

    model = PolynomialODE.from_terms(LV, ("x", "y"))
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "y"]}, train_config=TrainConfig().to_dict())
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["degree"] = 1000  # millions of monomials
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgumentError, match=r"model\.degree"):
        load_run(tmp_path)
    config["model"]["degree"] = 3  # the active terms no longer fit
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgumentError, match="expected shape"):
        load_run(tmp_path)


def test_a_formula_run_is_described_in_words() -> None:
    from tidal.report.checks import describe_model

    config = PolynomialODE.from_terms(LV, ("x", "y")).config()
    assert describe_model(config) == ("polynomial ODE (4 terms of degree <= 2, coefficients "
                                      "fitted; see the equations below), solver tsit5")


def test_a_ude_without_a_correction_has_nothing_to_explain() -> None:
    from tidal.models.symbolic import sparsest

    ude = UDE(KNOWN_PHYSICS["lotka-volterra-linear"].equations, None, {"alpha": 1.5,
                                                                        "gamma": 3.0})
    with pytest.raises(InvalidArgumentError, match="no correction network to explain"):
        sparsest(ude, np.ones((4, 2)))
    found = sparsest(ude.vector_field, np.random.default_rng(0).uniform(1, 2, (20, 2)),
                     state_names=("x", "y"))
    assert found is not None and found[1].equations() == ["dx = 1.5 x", "dy = -3 y"]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgumentError, match="'x z' is not a monomial"):
        PolynomialODE.from_terms({"dx": {"x z": 1.0}}, ("x", "y"))
    with pytest.raises(InvalidArgumentError, match=r"\['dz'\] are not outputs.*'dx', 'dy'"):
        PolynomialODE.from_terms({"dz": {"x": 1.0}}, ("x", "y"))
    with pytest.raises(InvalidArgumentError, match="degree=0"):
        PolynomialODE(np.zeros((2, 1)), 0)
    with pytest.raises(InvalidArgumentError, match=r"expected shape \(2, 6\)"):
        PolynomialODE(np.zeros((2, 5)), 2)
    with pytest.raises(InvalidArgumentError, match="2 names for 3 states"):
        PolynomialODE(np.zeros((3, 10)), 2, state_names=("x", "y"))
    with pytest.raises(InvalidArgumentError, match=r"active=\.\.\.\)` must have the"):
        PolynomialODE(np.ones((2, 6)), 2, active=np.ones((2, 5), dtype=bool))
    with pytest.raises(InvalidArgumentError, match="coefficients be finite"):
        PolynomialODE(np.full((2, 6), np.nan), 2)
    with pytest.raises(InvalidArgumentError, match="PolynomialODE config is malformed"):
        PolynomialODE.from_config({"type": "PolynomialODE", "degree": 2})


class _Interactions(nn.Module):
    """Lotka-Volterra's interaction terms exactly (-x y, x y), or plus a term no quadratic
    explains."""

    def __init__(self, wiggle: float = 0.0) -> None:
        super().__init__()
        self.wiggle = wiggle

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xy = y[..., :1] * y[..., 1:]
        return torch.cat((-xy, xy), -1) + self.wiggle * torch.sin(3 * y)


def _fitted_network(wiggle: float, val_loss: float, lr: float = 1e-3
                    ) -> tuple[FitResult, Trajectories, Trajectories]:
    """A 'fitted network' that is the exact Lotka-Volterra field (a UDE whose correction holds
    the interactions), on noise-free data split in time."""
    data = simulate("lotka-volterra", 4, n_obs=(15, 15), noise=0.0, seed=0)
    train, val, _ = split_in_time(data, 0.25, 0.0)
    model = UDE(KNOWN_PHYSICS["lotka-volterra-linear"].equations, _Interactions(wiggle),
                {"alpha": 1.5, "gamma": 3.0}).double()
    config = TrainConfig(epochs=10, lr=lr, horizons=(1.0,), seed=0)
    firsts = np.stack([values[0] for values in train.values])
    result = FitResult(model, Scaling((0.0, 0.0), (1.0, 1.0)), [], "finished", "finished",
                       10, val_loss, config, firsts)
    return result, train, val


def test_discovery_recovers_and_keeps_the_law() -> None:
    """The exact field is explained by exactly Lotka-Volterra's four terms; refitted on
    noise-free data the coefficients stay at the truth, and the formula is kept."""
    result, train, val = _fitted_network(0.0, val_loss=1.0)
    kept, record = discovery.discover(result, train, val)
    assert record["kept"] == "formula"
    assert isinstance(kept.model, PolynomialODE)
    terms = kept.model.terms()
    assert {out: sorted(t) for out, t in terms.items()} == {"dx": ["x", "x y"],
                                                           "dy": ["x y", "y"]}
    for out, expected in LV.items():
        for term, value in expected.items():
            assert terms[out][term] == pytest.approx(value, abs=1e-3)
    chosen = record["candidates"][record["chosen"]]
    assert chosen["val_loss"] < 1e-6 and chosen["train_loss"] < 1e-6
    assert "kept: validation loss" in kept.message


def test_an_approximate_field_still_yields_the_law() -> None:
    """A learned field off the law (a network's fitting error, here 0.5 sin(3 y)) is matched
    by several formulas; refitted to data from the law (10 epochs of Adam from SINDy's start,
    then least squares), its own four terms fit the noise-free data exactly and, being the
    sparsest, are kept, with the true coefficients."""
    result, train, val = _fitted_network(0.5, val_loss=1.0, lr=1e-2)
    kept, record = discovery.discover(result, train, val)
    assert len(record["candidates"]) >= 2
    assert record["kept"] == "formula" and record["chosen"] == 0
    assert record["candidates"][0]["terms"] == 4
    terms = kept.model.terms()
    for out, expected in LV.items():
        for term, value in expected.items():
            assert terms[out][term] == pytest.approx(value, abs=1e-3)


def test_a_clearly_better_network_stays() -> None:
    result, train, val = _fitted_network(0.0, val_loss=1e-12)
    kept, record = discovery.discover(result, train, val)
    assert record["kept"] == "network" and kept is result
    assert record["candidates"][0]["formula"] == ["dx = 1.5 x - 1 x y", "dy = -3 y + 1 x y"]


def test_a_field_no_quadratic_explains_keeps_the_network() -> None:
    result, train, val = _fitted_network(5.0, val_loss=1.0)
    kept, record = discovery.discover(result, train, val)
    assert kept is result
    assert record == {"candidates": [], "kept": "network", "why": record["why"]}
    assert "degree <= 2" in record["why"]


def test_ctrl_c_during_a_candidate_stops_the_search(monkeypatch) -> None:
    """An interrupted candidate fit ends the search; the network stays."""
    result, train, val = _fitted_network(0.5, val_loss=1.0)  # several candidates
    calls = []

    def interrupted(model, *args, **kwargs):
        calls.append(model)
        return dataclasses.replace(result, model=model, status="interrupted")

    monkeypatch.setattr(discovery, "fit", interrupted)
    kept, record = discovery.discover(result, train, val)
    assert len(calls) == 1 and kept is result and record["kept"] == "network"
    assert [c["status"] for c in record["candidates"]] == ["interrupted"]


def test_the_sparsest_formula_that_validates_about_as_well_as_the_best_is_kept() -> None:
    """Candidates come sparsest first; the network's loss counts toward the best."""
    assert discovery.choose(1.0, [1.9, 0.5]) == 1  # 1.9 > 2 x 0.5
    assert discovery.choose(1.0, [0.9, 0.5]) == 0
    assert discovery.choose(1.0, [None, 2.0]) == 1  # a fit that did not finish is skipped
    assert discovery.choose(0.1, [0.3, 0.25]) is None  # the network is clearly better
    assert discovery.choose(1.0, []) is None


def test_train_run_refuses_discovery_where_it_cannot_choose(tmp_path) -> None:
    data = simulate("lotka-volterra", 16, n_obs=(10, 10), noise=0.0, seed=0)
    with pytest.raises(InvalidArgumentError, match="--discover"):
        train_run(data, tmp_path / "a", split=(0.0, 0.25), split_by="trajectory",
                  discover=True, config=TrainConfig(epochs=3))
    csv = tmp_path / "lv.csv"
    write_table(data, csv, time="t", id="id")
    out = CliRunner().invoke(main, ["fit", str(csv), "--id", "id", "--discover", "--ensemble",
                                    "2", "--epochs", "3", "-o", str(tmp_path / "b")])
    assert out.exit_code == 2 and "--discover" in out.output and "--ensemble" in out.output
    out = CliRunner().invoke(main, ["fit", str(csv), "--id", "id", "--model", "sde",
                                    "--discover", "-o", str(tmp_path / "c")])
    assert out.exit_code == 2 and "--discover do(es) not apply to --model sde" in out.output


def test_train_run_refuses_discovery_under_torchrun(tmp_path, monkeypatch) -> None:
    from tidal.distributed import World
    from tidal.training import pipeline

    monkeypatch.setattr(pipeline.World, "current", classmethod(lambda cls: World(0, 2)))
    data = simulate("lotka-volterra", 1, n_obs=(16, 16), noise=0.0, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"search \(--discover\) train in one "
                                                   r"process; run them without torchrun"):
        train_run(data, tmp_path / "run", discover=True, config=TrainConfig(epochs=3))
    assert not (tmp_path / "run").exists()


def test_a_discovered_run_reports_and_refuses_resume(tmp_path) -> None:
    """End to end on one noise-free series: the run records what was found, the report shows
    it, a kept formula is refitted by least squares, and --resume (whose checkpoint is the
    network's) is refused with what to do."""
    data = simulate("lotka-volterra", 1, n_obs=(16, 16), noise=0.0, seed=0)
    train_run(data, tmp_path / "run", config=TrainConfig(epochs=10, seed=0), discover=True,
              progress=False)
    run = load_run(tmp_path / "run")
    found = run.config["data"]["discover"]
    assert found["kept"] in ("formula", "network")
    assert isinstance(run.model, PolynomialODE) == (found["kept"] == "formula")
    html = write_report(tmp_path / "run").read_text()
    assert "Equations discovered (--discover)" in html and "training loss, refitted" in html
    if found["kept"] == "formula":
        assert "polynomial ODE (" in html and "network ?" not in html
        assert run.config["data"]["refit"]["method"] == "least squares"
        assert "the kept formula was fitted after it" in html
    else:
        assert "the kept formula was fitted after it" not in html
    out = CliRunner().invoke(main, ["fit", "--resume", "-o", str(tmp_path / "run")])
    assert out.exit_code != 0 and "--discover" in out.output and "--overwrite" in out.output


def test_a_discovered_run_keeps_files_tidal_did_not_write(tmp_path) -> None:
    """--discover writes through the run directory like any fit: a folder holding someone
    else's file is refused, and --overwrite of a discovered run leaves that file alone."""
    data = simulate("lotka-volterra", 1, n_obs=(16, 16), noise=0.05, seed=0)
    csv = tmp_path / "one.csv"
    write_table(data, csv, time="t", id="id")
    mine = tmp_path / "other" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("keep me")
    args = ["fit", str(csv), "--id", "id", "--epochs", "3", "--width", "4", "--discover",
            "--quiet"]
    out = CliRunner().invoke(main, [*args, "-o", str(mine.parent)])
    assert out.exit_code == 2 and mine.read_text() == "keep me"
    run = tmp_path / "run"
    assert CliRunner().invoke(main, [*args, "-o", str(run)]).exit_code == 0
    (run / "notes.txt").write_text("keep me too")
    out = CliRunner().invoke(main, [*args, "--overwrite", "-o", str(run)])
    assert out.exit_code == 0, out.output
    assert (run / "notes.txt").read_text() == "keep me too" and csv.is_file()


def test_a_term_the_data_do_not_support_is_pruned() -> None:
    """The law plus a spurious y^2 term, fitted to noisy data from the law: at the optimum
    the y^2 coefficient is within two standard errors of zero and is removed; the law's four
    terms are significant and stay. A set of terms already fitted ends the pruning."""
    data = simulate("lotka-volterra", 4, n_obs=(20, 20), noise=0.02, seed=1)
    scaling = Scaling.fit(data)

    def spurious() -> FitResult:
        start = PolynomialODE.from_terms({"dx": {"x": 1.5, "x y": -1.0, "y^2": 0.05},
                                          "dy": {"y": -3.0, "x y": 1.0}}, ("x", "y"))
        model = PolynomialODE(start.vector_field.matrix().detach().numpy(), 2, scaling,
                              state_names=("x", "y")).double()
        return FitResult(model, scaling, [], "finished", "finished", 1, 1.0, TrainConfig(),
                         data.initial_states())

    result, seen = spurious(), set()
    path = list(discovery.optimum_and_pruned(result, data, seen))
    assert [fitted.model.vector_field.coefficients.numel() for fitted, _ in path] == [5, 4]
    assert path[0][0].model is result.model  # the formula itself first, at its optimum
    law = path[-1][0].model.terms()
    assert {out: sorted(terms) for out, terms in law.items()} == {"dx": ["x", "x y"],
                                                                "dy": ["x y", "y"]}
    for out, expected in LV.items():
        for term, value in expected.items():
            assert law[out][term] == pytest.approx(value, rel=0.05)
    assert path[-1][1] >= path[0][1]  # fewer terms: no lower training loss
    assert seen == {discovery._terms_key(path[-1][0].model.vector_field.active.numpy())}
    again = list(discovery.optimum_and_pruned(spurious(), data, seen))
    assert [fitted.model.vector_field.coefficients.numel() for fitted, _ in again] == [5]


def test_a_formula_that_fails_on_the_validation_rows_is_passed_over(monkeypatch) -> None:
    """A formula whose validation solve fails is recorded as such and cannot be kept."""
    result, train, val = _fitted_network(0.0, val_loss=1.0)

    def failing(*args, **kwargs):
        raise SolveFailedError(Status.MAX_STEPS, "on the validation rows")

    monkeypatch.setattr(discovery, "validation_loss", failing)
    kept, record = discovery.discover(result, train, val)
    assert kept is result and record["kept"] == "network"
    assert record["candidates"] and all(
        c["status"] == "failed on the validation rows" and c["val_loss"] is None
        and c["train_loss"] is not None for c in record["candidates"])


def test_ctrl_c_during_a_least_squares_fit_stops_the_search(monkeypatch) -> None:
    result, train, val = _fitted_network(0.5, val_loss=1.0)  # several candidates

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(discovery, "least_squares", interrupted)
    kept, record = discovery.discover(result, train, val)
    assert kept is result and record["kept"] == "network"
    assert [c["status"] for c in record["candidates"]] == ["interrupted"]


def test_a_formula_whose_least_squares_fit_cannot_start_is_recorded(monkeypatch) -> None:
    result, train, val = _fitted_network(0.0, val_loss=1.0)

    def unsolvable(*args, **kwargs):
        raise InvalidArgumentError("`least_squares`: cannot be solved")

    monkeypatch.setattr(discovery, "least_squares", unsolvable)
    kept, record = discovery.discover(result, train, val)
    assert kept is result and record["kept"] == "network"
    assert [c["status"] for c in record["candidates"]] == [
        "its least-squares fit could not be solved"]
