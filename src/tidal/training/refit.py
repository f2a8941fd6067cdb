"""Refitting on the validation observations too, after a split in time.

Held out in time (`tidal.training.time_split`), each series' validation rows are its latest
training-period observations: they choose the kept weights (early stopping), and the model
never trains on them, so a fitted series is an extrapolation there. Once the weights are
chosen, a short fine-tune from them on each series carried on through its validation rows
(`continuations`), at a tenth of the learning rate and from the estimated initial states,
lets the model use every observation but the test rows, which stay held out. Nothing
validates the fine-tune: it is kept short and gentle so that it adjusts the chosen model
rather than training a new one. A formula kept by `--discover` (a few coefficients) is instead
refitted to its least-squares optimum on those observations.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from tidal.data import Scaling, Trajectories
from tidal.models.polynomial import PolynomialODE
from tidal.training.config import TrainConfig
from tidal.training.fit import FitResult, continuations, fit
from tidal.training.least_squares import least_squares

#: The fine-tune's length as a fraction of the run's epochs, and its peak learning rate as a
#: fraction of the run's.
REFIT_EPOCHS = 0.1
REFIT_LR = 0.1


def refit_config(config: TrainConfig) -> TrainConfig:
    """The fine-tune's settings: whole series (no curriculum, no shooting), `REFIT_EPOCHS` of
    the epochs (at least 1) at `REFIT_LR` of the learning rate, no early stopping."""
    return dataclasses.replace(config, epochs=max(1, round(REFIT_EPOCHS * config.epochs)),
                               lr=REFIT_LR * config.lr, horizons=(1.0,), shooting_segments=1,
                               patience=None)


def refit(result: FitResult, train: Trajectories, val: Trajectories | None, scaling: Scaling,
          *, progress: bool = False) -> tuple[FitResult, dict[str, Any]] | None:
    """`result`'s model fine-tuned on `train` carried on through `val` (`refit_config` of
    `result.config`), and what to record in config.json's data.refit; None when `val` does
    not continue `train` (not a split in time) or the fine-tune did not finish (diverged or
    interrupted: `result` stands). `result` is not changed."""
    data = continuations(train, val)
    if data is None:
        return None
    if isinstance(result.model, PolynomialODE):
        return _least_squares_refit(result, data, scaling)
    config = refit_config(result.config)
    tuned = fit(copy.deepcopy(result.model), data, config=config, scaling=scaling,
                progress=progress, initial_states=result.initial_states)
    if tuned.status != "finished":
        return None
    record = {"epochs": config.epochs, "lr": config.lr,
              "observations": "training and validation"}
    message = (f"{result.message}; then fine-tuned on the training and validation "
               f"observations for {config.epochs} epoch{'s' * (config.epochs != 1)}")
    return dataclasses.replace(result, model=tuned.model, message=message,
                               initial_states=tuned.initial_states), record


def _least_squares_refit(result: FitResult, data: Trajectories, scaling: Scaling
                         ) -> tuple[FitResult, dict[str, Any]]:
    """A formula (a few coefficients, chosen as a whole) refitted to its least-squares
    optimum on `data` (`tidal.training.least_squares`) rather than fine-tuned."""
    model = copy.deepcopy(result.model)
    found = least_squares(model, data, scaling, initial_states=result.initial_states,
                          learn_initial_states=result.config.learn_initial_states,
                          dtype=getattr(torch, result.config.dtype))
    record = {"method": "least squares", "evaluations": found.evaluations,
              "observations": "training and validation"}
    message = (f"{result.message}; then refitted by least squares on the training and "
               "validation observations")
    return dataclasses.replace(result, model=model, message=message,
                               initial_states=found.initial_states), record
