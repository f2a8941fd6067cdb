"""Small data (issue 19): holding out in time, ensembles and their predictive bands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch
from click.testing import CliRunner

from tidal.cli.main import main
from tidal.data import Scaling, Trajectories, simulate
from tidal.data.collocation import derivative_estimates
from tidal.models import Ensemble
from tidal.models.ensemble import mixture_quantiles
from tidal.training import load_run
from tidal.training.time_split import TIME_SPLIT_BELOW, split_in_time, split_kind

TINY = ["--epochs", "4", "--horizons", "0.5,1.0", "--width", "8", "--depth", "1", "--quiet"]


def test_split_in_time_cuts_each_series_and_starts_held_out_parts_before_them():
    t = np.arange(16.0)
    values = np.stack([t, -t], 1)
    values[5, 1] = np.nan  # a partly observed row still counts as observed
    data = Trajectories([t, t[:8]], [values, values[:8]], ids=["a", "b"])
    train, val, test = split_in_time(data, 0.125, 0.25)
    # a: 16 rows -> 2 validate, 4 test, 10 train; b: 8 rows -> 1, 2, 5
    assert [list(x) for x in train.times] == [list(range(10)), list(range(5))]
    assert [list(x) for x in val.times] == [[9, 10, 11], [4, 5]]
    assert [list(x) for x in test.times] == [[11, 12, 13, 14, 15], [5, 6, 7]]
    assert val.ids == test.ids == ("a", "b")
    np.testing.assert_array_equal(test.values[0], values[11:])


def test_split_in_time_refuses_series_too_short_to_train_on():
    data = Trajectories([np.arange(3.0)], [np.ones((3, 1))], ids=["short"])
    with pytest.raises(ValueError, match="Trajectory 'short' has 3 observed times"):
        split_in_time(data, 0.25, 0.25)
    assert split_in_time(data, 0.0, 0.25)[1] is None


def test_auto_splits_in_time_below_the_threshold():
    assert split_kind(TIME_SPLIT_BELOW - 1, "auto") == "time"
    assert split_kind(TIME_SPLIT_BELOW, "auto") == "trajectory"
    assert split_kind(3, "trajectory") == "trajectory"
    with pytest.raises(ValueError, match="split_by='rows'"):
        split_kind(3, "rows")


@pytest.mark.parametrize("q", [0.05, 0.5, 0.95])
def test_mixture_quantiles_match_the_normal_and_the_mixture_cdf(q):
    centres = np.array([[0.0, 1.0], [2.0, 1.0]])  # [K = 2, 2 points]
    sd = np.array([0.5, 2.0])
    found = mixture_quantiles(centres, sd, [q])[0]
    cdf = np.mean([scipy.stats.norm.cdf(found, c, sd) for c in centres], axis=0)
    np.testing.assert_allclose(cdf, q, atol=1e-12)
    # one member: the normal's own quantile
    np.testing.assert_allclose(mixture_quantiles(centres[:1], sd, [q])[0],
                               scipy.stats.norm.ppf(q, centres[0], sd), rtol=1e-12, atol=1e-12)
    # no noise: the members' empirical quantiles
    np.testing.assert_allclose(mixture_quantiles(centres, 0.0, [q])[0],
                               np.quantile(centres, q, axis=0))


@pytest.mark.parametrize("quantiles", [[1.5], [-0.1], [0.0], [1.0], [50], [float("nan")], 0.5,
                                       []])
def test_quantile_levels_outside_zero_one_are_refused(quantiles):
    """They raised numpy's 'Quantiles must be in the range [0, 1]' from inside the loop, or
    (0 and 1, with noise) gave the bisection's bracket, 10 sd beyond the members, as a
    quantile; a bare number a TypeError."""
    centres = np.array([[0.0, 1.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"mixture_quantiles\(quantiles=.*strictly between"):
        mixture_quantiles(centres, np.array([0.5, 2.0]), quantiles)


def test_ensemble_members_of_other_kinds_or_sizes_are_refused():
    """Members of different state sizes failed at the first prediction with torch's 'mat1
    and mat2 shapes cannot be multiplied'; a network that is not a NeuralODE with an
    AttributeError; a generator of members with a TypeError."""
    from tidal._errors import InvalidArgumentError
    from tidal.models import NeuralODE
    from tidal.nn import MLP

    small, large = NeuralODE(MLP(2, width=4, depth=1)), NeuralODE(MLP(3, width=4, depth=1))
    with pytest.raises(InvalidArgumentError, match=r"different sizes \[2, 3\]"):
        Ensemble([small, large])
    with pytest.raises(InvalidArgumentError, match="member 0 is a MLP"):
        Ensemble([MLP(2)])
    with pytest.raises(InvalidArgumentError, match="member 0 is a Ensemble"):
        Ensemble([Ensemble([small])])
    assert len(Ensemble(m for m in (small, small)).members) == 2


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    data = folder / "data.csv"
    assert invoke("simulate", "lotka-volterra", "--trajectories", "4", "--obs", "10", "-o",
                  str(data)).exit_code == 0
    result = invoke("fit", str(data), "--id", "id", "-o", str(folder / "run"), "--ensemble", "3",
                    *TINY)
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_an_ensemble_run_predicts_the_members_mean(ensemble_run):
    path, output = ensemble_run
    run = load_run(path)
    assert isinstance(run.model, Ensemble) and len(run.model.members) == 3
    assert run.model.seeds == [0, 1000, 2000]
    first = [m.vector_field.net[0].weight for m in run.model.members]
    assert not torch.equal(first[0], first[1])  # different seeds, different members
    y0, ts = np.array([1.5, 1.0]), np.linspace(0, 5, 7)
    scaled = run.scaling.scale_values(torch.as_tensor(y0, dtype=run.dtype))
    with torch.no_grad():
        each = [run.scaling.unscale_values(m(scaled, torch.as_tensor(ts))).numpy()
                for m in run.model.members]
    np.testing.assert_allclose(run.predict(y0, ts), np.mean(each, axis=0), rtol=1e-12)
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["type"] == "Ensemble" and config["model"]["members"] == 3
    assert config["data"]["split"] == "time"  # 4 trajectories: held out in time
    assert "held out in time, not by trajectory" in output
    assert "ensemble of 3 members (3 finished)" in output
    # held out in time: members on bootstrap resamples by default, and the band is their
    # spread and the noise, not rescaled
    assert config["model"]["bootstrap"] is True
    assert "band_calibration" not in config["model"] and run.model.band_calibration is None
    assert ("model: ensemble of 3 members (mean and 5-95% band), each on a bootstrap resample: "
            "neural ODE (MLP 8 x 1") in output
    from tidal.report.build import band_caption

    assert "bootstrap resample of the training series; the band is their spread, widened for " \
        "their number (the truth as one more member), and the noise, not rescaled" \
        in band_caption(run.model)


@pytest.mark.parametrize("source, said", [(None, "calibrated on validation data"),
                                          ("out-of-bag", "calibrated out of bag")])
def test_runs_saved_with_a_calibrated_band_still_load(ensemble_run, tmp_path, source, said):
    """A band_calibration entry without "source" (written before it existed) is validation
    data's; one from out-of-bag series (written before the eighth session) is read as such."""
    import shutil

    from tidal.report.build import band_caption

    copy = tmp_path / "run"
    shutil.copytree(ensemble_run[0], copy)
    config = json.loads((copy / "config.json").read_text())
    calibration = {"scale": 1.25, "points": 40, "data": "the validation rows"}
    config["model"]["band_calibration"] = {**calibration, **({"source": source} if source
                                                             else {})}
    (copy / "config.json").write_text(json.dumps(config))
    caption = band_caption(load_run(copy).model)
    assert said in caption and "scaled by 1.25" in caption and "40" in caption


