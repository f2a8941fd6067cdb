"""Stochastic systems (`tidal.data.stochastic_systems`) against their exact laws, and
`NeuralSDE` fitted to Ornstein-Uhlenbeck data generated from the exact transition law (an
AR(1) recursion, independent of tidal's SDE code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tidal
from tidal.data.stochastic_systems import STOCHASTIC_SYSTEMS, simulate_sde
from tidal.models import NeuralSDE, PositiveDiffusion
from tidal.nn import MLP

F64 = torch.float64


def test_ornstein_uhlenbeck_moments():
    system = STOCHASTIC_SYSTEMS["ornstein-uhlenbeck"]
    p = system.params
    _, paths = simulate_sde(system, 8192, n_obs=3, t_span=(0.0, 2.0), dt=0.01, seed=1)
    x0 = paths[0, :, 0]
    decay = math.exp(-p["theta"] * 2.0)
    # E[X_t | X_0] = mu + (X_0 - mu) e^{-theta t}; Var = sigma^2 (1 - e^{-2 theta t}) / (2 theta)
    resid = paths[-1, :, 0] - (p["mu"] + (x0 - p["mu"]) * decay)
    var = system.stationary_variance(p) * (1 - decay**2)
    n = resid.numel()
    assert abs(resid.mean().item()) < 4 * math.sqrt(var / n)
    assert abs(resid.var().item() - var) < 4 * var * math.sqrt(2 / n) + 0.01 * var


def test_geometric_brownian_motion_mean_and_double_well_symmetry():
    _, paths = simulate_sde("geometric-brownian-motion", 8192, n_obs=2, dt=0.01, seed=2)
    mu, sigma = 0.5, 0.8
    ratio = paths[-1, :, 0] / paths[0, :, 0]  # E = e^{mu t}, Var = e^{2 mu t}(e^{sigma^2 t} - 1)
    sd = math.sqrt(math.exp(2 * mu) * (math.exp(sigma**2) - 1) / ratio.numel())
    assert abs(ratio.mean().item() - math.exp(mu)) < 4 * sd
    _, well = simulate_sde("double-well", 4096, n_obs=2, dt=0.01, seed=3)
    x = well[-1, :, 0]
    assert abs(x.mean().item()) < 0.1  # symmetric wells, symmetric start box
    assert abs(x.abs().mean().item() - 0.9) < 0.15  # mass near the minima at +-1


def test_unknown_system_and_bad_counts():
    with pytest.raises(tidal.InvalidArgumentError, match="ornstein-uhlenbeck"):
        simulate_sde("brownian-bridge", 4)
    with pytest.raises(tidal.InvalidArgumentError, match=r"n_obs=1"):
        simulate_sde("double-well", 4, n_obs=1)


def ou_data(paths: int, steps: int, h: float, theta: float, sigma: float) -> torch.Tensor:
    """Stationary OU paths from the exact transition: X' = a X + s xi, a = e^{-theta h}."""
    a = math.exp(-theta * h)
    s = sigma * math.sqrt((1 - a * a) / (2 * theta))
    x = torch.randn(paths, 1, dtype=F64) * sigma / math.sqrt(2 * theta)
    rows = [x]
    for _ in range(steps):
        x = a * x + s * torch.randn_like(x)
        rows.append(x)
    return torch.stack(rows)


@pytest.mark.slow
def test_neural_sde_fitted_to_ou_data_recovers_the_stationary_variance():
    """256 paths x 200 transitions (h = 0.05); the model samples with dt = h, so a fitted
    Euler-Maruyama transition reproduces the data's AR(1) law and its stationary variance.
    Sampled from 0 to t = 10 (e^{-20} from stationary) over 4096 paths, seed 0."""
    theta, sigma, h = 1.0, 0.5, 0.05
    ys = ou_data(256, 200, h, theta, sigma)
    ts = torch.arange(201, dtype=F64) * h
    model = NeuralSDE(MLP(1, width=32).double(), PositiveDiffusion(MLP(1, width=32).double()),
                      dt=h)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # the loss settles within ~50 iterations
        optimizer.zero_grad()
        model.transition_nll(ys, ts).backward()
        optimizer.step()
    with torch.no_grad():
        paths = model.sample(torch.zeros(4096, 1, dtype=F64), torch.tensor([0.0, 10.0]), seed=0)
    exact = sigma**2 / (2 * theta)
    assert abs(paths[-1].var().item() / exact - 1) < 0.10


def test_neural_sde_bad_input():
    with pytest.raises(tidal.InvalidArgumentError, match=r"NeuralSDE\(dt=0"):
        NeuralSDE(MLP(1), PositiveDiffusion(MLP(1)), dt=0)
    model = NeuralSDE(MLP(1).double(), PositiveDiffusion(MLP(1).double()), dt=0.1)
    with pytest.raises(tidal.InvalidArgumentError, match="transition_nll"):
        model.transition_nll(torch.zeros(3, 2, dtype=F64), torch.arange(3.0))
    with pytest.raises(tidal.InvalidArgumentError, match="increasing"):
        model.transition_nll(torch.zeros(3, 2, 1, dtype=F64), torch.tensor([0.0, 1.0, 1.0]))


