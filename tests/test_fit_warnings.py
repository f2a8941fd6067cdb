"""Warnings on a poor fit (tidal.report.warnings), the data-only noise estimate and the
periodogram's peak they rest on. Models here are the exact linear dynamics or deliberately
wrong ones (a tanh network made linear: tanh(eps y) / eps = y to O(eps^2)), so which warnings
must appear is known without training."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
import torch

import tidal
from tidal.data import Scaling, System, Trajectories, simulate
from tidal.data.noise import noise_level
from tidal.data.spectrum import dominant_frequency, half_cycles_observed
from tidal.models import Ensemble, NeuralODE
from tidal.nn import MLP
from tidal.report import evaluate_run
from tidal.report.checks import summary_lines
from tidal.report.warnings import fit_warnings, warnings_json
from tidal.training import TrainConfig, load_run, save_run

W, ZETA = 2.0, 0.1
EPS = 1e-5


def _oscillator(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return torch.stack((y[..., 1], -p["w"] ** 2 * y[..., 0] - 2 * p["zeta"] * p["w"] * y[..., 1]),
                       -1)


OSCILLATOR = System("damped-oscillator", ("x", "v"), {"w": W, "zeta": ZETA}, _oscillator,
                    (0.0, 10.0), ((-1.0, 1.0), (-1.0, 1.0)), ((-1.5, 1.5), (-3.0, 3.0)), None,
                    "x'' + 2 zeta w x' + w^2 x = 0")


def linear_model(w: float, zeta: float) -> NeuralODE:
    """A NeuralODE whose field is (v, -w^2 x - 2 zeta w v) up to O(EPS^2)."""
    return matrix_model([[0.0, 1.0], [-w * w, -2 * zeta * w]])


def matrix_model(matrix: list[list[float]]) -> NeuralODE:
    """A NeuralODE whose field is y -> matrix y (2 states) up to O(EPS^2)."""
    field = MLP(2, width=2, depth=1).to(torch.float64)
    a = torch.tensor(matrix, dtype=torch.float64)
    with torch.no_grad():
        first, last = field.net[0], field.net[2]
        first.weight.copy_(EPS * torch.eye(2))
        first.bias.zero_()
        last.weight.copy_(a / EPS)
        last.bias.zero_()
    return NeuralODE(field, controller=tidal.PIDController(rtol=1e-6, atol=1e-8))


def saved(tmp_path, w: float, zeta: float):
    """The warnings on a run of the linear model (w, zeta) fitted to noisy observations of the
    damped oscillator (w = 2, zeta = 0.1)."""
    data = simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05, seed=3)
    save_run(tmp_path, linear_model(w, zeta), Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "v"]}, train_config=TrainConfig().to_dict(),
             splits={"train": data[[0, 1, 2, 3]], "test": data[[4, 5]]})
    run = load_run(tmp_path)
    return fit_warnings(run, evaluate_run(run))


def test_the_exact_model_raises_no_warning(tmp_path):
    assert saved(tmp_path, W, ZETA) == []


def test_a_wrong_frequency_warns_by_the_spectral_check_and_the_held_out_error(tmp_path):
    found = saved(tmp_path, 4 * W, ZETA)
    kinds = [w.kind for w in found]
    assert kinds.count("frequency") == 2 and "held-out-error" in kinds
    # (and "forecast": at 4x the frequency, v's amplitude is 4x the data's)
    message = next(w for w in found if w.kind == "frequency").line
    assert message.startswith("warning: x oscillates at angular frequency 2.0")
    assert "try --shooting-segments" in message
    # and they end the terminal's summary
    run = load_run(tmp_path)
    metrics = {**evaluate_run(run), "warnings": warnings_json(found)}
    assert summary_lines(metrics, run.config)[-len(found):] == [w.line for w in found]


def test_a_growing_forecast_warns(tmp_path):
    kinds = [w.kind for w in saved(tmp_path, W, -0.15)]
    assert "forecast" in kinds


def test_a_model_that_stopped_oscillating_warns(tmp_path):
    found = saved(tmp_path, W, 3.0)  # overdamped: decays without oscillating
    assert any(w.kind == "frequency" and "does not oscillate" in w.message for w in found)


@pytest.mark.parametrize("sd", [0.02, 0.1])
def test_the_noise_estimate_finds_white_noise_on_a_line(sd):
    """On a straight line the pseudo-residuals are exactly the noise's: the estimate is
    unbiased (mean of e^2 is sd^2), here within 5% with 8000 triples."""
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 10, 400)) for _ in range(20)]
    values = [np.stack([2 * t + 1, -t], 1) + rng.normal(0, sd, (400, 2)) for t in times]
    found = noise_level(Trajectories(times, values))
    np.testing.assert_allclose(found, sd, rtol=0.05)


def test_the_noise_estimate_is_nan_without_three_observations():
    data = Trajectories([[0.0, 1.0]], [[[1.0, np.nan], [2.0, 3.0]]])
    assert np.isnan(noise_level(data)).all()


def test_the_periodogram_peak_is_at_a_sinusoid_frequency():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 20, 60))
    peak = dominant_frequency([(t, np.sin(1.7 * t + 0.3) + 0.1 * rng.normal(size=60))], 20.0,
                              math.pi * 3)
    assert peak is not None
    assert abs(peak.frequency - 1.7) < 0.05 and peak.power > 0.8
    # below 1.5 cycles per span nothing counts as an oscillation
    assert dominant_frequency([(t, np.sin(1.7 * t))], 20.0, 1.5 * 2 * math.pi / 20) is None


def _decay_chain(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return torch.stack((-p["k1"] * y[..., 0], p["k1"] * y[..., 0] - p["k2"] * y[..., 1]), -1)


#: a -> b -> (nothing) with rates 0.03 and 1e-3, observed at log-spaced times (as ROBER is)
DECAY_CHAIN = System("decay-chain", ("a", "b"), {"k1": 0.03, "k2": 1e-3}, _decay_chain,
                     (0.0, 1e4), ((0.5, 1.0), (0.0, 0.2)), ((0.0, 1.0), (0.0, 1.0)), None,
                     "a' = -k1 a, b' = k1 a - k2 b", first_obs=1e-3)


def test_half_cycles_observed_counts_the_cycles_that_hold_an_observation():
    """Period 2 on a span of 10: 10 half-cycles [0, 1), [1, 2), ..., [9, 10]. An even grid of 11
    times fills all of them; the log-spaced 0, 1e-3, 1e-2, 0.1, 1, 10 fill [0, 1), [1, 2) and
    [9, 10]."""
    assert half_cycles_observed([np.linspace(0, 10, 11)], math.pi, 10.0) == 1.0
    log_spaced = np.array([0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0])
    assert half_cycles_observed([log_spaced], math.pi, 10.0) == pytest.approx(0.3)
    assert half_cycles_observed([np.linspace(0, 10, 11), log_spaced], math.pi, 10.0
                                ) == pytest.approx(0.65)
    # a series that ends early fills only its own half-cycles of the common span
    assert half_cycles_observed([np.linspace(0, 1.5, 4)], math.pi, 10.0) == pytest.approx(0.2)


def test_log_spaced_decays_do_not_raise_a_frequency_warning(tmp_path):
    """The exact model of a decay chain observed as ROBER is: its data have a periodogram peak
    above the oscillation threshold (the periodogram alone would call them oscillating), yet
    no warning is raised: most half-cycles of that peak hold no observation."""
    from tidal.report.warnings import OSCILLATION_POWER

    data = simulate(DECAY_CHAIN, 6, n_obs=30, noise=0.01, seed=0)
    span = data.t_span[1] - data.t_span[0]
    observed = [(t, v[:, 0]) for t, v in zip(data.times, data.values)]
    assert dominant_frequency(observed, span, math.pi * 30 / span).power > OSCILLATION_POWER
    save_run(tmp_path, matrix_model([[-0.03, 0.0], [0.03, -1e-3]]), Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["a", "b"]}, train_config=TrainConfig().to_dict(),
             splits={"train": data[[0, 1, 2, 3]], "test": data[[4, 5]]})
    run = load_run(tmp_path)
    assert [w.kind for w in fit_warnings(run, evaluate_run(run))] == []


def ensemble_warnings(tmp_path, members: list[tuple[float, float]],
                      band_scale: float | None = None):
    data = simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05, seed=3)
    calibration = (None if band_scale is None else
                   {"scale": band_scale, "points": 100, "data": "validation"})
    model = Ensemble([linear_model(w, zeta) for w, zeta in members],
                     observation_noise=[0.05, 0.1], band_calibration=calibration)
    save_run(tmp_path, model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "v"]}, train_config=TrainConfig().to_dict(),
             splits={"train": data[[0, 1, 2, 3]], "test": data[[4, 5]]})
    run = load_run(tmp_path)
    return [w.kind for w in fit_warnings(run, evaluate_run(run))]


def test_agreeing_members_raise_no_warning_and_disagreeing_ones_do(tmp_path):
    assert ensemble_warnings(tmp_path / "same", [(W, ZETA), (W, ZETA)]) == []
    kinds = ensemble_warnings(tmp_path / "apart", [(W, ZETA), (W, -0.1)])
    assert "members-disagree" in kinds and "band-explodes" in kinds


def test_the_members_are_compared_over_the_data_span_whatever_the_time_unit(tmp_path):
    """The same two members (one undamped) in a model time 4x the data's (Scaling's
    time_scale 4, the fields 4x faster in it) give the same warnings, with the same numbers,
    as in the data's time: the members are compared over the data's span, not 4x it (where
    the undamped one's amplitude, not the phase, makes the spread)."""
    data = simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05, seed=3)

    def lines(time_scale: float) -> list[str]:
        members = [matrix_model([[0.0, time_scale], [-W * W * time_scale,
                                                     -2 * zeta * W * time_scale]])
                   for zeta in (ZETA, 0.0)]
        path = tmp_path / str(time_scale)
        save_run(path, Ensemble(members, observation_noise=[0.05, 0.1]),
                 Scaling((0.0, 0.0), (1.0, 1.0), time_scale),
                 data={"state_names": ["x", "v"]}, train_config=TrainConfig().to_dict(),
                 splits={"train": data[[0, 1, 2, 3]], "test": data[[4, 5]]})
        run = load_run(path)
        return [w.line for w in fit_warnings(run, evaluate_run(run))]

    same_units = lines(1.0)
    assert any("members disagree" in line for line in same_units)
    assert lines(4.0) == same_units