def test_a_damaged_band_calibration_is_refused_on_loading(ensemble_run, tmp_path):
    import shutil

    from tidal._errors import InvalidArgumentError

    path, _ = ensemble_run
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["band_calibration"] = {"scale": -1.0, "points": 40, "data": "rows"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgumentError, match=r"band_calibration\.scale"):
        load_run(copy)


def test_predict_gives_the_band_of_an_ensemble(ensemble_run):
    path, _ = ensemble_run
    result = invoke("predict", str(path), "--y0", "1.5,1.0", "--t", "0:4:1")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "t,x,y,x_q05,y_q05,x_q95,y_q95"
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert (rows[:, 3:5] < rows[:, 1:3]).all() and (rows[:, 1:3] < rows[:, 5:7]).all()


def test_an_ensemble_cannot_be_resumed_and_bootstrap_needs_an_ensemble(ensemble_run, tmp_path):
    path, _ = ensemble_run
    result = invoke("fit", "--resume", "-o", str(path))
    assert result.exit_code == 2 and "cannot be resumed" in result.output
    data = tmp_path / "d.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8", "-o", str(data))
    result = invoke("fit", str(data), "--id", "id", "-o", str(tmp_path / "r"), "--bootstrap",
                    *TINY)
    assert result.exit_code == 2 and "add --ensemble K" in result.output


