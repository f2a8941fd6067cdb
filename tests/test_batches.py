"""Training batches: which solver grid a batch gets, how large it may grow, and the losses over
batches.

References: the trajectories' own times and values (placed by hand), solving each trajectory
alone (for losses), and the sizes the design allows (docs/design.md: a batch never holds the
union grid of many irregular trajectories)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tidal.controllers import PIDController
from tidal.data import Trajectories
from tidal.models import NeuralODE
from tidal.nn import MLP
from tidal.training import TrainConfig
from tidal.training import batches as batches_module
from tidal.training.batches import (
    UNION_GRID_ENTRIES,
    UNION_GROWTH,
    make_batch,
    masked_mse,
    masked_sse,
)
from tidal.training.config import AUTO_BATCH_LIMIT
from tidal.training.fit import _CACHED_BATCHES, TrajectoryObjective

F64 = torch.float64

LOOSE = PIDController(rtol=1e-3, atol=1e-5)


def irregular(n: int, lengths: tuple[int, int], seed: int = 0, start: float = 0.0
              ) -> Trajectories:
    """n trajectories from `start`, each observed at its own random times, some entries
    missing; values are smooth in t (the trajectories need not be solutions of anything)."""
    rng = np.random.default_rng(seed)
    times, values = [], []
    for _ in range(n):
        count = int(rng.integers(lengths[0], lengths[1] + 1))
        t = np.concatenate([[start], np.sort(rng.uniform(start, start + 5.0, count - 1))])
        phase = rng.uniform(0, 6)
        v = np.stack([np.cos(t + phase), np.sin(t + phase)], axis=1)
        v[1:][rng.random((count - 1, 2)) < 0.1] = np.nan
        times.append(t)
        values.append(v)
    return Trajectories(times, values, state_names=["x", "y"])


def small_model() -> NeuralODE:
    torch.manual_seed(0)
    return NeuralODE(MLP(2, width=8, depth=1),
                     controller=PIDController(rtol=1e-9, atol=1e-11)).double()


def test_a_small_union_is_one_grid():
    """24 trajectories of 20-40 times (the demo's shape): the union of their times is one grid
    for all, with each observation in its row."""
    data = irregular(24, (20, 40))
    batch = make_batch(data, F64)
    union = np.unique(np.concatenate(data.times))
    assert batch.ts.dim() == 1 and batch.ts.numpy().tolist() == union.tolist()
    for b, (times, values, mask) in enumerate(zip(data.times, data.values, data.masks)):
        rows = np.searchsorted(union, times)
        np.testing.assert_array_equal(batch.mask[rows, b].numpy(), mask)
        np.testing.assert_array_equal(batch.ys[rows, b].numpy()[mask], values[mask])
        assert int(batch.mask[:, b].sum()) == int(mask.sum())


def test_many_irregular_trajectories_keep_their_own_grids():
    """64 trajectories of 150-200 times: their union (~11,000 times x 64) would be ~60 times
    the data. Each gets its own grid [T_max, B]: its times, then strictly increasing padding
    that observes nothing."""
    data = irregular(64, (150, 200))
    assert len(np.unique(np.concatenate(data.times))) * 64 > UNION_GRID_ENTRIES
    batch = make_batch(data, F64)
    longest = max(len(t) for t in data.times)
    assert batch.ts.shape == (longest, 64) and batch.ys.shape == (longest, 64, 2)
    assert bool((batch.ts.diff(dim=0) > 0).all())
    for b, (times, values, mask) in enumerate(zip(data.times, data.values, data.masks)):
        n = len(times)
        np.testing.assert_array_equal(batch.ts[:n, b].numpy(), times)
        np.testing.assert_array_equal(batch.mask[:n, b].numpy(), mask)
        np.testing.assert_array_equal(batch.ys[:n, b].numpy()[mask], values[mask])
        assert not batch.mask[n:, b].any()


def test_trajectories_on_the_same_times_share_one_grid_however_many():
    times = np.linspace(0, 5, 100)
    data = Trajectories([times] * 600, [np.stack([np.cos(times + k), np.sin(times + k)], 1)
                                        for k in range(600)])
    batch = make_batch(data, F64)
    assert batch.ts.shape == (100,) and batch.ys.shape == (100, 600, 2)


def test_different_start_times_and_segments_use_per_sample_grids():
    data = irregular(3, (5, 8))
    shifted = Trajectories([t + i for i, t in enumerate(data.times)], data.values)
    assert make_batch(shifted, F64).ts.dim() == 2
    longest = max(len(t) for t in data.times)
    assert make_batch(data, F64).ts.dim() == 1
    assert make_batch(data, F64, per_sample=True).ts.shape == (longest, 3)


def test_per_sample_and_union_grids_give_the_same_loss():
    """The same trajectories on a union grid and on per-sample grids, and each trajectory
    solved alone: the losses agree to the solver's tolerance."""
    data = irregular(6, (8, 15), seed=1)
    model = small_model()
    with torch.no_grad():
        union, own = make_batch(data, F64), make_batch(data, F64, per_sample=True)
        assert union.ts.dim() == 1 and own.ts.dim() == 2
        shared_loss = masked_mse(model(union.y0, union.ts), union).item()
        own_loss = masked_mse(model(own.y0, own.ts), own).item()
        errors, count = 0.0, 0
        for i in range(len(data)):
            alone = make_batch(data[i], F64)
            total, observed = masked_sse(model(alone.y0, alone.ts), alone)
            errors, count = errors + total.item(), count + int(observed)
    assert own_loss == pytest.approx(shared_loss, rel=1e-7)
    assert shared_loss == pytest.approx(errors / count, rel=1e-7)


def test_an_epoch_never_builds_a_union_grid_of_many_irregular_trajectories(monkeypatch):
    """Training on 60 trajectories of 150-200 irregular times (one batch: their union would
    hold ~630,000 entries per state) and validating on 20: every batch holds at most
    UNION_GROWTH x (its longest trajectory) x (its size) entries per state, or the fixed
    UNION_GRID_ENTRIES; the training batch is per-sample."""
    sizes = []
    original = batches_module.make_batch

    def recording(trajectories, dtype, **options):
        batch = original(trajectories, dtype, **options)
        longest = max(len(t) for t in trajectories.times)
        sizes.append((batch.ys.shape[0] * batch.ys.shape[1], longest, len(trajectories)))
        return batch

    monkeypatch.setattr(sys.modules["tidal.training.fit"], "make_batch", recording)
    train, val = irregular(60, (150, 200)), irregular(20, (150, 200), seed=2)
    model = NeuralODE(MLP(2, width=8, depth=1), controller=LOOSE).double()
    trainer = TrajectoryObjective(model, train, val, TrainConfig(epochs=2, horizons=(1.0,)), F64)
    trainer.train_round(0, _backward, torch.Generator())
    trainer.validation_loss()
    assert [count for _, _, count in sizes] == [60, 20]
    for entries, longest, count in sizes:
        assert entries <= max(UNION_GROWTH * longest * count, UNION_GRID_ENTRIES)
    assert sizes[0][0] == sizes[0][1] * 60


def test_the_batch_cache_stays_bounded():
    model = NeuralODE(MLP(2, width=8, depth=1), controller=LOOSE).double()
    trainer = TrajectoryObjective(model, irregular(40, (5, 8)), None,
                       TrainConfig(epochs=2, batch_size=2, horizons=(1.0,)), F64)
    for _ in range(2):
        trainer.train_round(0, _backward, torch.Generator())
    assert len(trainer._cache) == _CACHED_BATCHES


def test_validation_loss_in_batches_is_the_mean_over_every_observation():
    """Reference: each validation trajectory solved alone, squared errors summed over all
    observed entries and divided by their number."""
    train, val = irregular(4, (6, 10)), irregular(7, (6, 12), seed=3)
    model = small_model()
    trainer = TrajectoryObjective(model, train, val, TrainConfig(epochs=3, batch_size=3), F64)
    errors, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(val)):
            alone = make_batch(val[i], F64)
            total, observed = masked_sse(model(alone.y0, alone.ts), alone)
            errors, count = errors + total.item(), count + int(observed)
    assert trainer.validation_loss() == pytest.approx(errors / count, rel=1e-7)


def test_the_default_batch_size_is_all_trajectories_up_to_a_limit():
    many = irregular(AUTO_BATCH_LIMIT + 44, (3, 4))
    model = small_model()
    trainer = TrajectoryObjective(model, many, None, TrainConfig(epochs=3), F64)
    assert (trainer.batch_size, trainer.batches_per_epoch) == (AUTO_BATCH_LIMIT, 2)
    few = TrajectoryObjective(model, many[:10], None, TrainConfig(epochs=3), F64)
    assert (few.batch_size, few.batches_per_epoch) == (10, 1)
    chosen = TrajectoryObjective(model, many, None, TrainConfig(epochs=3, batch_size=1000), F64)
    assert (chosen.batch_size, chosen.batches_per_epoch) == (len(many), 1)


def _backward(loss: torch.Tensor) -> float:
    """The trainer's step without an optimizer: gradients only, the loss returned."""
    loss.backward()
    return float(loss.detach())
