"""`LatentSDE` against closed forms (the Girsanov KL path term for a constant u, the Gaussian
KL of z_0, the context rule, posterior-then-prior prediction on straight-line drifts), and
`tidal fit --model sde|latent-sde` end to end on a tiny data set (run saved, loaded with
weights_only, reported with predictive bands, resumed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tidal
from tidal.cli.main import main
from tidal.models.latent_sde import LatentSDE, _ContextLookup, _gaussian_kl

F64 = torch.float64


class Constant(nn.Module):
    """(t, y) -> a constant [B, out]."""

    def __init__(self, value: float, out: int) -> None:
        super().__init__()
        self.value, self.out = value, out

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full((y.shape[0], self.out), self.value, dtype=y.dtype)


def straight_model(posterior: float, prior: float, diffusion: float) -> LatentSDE:
    """A 2-d latent SDE with constant drifts and diffusion, z_0 ~ N(0, (1e-4)^2) and the
    identity decoder."""
    model = LatentSDE(2, 2, context_size=3, hidden_size=4, width=8, dt=0.05).double()
    model.posterior_drift = Constant(posterior, 2)
    model.prior_drift = Constant(prior, 2)
    model.diffusion = Constant(diffusion, 2)
    with torch.no_grad():
        model.initial.weight.zero_()
        model.initial.bias.copy_(torch.tensor([0.0, 0.0, -50.0, -50.0]))
        model.decoder.weight.copy_(torch.eye(2))
        model.decoder.bias.zero_()
    return model


def test_kl_path_term_is_half_u_squared_times_the_span():
    """u = (f - h) / g = (0.3 - (-0.1)) / 0.5 = 0.8 per component: the path term is
    0.5 * 2 * 0.64 * (t_end - t_0) exactly, on a shared grid and on per-sample grids."""
    model = straight_model(0.3, -0.1, 0.5)
    values = torch.zeros(4, 3, 2, dtype=F64)
    mask = torch.ones(4, 3, 2, dtype=torch.bool)
    shared = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=F64)
    _, log_ratio, _, _ = model.posterior_path(shared, values, mask, seed=0)
    assert torch.allclose(log_ratio, torch.full((3,), 0.64 * 1.0, dtype=F64), rtol=1e-12)
    own = torch.tensor([[0.0, 1.0, 2.0], [0.3, 1.5, 2.5], [0.6, 1.9, 2.6], [0.7, 2.0, 4.0]],
                       dtype=F64)
    _, log_ratio, _, _ = model.posterior_path(own, values, mask, seed=0)
    assert torch.allclose(log_ratio, 0.64 * (own[-1] - own[0]), rtol=1e-12)


def test_per_sample_times_padded_with_a_repeated_last_time_and_a_single_row():
    """A series padded by repeating its last time (the documented padding) follows its own
    span: the path term is 0.64 (t_last - t_0), z moves by 0.3 per unit time; one row gives
    no path term. (Padding raised sdeint's 'duplicate times', one row 'at least two
    times'.)"""
    model = straight_model(0.3, -0.1, 0.5)
    values = torch.zeros(4, 2, 2, dtype=F64)
    mask = torch.ones(4, 2, 2, dtype=torch.bool)
    times = torch.tensor([[0.0, 0.0], [0.5, 0.4], [1.0, 1.0], [2.0, 1.0]], dtype=F64)
    mask[3, 1] = False
    z, log_ratio, _, _ = model.posterior_path(times, values, mask, seed=0)
    assert torch.allclose(log_ratio, torch.tensor([0.64 * 2.0, 0.64 * 1.0], dtype=F64),
                          rtol=1e-5)
    z, _, _, _ = straight_model(0.3, 0.3, 1e-6).posterior_path(times, values, mask, seed=0)
    assert torch.allclose(z[:3, 1, 0], 0.3 * times[:3, 1], atol=1e-3)
    assert torch.isfinite(model.loss(times, values, mask, seed=0))
    samples = model.sample(times, values, mask, times, 2, observation_noise=False)
    assert torch.isfinite(samples).all()
    _, log_ratio, _, _ = model.posterior_path(times[:1], values[:1], mask[:1], seed=0)
    assert torch.equal(log_ratio, torch.zeros(2, dtype=F64))
    assert torch.isfinite(model.loss(times[:1], values[:1], mask[:1], seed=0))


def test_values_of_another_dtype_or_nan_where_observed_are_named():
    """They raised torch's dtype error from inside the GRU, and 'sdeint(y0=...) contains
    NaN'."""
    model = LatentSDE(2, 2, context_size=3, hidden_size=4, width=8, dt=0.1)
    times = torch.linspace(0, 1, 3)
    values, mask = torch.zeros(3, 2, 2, dtype=F64), torch.ones(3, 2, 2, dtype=torch.bool)
    with pytest.raises(tidal.InvalidArgumentError, match=r"LatentSDE\(values\)` is torch.float"):
        model.loss(times, values, mask)
    values = values.float()
    values[1, 1, 1] = math.nan
    with pytest.raises(tidal.InvalidArgumentError, match=r"NaN or infinite where the mask"):
        model.loss(times, values, mask)
    mask[1, 1, 1] = False
    assert torch.isfinite(model.loss(times, values, mask, seed=0))


def test_sample_counts_and_listed_target_times():
    """n_samples=0 raised torch's reshape error, 2.0 randn's TypeError; target times as a
    list an AttributeError (now the tensor of them)."""
    model = straight_model(0.3, 0.3, 1e-6)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    values, mask = torch.zeros(3, 2, 2, dtype=F64), torch.ones(3, 2, 2, dtype=torch.bool)
    for count in (0, 2.0):
        with pytest.raises(tidal.InvalidArgumentError, match=r"sample\(n_samples="):
            model.sample(times, values, mask, times, count)
    listed = model.sample(times, values, mask, [0.0, 0.5, 1.0], 2, observation_noise=False)
    assert torch.equal(listed, model.sample(times, values, mask, times, 2,
                                            observation_noise=False))


def test_initial_kl_matches_torch_distributions():
    mean, std = torch.randn(5, 3, dtype=F64), torch.rand(5, 3, dtype=F64) + 0.1
    prior_mean, prior_std = torch.randn(3, dtype=F64), torch.rand(3, dtype=F64) + 0.2
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(prior_mean, prior_std))
    assert torch.allclose(_gaussian_kl(mean, std, prior_mean, prior_std), reference.sum(-1))


