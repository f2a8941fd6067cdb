"""`HamiltonianNN` (tidal.models.hamiltonian) and the Hamiltonian built-in systems: the vector
field is J grad H, gradients through the integrator pass gradcheck, the energy is conserved
over long runs, training lowers the loss, and the model saves and reloads as data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import tidal
from tidal.data import SYSTEMS, simulate
from tidal.models.hamiltonian import HamiltonianField, HamiltonianNN
from tidal.models.registry import model_from_config
from tidal.nn import MLP
from tidal.solvers import ImplicitMidpoint, Leapfrog, Yoshida4

F64 = torch.float64
HAMILTONIAN_SYSTEMS = ["ideal-pendulum", "mass-spring", "two-body"]


class PendulumEnergy(nn.Module):
    """The exact H = p^2/2 - k cos q, with k learnable, on the whole state."""

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t, y):
        return 0.5 * y[..., 1:] ** 2 - self.k * torch.cos(y[..., :1])


class Quadratic(nn.Module):
    """c x^2 / 2 on [..., n]: a kinetic or potential energy."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, t, x):
        return 0.5 * self.c * (x * x).sum(-1, keepdim=True)


@pytest.mark.parametrize("name", HAMILTONIAN_SYSTEMS)
def test_builtin_systems_are_the_flow_of_their_hamiltonian(name: str) -> None:
    system = SYSTEMS[name]
    y = torch.from_numpy(system.sample_initial_states(5, np.random.default_rng(0)))
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(system.energy(y).sum(), y)
    n = system.n_states // 2
    expected = torch.cat([grad[:, n:], -grad[:, :n]], -1)
    got = system.vector_field(torch.tensor(0.0, dtype=F64), y.detach())
    assert torch.allclose(got, expected, rtol=1e-13, atol=1e-13)


def test_non_hamiltonian_system_has_no_energy() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match=r"no Hamiltonian.*ideal-pendulum"):
        SYSTEMS["lorenz"].energy(torch.zeros(3))


def test_field_is_j_grad_h() -> None:
    field = HamiltonianField(PendulumEnergy(1.3))
    y = torch.tensor([[0.4, -0.2], [1.0, 0.5]], dtype=F64)
    expected = torch.stack([y[:, 1], -1.3 * torch.sin(y[:, 0])], -1)
    assert torch.allclose(field(torch.tensor(0.0), y), expected, rtol=1e-14)
    with torch.no_grad():  # validation and checkpointed forward passes run without grad
        out = field(torch.tensor(0.0), y)
    assert not out.requires_grad and torch.allclose(out, expected, rtol=1e-14)
    separable = HamiltonianField(kinetic=Quadratic(2.0), potential=Quadratic(3.0))
    assert separable.separable
    assert torch.allclose(separable(0.0, y), torch.stack([2.0 * y[:, 1], -3.0 * y[:, 0]], -1))


def test_exact_energy_is_conserved_by_the_model() -> None:
    """A HamiltonianNN with an exact separable energy (the oscillator): its leapfrog
    trajectories keep the energy in an O(dt^2) band for 1,000 steps (about 16 periods)."""
    model = HamiltonianNN(kinetic=Quadratic(1.0), potential=Quadratic(1.0),
                          controller=tidal.ConstantStepSize(0.1))
    y0 = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=F64)
    ts = torch.linspace(0.0, 100.0, 201, dtype=F64)
    with torch.no_grad():
        ys = model(y0, ts)
        energy = model.energy(ys)
    drift = ((energy - energy[0]) / energy[0]).abs()
    assert float(drift.max()) < 0.1 ** 2
    assert float(drift[100:].max()) <= 1.1 * float(drift[:101].max())


@pytest.mark.parametrize(("separable", "solver", "adjoint"),
                         [(True, Leapfrog(), "backprop"), (True, Leapfrog(), "checkpoint"),
                          (True, Yoshida4(), "backprop"),
                          (False, ImplicitMidpoint(), "backprop"),
                          (False, ImplicitMidpoint(), "checkpoint")],
                         ids=["leapfrog-backprop", "leapfrog-checkpoint", "yoshida4-backprop",
                              "implicit_midpoint-backprop", "implicit_midpoint-checkpoint"])
def test_gradcheck_through_the_integrator(separable: bool, solver, adjoint: str) -> None:
    """d(trajectory)/d(y0, network weights), float64, a tiny network: autograd's second-order
    graph through H's gradient and the symplectic steps against finite differences."""
    torch.manual_seed(1)
    model = HamiltonianNN.mlp(1, separable=separable, width=3, depth=1, solver=solver,
                              controller=tidal.ConstantStepSize(0.2),
                              adjoint=tidal.registry.adjoint(adjoint)).double()
    ts = torch.tensor([0.0, 0.3, 0.8], dtype=F64)

    def run(y0, *params):  # gradcheck perturbs the model's own parameters in place
        return model(y0, ts)

    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.4]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, *model.parameters()))


