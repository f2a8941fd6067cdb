"""NeuralODE, fit, checkpoints and run directories.

References: analytic solutions of a linear system (the data), the uninterrupted run (for
resume), the weights on disk (for divergence), and a hostile pickle (for safe loading).
"""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

import tidal
from tidal._errors import InvalidArgumentError
from tidal.data import Trajectories
from tidal.models import NeuralODE
from tidal.nn import MLP
from tidal.training import TrainConfig, fit, load_run, save_run
from tidal.training.checkpoint import CHECKPOINT, load_checkpoint
from tidal.training.fit import TrajectoryObjective

A = np.array([[-0.1, 1.0], [-1.0, -0.1]])  # a damped rotation


def spiral_data(n: int = 6, seed: int = 0, irregular: bool = True) -> Trajectories:
    """Exact solutions y(t) = expm(A t) y0 at irregular times, some entries missing."""
    from scipy.linalg import expm

    rng = np.random.default_rng(seed)
    times, values = [], []
    for _ in range(n):
        t = np.sort(np.concatenate([[0.0], rng.uniform(0, 6, 14)])) if irregular \
            else np.linspace(0, 6, 15)
        y0 = rng.uniform(-2, 2, 2)
        v = np.stack([expm(A * s) @ y0 for s in t])
        v[rng.random(v.shape) < 0.1] = np.nan
        v[0] = y0
        times.append(t)
        values.append(v)
    return Trajectories(times, values, state_names=["x", "y"])


def small_model(seed: int = 0) -> NeuralODE:
    torch.manual_seed(seed)
    return NeuralODE(MLP(2, width=16, depth=1),
                     controller=tidal.PIDController(rtol=1e-5, atol=1e-7))


def quiet(**kw) -> TrainConfig:
    values = {"epochs": 40, "lr": 2e-2, "horizons": (0.5, 1.0), "eval_every": 2,
              "checkpoint_every": 10, "patience": None}
    return TrainConfig(**{**values, **kw})


def test_model_shapes_shared_and_per_sample_grids():
    model = small_model().double()
    y0 = torch.randn(3, 2, dtype=torch.float64)
    assert model(y0, torch.linspace(0, 1, 5, dtype=torch.float64)).shape == (5, 3, 2)
    grids = torch.stack([torch.linspace(0, s, 4, dtype=torch.float64) for s in (1, 2, 3)], 1)
    ys = model(y0, grids)
    assert ys.shape == (4, 3, 2)
    # each sample's own grid agrees with solving it alone
    alone = model(y0[1:2], grids[:, 1])
    torch.testing.assert_close(ys[:, 1], alone[:, 0], rtol=1e-4, atol=1e-6)


def test_short_fit_lowers_the_loss_tenfold():
    """40 full-batch epochs on an exactly known damped rotation lower the training loss by at
    least 10x (measured: about 50x)."""
    data = spiral_data()
    model = small_model()
    initial = TrajectoryObjective(model.double(), data.scaled(tidal.data.Scaling.fit(data)),
                                  None, quiet(), torch.float64)
    with torch.no_grad():
        batch = initial.batch(initial.train, 1.0, tuple(range(len(data))))
        before = initial.loss(batch).item()
    result = fit(model, data, config=quiet(), progress=False)
    with torch.no_grad():
        after = initial.loss(batch).item()
    assert result.status == "finished"
    assert after < before / 10, (before, after)


def test_fit_on_trajectories_with_different_start_times():
    data = spiral_data(4)
    shifted = Trajectories([t + i for i, t in enumerate(data.times)], data.values)
    result = fit(small_model(), shifted, config=quiet(epochs=4, horizons=(1.0,)),
                 progress=False)
    assert result.status == "finished" and math.isfinite(result.history[-1]["train_loss"])