def test_a_run_of_one_trajectory_validates_on_its_last_part(tmp_path):
    data = simulate("lotka-volterra", 1, n_obs=16, seed=0)
    from tidal.training import TrainConfig, train_run

    train_run(data, tmp_path / "run", config=TrainConfig(epochs=2, horizons=(1.0,)),
              progress=False)
    run = load_run(tmp_path / "run")
    assert [len(run.data(s).times[0]) for s in ("train", "val", "test")] == [12, 3, 3]


def test_spline_derivatives_of_a_sampled_sine_are_its_cosine():
    """Noise-free observations: GCV picks little smoothing, and the spline's derivative is
    the analytic one to within 1% of its amplitude away from the ends."""
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 10, 80)) for _ in range(2)]
    values = [np.stack([np.sin(t), 2 * np.cos(t)], 1) for t in times]
    states, rates = derivative_estimates(Trajectories(times, values))
    # on the orbit, d/dt (sin t, 2 cos t) = (cos t, -2 sin t) = (y / 2, -2 x)
    expected = np.stack([states[:, 1] / 2, -2 * states[:, 0]], 1)
    middle = np.concatenate([np.abs(np.linspace(-1, 1, 4 * 80)) < 0.9] * 2)  # not the ends
    np.testing.assert_allclose(rates[middle], expected[middle], atol=0.02)


def test_series_too_short_for_a_spline_give_no_pairs():
    data = Trajectories([np.arange(4.0)], [np.ones((4, 1))])
    states, rates = derivative_estimates(data)
    assert states.shape == rates.shape == (0, 1)


def test_prefit_moves_the_field_to_the_estimated_rates():
    """Prefitting takes the network's field on the oscillator's data from a random one (error
    ~100% of the true field's size) to within 20% of the true field (x' = v, v' = -4 x -
    0.4 v): spline derivatives from 30-40 samples over three periods are good to ~10%, worse
    at the series' ends."""
    from test_fit_warnings import OSCILLATOR
    from tidal.models import NeuralODE
    from tidal.nn import MLP
    from tidal.training.collocation import prefit

    data = simulate(OSCILLATOR, 6, n_obs=(30, 40), noise=0.01, seed=0)
    scaling = Scaling.fit(data)
    torch.manual_seed(0)
    model = NeuralODE(MLP(2, width=32, depth=2)).to(torch.float64)
    states, _ = derivative_estimates(data)
    y = torch.as_tensor(states)

    def field_error() -> float:
        with torch.no_grad():
            learned = model.vector_field(torch.zeros(()), scaling.scale_values(y))
        learned = learned.numpy() * np.asarray(scaling.state_scale)
        true = OSCILLATOR.vector_field(torch.zeros(()), y).numpy()
        return float(np.sqrt(np.mean((learned - true) ** 2)) / np.sqrt(np.mean(true ** 2)))

    before = field_error()
    prefit(model, data, scaling)
    assert before > 0.5 and field_error() < 0.2


class _Decay(torch.nn.Module):
    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y


def test_band_coverage_of_a_calibrated_ensemble_is_nominal():
    """Members that all follow the true flow y0 exp(-t) and carry the true noise sd: the 90%
    band is exactly the normal's 5-95% interval around the truth, so it holds 90% of fresh
    noisy observations (2000 of them: binomial sd 0.7%); with half the noise sd it holds
    P(|z| < 1.645 / 2) = 58.9%."""
    from types import SimpleNamespace

    from tidal.models import NeuralODE
    from tidal.report.metrics import band_coverage

    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 3, 100)) for _ in range(10)]
    starts = rng.uniform(1, 2, (10, 2))
    sigma = 0.1
    values = [y0 * np.exp(-t)[:, None] + rng.normal(0, sigma, (100, 2))
              for y0, t in zip(starts, times)]
    data = Trajectories(times, values)
    for noise, expected in ((sigma, 0.9), (sigma / 2, 0.589)):
        model = Ensemble([NeuralODE(_Decay()) for _ in range(3)], observation_noise=[noise] * 2)
        run = SimpleNamespace(model=model.to(torch.float64), dtype=torch.float64,
                              scaling=Scaling((0.0, 0.0), (1.0, 1.0)))
        covered = band_coverage(run, data, starts)
        assert abs(covered - expected) < 0.025, (noise, covered)