def test_fit_lowers_the_loss_and_the_model_reloads(tmp_path) -> None:
    data = simulate("ideal-pendulum", 6, t_span=(0.0, 2.0), n_obs=12, noise=0.01,
                    irregular=False, seed=0)
    torch.manual_seed(0)
    model = HamiltonianNN.mlp(1, separable=True, width=16, depth=1)  # dt = 0.1 by default
    config = tidal.TrainConfig(epochs=12, lr=5e-2, horizons=(1.0,), patience=None,
                               eval_every=4)
    result = tidal.fit(model, data, config=config, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert result.status == "finished" and losses[-1] < 0.5 * losses[0]
    assert model.last_stats.num_steps == 20  # leapfrog, dt = 0.1 over [0, 2]
    # config() is plain data, and rebuilds the same model
    rebuilt = model_from_config(model.config()).double()
    rebuilt.load_state_dict(model.state_dict())
    y0, ts = torch.tensor([[0.3, 0.1]], dtype=F64), torch.linspace(0, 1, 5, dtype=F64)
    with torch.no_grad():
        assert torch.equal(rebuilt(y0, ts), model(y0, ts))
    assert isinstance(rebuilt, HamiltonianNN) and rebuilt.separable
    assert rebuilt.controller == tidal.ConstantStepSize(0.1)
    tidal.training.run.save_run(tmp_path, model, result.scaling, data={"state_names": ["q", "p"]},
                                train_config=config.to_dict())
    run = tidal.load_run(tmp_path)
    assert isinstance(run.model, HamiltonianNN)
    assert run.predict([0.3, 0.1], [0.0, 0.5]).shape == (2, 2)


def test_config_round_trip_of_a_general_hamiltonian() -> None:
    model = HamiltonianNN(MLP(4, 1, width=8), solver=ImplicitMidpoint(tol=1e-10, max_iters=20),
                          controller=tidal.ConstantStepSize(0.05),
                          adjoint=tidal.BackpropAdjoint())
    config = model.config()
    assert config["type"] == "HamiltonianNN" and config["solver"] == "implicit_midpoint"
    assert config["solver_options"] == {"tol": 1e-10, "max_iters": 20}
    rebuilt = model_from_config(config)
    assert rebuilt.solver == model.solver and not rebuilt.separable


def test_defaults_and_errors() -> None:
    assert isinstance(HamiltonianNN.mlp(1, separable=True).solver, Leapfrog)
    assert isinstance(HamiltonianNN.mlp(1).solver, ImplicitMidpoint)
    adaptive = HamiltonianNN.mlp(1, solver=tidal.Dopri5())
    assert isinstance(adaptive.controller, tidal.PIDController)
    with pytest.raises(tidal.InvalidArgumentError, match="either `hamiltonian=H`"):
        HamiltonianNN(MLP(2, 1), kinetic=MLP(1, 1), potential=MLP(1, 1))
    with pytest.raises(tidal.InvalidArgumentError, match="either `hamiltonian=H`"):
        HamiltonianNN(kinetic=MLP(1, 1))
    with pytest.raises(tidal.IncompatibleOptionsError, match="separable H"):
        HamiltonianNN(MLP(2, 1), solver=Leapfrog())
    with pytest.raises(tidal.InvalidArgumentError, match="two equal halves"):
        HamiltonianNN(MLP(3, 1)).energy(torch.zeros(3))
    with pytest.raises(tidal.InvalidArgumentError, match="cannot be described"):
        HamiltonianNN(PendulumEnergy()).config()


def test_energy_of_a_trained_network_is_conserved_to_its_step() -> None:
    """Any smooth separable network (here random weights): leapfrog keeps its own energy."""
    torch.manual_seed(3)
    model = HamiltonianNN.mlp(1, separable=True, width=16,
                              controller=tidal.ConstantStepSize(0.05)).double()
    y0 = torch.tensor([[0.8, 0.0]], dtype=F64)
    with torch.no_grad():
        ys = model(y0, torch.linspace(0.0, 25.0, 101, dtype=F64))
        energy = model.energy(ys)[:, 0]
    scale = float(energy.max() - energy.min()) + 1e-300
    assert math.isfinite(scale)
    assert float((energy - energy[0]).abs().max()) < 1e-3 * max(1.0, float(energy[0].abs()))


def test_states_of_another_size_than_the_networks_are_named():
    """A 4-state y0 for a one-degree-of-freedom model (and a 3-state y0 for NeuralODE(MLP(2)))
    raised torch's 'mat1 and mat2 shapes cannot be multiplied' from inside the field."""
    ts = torch.linspace(0, 1, 3)
    for model in (HamiltonianNN.mlp(1, separable=True, width=4, depth=1),
                  HamiltonianNN.mlp(1, width=4, depth=1)):
        with pytest.raises(tidal.InvalidArgumentError, match=r"y0 has 4 states .* takes 2"):
            model(torch.ones(1, 4), ts)
        assert model(torch.ones(1, 2), ts).shape == (3, 1, 2)
    with pytest.raises(tidal.InvalidArgumentError, match=r"NeuralODE\(y0, ts\)`: y0 has 3"):
        tidal.models.NeuralODE(tidal.nn.MLP(2, width=4, depth=1))(torch.ones(1, 3), ts)

