"""The refit on the validation observations after a split in time (`tidal.training.refit`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories, simulate
from tidal.models import NeuralODE
from tidal.training import TrainConfig, train_run
from tidal.training.fit import FitResult, fit
from tidal.training.refit import refit, refit_config
from tidal.training.time_split import split_in_time

RATE = 0.7


class Decay(nn.Module):
    """y' = a y with one learned rate a."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * y


def _decay_data(test_value: float) -> Trajectories:
    """exp(-RATE t) at 16 times on [0, 4], exactly; the last 2 rows (the test part of a
    1/8 + 1/8 split in time) replaced by `test_value`."""
    times = np.linspace(0.0, 4.0, 16)
    values = np.exp(-RATE * times)[:, None]
    values[-2:] = test_value
    return Trajectories([times], [values])


def test_the_refit_fits_the_validation_rows_and_never_sees_the_test_rows():
    # the test rows are wildly off the decay: a refit that used them could not recover RATE
    train, val, test = split_in_time(_decay_data(test_value=5.0), 0.125, 0.125)
    assert [len(part.times[0]) for part in (train, val, test)] == [12, 3, 3]
    model = NeuralODE(Decay(-0.6))
    config = TrainConfig(epochs=300, lr=0.1, learn_initial_states=False)
    before = FitResult(model, Scaling((0.0,), (1.0,)), [], "finished", "trained", 300, 0.1,
                       config, np.array([[1.0]]))
    done = refit(before, train, val, before.scaling)
    assert done is not None
    after, record = done
    # 30 Adam steps at lr <= 0.01 take the rate from 0.1 off to within 0.02 (the test rows'
    # growth would pull it above 0)
    assert after.model.vector_field.a.item() == pytest.approx(-RATE, abs=0.02)
    assert model.vector_field.a.item() == -0.6  # the chosen model is left as it was
    tuned = refit_config(config)
    assert record == {"epochs": 30, "lr": pytest.approx(0.01),
                      "observations": "training and validation"}
    assert (tuned.epochs, tuned.horizons, tuned.shooting_segments, tuned.patience) == (
        30, (1.0,), 1, None)
    assert "then fine-tuned on the training and validation observations for 30 epochs" in (
        after.message)
    # validation by whole trajectories does not continue the training series: no refit
    other = Trajectories([np.linspace(0, 1, 5)], [np.ones((5, 1))], ids=["other"])
    assert refit(before, train, other, before.scaling) is None


def test_fit_starts_the_estimated_initial_states_where_it_is_told():
    data = Trajectories([np.linspace(0.0, 1.0, 6)], [np.exp(-np.linspace(0.0, 1.0, 6))[:, None]])
    scaling = Scaling((0.0,), (1.0,))
    start = np.array([[1.25]])
    result = fit(NeuralODE(Decay(-1.0)), data, config=TrainConfig(epochs=1, lr=1e-12,
                                                                   horizons=(1.0,)),
                 scaling=scaling, progress=False, initial_states=start)
    np.testing.assert_allclose(result.initial_states, start, atol=1e-9)
    with pytest.raises(InvalidArgumentError, match="one initial state per training"):
        fit(NeuralODE(Decay(-1.0)), data, config=TrainConfig(epochs=1, horizons=(1.0,)),
            scaling=scaling, progress=False, initial_states=np.ones((2, 1)))


@pytest.mark.parametrize("refit_on", [None, False])
def test_one_series_is_refitted_by_default_and_the_run_records_it(tmp_path, refit_on):
    data = simulate("lotka-volterra", 1, n_obs=16, seed=0)
    epochs = 10 if refit_on is None else 2
    train_run(data, tmp_path / "run", config=TrainConfig(epochs=epochs, horizons=(1.0,)),
              progress=False, refit=refit_on)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    if refit_on is None:
        assert config["data"]["refit"] == {"epochs": 1, "lr": pytest.approx(1e-3),
                                           "observations": "training and validation"}
        assert "then fine-tuned" in config["fit"]["message"]
        assert config["train"]["epochs"] == epochs  # the run's own settings, as trained
    else:
        assert "refit" not in config["data"]


def test_resuming_a_refitted_run_refits_it_again(tmp_path):
    from tidal.training import resume_run

    data = simulate("lotka-volterra", 1, n_obs=16, seed=0)
    train_run(data, tmp_path / "run", config=TrainConfig(epochs=4, horizons=(1.0,)),
              progress=False)
    result = resume_run(tmp_path / "run", epochs=6, progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["refit"]["observations"] == "training and validation"
    assert config["fit"]["epochs"] == 6 and "then fine-tuned" in result.message


def test_fit_no_refit_keeps_the_chosen_model_of_one_series(tmp_path):
    from click.testing import CliRunner

    from tidal.cli.main import main
    from tidal.data.io import write_table

    write_table(simulate("lotka-volterra", 1, n_obs=16, seed=0), tmp_path / "one.csv")
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "one.csv"), "--id", "id", "-o",
                                       str(tmp_path / "run"), "--epochs", "3", "--quiet",
                                       "--no-refit"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "refit" not in config["data"] and "fine-tuned" not in config["fit"]["message"]