def test_an_augmented_ode_carries_an_oscillation_in_its_extra_state():
    """x' = a, a' = -w^2 x from (x0, 0): x = x0 cos(w t), which no 1-D autonomous ODE can
    do; the model returns x only."""
    from tidal.controllers import PIDController
    from tidal.models.augmented import AugmentedNeuralODE

    field = torch.nn.Linear(2, 2, bias=False).to(torch.float64)
    with torch.no_grad():
        field.weight.copy_(torch.tensor([[0.0, 1.0], [-4.0, 0.0]]))
    model = AugmentedNeuralODE(lambda t, z: field(z), 1,
                               controller=PIDController(rtol=1e-9, atol=1e-11))
    ts = torch.linspace(0, 5, 11, dtype=torch.float64)
    x0 = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
    with torch.no_grad():
        x = model(x0, ts)
    assert x.shape == (11, 2, 1)
    np.testing.assert_allclose(x[..., 0].numpy(), np.cos(2 * ts.numpy())[:, None] * [1, -0.5],
                               atol=1e-7)
    with pytest.raises(ValueError, match="augment=0"):
        AugmentedNeuralODE(field, 0)


@pytest.mark.slow
def test_fit_augment_saves_and_reloads_a_run_of_one_observed_state(tmp_path):
    t = np.linspace(0, 6, 24)
    path = tmp_path / "x.csv"
    path.write_text("t,x\n" + "".join(f"{a},{np.cos(2 * a)}\n" for a in t))
    result = invoke("fit", str(path), "-o", str(tmp_path / "run"), "--augment", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert "augmented neural ODE (1 extra states" in result.output
    run = load_run(tmp_path / "run")
    assert run.model.augment == 1 and run.model.vector_field.config()["in_features"] == 2
    assert run.predict(np.array([1.0]), np.linspace(0, 1, 5)).shape == (5, 1)
    result = invoke("fit", str(path), "-o", str(tmp_path / "r2"), "--augment", "1", "--prefit",
                    *TINY)
    assert result.exit_code == 2 and "extra (augmented) states" in result.output


@pytest.mark.slow
def test_auto_trains_the_candidate_with_the_lowest_validation_loss(tmp_path):
    from tidal.training.auto import SPACE, candidates

    drawn = candidates(3, seed=0)
    assert drawn == candidates(3, seed=0) and len({str(c) for c in drawn}) == 3
    assert all(c[k] in SPACE[k] for c in drawn for k in SPACE)
    data = tmp_path / "d.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "10", "-o", str(data))
    result = invoke("fit", str(data), "--id", "id", "-o", str(tmp_path / "run"), "--auto", "2",
                    *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    search = config["data"]["auto"]
    assert [{k: t[k] for k in SPACE} for t in search["trials"]] == candidates(2, seed=0)
    best = min(search["trials"], key=lambda t: t["val_loss"])
    assert search["chosen"] == {k: best[k] for k in SPACE}
    assert config["model"]["vector_field"]["width"] == best["width"]
    assert config["train"]["lr"] == best["lr"]
    result = invoke("fit", str(data), "--id", "id", "-o", str(tmp_path / "r2"), "--auto", "2",
                    "--val", "0", *TINY)
    assert result.exit_code == 2 and "--val" in result.output


def test_the_members_spread_widens_to_that_of_one_more_member():
    """With K members and the truth drawn from the same distribution, the truth's squared
    distance from the members' mean averages sigma^2 (1 + 1/K); the widened members' squared
    deviations about their mean average the same (the raw ones: sigma^2 (K - 1)/K). Start
    draws (member-major rows) are widened member by member; one member is left as it is."""
    from tidal.training.band_calibration import exchangeable

    rng = np.random.default_rng(0)
    for k in (2, 4, 8):
        draws = rng.normal(size=(20000, k + 1))
        members, truth = draws[:, :k], draws[:, k]
        mean = members.mean(axis=1)
        widened = exchangeable(members.T, k).T  # centres [K, trials]
        assert np.allclose(widened.mean(axis=1), mean)
        spread = ((widened - mean[:, None]) ** 2).mean()
        target = ((truth - mean) ** 2).mean()
        assert abs(spread / target - 1) < 0.03, (k, spread, target)
        raw = ((members - mean[:, None]) ** 2).mean()
        assert abs(raw / target - (k - 1) / (k + 1)) < 0.03
    centres = np.arange(12.0).reshape(6, 2)  # 3 members x 2 draws, member-major
    widened = exchangeable(centres, 3)
    by_draw = centres.reshape(3, 2, 2)
    expected = by_draw.mean(0) + np.sqrt(2.0) * (by_draw - by_draw.mean(0))
    np.testing.assert_allclose(widened, expected.reshape(6, 2))
    assert exchangeable(centres, 1) is centres


def test_the_band_from_a_noisy_first_observation_carries_its_noise():
    """Each series predicted from its first observation s + e (e ~ N(0, sigma^2)): the error
    at t is e exp(-t) - noise, of variance sigma^2 (1 + exp(-2t)). With the start's noise in
    the band (draws around the observed start) the 90% band holds ~90% of the later
    observations; with the observed start taken as exact, fewer."""
    from types import SimpleNamespace

    from tidal.models import NeuralODE
    from tidal.report.metrics import band_coverage
    from tidal.training.ensemble import predictive_quantiles

    rng = np.random.default_rng(1)
    sigma = 0.1
    times = [np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 150))]) for _ in range(12)]
    values = [rng.uniform(1, 2, 2) * np.exp(-t)[:, None] + rng.normal(0, sigma, (151, 2))
              for t in times]
    data = Trajectories(times, values)
    model = Ensemble([NeuralODE(_Decay()) for _ in range(2)], observation_noise=[sigma] * 2)
    run = SimpleNamespace(model=model.to(torch.float64), dtype=torch.float64,
                          scaling=Scaling((0.0, 0.0), (1.0, 1.0)))
    covered = band_coverage(run, data, skip_start=True)
    assert abs(covered - 0.9) < 0.03, covered
    inside = np.mean([((v[1:] >= lo[1:]) & (v[1:] <= hi[1:])).mean() for t, v in
                      zip(times, values) for lo, hi in
                      [predictive_quantiles(run, v[0], t, (0.05, 0.95))]])
    assert inside < 0.86, inside


