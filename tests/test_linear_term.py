"""`MLP(linear_term=True)`: f(y) = A y + b + g(y), the affine part exempt from weight decay
(issue 19: a damped oscillation's frequency carried by A where the data say little)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tidal
import tidal.training.run
from tidal.data import Scaling, Trajectories
from tidal.data.collocation import derivative_estimates
from tidal.nn import MLP
from tidal.training.collocation import linear_start
from tidal.training.pipeline import ModelOptions, train_run

#: a damped rotation: eigenvalues -0.2 +- 2i
A = np.array([[-0.2, 2.0], [-2.0, -0.2]])


def test_the_affine_part_adds_to_the_network_and_starts_at_zero() -> None:
    torch.manual_seed(0)
    field = MLP(2, width=8, linear_term=True)
    plain = MLP(2, width=8)
    plain.load_state_dict({k: v for k, v in field.state_dict().items() if k.startswith("net.")})
    y = torch.randn(5, 2)
    torch.testing.assert_close(field(0.0, y), plain(0.0, y), rtol=0, atol=0)  # A = 0, b = 0
    with torch.no_grad():
        field.linear.weight.copy_(torch.tensor(A, dtype=torch.float32))
        field.linear.bias.copy_(torch.tensor([0.5, -1.0]))
    expected = plain(0.0, y) + y @ torch.tensor(A, dtype=torch.float32).T + torch.tensor(
        [0.5, -1.0])
    torch.testing.assert_close(field(0.0, y), expected)
    assert field.undecayed_parameters() == [field.linear.weight, field.linear.bias]
    assert MLP(**field.config()).linear is not None and MLP(2).undecayed_parameters() == []


def _linear_data(n: int = 6) -> Trajectories:
    """Exact solutions of y' = A y from n starts on the unit circle, 15 times on [0, 4]."""
    times = np.linspace(0.0, 4.0, 15)
    values = []
    for k in range(n):
        angle = 2 * np.pi * k / n
        y0 = np.array([np.cos(angle), np.sin(angle)])
        w, v = np.linalg.eig(A)
        coefficients = np.linalg.solve(v, y0)
        values.append(np.real((v * coefficients) @ np.exp(np.outer(w, times))).T)
    return Trajectories([times] * n, values, state_names=["x", "y"])


def _in_user_units(run: tidal.training.run.Run, jacobian: np.ndarray) -> np.ndarray:
    """J_user = S J_scaled S^-1 / time_scale (the scaling is diagonal)."""
    scale = np.asarray(run.scaling.state_scale)
    return scale[:, None] * jacobian / scale[None, :] / run.scaling.time_scale


def test_the_linear_start_is_the_least_squares_fit_of_the_spline_rates() -> None:
    """On exact solutions of y' = A y the splines' rates are nearly exact, so the started
    field (the network's small output plus the fitted affine part) is A y along the data."""
    data = _linear_data()
    scaling = Scaling((0.0, 0.0), (1.0, 1.0))
    model = ModelOptions(width=16, linear_term=True).build(2, seed=0).double()
    assert linear_start(model, data, scaling)
    weight, bias = model.vector_field.linear.weight.detach(), model.vector_field.linear.bias
    states, _ = derivative_estimates(data)
    y = torch.as_tensor(states)
    whole = model.vector_field(torch.zeros(()), y).detach()
    # the fitted field (network + affine part) against the truth along the data
    np.testing.assert_allclose(whole.numpy(), states @ A.T, atol=0.02)
    assert weight.shape == (2, 2) and bias.abs().max() < 0.05


def test_weight_decay_spares_the_affine_part(tmp_path) -> None:
    """Trained on exact linear data with strong weight decay (on the network only), the
    affine part stays the true A and the whole field's Jacobian is A: the network is a
    small correction. The run saves and reloads the term."""
    result = train_run(_linear_data(), tmp_path / "run", progress=False,
                       model=ModelOptions(width=16, linear_term=True),
                       config=tidal.TrainConfig(epochs=30, lr=0.01, weight_decay=1.0,
                                                horizons=(1.0,), patience=None, seed=0))
    run = tidal.load_run(tmp_path / "run")
    field = run.model.vector_field
    assert field.linear is not None
    affine = _in_user_units(run, field.linear.weight.detach().numpy())
    origin = torch.as_tensor(run.scaling.scale_values(np.zeros(2)), dtype=run.dtype)
    whole = _in_user_units(run, torch.autograd.functional.jacobian(
        lambda y: field(torch.zeros((), dtype=run.dtype), y[None])[0], origin).numpy())
    np.testing.assert_allclose(affine, A, atol=0.05)
    np.testing.assert_allclose(whole, A, atol=0.05)
    assert result.status == "finished"


def test_the_option_belongs_to_neural_odes() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match="--linear-term"):
        ModelOptions(kind="hamiltonian", linear_term=True).build(2, seed=0)


def test_the_command_line_records_the_term_and_the_decay(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from tidal.cli.main import main
    from tidal.data import write_table

    write_table(_linear_data(), tmp_path / "data.csv")
    result = CliRunner().invoke(main, [
        "fit", str(tmp_path / "data.csv"), "--id", "id", "--linear-term", "--weight-decay",
        "0.1", "--epochs", "3", "--width", "8", "--quiet", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["vector_field"]["linear_term"] is True
    assert config["train"]["weight_decay"] == 0.1
    assert "neural ODE (MLP 8 x 2, tanh + linear term)" in result.output
    refused = CliRunner().invoke(main, ["fit", str(tmp_path / "data.csv"), "--id", "id",
                                        "--model", "ode-rnn", "--linear-term", "-o",
                                        str(tmp_path / "seq")])
    assert refused.exit_code == 2 and "--linear-term do(es) not apply" in refused.output


def test_the_default_is_on_for_a_few_series_only() -> None:
    from tidal.training.pipeline import with_small_data_model

    def decided(n: int, **options: object) -> bool | None:
        return with_small_data_model(ModelOptions(**options), n).linear_term

    assert decided(6) is True and decided(2) is True
    assert decided(12) is False and decided(32) is False and decided(1) is False
    assert decided(6, augment=1) is False and decided(6, kind="hamiltonian") is False
    assert decided(6, output_scale=(1.0, 2.0)) is False  # stiff data (per-species rates)
    assert decided(6, linear_term=False) is False and decided(32, linear_term=True) is True