def test_context_is_that_of_the_first_row_strictly_after_t():
    times = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    context = torch.tensor([[[10.0]], [[20.0]], [[30.0]]], dtype=F64)  # [K, B=1, C=1]
    lookup = _ContextLookup(times, context)
    for t, expected in ((0.0, 20.0), (0.5, 20.0), (1.0, 30.0), (2.0, 30.0), (7.0, 30.0)):
        assert lookup(torch.tensor(t, dtype=F64)).item() == expected
    per_sample = _ContextLookup(torch.tensor([[0.0, 0.0], [1.0, 3.0], [2.0, 4.0]], dtype=F64),
                                torch.arange(6, dtype=F64).reshape(3, 2, 1))
    assert per_sample(torch.tensor([0.5, 3.5], dtype=F64)).flatten().tolist() == [2.0, 5.0]


def test_prediction_follows_the_posterior_until_the_last_context_time_then_the_prior():
    """Posterior drift -1, prior drift +1, diffusion 1e-6: z(T) = -(t_last - t_0) + (T -
    t_last) for each sample's own last context time."""
    model = straight_model(-1.0, 1.0, 1e-6)
    times = torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 1.0]], dtype=F64)
    values = torch.zeros(3, 2, 2, dtype=F64)
    mask = torch.ones(3, 2, 2, dtype=torch.bool)
    mask[2, 1] = False  # sample 1's last observed context time is 1.0 (row 1)
    targets = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    samples = model.sample(times, values, mask, targets, 4, observation_noise=False)
    assert samples.shape == (3, 4, 2, 2)
    expected = torch.tensor([-1.0 + 2.0, -1.0 + 2.0], dtype=F64)  # t_last = 1 for both
    assert torch.allclose(samples[-1, :, :, 0], expected.expand(4, 2), atol=1e-3)
    early = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.5, 0.5]], dtype=F64)
    samples = model.sample(early, values, mask, targets, 2, observation_noise=False)
    assert torch.allclose(samples[-1, :, :, 0], torch.tensor(-0.5 + 2.5, dtype=F64),
                          atol=1e-3)