def test_the_vector_field_of_an_ensemble_shows_its_members_spread(ensemble_run):
    from tidal.report.build import _vector_fields

    run = load_run(ensemble_run[0])
    figure = _vector_fields(run, run.training_data())
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:2] == ["learned (members' mean)", "members' spread"]
    mesh = figure.axes[1].collections[0]
    assert figure.axes[-1].get_ylabel().startswith("members' spread of dy/dt")
    # the drawn spread at one grid corner: the sd of the members' vectors, by hand
    observed = np.concatenate(run.training_data().values)
    lo, hi = np.nanmin(observed, axis=0), np.nanmax(observed, axis=0)
    corner = lo - 0.1 * (hi - lo)
    y = run.scaling.scale_values(torch.as_tensor(corner[None], dtype=run.dtype))
    with torch.no_grad():
        rates = np.stack([m.vector_field(torch.zeros((), dtype=run.dtype), y).numpy()[0]
                          for m in run.model.members]) * np.asarray(run.scaling.state_scale)
    expected = np.sqrt(sum(np.var(rates[:, i], ddof=1) for i in range(2)))
    assert np.asarray(mesh.get_array()).reshape(40, 40)[0, 0] == pytest.approx(expected,
                                                                               rel=1e-9)


def test_a_split_in_time_validates_each_series_carried_on_from_its_start():
    from tidal.models import NeuralODE
    from tidal.nn import MLP
    from tidal.training import TrainConfig
    from tidal.training.fit import TrajectoryObjective, continuations

    data = simulate("lotka-volterra", 2, n_obs=16, seed=0)
    train, val, _ = split_in_time(data, 0.125, 0.125)
    continued = continuations(train, val)
    for t, v, c_t in zip(train.times, val.times, continued.times):
        assert list(c_t) == [*t, *v[1:]]  # the start row (the training series' last) once
    torch.manual_seed(0)
    model = NeuralODE(MLP(2, width=8, depth=1)).to(torch.float64)
    objective = TrajectoryObjective(model, train, val, TrainConfig(epochs=3), torch.float64)
    with torch.no_grad():
        objective.initial_offsets.fill_(0.01)
    errors = []
    for i in range(2):  # each series from its first observation + offset, by its own solve
        ts = torch.as_tensor(np.concatenate(([train.times[i][0]], val.times[i][1:])))
        y0 = torch.as_tensor(train.values[i][0] + 0.01)
        with torch.no_grad():
            errors.append((model(y0, ts)[1:].numpy() - val.values[i][1:]).ravel())
    expected = float(np.mean(np.concatenate(errors) ** 2))
    assert objective.validation_loss() == pytest.approx(expected, rel=1e-5)
    # held out by trajectory (other ids): each validation series from its own first state
    other = TrajectoryObjective(model, train[[0]], train[[1]], TrainConfig(epochs=3),
                                torch.float64)
    assert other.val_continued is None