@pytest.mark.parametrize(("segments", "stop"), [(1, 12), (3, 4)])
def test_resume_continues_the_same_loss_curve(tmp_path, monkeypatch, segments, stop):
    """With multiple shooting (3 segments) the interruption falls in the shooting stage: the
    segments' estimated initial states are restored too."""
    data, val = spiral_data(6), spiral_data(2, seed=1)
    config = quiet(epochs=20, checkpoint_every=5, batch_size=4, shooting_segments=segments)
    straight = fit(small_model(), data, val=val, config=config, run_dir=tmp_path / "a",
                   progress=False)

    original = TrajectoryObjective.train_round

    def interrupt(self, epoch, *args):
        if epoch == stop:
            raise KeyboardInterrupt
        return original(self, epoch, *args)

    monkeypatch.setattr(TrajectoryObjective, "train_round", interrupt)
    stopped = fit(small_model(), data, val=val, config=config, run_dir=tmp_path / "b",
                  progress=False)
    assert stopped.status == "interrupted"
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == stop
    monkeypatch.setattr(TrajectoryObjective, "train_round", original)
    resumed = fit(small_model(seed=5), data, val=val, config=config, run_dir=tmp_path / "b",
                  resume=True, progress=False)
    losses = [(r["epoch"], r["train_loss"], r["val_loss"]) for r in straight.history]
    assert [(r["epoch"], r["train_loss"], r["val_loss"]) for r in resumed.history] == losses
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_shooting_segments_cover_every_observation_once_and_link_in_order():
    """Reference: the trajectories themselves. Concatenating each trajectory's segments
    (without the unobserved end point linked to the successor) gives back its times and
    values; each link sits at the successor's start time; every segment has >= 2 observed
    times."""
    from tidal.training.batches import continuity_mse, segment

    data = spiral_data(4)
    pieces = segment(data, 3, torch.float64)
    ts, ys, mask = pieces.batch.ts, pieces.batch.ys, pieces.batch.mask
    assert ts.shape[1] == 12 and pieces.link_row.numel() == 8
    for i, (times, values, observed) in enumerate(zip(data.times, data.values, data.masks)):
        columns = torch.nonzero(pieces.owner == i).flatten().tolist()
        assert pieces.part[columns].tolist() == [0, 1, 2]
        got_t, got_v = [], []
        for column in columns:
            rows = mask[:, column].any(-1)
            assert int(rows.sum()) >= 2
            length = int(torch.nonzero(rows).max()) + 1
            got_t.append(ts[:length, column].numpy())
            got_v.append(torch.where(mask[:length, column], ys[:length, column],
                                     math.nan).numpy())
        np.testing.assert_array_equal(np.concatenate(got_t)[observed.any(1)],
                                      times[observed.any(1)])
        np.testing.assert_array_equal(np.concatenate(got_v)[observed.any(1)],
                                      values[observed.any(1)])
    for row, source, target in zip(pieces.link_row, pieces.link_from, pieces.link_to):
        assert ts[row, source] == ts[0, target] and not mask[row, source].any()
    # a prediction that ends where each successor starts has no gap
    prediction = torch.zeros_like(ys)
    prediction[pieces.link_row, pieces.link_from] = pieces.batch.y0[pieces.link_to]
    assert continuity_mse(prediction, pieces.batch.y0, pieces).item() == 0.0


def test_multiple_shooting_stage_comes_first_and_lowers_the_loss():
    """A shooting stage (3 segments) then the curriculum (0.5, 1.0): the loss on whole
    trajectories ends at least 10x below its start, as without shooting."""
    data = spiral_data()
    model = small_model()
    config = quiet(epochs=45, shooting_segments=3)
    initial = TrajectoryObjective(model.double(), data.scaled(tidal.data.Scaling.fit(data)),
                                  None, config, torch.float64)
    with torch.no_grad():
        batch = initial.batch(initial.train, 1.0, tuple(range(len(data))))
        before = initial.loss(batch).item()
    result = fit(model, data, config=config, progress=False)
    with torch.no_grad():
        after = initial.loss(batch).item()
    assert result.status == "finished"
    stages = {r["epoch"]: (r["stage"], r["segments"], r["horizon"]) for r in result.history}
    assert stages[14] == (0, 3, 1.0) and stages[16] == (1, 1, 0.5) and stages[45] == (2, 1, 1.0)
    assert after < before / 10, (before, after)


