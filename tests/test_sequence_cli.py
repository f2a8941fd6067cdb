"""`tidal fit --model latent-ode|ode-rnn|cde|gru` end to end on tiny tables: the run directory,
its report, loading it back (weights_only), and the errors of bad input."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tidal.cli.main import main
from tidal.cli.sequence import SEQUENCE_CHOICES
from tidal.data import Trajectories
from tidal.data.sequences import IrregularSeries
from tidal.models.latent_ode import strictly_increasing
from tidal.report.sequence import last_value_mse
from tidal.training.checkpoint import load_checkpoint
from tidal.training.sequence_fit import (
    SEQUENCE_MODELS,
    SequenceOptions,
    build_sequence_model,
    context_mask,
    forecast,
    visible_mask,
)
from tidal.training.sequence_run import load_sequence_run

CHOICES = (0, 2, 5)
TINY = ["--hidden", "4", "--latent", "2", "--width", "8", "--epochs", "2", "--quiet"]


def invoke(*args: str, catch: bool = False):
    return CliRunner().invoke(main, list(args), catch_exceptions=catch)


def sine_table(path, n=9, points=12, seed=0):
    """Series `s0`.. of sin and cos at their own random times, 20% of x blank, labelled by
    their direction of rotation."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        direction = 1 if i % 2 else -1
        for t in np.sort(rng.uniform(0, 4, points)):
            angle = direction * 2 * t + i
            rows.append({"id": f"s{i}", "t": t, "kind": "up" if direction > 0 else "down",
                         "x": np.sin(angle) if rng.random() > 0.2 else np.nan,
                         "y": np.cos(angle)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_choices_are_the_models():
    assert tuple(SEQUENCE_MODELS) == SEQUENCE_CHOICES


@pytest.mark.parametrize("model", ["gru", pytest.param("latent-ode", marks=pytest.mark.slow)])
def test_forecast_run_end_to_end_and_loads_back(tmp_path, model, monkeypatch):
    # the latent ODE's refinement chosen among fewer, shorter runs than tidal's (a test's cost)
    monkeypatch.setattr("tidal.training.sequence_fit.REFINE_CHOICES", CHOICES)
    data = sine_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    result = invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", model,
                    "-o", str(run), *TINY)
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.pt", "checkpoint.pt", "metrics.csv", "metrics.json",
                 "report.html", "fits.png", "data/train.csv", "data/val.csv", "data/test.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert set(metrics["forecast_mse"]) == {"x", "y"}
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    # the kept weights load as plain tensors and are the loaded model's
    loaded = load_sequence_run(run)
    weights = load_checkpoint(run / "model.pt")
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, weights[name])
    bands = "decodings of draws about it" in (run / "report.html").read_text()
    assert bands == (model == "latent-ode")
    if model == "latent-ode":  # the steps toward the posterior's mode, chosen on validation
        fit = json.loads((run / "config.json").read_text())["fit"]
        losses = {int(k): v for k, v in fit["refine_val_loss"].items()}
        assert 0 in losses and set(losses) <= set(CHOICES)
        assert fit["refine"] == min(losses, key=lambda k: losses[k])
        assert f"z0 moved {fit['refine']} steps" in (run / "report.html").read_text() or \
            fit["refine"] == 0
    result = invoke("report", str(run))
    assert result.exit_code == 0 and "forecast MSE x" in result.output
    assert ("chosen on the validation series" in result.output) == (model == "latent-ode")


def test_resume_continues_a_sequence_run_to_a_new_total(tmp_path):
    data = sine_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    assert invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", "gru", "-o",
                  str(run), *TINY).exit_code == 0
    result = invoke("fit", "--resume", "-o", str(run), "--epochs", "4", "--quiet")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["fit"]["epochs"] == 4
    refused = invoke("fit", "--resume", "-o", str(run), "--lr", "0.1", catch=True)
    assert refused.exit_code == 2 and "--lr" in refused.output