def test_a_series_context_does_not_depend_on_the_series_batched_with_it():
    """Series 0 on its own times, and on a shared grid with a series observed later: the same
    context at its rows and the same q(z_0), to round-off (the backward GRU used to carry
    series 0's state from the grid's end through its blank rows first)."""
    torch.manual_seed(1)
    model = LatentSDE(2, 3, context_size=4, hidden_size=5, width=8, dt=0.1).double()
    times = torch.tensor([0.0, 0.3, 0.4, 1.0, 1.6, 2.5], dtype=F64)
    values = torch.randn(6, 2, 2, dtype=F64)
    mask = torch.ones(6, 2, 2, dtype=torch.bool)
    mask[4:, 0] = mask[2, 0, 1] = False  # series 0 ends at 1.0
    together = model.context(times, values, mask)
    alone = model.context(times[:4], values[:4, :1], mask[:4, :1])
    torch.testing.assert_close(together[:4, :1], alone, rtol=0, atol=1e-12)
    for got, expected in zip(model.posterior_initial(together), model.posterior_initial(alone)):
        torch.testing.assert_close(got[:1], expected, rtol=0, atol=1e-12)


def test_elbo_gives_finite_gradients_to_every_parameter_and_bad_input():
    torch.manual_seed(0)
    model = LatentSDE(2, 3, context_size=4, hidden_size=5, width=8, dt=0.1).double()
    times = torch.tensor([0.0, 0.3, 0.4, 1.0], dtype=F64)
    values = torch.randn(4, 5, 2, dtype=F64)
    mask = torch.rand(4, 5, 2) > 0.3
    loss = model.loss(times, values, mask, seed=1)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters())
    with pytest.raises(tidal.InvalidArgumentError, match=r"LatentSDE\(dt=0"):
        LatentSDE(2, 2, dt=0)
    with pytest.raises(tidal.InvalidArgumentError, match="target_times"):
        model.sample(times, values, mask, times + 1, 2)


def ou_csv(path, trajectories: int = 8, seed: int = 0) -> None:
    """Irregular noisy Ornstein-Uhlenbeck observations (exact transitions) as a CSV."""
    rng = np.random.default_rng(seed)
    rows = ["id,t,x"]
    for k in range(trajectories):
        times = np.sort(rng.uniform(0, 4, 11))
        times[0] = 0.0
        x = rng.normal(0, 0.5)
        previous = 0.0
        for t in times:
            decay = math.exp(-(t - previous))
            x = x * decay + 0.5 * math.sqrt((1 - decay ** 2) / 2) * rng.normal()
            previous = t
            rows.append(f"{k},{t},{x + 0.05 * rng.normal()}")
    path.write_text("\n".join(rows) + "\n")


def fit(tmp_path, monkeypatch, kind: str) -> tuple[object, object]:
    monkeypatch.setattr("tidal.report.sde.SAMPLES", 50)  # fewer paths and grid points:
    monkeypatch.setattr("tidal.report.sde.GRID_POINTS", 20)  # a cheaper report
    data, run = tmp_path / "ou.csv", tmp_path / kind
    ou_csv(data)
    done = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "--model", kind,
                                     "--epochs", "3", "--width", "8", "--quiet", "--split-by",
                                     "trajectory", "--val", "0.25", "--test", "0.25",
                                     "-o", str(run)])
    return done, run