def test_few_training_series_are_fitted_by_multiple_shooting_unless_told_otherwise():
    from tidal.training import TrainConfig
    from tidal.training.pipeline import (
        FEW_SERIES_SEGMENTS,
        SINGLE_SERIES_SEGMENTS,
        ModelOptions,
        small_data_config,
    )

    chosen = small_data_config(TrainConfig(), 1, ModelOptions())
    assert (chosen.shooting_segments, chosen.horizons) == (SINGLE_SERIES_SEGMENTS, (1.0,))
    for n in (2, TIME_SPLIT_BELOW - 1):  # shooting, then the default curriculum
        chosen = small_data_config(TrainConfig(), n, ModelOptions())
        assert (chosen.shooting_segments, chosen.horizons) == (FEW_SERIES_SEGMENTS,
                                                               TrainConfig().horizons)
    for config, n, model in ((TrainConfig(), TIME_SPLIT_BELOW, ModelOptions()),
                             (TrainConfig(horizons=(0.5, 1.0)), 1, ModelOptions()),
                             (TrainConfig(shooting_segments=3), 1, ModelOptions()),
                             (TrainConfig(), 1, ModelOptions(augment=1)),
                             (TrainConfig(), 3, ModelOptions(augment=1)),
                             (TrainConfig(epochs=3), 3, ModelOptions())):  # 4 stages
        assert small_data_config(config, n, model) == config


def _decay_series(rng: np.random.Generator, n: int, sigma: float) -> Trajectories:
    """`n` series y0 exp(-t) (y0 uniform in [1, 2]^2) at 0 and 60 times on (0, 2], each
    entry with N(0, sigma^2) noise."""
    times = [np.concatenate([[0.0], np.sort(rng.uniform(0, 2, 60))]) for _ in range(n)]
    return Trajectories(times, [rng.uniform(1, 2, 2) * np.exp(-t)[:, None]
                                + rng.normal(0, sigma, (61, 2)) for t in times])


def test_conformal_scale_is_the_rank_of_the_split_conformal_quantile():
    from tidal.training.band_calibration import band_scores, conformal_scale

    scores = np.arange(1.0, 11.0)[::-1]  # ceil(11 x 0.9) = 10th smallest of 1..10
    assert conformal_scale(scores, 0.9) == 10.0
    assert conformal_scale(scores, 0.5) == 6.0  # ceil(5.5) = 6th
    assert conformal_scale(scores[-3:], 0.9) == 3.0  # too few for the rank: the largest
    # a band [m - 1, m + 2] needs s = 0.5 for y = m + 1 and s = 3 for y = m - 3
    np.testing.assert_allclose(band_scores(np.array([1.0, -3.0]), np.zeros(2), -np.ones(2),
                                           2 * np.ones(2)), [0.5, 3.0])