class Exploding(torch.nn.Module):
    """A vector field that returns NaN once `armed`; otherwise a trainable linear field."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.armed = False

    def forward(self, t, y):
        out = self.linear(y)
        return out * math.nan if self.armed else out


def test_divergence_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    field = Exploding()
    model = NeuralODE(field, adjoint=tidal.BackpropAdjoint())
    original = TrajectoryObjective.train_round

    def arm_at_epoch_13(self, epoch, *args):
        field.armed = epoch >= 13
        return original(self, epoch, *args)

    monkeypatch.setattr(TrajectoryObjective, "train_round", arm_at_epoch_13)
    result = fit(model, spiral_data(4), config=quiet(epochs=30, checkpoint_every=5),
                 run_dir=tmp_path, progress=False)
    assert result.status == "diverged"
    assert "epoch 14" in result.message and "epoch 10" in result.message
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    assert saved["epoch"] == 10
    for name, value in saved["model"].items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_save_and_load_give_identical_predictions(tmp_path):
    data = spiral_data(4)
    result = fit(small_model(), data, config=quiet(epochs=6, horizons=(1.0,)), progress=False)
    save_run(tmp_path, result.model, result.scaling, data={"state_names": ["x", "y"]},
             train_config=result.config.to_dict())
    run = load_run(tmp_path)
    y0 = np.array([[1.0, -0.5], [0.3, 0.2]])
    ts = np.linspace(0, 8, 17)
    with torch.no_grad():
        expected = result.scaling.unscale_values(result.model(
            result.scaling.scale_values(torch.as_tensor(y0)),
            torch.as_tensor(result.scaling.scale_times(ts)))).numpy()
    np.testing.assert_array_equal(run.predict(y0, ts), expected)
    y0.flags.writeable = ts.flags.writeable = False  # e.g. arrays from a memory-mapped file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(run.predict(y0, ts), expected)


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_loading_a_hostile_file_runs_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"weights": _Boom()}))
    with pytest.raises(InvalidArgumentError, match="cannot be loaded") as error:
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    # PyTorch's own message advises retrying with weights_only=False; never repeat that
    assert "weights_only" not in str(error.value) and "trust" not in str(error.value)


def test_train_config_errors_name_the_argument():
    with pytest.raises(InvalidArgumentError, match="horizons"):
        TrainConfig(horizons=(0.5, 0.3))
    with pytest.raises(InvalidArgumentError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(InvalidArgumentError, match="shooting_segments"):
        TrainConfig(shooting_segments=0)
    with pytest.raises(InvalidArgumentError, match="fewer epochs than training stages"):
        TrainConfig(epochs=2, horizons=(0.5, 1.0), shooting_segments=2)
    with pytest.raises(InvalidArgumentError, match="unknown keys"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(InvalidArgumentError, match=r"adjoint='magic'.*Adjoint object.*registry"):
        NeuralODE(MLP(2), adjoint="magic")


def test_run_and_checkpoint_error_paths_name_what_is_wrong(tmp_path):
    with pytest.raises(InvalidArgumentError, match="needs the `run_dir`"):
        fit(small_model(), spiral_data(2), resume=True, progress=False)
    with pytest.raises(InvalidArgumentError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(InvalidArgumentError, match="not a tidal run directory"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # a config.json alone does not make a run
    with pytest.raises(InvalidArgumentError, match=r"no tidal-run\.json"):
        load_run(tmp_path)
    with pytest.raises(InvalidArgumentError, match="cannot be described as data"):
        NeuralODE(torch.nn.Linear(2, 2)).config()
    config = small_model().config()
    with pytest.raises(InvalidArgumentError, match="Solver 'magic' is not known"):
        NeuralODE.from_config({**config, "solver": "magic"})
    with pytest.raises(InvalidArgumentError, match="network 'Evil'"):
        NeuralODE.from_config({**config, "vector_field": {"type": "Evil"}})


def test_pipeline_error_paths(tmp_path):
    from tidal.training import ModelOptions, train_run

    data = spiral_data(3)
    with pytest.raises(InvalidArgumentError, match="leaves none to train on"):
        train_run(data, tmp_path / "a", split=(0.5, 0.5), progress=False,
                  split_by="trajectory")
    with pytest.raises(InvalidArgumentError, match="fewer than 2"):  # in time (3 trajectories)
        train_run(data, tmp_path / "a", split=(0.5, 0.5), progress=False)
    with pytest.raises(InvalidArgumentError, match="--solver magic"):
        ModelOptions(solver="magic").build(2, 0)
    with pytest.raises(InvalidArgumentError, match="--model magic"):
        ModelOptions(kind="magic").build(2, 0)
    with pytest.raises(InvalidArgumentError, match=r"\(q, p\) halves"):
        ModelOptions(kind="hamiltonian").build(3, 0)
    with pytest.raises(InvalidArgumentError, match="not parameters of"):
        ModelOptions(kind="ude", known="lotka-volterra-linear", params=(("beta", 1.0),)
                     ).build(2, 0)
    result = fit(small_model(), data, config=quiet(epochs=2, horizons=(1.0,)), progress=False)
    save_run(tmp_path / "b", result.model, result.scaling, data={"state_names": ["x", "y"]},
             train_config=result.config.to_dict())
    with pytest.raises(InvalidArgumentError, match=r"expected 2 states \(x, y\)"):
        load_run(tmp_path / "b").predict([1.0, 2.0, 3.0], [0.0, 1.0])


class Decay(torch.nn.Module):
    """dy/dt = -k y with a learned rate k."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y