def test_a_calibrated_band_wider_than_the_data_warns(tmp_path):
    """Exact members: the band is the noise's, +-1.645 sd about the truth (plus the start's
    noise carried along), so its width is about 3.3 x 0.1 x factor = 0.33 x factor for v
    (range about 4): a factor of 2 is informative; a factor of 20 is ~1.6 ranges wide."""
    exact = [(W, ZETA), (W, ZETA)]
    assert "band-uninformative" not in ensemble_warnings(tmp_path / "tight", exact, 2.0)
    assert "band-uninformative" in ensemble_warnings(tmp_path / "wide", exact, 20.0)


def test_a_ude_parameter_the_members_disagree_on_is_flagged():
    from tidal.models.ude import KNOWN_PHYSICS, UDE
    from tidal.report.warnings import _identifiability

    def member(alpha: float) -> UDE:
        return UDE(KNOWN_PHYSICS["lotka-volterra-linear"].equations, None,
                   {"alpha": alpha, "gamma": 0.5})

    assert _identifiability(Ensemble([member(0.3), member(0.31)])) == []
    found = _identifiability(Ensemble([member(0.3), member(0.6)]))
    assert [w.kind for w in found] == ["identifiability"]
    assert "alpha differs between members by 33.3% of its mean (0.300 to 0.600)" in found[0].line


