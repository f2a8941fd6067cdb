"""`UDE` (tidal.models.ude) and symbolic recovery (tidal.models.symbolic): the field is known
terms plus the correction, training lowers the loss and moves the physical parameters, and
sparse regression recovers a known formula."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import tidal
from tidal.data import SYSTEMS, Scaling, simulate
from tidal.models.registry import model_from_config
from tidal.models.symbolic import polynomial_library, recover, stlsq
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.nn import MLP
from tidal.training.batches import make_batch, masked_mse

F64 = torch.float64
IDENTITY = Scaling((0.0, 0.0), (1.0, 1.0))
LINEAR = KNOWN_PHYSICS["lotka-volterra-linear"].equations
TRUE = dict(SYSTEMS["lotka-volterra"].params)  # alpha 1.5, beta 1, gamma 3, delta 1


def _data() -> tidal.Trajectories:
    return simulate("lotka-volterra", 4, t_span=(0.0, 2.0), n_obs=12, noise=0.01,
                    irregular=False, seed=0)


def test_field_is_known_plus_correction() -> None:
    correction = MLP(2, width=8)
    model = UDE(LINEAR, correction, {"alpha": 1.5, "gamma": 3.0}).double()
    y = torch.tensor([[1.0, 2.0], [3.0, 0.5]], dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    known = torch.stack([1.5 * y[:, 0], -3.0 * y[:, 1]], -1)
    assert torch.allclose(model.known(t, y), known)
    assert torch.allclose(model.vector_field(t, y), known + correction(t, y))
    assert model.physical_parameters() == {"alpha": 1.5, "gamma": 3.0}
    names = {name for name, _ in model.named_parameters()}
    assert {"vector_field.physical.alpha", "vector_field.physical.gamma"} <= names


def test_parameters_alone_are_learned() -> None:
    """No correction: the full Lotka-Volterra equations with all four rates unknown. A short
    fit moves every rate from its wrong start towards the truth."""
    start = {"alpha": 1.2, "beta": 0.8, "gamma": 2.5, "delta": 1.2}
    model = UDE(SYSTEMS["lotka-volterra"].equations, None, start)
    config = tidal.TrainConfig(epochs=20, lr=5e-2, batch_size=1, schedule="constant",
                               horizons=(1.0,), patience=None, eval_every=10)
    result = tidal.fit(model, _data(), config=config, scaling=IDENTITY, progress=False)
    learned = model.physical_parameters()
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    for name, value in learned.items():
        assert abs(value - TRUE[name]) < 0.6 * abs(start[name] - TRUE[name]), learned


def _mse(model: UDE, data: tidal.Trajectories) -> float:
    batch = make_batch(data, F64)
    with torch.no_grad():
        return float(masked_mse(model.double()(batch.y0, batch.ts), batch))


def test_fit_with_a_correction_lowers_the_loss() -> None:
    torch.manual_seed(0)
    data = _data()
    model = UDE(LINEAR, MLP(2, width=16, depth=1), {"alpha": 1.0, "gamma": 2.0})
    config = tidal.TrainConfig(epochs=12, lr=5e-2, batch_size=1, horizons=(1.0,), patience=None,
                               eval_every=4)
    before, loss_before = model.physical_parameters(), _mse(model, data)
    result = tidal.fit(model, data, config=config, scaling=IDENTITY, progress=False)
    assert result.status == "finished" and _mse(model, data) < 0.2 * loss_before
    assert model.physical_parameters() != before


def test_config_round_trip() -> None:
    model = UDE(LINEAR, MLP(2, width=8), {"alpha": 1.1, "gamma": 2.9},
                adjoint=tidal.BackpropAdjoint())
    config = model.config()
    assert config["type"] == "UDE" and config["known"] == "lotka-volterra-linear"
    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    y0, ts = torch.tensor([[1.0, 1.0]]), torch.linspace(0.0, 1.0, 3)
    with torch.no_grad():
        assert torch.equal(rebuilt(y0, ts), model(y0, ts))
    with pytest.raises(tidal.InvalidArgumentError, match="Python code"):
        UDE(lambda t, y, p: y, None, {}).config()


def test_errors() -> None:
    with pytest.raises(tidal.InvalidArgumentError, match="identifiers"):
        UDE(LINEAR, None, {"not a name": 1.0})
    with pytest.raises(tidal.InvalidArgumentError, match="finite number"):
        UDE(LINEAR, None, {"alpha": float("nan")})
    with pytest.raises(tidal.InvalidArgumentError, match="callable"):
        UDE("dx = x", None, {})
    # a list of values gave "cannot convert dictionary update sequence element #0"
    with pytest.raises(tidal.InvalidArgumentError,
                       match=r"`UDE\(params=\.\.\.\)` must map .* got list"):
        UDE(LINEAR, None, [1.0])


# ---------------------------------------------------------------------------------------------
# Symbolic recovery


def _interaction(t, y):
    """The Lotka-Volterra interaction terms, (-beta x y, delta x y), exactly."""
    xy = y[..., 0] * y[..., 1]
    return torch.stack([-TRUE["beta"] * xy, TRUE["delta"] * xy], -1)


BACKENDS = ["numpy"] + (["pysindy"] if importlib.util.find_spec("pysindy") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_recover_an_exact_correction(backend: str) -> None:
    """On the exact interaction terms, sampled over the data's region, the regression keeps
    the x y terms only, with coefficients within 1% (here to round-off)."""
    region = torch.rand(400, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    region = region * torch.tensor([7.0, 5.0], dtype=F64) + torch.tensor([0.7, 0.3], dtype=F64)
    fit = recover(_interaction, region, degree=2, threshold=0.1, state_names=("x", "y"),
                  backend=backend)
    assert fit.backend == backend
    assert fit.terms() == {"dx": {"x y": pytest.approx(-1.0, rel=1e-2)},
                           "dy": {"x y": pytest.approx(1.0, rel=1e-2)}}
    assert fit.coefficient("dx", "x y") == pytest.approx(-1.0, rel=1e-10)
    assert fit.formula == "dx = -1 x y\ndy = 1 x y"
    np.testing.assert_allclose(fit.predict(region), _interaction(None, region).numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovered_terms_are_at_least_the_threshold(backend: str) -> None:
    """f = 2 + 3 x0 - 0.5 x1^2 on a correlated region: the ridge rounds kept x1 and x0^2 and
    the unbiased refit set them to 3e-15 and 2e-17, so the formula read '2 + 3 x0 + 3.393e-15
    x1 + 1.978e-17 x0^2 - 0.5 x1^2' although `threshold` (0.1) sets smaller ones to zero."""
    region = torch.rand(200, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.5

    def exact(t, y):
        return 2 + 3 * y[:, :1] - 0.5 * y[:, 1:] ** 2

    fit = recover(exact, region, backend=backend)
    assert fit.terms() == {"f0": {"1": pytest.approx(2.0), "x0": pytest.approx(3.0),
                                  "x1^2": pytest.approx(-0.5)}}
    assert fit.formula == "f0 = 2 + 3 x0 - 0.5 x1^2"


def test_symbolic_arguments_are_named() -> None:
    """predict on states of another width raised numpy's matmul error; a function returning
    another number of rows numpy's reshape error; t='0' torch's dtype error; a correction that
    is not callable a TypeError in explanations; a constant correction had no explanation."""
    from tidal.models.symbolic import explanations

    region = torch.rand(50, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.5
    fit = recover(_interaction, region, backend="numpy")
    with pytest.raises(tidal.InvalidArgumentError, match="has 3 columns; the formula is in 2"):
        fit.predict(np.zeros((3, 3)))
    with pytest.raises(tidal.InvalidArgumentError, match=r"returned shape \(5, 2\) for 50"):
        recover(lambda t, y: y[:5], region)
    with pytest.raises(tidal.InvalidArgumentError, match=r"recover\(t='0'\)"):
        recover(_interaction, region, t="0")
    with pytest.raises(tidal.InvalidArgumentError, match=r"recover\(alpha=-1"):
        recover(_interaction, region, alpha=-1.0)
    with pytest.raises(tidal.InvalidArgumentError, match="must be callable"):
        explanations(3, region)
    found = explanations(lambda t, y: torch.ones_like(y), region)
    assert found and found[0][1].formula == "dx0 = 1\ndx1 = 1"


def test_numpy_and_pysindy_agree_on_a_noisy_target() -> None:
    pytest.importorskip("pysindy")
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 3.0, (300, 2))

    def noisy(t, y):
        base = torch.stack([1.5 * y[:, 0] - 0.7 * y[:, 0] * y[:, 1],
                            0.2 - 0.4 * y[:, 1] ** 2], -1)
        return base + 1e-3 * torch.from_numpy(rng.standard_normal((len(y), 2)))

    values = noisy(None, torch.from_numpy(x))
    a = recover(lambda t, y: values, x, backend="numpy")
    b = recover(lambda t, y: values, x, backend="pysindy")
    assert a.features == b.features
    np.testing.assert_allclose(a.coefficients, b.coefficients, rtol=1e-8, atol=1e-10)
    assert set(a.terms()["dx0"]) == {"x0", "x0 x1"}
    assert set(a.terms()["dx1"]) == {"1", "x1^2"}


def test_library_and_stlsq_by_hand() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]])
    theta, names = polynomial_library(x, 2, ("a", "b"))
    assert names == ("1", "a", "b", "a^2", "a b", "b^2")
    np.testing.assert_allclose(theta[1], [1, 3, 4, 9, 12, 16])
    _, names3 = polynomial_library(x, 3, ("a", "b"))
    assert names3[-4:] == ("a^3", "a^2 b", "a b^2", "b^3")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 4))
    coefficients = stlsq(features, (features @ np.array([2.0, 0.0, -0.05, 1.0]))[:, None], 0.1)
    np.testing.assert_allclose(coefficients, [[2.0, 0.0, 0.0, 1.0]], atol=0.05)


def test_recover_from_a_ude_and_errors() -> None:
    model = UDE(LINEAR, MLP(2), {"alpha": 1.0, "gamma": 1.0})
    fit = recover(model, torch.rand(20, 2) + 0.5, state_names=("x", "y"), threshold=10.0)
    assert fit.terms() == {"dx": {}, "dy": {}} and fit.formula == "dx = 0\ndy = 0"
    with pytest.raises(tidal.InvalidArgumentError, match="correction network"):
        recover(UDE(LINEAR, None, {"alpha": 1.0, "gamma": 1.0}), torch.rand(5, 2))
    with pytest.raises(tidal.InvalidArgumentError, match="only 'polynomial'"):
        recover(_interaction, torch.rand(5, 2), library="fourier")
    with pytest.raises(tidal.InvalidArgumentError, match=r"shape \[N, D\]"):
        recover(_interaction, torch.rand(5))
    with pytest.raises(tidal.InvalidArgumentError, match="state_names"):
        recover(_interaction, torch.rand(5, 2), state_names=("x",))
