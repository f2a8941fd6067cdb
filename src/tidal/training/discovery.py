"""Equations from a fitted model (`train_run(discover=True)`, `tidal fit --discover`).

The last steps of the UDE workflow (Rackauckas et al., "Universal Differential Equations for
Scientific Machine Learning", 2020), after a network has been fitted:

1. explain the learned field by the sparsest polynomial (degree 2) that matches it within 5%
   of its range over the observed states, in the data's units (SINDy, `tidal.models.symbolic.
   sparsest`);
2. fit that formula's coefficients to the trajectories again, as a `PolynomialODE` started at
   the formula and at the network's estimated initial states, with the network's settings
   (weight decay off: the coefficients are the model);
3. keep the formula unless the network validates clearly better (`MARGIN`; both trained on
   the same rows and chosen on the same validation rows, in the same units): the formula is
   the simpler model, and a few validation rows cannot tell two good fits apart finely.

Where the learned field is close to a sparse law, the refitted formula is that law's
least-squares fit, which forecasts as well as the true model's; where it is not, the network
stays, and config.json's data.discover says what was found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tidal.data import Scaling, Trajectories
from tidal.models import NeuralODE
from tidal.models.polynomial import PolynomialODE
from tidal.models.symbolic import sparsest
from tidal.training.fit import FitResult, fit

#: the formula's highest total degree
DEGREE = 2
#: the formula's fit: at least this many epochs, without early stopping (a few coefficients
#: walk slowly along the flat valleys of a trajectory fit: on one Lotka-Volterra series,
#: 300 epochs with early stopping ended at 1.13 times the training loss of 1,000)
FORMULA_EPOCHS = 1000
#: the formula is kept unless the network's validation loss is below 1 / MARGIN of its own:
#: the simpler model wins unless the validation rows (a few per series, held out in time)
#: tell the two apart clearly
MARGIN = 2.0


def discover(result: FitResult, train: Trajectories, val: Trajectories,
             progress: bool = False) -> tuple[FitResult, dict[str, Any]]:
    """`result`, or the refitted formula's result where it validates better, and what to
    record in config.json's data.discover."""
    names = tuple(train.state_names)
    region = observed_states([train, val])
    found = sparsest(user_field(result.model, result.scaling), region, degree=DEGREE,
                     state_names=names)
    if found is None:
        return result, {"formula": None, "kept": "network",
                        "why": "no polynomial of degree <= 2 explains the learned field within "
                               "5% of its range"}
    threshold, formula = found
    network = result.model
    candidate = PolynomialODE(formula.coefficients, DEGREE, result.scaling, state_names=names,
                              solver=network.solver, controller=network.controller,
                              adjoint=network.adjoint, max_steps=network.max_steps)
    candidate.to(next(network.parameters()).dtype)
    config = dataclasses.replace(result.config, weight_decay=0.0, patience=None,
                                 epochs=max(result.config.epochs, FORMULA_EPOCHS))
    refitted = fit(candidate, train, val=val, config=config, scaling=result.scaling,
                   progress=progress, initial_states=result.initial_states)
    record = {"formula": formula.equations(), "threshold": threshold,
              "val_loss": {"network": result.best_val_loss,
                           "formula": refitted.best_val_loss},
              "status": refitted.status}
    kept = (refitted.status == "finished"
            and refitted.best_val_loss <= MARGIN * result.best_val_loss)
    if not kept:
        return result, {**record, "kept": "network"}
    assert isinstance(refitted.model, PolynomialODE)
    equations = "; ".join(refitted.model.equations())
    message = (f"{result.message}; the learned field is explained by a formula, refitted to "
               f"the data ({equations}) and kept: validation loss {refitted.best_val_loss:.4g} "
               f"against the network's {result.best_val_loss:.4g}")
    chosen = dataclasses.replace(result, model=refitted.model, message=message,
                               best_epoch=refitted.best_epoch,
                               best_val_loss=refitted.best_val_loss,
                               initial_states=refitted.initial_states)
    return chosen, {**record, "kept": "formula"}


def user_field(model: NeuralODE, scaling: Scaling
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's field as rates in the data's units, at states in the data's units."""
    offset = torch.tensor(scaling.state_offset)
    scale = torch.tensor(scaling.state_scale)

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scaled = (y - offset.to(y.dtype)) / scale.to(y.dtype)
        rate = model.vector_field(t / scaling.time_scale, scaled)
        return rate * scale.to(y.dtype) / scaling.time_scale

    dtype = next(model.parameters()).dtype
    return lambda t, y: field(torch.as_tensor(t, dtype=dtype), y.to(dtype))


def observed_states(datasets: Sequence[Trajectories | None]) -> np.ndarray:
    """Every fully observed state of `datasets`, [N, D], in the data's units."""
    rows = np.concatenate([np.concatenate(data.values) for data in datasets
                           if data is not None])
    return rows[~np.isnan(rows).any(axis=1)]