def test_classify_run_writes_the_confusion_matrix(tmp_path):
    data = sine_table(tmp_path / "data.csv", n=12)
    run = tmp_path / "run"
    result = invoke("fit", str(data), "--id", "id", "--model", "cde", "--task", "classify",
                    "--label", "kind", "--val", "0.25", "--test", "0.25", "-o", str(run), *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["features"] == ["x", "y"] and config["classes"] == ["down", "up"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.sum(metrics["confusion"]) == metrics["test_series"] == 3
    assert math.isclose(metrics["accuracy"], np.trace(metrics["confusion"]) / 3)
    assert (run / "confusion.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "gru"], "--id"),
    (["--id", "id", "--model", "gru", "--task", "classify"], "--label"),
    (["--id", "id", "--model", "latent-ode", "--task", "classify", "--label", "kind"],
     "latent-ode"),
    (["--id", "id", "--model", "gru", "--horizons", "1.0"], "--horizons"),
    (["--id", "id", "--task", "classify"], "sequence models"),
    (["--id", "id", "--model", "gru", "--context", "1.5"], "context"),
    (["--id", "id", "--model", "cde", "--task", "classify", "--label", "nope"], "nope"),
])
def test_bad_sequence_input_is_one_line(tmp_path, args, message):
    data = sine_table(tmp_path / "data.csv")
    result = invoke("fit", str(data), "-o", str(tmp_path / "run"), *args, "--quiet",
                    catch=True)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_damaged_config_is_refused(tmp_path):
    data = sine_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    assert invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", "gru", "-o",
                  str(run), *TINY).exit_code == 0
    config = json.loads((run / "config.json").read_text())
    config["options"]["hidden"] = -3
    (run / "config.json").write_text(json.dumps(config))
    result = invoke("report", str(run), catch=True)
    assert result.exit_code == 2 and "options.hidden" in result.output
    config["options"]["hidden"] = 4
    config["fit"]["refine"] = "many"  # (the latent ODE's chosen refinement)
    (run / "config.json").write_text(json.dumps(config))
    result = invoke("report", str(run), catch=True)
    assert result.exit_code == 2 and "fit.refine" in result.output


def test_from_trajectories_pads_with_the_last_time_and_an_empty_mask():
    data = Trajectories([[0.0, 1.0, 2.0], [0.5, 3.0]],
                        [[[1.0], [np.nan], [3.0]], [[4.0], [5.0]]])
    series = IrregularSeries.from_trajectories(data)
    assert series.times.tolist() == [[0.0, 0.5], [1.0, 3.0], [2.0, 3.0]]
    assert series.mask[..., 0].tolist() == [[True, True], [False, True], [True, False]]
    assert series.values[..., 0].tolist() == [[1.0, 4.0], [0.0, 5.0], [3.0, 0.0]]
    padded = strictly_increasing(series.times)
    assert bool((padded[1:] > padded[:-1]).all())
    assert torch.equal(padded[:, 0], series.times[:, 0])


def test_context_and_last_value_forecast_against_hand_computation():
    times = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 4.0]], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0], [3.0, 5.0], [4.0, 7.0], [6.0, 0.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True], [True, False], [True, True], [True, False]]
                        ).unsqueeze(-1)
    series = IrregularSeries(times, values, mask)
    seen = context_mask(series, 0.5)  # series 0: t <= 1.5; series 1: t <= 2
    assert seen[..., 0].tolist() == [[True, True], [True, False], [False, False],
                                     [False, False]]
    # series 0 repeats 3 at t = 2, 3 (errors 1, 9); series 1 repeats 2 at t = 4 (error 25)
    assert last_value_mse(values, mask, seen).tolist() == [pytest.approx((1 + 9 + 25) / 3)]
    # interpolation: hidden rows inside the series repeat the last value read before them
    seen = mask.clone()
    seen[1, 0] = seen[2, 1] = False  # hide 3 (after 1: error 4) and 7 (after 2: error 25)
    assert last_value_mse(values, mask, seen).tolist() == [pytest.approx((4 + 25) / 2)]


