"""Automatic model choice (`tidal fit --auto N`): a small random search over the network's
width, depth and activation, the weight decay and the learning rate, scored on the validation
data, within a stated budget.

Each of the N trials trains for `TRIAL_FRACTION` of the epochs (the curriculum compressed to
match) from the same seed; the one with the lowest validation loss is then trained in full.
The budget is therefore about 1 + N / 4 full fits. The candidates are drawn without
replacement from `SPACE` by the run's seed, so a search is reproducible. A random search of a
handful of trials over five discrete knobs needs no optimizer library (Optuna's samplers pay
off over tens of trials and continuous spaces; here every trial is a full training run).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.training.config import TrainConfig
from tidal.training.fit import fit

#: The choices: every combination is a candidate.
SPACE: dict[str, tuple[Any, ...]] = {
    "width": (32, 64), "depth": (1, 2), "activation": ("tanh", "softplus"),
    "weight_decay": (0.0, 1e-4), "lr": (1e-2, 3e-3)}
#: A trial trains this fraction of the run's epochs.
TRIAL_FRACTION = 0.25
_MODEL_KEYS = ("width", "depth", "activation")


def candidates(trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` distinct settings drawn from `SPACE` by `seed`."""
    grid = [dict(zip(SPACE, values)) for values in itertools.product(*SPACE.values())]
    if not 1 <= trials <= len(grid):
        raise InvalidArgumentError(f"`--auto {trials}`: give 1 to {len(grid)} trials (the "
                                   "search space has that many settings).")
    picks = np.random.default_rng(seed).choice(len(grid), trials, replace=False)
    return [grid[i] for i in sorted(picks)]


def choose(model: Any, config: TrainConfig, train: Trajectories, val: Trajectories | None,
           scaling: Scaling, n_states: int, trials: int) -> tuple[Any, TrainConfig,
                                                                   dict[str, Any]]:
    """The `ModelOptions` and `TrainConfig` of the best of `trials` candidates (lowest
    validation loss after a short training), and a record of the search for config.json."""
    if val is None:
        raise InvalidArgumentError("`--auto` chooses on the validation data; give `--val` > 0.")
    stages = len(config.horizons) + (config.shooting_segments > 1)
    short = max(stages, round(TRIAL_FRACTION * config.epochs))
    tried = []
    for setting in candidates(trials, config.seed):
        options = dataclasses.replace(model, **{k: setting[k] for k in _MODEL_KEYS})
        trial = dataclasses.replace(config, epochs=short, lr=setting["lr"],
                                    weight_decay=setting["weight_decay"], patience=None)
        result = fit(options.build(n_states, config.seed), train, val=val, config=trial,
                     scaling=scaling, progress=False)
        loss = result.best_val_loss if np.isfinite(result.best_val_loss) else float("inf")
        tried.append({**setting, "val_loss": loss, "status": result.status})
    best = min(tried, key=lambda row: row["val_loss"])
    chosen = {k: best[k] for k in SPACE}
    record = {"trials": tried, "trial_epochs": short, "chosen": chosen}
    return (dataclasses.replace(model, **{k: chosen[k] for k in _MODEL_KEYS}),
            dataclasses.replace(config, lr=chosen["lr"], weight_decay=chosen["weight_decay"]),
            record)