def test_the_exact_model_held_out_in_time_raises_no_warning(tmp_path):
    """The short held-out tails of a split in time do not enter the spectral check (they
    once made the data's peak 1.51 instead of 2)."""
    from tidal.training.time_split import split_in_time

    train, val, test = split_in_time(simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05,
                                              seed=0), 0.125, 0.125)
    save_run(tmp_path, linear_model(W, ZETA), Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "v"], "split": "time", "held_out": [0.125, 0.125]},
             train_config=TrainConfig().to_dict(),
             splits={"train": train, "val": val, "test": test})
    run = load_run(tmp_path)
    assert fit_warnings(run, evaluate_run(run)) == []


def test_a_model_that_misses_the_training_data_warns_without_a_noise_estimate(tmp_path):
    """An overdamped model leaves most of the oscillation's variance unexplained (1 - R^2 on
    the training trajectories); the exact model leaves only the 5% noise's share."""
    from tidal.report.warnings import _unexplained

    data = simulate(OSCILLATOR, 6, n_obs=(20, 40), noise=0.05, seed=3)
    for (w, zeta), warns in (((W, ZETA), False), ((W, 3.0), True)):
        folder = tmp_path / f"{zeta}"
        save_run(folder, linear_model(w, zeta), Scaling((0.0, 0.0), (1.0, 1.0)),
                 data={"state_names": ["x", "v"]}, train_config=TrainConfig().to_dict(),
                 splits={"train": data})
        run = load_run(folder)
        found = _unexplained(evaluate_run(run), data)
        assert bool(found) == warns and all(w.kind == "unexplained" for w in found)