def test_a_model_solves_events_with_its_own_checkpoint_adjoint(monkeypatch):
    """`NeuralODE.solve(event=...)` keeps the model's CheckpointAdjoint (it used to swap in
    Backprop silently). Reference: y = y0 exp(-k t) crosses 1/2 at t* = ln(2 y0) / k, so
    dt*/dk = -ln(2 y0) / k^2."""
    from tidal.adjoint import CheckpointAdjoint

    runs = []
    original = CheckpointAdjoint.run

    def counted(self, *args, **kwargs):
        runs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointAdjoint, "run", counted)
    model = NeuralODE(Decay(), controller=tidal.PIDController(rtol=1e-10, atol=1e-12))
    assert isinstance(model.adjoint, CheckpointAdjoint)
    y0 = torch.tensor([2.0], dtype=torch.float64)
    sol = model.solve(y0, torch.tensor([0.0, 10.0], dtype=torch.float64),
                      event=lambda t, y: y.sum() - 0.5)
    assert runs == [model.adjoint]
    k = model.vector_field.k
    (grad,) = torch.autograd.grad(sol.event_t, k)
    assert sol.event_t.item() == pytest.approx(math.log(4.0) / 0.7, rel=1e-9)
    assert grad.item() == pytest.approx(-math.log(4.0) / 0.7**2, rel=1e-7)
    with pytest.raises(tidal.IncompatibleOptionsError, match="dense"):
        model.solve(y0, torch.tensor([0.0, 1.0], dtype=torch.float64), dense=True)
    dense = model.solve(y0, torch.tensor([0.0, 1.0], dtype=torch.float64), dense=True,
                        adjoint=tidal.BackpropAdjoint())
    assert dense.evaluate(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(
        2.0 * math.exp(-0.35), rel=1e-8)


@pytest.mark.parametrize("width", [1, 3])
def test_fit_refuses_a_model_built_for_another_number_of_states(width, tmp_path):
    # the data has 2 states; torch's own "mat1 and mat2 shapes" error named neither
    model = NeuralODE(MLP(width, width=4, depth=1))
    with pytest.raises(InvalidArgumentError, match=r"`fit\(model=\.\.\.\)`.*2 state\(s\)"
                       r" \['x', 'y'\].*MLP\(2\)"):
        fit(model, spiral_data(2), config=quiet(epochs=2), run_dir=tmp_path / "run",
            progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"model": MLP(2)}, r"`fit\(model=\.\.\.\)` must be a tidal.NeuralODE.*got MLP"),
    ({"train": np.zeros((2, 5, 2))}, r"`fit\(train=\.\.\.\)` must be a tidal.Trajectories"),
    ({"val": [1.0]}, r"`fit\(val=\.\.\.\)` must be a tidal.Trajectories; got list"),
    ({"config": {"epochs": 2}}, r"`fit\(config=\.\.\.\)`.*got dict.*TrainConfig\(\*\*config\)"),
])
def test_fit_names_an_argument_of_the_wrong_type(kwargs, pattern):
    arguments = {"model": small_model(), "train": spiral_data(2), "config": quiet(epochs=2),
                 **kwargs}
    with pytest.raises(InvalidArgumentError, match=pattern):
        fit(**arguments, progress=False)