@pytest.mark.parametrize("model", ["latent-ode", "ode-rnn", "gru", "cde"])
def test_a_series_forecast_does_not_depend_on_the_series_batched_with_it(model):
    """`forecast` of series 0 alone and batched (per-sample grids, as `tidal fit` and `tidal
    predict` build them) with a series that starts earlier, has more rows and reads its
    context later: equal to round-off, also after refinement steps. The latent ODE's encoder
    used to read series 0 from the batch's last context row, through its own rows after its
    context."""
    torch.manual_seed(0)
    options = SequenceOptions(model=model, hidden=4, latent=2, width=8)
    network = build_sequence_model(options, 2, 2, decoder_dt=0.1).double()
    own = torch.tensor([0.5, 0.9, 1.4, 2.0, 2.6, 3.1], dtype=torch.float64)
    longer = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    times = torch.stack([torch.cat([own, own[-1:].expand(3)]), longer], dim=1)
    values = torch.randn(9, 2, 2, dtype=torch.float64)
    mask = torch.ones(9, 2, 2, dtype=torch.bool)
    mask[6:, 0] = mask[1, 0, 1] = False  # series 0: 6 rows, then padding
    both = IrregularSeries(times, values, mask)
    alone = IrregularSeries(times[:6, :1], values[:6, :1], mask[:6, :1])
    seen = context_mask(both, 0.5)  # series 0 reads rows 0-2, series 1 rows 0-4
    for refine in (0, 3) if model == "latent-ode" else (0,):
        torch.testing.assert_close(
            forecast(network, both, seen, refine=refine)[:6, :1],
            forecast(network, alone, context_mask(alone, 0.5), refine=refine),
            rtol=0, atol=1e-12)


def test_interpolation_run_scores_the_hidden_observations(tmp_path):
    data = sine_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    result = invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", "ode-rnn",
                    "--task", "interpolate", "-o", str(run), *TINY)
    assert result.exit_code == 0, result.output
    assert "hidden observations" in (run / "report.html").read_text()
    loaded = load_sequence_run(run)
    test = loaded.series("test")
    hidden = test.mask & ~visible_mask(test, loaded.options)
    assert 0 < int(hidden.sum()) < int(test.mask.sum())


# ---- tidal predict on sequence runs --------------------------------------------------------

def level_table(path, n=12, points=6, seed=0):
    """Series whose class is the sign of their level: x near +3 ("high") or -3 ("low"),
    each at its own random times; the class is readable from any one observation."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level = 3.0 if i % 2 else -3.0
        for t in np.sort(rng.uniform(0, 2, points)):
            rows.append({"id": f"s{seed}_{i}", "t": t, "x": level + rng.normal(0, 0.2),
                         "kind": "high" if level > 0 else "low"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_predict_classifies_new_series_of_a_separable_set(tmp_path):
    run = tmp_path / "run"
    result = invoke("fit", str(level_table(tmp_path / "train.csv")), "--id", "id", "--model",
                    "gru", "--task", "classify", "--label", "kind", "--hidden", "4",
                    "--epochs", "5", "--lr", "0.1", "-o", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    new = level_table(tmp_path / "new.csv", n=10, seed=1)
    out = tmp_path / "predicted.csv"
    result = invoke("predict", str(run), "--data", str(new), "-o", str(out))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    truth = pd.read_csv(new).groupby("id")["kind"].first()
    assert list(table.columns) == ["id", "kind", "p_high", "p_low"]
    assert (table.set_index("id")["kind"] == truth.loc[table["id"]]).all()
    np.testing.assert_allclose(table["p_high"] + table["p_low"], 1.0, rtol=1e-12)


def test_predict_forecasts_in_user_units_and_reads_only_the_past(tmp_path):
    """GRU forecasts: one row per input row, in the user's units (series near 1000), and a
    row's prediction does not change when later rows change (it reads what came before)."""
    data = sine_table(tmp_path / "data.csv")
    table = pd.read_csv(data)
    table["x"] += 1000.0
    table.to_csv(data, index=False)
    run = tmp_path / "run"
    assert invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", "gru", "-o",
                  str(run), *TINY).exit_code == 0
    new = table[table["id"].isin(["s0", "s1"])].copy()
    new.to_csv(tmp_path / "new.csv", index=False)
    result = invoke("predict", str(run), "--data", str(tmp_path / "new.csv"))
    assert result.exit_code == 0, result.output
    first = pd.read_csv(io.StringIO(result.output))
    assert list(first.columns) == ["t", "id", "x", "y"] and len(first) == len(new)
    assert first["x"].between(990, 1010).all() and first["y"].abs().lt(10).all()
    later = new["t"] > new.groupby("id")["t"].transform("median")
    new.loc[later, ["x", "y"]] = new.loc[later, ["x", "y"]] + 50.0
    new.to_csv(tmp_path / "changed.csv", index=False)
    changed = pd.read_csv(io.StringIO(invoke("predict", str(run), "--data",
                                             str(tmp_path / "changed.csv")).output))
    # the first row after the change still reads only unchanged rows
    unchanged = ~later.to_numpy() | ~np.r_[False, later.to_numpy()[:-1]] & later.to_numpy()
    np.testing.assert_allclose(changed[unchanged][["x", "y"]], first[unchanged][["x", "y"]],
                               rtol=1e-12)
    assert not np.allclose(changed[~unchanged][["x", "y"]], first[~unchanged][["x", "y"]])