def test_transition_nll_names_what_does_not_fit_and_takes_listed_times():
    """One row, ts of another batch, float64 states for a float32 model raised torch's
    reshape/expand/dtype errors; ts as a list an AttributeError; dt=inf was accepted. A list
    of times is the tensor of them."""
    model = NeuralSDE(MLP(1).double(), PositiveDiffusion(MLP(1).double()), dt=0.1)
    ys = torch.randn(3, 2, 1, dtype=F64)
    assert model.transition_nll(ys, [0.0, 0.5, 1.0]) == model.transition_nll(
        ys, torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(tidal.InvalidArgumentError, match="T >= 2"):
        model.transition_nll(ys[:1], torch.zeros(1))
    with pytest.raises(tidal.InvalidArgumentError, match=r"\(3, 3\)"):
        model.transition_nll(ys, torch.arange(9.0).reshape(3, 3))
    with pytest.raises(tidal.InvalidArgumentError, match=r"y is torch\.float32 but"):
        model.transition_nll(ys.float(), torch.arange(3.0))
    with pytest.raises(tidal.InvalidArgumentError, match=r"NeuralSDE\(dt=inf"):
        NeuralSDE(MLP(1), PositiveDiffusion(MLP(1)), dt=math.inf)


def test_simulate_with_process_noise():
    """sigma = 0 is the ODE simulation unchanged; with sigma > 0 the paths leave the ODE
    trajectories by an amount that grows like sigma for small sigma (the linearised SDE)."""
    from tidal.data import simulate

    kw = dict(n_obs=10, noise=0.0, irregular=False, seed=4, t_span=(0.0, 2.0))
    ode = simulate("damped-pendulum", 64, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(
        ode.values, simulate("damped-pendulum", 64, noise_process=0.0, **kw).values))
    spread = []
    for sigma in (1e-3, 2e-3):
        sde = simulate("damped-pendulum", 64, noise_process=sigma, **kw)
        spread.append(np.std([s[-1] - o[-1] for s, o in zip(sde.values, ode.values)]))
    assert spread[0] > 0 and abs(spread[1] / spread[0] - 2) < 0.1
    with pytest.raises(tidal.InvalidArgumentError, match=r"noise_process=-1"):
        simulate("damped-pendulum", 4, noise_process=-1.0)


def test_cli_simulate_noise_process(tmp_path):
    from click.testing import CliRunner

    from tidal.cli.main import main

    out = tmp_path / "d.csv"
    done = CliRunner().invoke(main, ["simulate", "toggle-switch",
                                     "--trajectories", "3", "--obs", "5",
                                     "--noise-process", "0.05", "-o", str(out)])
    assert done.exit_code == 0, done.output and out.exists()
    bad = CliRunner().invoke(main, ["simulate", "toggle-switch", "--noise-process", "-1",
                                    "-o", str(out)])
    assert bad.exit_code == 2 and "--noise-process -1.0" in bad.output
    assert "Traceback" not in bad.output


def test_cli_simulates_the_stochastic_systems_by_name(tmp_path):
    """`tidal simulate ornstein-uhlenbeck`: at t = 10 (20 relaxation times) the paths follow the
    stationary law N(mu, sigma^2 / (2 theta)) = N(0, 0.125); 2000 paths give the variance to
    ~3% (one sd), checked to 12%. --noise-process is refused for these (their noise is their
    own); the double well and GBM run with the default --obs range."""
    import pandas as pd
    from click.testing import CliRunner

    from tidal.cli.main import main

    out = tmp_path / "ou.csv"
    done = CliRunner().invoke(main, ["simulate", "ornstein-uhlenbeck", "--trajectories", "2000",
                                     "--obs", "5", "--regular", "--noise", "0", "-o", str(out)])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert sorted(table["t"].unique()) == [0.0, 2.5, 5.0, 7.5, 10.0]
    last = table.loc[table["t"] == 10.0, "x"].to_numpy()
    assert len(last) == 2000
    assert abs(last.mean()) < 4 * math.sqrt(0.125 / 2000)
    assert last.var() == pytest.approx(0.125, rel=0.12)
    for system in ("double-well", "geometric-brownian-motion"):
        done = CliRunner().invoke(main, ["simulate", system, "--trajectories", "3",
                                         "-o", str(tmp_path / f"{system}.csv")])
        assert done.exit_code == 0, done.output
        counts = pd.read_csv(tmp_path / f"{system}.csv").groupby("id").size()
        assert counts.between(20, 40).all()
    bad = CliRunner().invoke(main, ["simulate", "ornstein-uhlenbeck", "--noise-process", "0.1",
                                    "-o", str(out)])
    assert bad.exit_code == 2 and "leave out --noise-process" in bad.output