def test_fit_refuses_validation_data_with_other_states():
    train = spiral_data(2)
    one_state = Trajectories([[0.0, 1.0]], [[[1.0], [0.5]]])
    swapped = Trajectories(train.times, train.values, state_names=train.state_names[::-1])
    for val in (one_state, swapped):
        with pytest.raises(InvalidArgumentError, match=r"`fit\(val=\.\.\.\)` has the state"):
            fit(small_model(), train, val=val, config=quiet(epochs=2), progress=False)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    # a negative fraction held out nothing and was recorded in config.json as given
    ({"split": (-0.1, 0.1)}, r"`train_run\(split=\(-0\.1, 0\.1\)\)`.*\[0, 1\)"),
    ({"split": (0.1,)}, r"`train_run\(split=\(0\.1,\)\)`.*two fractions"),
    ({"split": (1.0, 0.0)}, r"`train_run\(split=\(1\.0, 0\.0\)\)`"),
    # AttributeErrors from inside the pipeline
    ({"data": np.zeros((3, 3))}, r"`train_run\(data=\.\.\.\)` must be a Trajectories"),
    ({"config": {"epochs": 2}}, r"`train_run\(config=\.\.\.\)`.*TrainConfig\(\*\*config\)"),
    ({"model": {"width": 8}}, r"`train_run\(model=\.\.\.\)`.*ModelOptions\(\*\*model\)"),
])
def test_train_run_names_a_bad_argument_before_writing(kwargs, pattern, tmp_path):
    from tidal.training import train_run

    arguments = {"data": spiral_data(4), "config": quiet(epochs=2), **kwargs}
    with pytest.raises(InvalidArgumentError, match=pattern):
        train_run(run_dir=tmp_path / "run", progress=False, **arguments)
    assert not (tmp_path / "run").exists()


def test_load_run_of_a_fit_folder_says_how_to_make_it_loadable(tmp_path):
    # it said "config.json is missing; the run is incomplete or was changed by hand"
    data = spiral_data(2)
    result = fit(small_model(), data, config=quiet(epochs=2), run_dir=tmp_path, progress=False)
    with pytest.raises(InvalidArgumentError, match=r"`load_run\(.*\)`: the run has no "
                       r"config\.json.*save_run"):
        load_run(tmp_path)
    save_run(tmp_path, result.model, result.scaling, data={"state_names": ["x", "y"]},
             train_config=result.config.to_dict())
    loaded = load_run(tmp_path).model
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"max_steps": -1}, r"`NeuralODE\(max_steps=-1\)` must be a positive integer"),
    ({"max_steps": 10.0}, r"`NeuralODE\(max_steps=10\.0\)`"),
    ({"vector_field": 5}, r"`NeuralODE\(vector_field=\.\.\.\)` must be an nn.Module.*got int"),
])
def test_neural_ode_refuses_bad_arguments_when_built(kwargs, pattern):
    # both were accepted, to fail at the first solve naming `solve(...)`
    with pytest.raises(InvalidArgumentError, match=pattern):
        NeuralODE(**{"vector_field": MLP(2), **kwargs})