@pytest.mark.parametrize("split", ["trajectory", "time"])
def test_a_band_calibrated_on_validation_data_covers_fresh_data_at_nominal(split):
    """Members that follow the true flow y0 exp(-t) with half the true noise sd: predicted
    from a noisy first observation, the error e0 exp(-t) - e_t is normal with twice the
    sd the band assumes, so it holds P(|z| < 1.645 / 2) = 58.9% of fresh observations; the
    band calibrated on validation data is scaled by 2 (the normal's quantile ratio) and holds
    90% of fresh ones (1440 entries: binomial sd 0.8%)."""
    from types import SimpleNamespace

    from tidal.models import NeuralODE
    from tidal.report.metrics import band_coverage
    from tidal.training.ensemble import calibrate_band

    rng = np.random.default_rng(2)
    sigma = 0.1
    model = Ensemble([NeuralODE(_Decay()) for _ in range(2)], observation_noise=[sigma / 2] * 2)
    model = model.to(torch.float64)
    scaling = Scaling((0.0, 0.0), (1.0, 1.0))
    series = _decay_series(rng, 8, sigma)
    if split == "time":  # the validation rows after each series' first 50%
        train, val, _ = split_in_time(series, 0.5, 0.0)
    else:
        train, val = series[[0]], series
    calibration = calibrate_band(model, scaling, train, val)
    assert calibration is not None and calibration["points"] == 8 * 2 * (30 if split == "time"
                                                                         else 60)
    assert calibration["scale"] == pytest.approx(2.0, abs=0.2)
    run = SimpleNamespace(model=model, dtype=torch.float64, scaling=scaling)
    fresh = _decay_series(rng, 12, sigma)
    assert abs(band_coverage(run, fresh, skip_start=True) - 0.589) < 0.04
    model.band_calibration = calibration
    assert abs(band_coverage(run, fresh, skip_start=True) - 0.9) < 0.03


def test_no_calibration_when_no_finite_factor_holds_the_validation_data():
    """Members with no observation noise and no spread give a band of no width: no factor
    widens it to hold noisy observations, so the band stays uncalibrated (None), and a run
    without validation data has none either."""
    from tidal.models import NeuralODE
    from tidal.training.ensemble import calibrate_band

    model = Ensemble([NeuralODE(_Decay()) for _ in range(2)], observation_noise=[0.0] * 2)
    model = model.to(torch.float64)
    series = _decay_series(np.random.default_rng(3), 2, 0.1)
    scaling = Scaling((0.0, 0.0), (1.0, 1.0))
    assert calibrate_band(model, scaling, series[[0]], series) is None
    assert calibrate_band(model, scaling, series, None) is None


def test_bootstrap_members_validate_on_their_own_series_later_rows():
    """With a split in time, a member on a resample (repeats allowed) gets the same
    resample of the validation rows, so its validation still continues its series."""
    from tidal.training.ensemble import _member_data, bootstrap_picks
    from tidal.training.fit import continuations

    series = _decay_series(np.random.default_rng(5), 5, 0.1)
    train, val, _ = split_in_time(series, 0.25, 0.0)
    picks = bootstrap_picks(5, 7)
    assert len(set(picks.tolist())) < 5  # a resample with repeats
    member_train, member_val = _member_data(train, val, picks)
    assert continuations(member_train, member_val) is not None
    for k, i in enumerate(picks):
        np.testing.assert_array_equal(member_train.values[k], train.values[i])
        np.testing.assert_array_equal(member_val.times[k], val.times[i])
    # validation trajectories of their own (a split by trajectory) are kept whole
    assert _member_data(train, series[[0]], picks)[1] is not None
    assert _member_data(train, series[[0]], picks)[1].ids == series[[0]].ids


def test_an_interrupted_member_ends_the_ensemble(tmp_path, monkeypatch):
    """Ctrl-C while member 2 of 3 trains: that member stops (its best weights kept) and member
    3 is not started; the ensemble holds the two, its status is "interrupted"."""
    import tidal.training.ensemble as ensemble_module
    from tidal.data import read_table
    from tidal.models import NeuralODE
    from tidal.nn import MLP
    from tidal.training import TrainConfig
    from tidal.training.ensemble import EnsembleOptions, fit_ensemble

    assert invoke("simulate", "lotka-volterra", "--trajectories", "4", "--obs", "10", "-o",
                  str(tmp_path / "data.csv")).exit_code == 0
    data = read_table(tmp_path / "data.csv", time="t", id="id")
    real, started = ensemble_module._fit_member, []

    def member(job):
        started.append(job)
        result = real(job)
        if len(started) == 2:
            result.status = "interrupted"
        return result

    monkeypatch.setattr(ensemble_module, "_fit_member", member)
    result = fit_ensemble(lambda seed: NeuralODE(MLP(2, width=8, depth=1)), data[[0, 1, 2]],
                          val=data[[3]], config=TrainConfig(epochs=3),
                          options=EnsembleOptions(members=3), progress=False)
    assert len(started) == 2 and result.status == "interrupted"
    assert len(result.model.members) == 2 and result.model.seeds == [0, 1000]