def test_predict_on_a_sequence_run_refuses_wrong_input(tmp_path):
    data = sine_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    assert invoke("fit", str(data), "--id", "id", "--states", "x,y", "--model", "gru", "-o",
                  str(run), *TINY).exit_code == 0
    pd.read_csv(data).drop(columns=["x"]).to_csv(tmp_path / "no_x.csv", index=False)
    for args, message in ((["--data", str(tmp_path / "no_x.csv")], "no column(s) ['x']"),
                          (["--y0", "1,2", "--t", "0:1:0.5"], "--y0, --t apply to ODE runs"),
                          ([], "give the series to predict with --data")):
        result = invoke("predict", str(run), *args, catch=True)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_classify_check_needs_more_than_the_majority_and_two_classes(tmp_path):
    """Accuracy equal to always guessing the most frequent class fails the check (it said
    "pass" at a margin of 0.00%), and a label column with one class is refused up front."""
    from tidal.report.sequence import sequence_checks

    class Classify:
        options = type("Options", (), {"task": "classify"})()

    level = {"accuracy": 0.5, "majority_accuracy": 0.5, "test_series": 2}
    better = {"accuracy": 1.0, "majority_accuracy": 0.5, "test_series": 2}
    assert not sequence_checks(Classify(), level)[0].passed
    assert sequence_checks(Classify(), better)[0].passed
    rows = ["t,id,x,kind"] + [f"{t},{i},{(t + i) % 3},A" for i in range(6) for t in range(4)]
    data = tmp_path / "one_class.csv"
    data.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "--model", "gru",
                                       "--task", "classify", "--label", "kind", "--epochs", "2",
                                       "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "at least 2 classes" in result.output
    assert not (tmp_path / "run").exists()


def test_refine_is_refused_where_it_does_not_apply(tmp_path):
    """--refine (the latent ODE's steps toward the posterior's mode) with another sequence
    model, with an ODE model, or negative: one-line errors before any training."""
    data = str(sine_table(tmp_path / "data.csv"))
    for args, message in ((["--model", "gru", "--refine", "5"], "--refine applies to --model "
                           "latent-ode, not to --model gru"),
                          (["--refine", "5"], "--refine apply to the sequence models"),
                          (["--model", "latent-ode", "--refine", "-1"], "`refine=-1` must be")):
        result = invoke("fit", data, "--id", "id", "--states", "x,y", *args, "-o",
                        str(tmp_path / "run"), *TINY[4:], catch=True)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "run").exists()