def test_fit_refuses_non_finite_initial_states_by_name(tmp_path):
    # the error named `solve(y0=...)`, raised mid-training with the run marked running
    states = np.full((2, 2), np.nan)
    with pytest.raises(InvalidArgumentError, match=r"`fit\(initial_states=\.\.\.\)` contains NaN"):
        fit(small_model(), spiral_data(2), config=quiet(epochs=2), run_dir=tmp_path / "run",
            progress=False, initial_states=states)
    assert not (tmp_path / "run").exists()


def test_a_model_and_y0_of_different_dtypes_say_so():
    # torch's "mat1 and mat2 must have the same dtype" came from inside the vector field
    model = NeuralODE(MLP(2, width=4, depth=1))  # float32
    y0, ts = torch.ones(1, 2, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match=r"`NeuralODE\(y0, ts\)`: y0 is torch.float64 "
                       r"but the model's parameters are torch.float32.*model.to\(y0.dtype\)"):
        model(y0, ts)
    assert model.double()(y0, ts).dtype == torch.float64
    # a field that casts its float32 parameters itself works on float64 states, as before
    ude = tidal.UDE(lambda t, y, p: -p["k"] * y, None, {"k": 1.0})
    torch.testing.assert_close(ude(y0, ts)[-1], math.exp(-1.0) * y0, rtol=1e-3, atol=0)


def test_a_run_folder_that_is_not_a_path_is_refused_by_name():
    # TypeError: expected str, bytes or os.PathLike object, not NoneType (from pathlib)
    from tidal.training import train_run

    with pytest.raises(InvalidArgumentError, match=r"run folder .* must be a path.*got NoneType"):
        train_run(spiral_data(4), None, config=quiet(epochs=2), progress=False)
    with pytest.raises(InvalidArgumentError, match=r"must be a path.*got int"):
        load_run(5)


def test_a_fit_that_fails_leaves_the_run_as_it_was(tmp_path):
    """A refused resume (another model's checkpoint) left a finished run marked "running" by
    this live process: load_run then took the last checkpoint, not model.pt, and said
    training was still running."""
    from tidal.training import train_run

    data = spiral_data(4)
    train_run(data, tmp_path / "run", config=quiet(epochs=2), split=(0.25, 0.0),
              split_by="trajectory", progress=False)
    kept = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    other = NeuralODE(MLP(2, width=3, depth=1))
    with pytest.raises(InvalidArgumentError, match="not a checkpoint of this run"):
        fit(other, data, config=quiet(epochs=4), run_dir=tmp_path / "run", resume=True,
            progress=False)
    run = load_run(tmp_path / "run")
    assert run.notice is None and run.directory.state == "finished"
    for name, value in kept.items():
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=0, atol=0)


def test_run_predict_names_a_bad_y0_or_ts(tmp_path):
    data = spiral_data(2)
    save_run(tmp_path, small_model(), tidal.data.Scaling.fit(data),
             data={"state_names": ["x", "y"]}, train_config=quiet().to_dict())
    run = load_run(tmp_path)
    assert run.predict([1.0, 0.5], [0.0, 0.5]).shape == (2, 2)
    # ts [[0, 1]] was taken as one grid per sample, T = 1, and returned y0, silently
    with pytest.raises(InvalidArgumentError, match=r"`predict\(ts=\.\.\.\)`.*\(1, 2\)"):
        run.predict([1.0, 0.5], [[0.0, 1.0]])
    # IndexError: tuple index out of range
    with pytest.raises(InvalidArgumentError, match=r"`predict\(y0=\.\.\.\)`: expected 2 states"):
        run.predict(1.0, [0.0, 1.0])
    # numpy's "could not convert string to float"
    with pytest.raises(InvalidArgumentError, match=r"`predict\(y0=\.\.\.\)` must hold numbers"):
        run.predict(["a", "b"], [0.0, 1.0])