def test_fit_latent_sde_from_the_command_line(tmp_path, monkeypatch):
    """Saved, loaded (weights_only), reported with bands, resumed to a new total."""
    from tidal.training.sde_run import load_sde_run

    done, run = fit(tmp_path, monkeypatch, "latent-sde")
    assert done.exit_code == 0, done.output
    assert "coverage of the 90% band" in done.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["held_out_points"] == 20 and 0 <= metrics["coverage_90"] <= 1
    assert (run / "bands.png").stat().st_size > 0 and (run / "report.html").is_file()
    assert isinstance(load_sde_run(run).model, LatentSDE)
    more = CliRunner().invoke(main, ["fit", "--resume", "--epochs", "4", "--quiet",
                                     "-o", str(run)])
    assert more.exit_code == 0, more.output
    assert json.loads((run / "config.json").read_text())["fit"]["epochs"] == 4


def test_fit_neural_sde_from_the_command_line(tmp_path, monkeypatch):
    from tidal.models import NeuralSDE
    from tidal.training.sde_run import load_sde_run

    done, run = fit(tmp_path, monkeypatch, "sde")
    assert done.exit_code == 0, done.output
    assert json.loads((run / "metrics.json").read_text())["held_out_points"] == 20
    loaded = load_sde_run(run)
    assert isinstance(loaded.model, NeuralSDE)
    assert loaded.model.dt == pytest.approx(loaded.config["options"]["dt"])
    again = CliRunner().invoke(main, ["report", str(run)])
    assert again.exit_code == 0 and "coverage of the 90% band" in again.output
    wrong = CliRunner().invoke(main, ["predict", str(run), "--y0", "0", "--t", "0,1"])
    assert wrong.exit_code == 2 and "tidal report" in wrong.output
    # times that do not start at the trajectory's first observation were solved from it
    # silently, as if observed there; n_samples=0 failed inside sdeint
    data = loaded.data("test")
    start = [t[0] + np.array([0.5, 1.0]) for t in data.times]
    with pytest.raises(tidal.InvalidArgumentError, match="start at its trajectory's first"):
        loaded.forecast_samples(data, 2, times=start)
    with pytest.raises(tidal.InvalidArgumentError, match="one array per trajectory"):
        loaded.forecast_samples(data, 2, times=start[:1])
    with pytest.raises(tidal.InvalidArgumentError, match=r"n_samples=0"):
        loaded.forecast_samples(data, 0)


def test_train_sde_run_refuses_bad_arguments_before_making_the_folder(tmp_path):
    """Dicts for data/options/config gave AttributeErrors, split=0.2 a TypeError, width=0
    was accepted, latent_size=0 silently meant the number of states."""
    from tidal.data import Trajectories
    from tidal.training.config import TrainConfig
    from tidal.training.sde_run import SDEOptions, train_sde_run

    data = Trajectories([np.linspace(0, 1, 5)] * 3, [np.zeros((5, 1))] * 3)
    good = {"data": data, "options": SDEOptions(width=8), "config": TrainConfig(epochs=3)}
    for change, pattern in [({"data": {}}, r"train_sde_run\(data=...\)` must be a Traj"),
                            ({"options": {}}, r"options=...\)` must be a SDEOptions"),
                            ({"config": {}}, r"config=...\)` must be a TrainConfig"),
                            ({"split": 0.2}, r"split=0.2\)"),
                            ({"split": (-0.1, 0.1)}, r"split=\(-0.1, 0.1\)\)")]:
        with pytest.raises(tidal.InvalidArgumentError, match=pattern):
            train_sde_run(run_dir=tmp_path / "run", progress=False, **{**good, **change})
        assert not (tmp_path / "run").exists()
    for name in ("width", "latent_size", "hidden_size"):
        with pytest.raises(tidal.InvalidArgumentError, match=rf"SDEOptions\({name}=0\)"):
            SDEOptions(**{name: 0})


def test_fit_sde_refuses_options_that_do_not_apply(tmp_path):
    data = tmp_path / "ou.csv"
    ou_csv(data, trajectories=3)
    done = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "--model", "sde",
                                     "--ensemble", "3", "-o", str(tmp_path / "run")])
    assert done.exit_code == 2 and "--ensemble" in done.output
    assert "Traceback" not in done.output
