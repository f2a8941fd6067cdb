"""Equations from a fitted model (`train_run(discover=True)`, `tidal fit --discover`).

The last steps of the UDE workflow (Rackauckas et al., "Universal Differential Equations for
Scientific Machine Learning", 2020), after a network has been fitted:

1. explain the learned field by sparse polynomials (degree 2) in the data's units: the
   distinct formulas SINDy finds along its thresholds that match the field within 10% of
   its range over the observed states (`tidal.models.symbolic.explanations`), at most four,
   sparsest first;
2. fit each formula's coefficients to the trajectories again, as a `PolynomialODE` started at
   the formula and at the network's estimated initial states: the network's settings for as
   many epochs (weight decay off: the coefficients are the model; no early stopping), then
   to the least-squares optimum on the training rows (`tidal.training.least_squares`); then,
   while a coefficient is within `SIGNIFICANCE` (2) standard errors of zero, without its
   least significant term, at the new optimum (backward elimination): each step a candidate
   too, as the network's field can carry terms the data do not support;
3. keep the sparsest formula whose validation loss is within `MARGIN` (2) times the best of
   all (the network's included), else the network: all are trained on the same rows and
   chosen on the same validation rows, in the same units, and a few validation rows cannot
   tell two good fits apart finely, so the simpler model wins unless they can. A formula is
   judged at its optimum, not at its best epoch on the validation rows, so a flexible one
   that overfits the training rows shows it.

Where the learned field is close to a sparse law, the refitted formula is that law's
least-squares fit to the data, the true model's fit when the law is the truth (after a split
in time, `tidal.training.refit` refits it by least squares on all the rows); where it is not,
the network stays, and config.json's data.discover says what was found. A field only
approximately explained (within 10%, not 5% as the report's formulas) can still be the right
law: the network's field carries its fitting errors, and the refit, not the match to the
network, decides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.data import Scaling, Trajectories
from tidal.models import NeuralODE
from tidal.models.polynomial import PolynomialODE
from tidal.models.symbolic import explanations
from tidal.training.config import TrainConfig
from tidal.training.fit import FitResult, fit, validation_loss
from tidal.training.least_squares import least_squares

#: the formula's highest total degree
DEGREE = 2
#: candidate formulas: the distinct ones along SINDy's thresholds that explain the learned
#: field within TOLERANCE of its range (each output), at most CANDIDATES, sparsest first
TOLERANCE = 0.1
CANDIDATES = 4
#: the sparsest candidate whose validation loss is within MARGIN times the best (network's
#: or any candidate's) is kept, else the network: the simpler model wins unless the
#: validation rows (a few per series, held out in time) tell the models apart clearly
MARGIN = 2.0
#: a formula at its optimum loses its least significant term while that term's coefficient is
#: within this many standard errors of zero (about 95% two-sided), and the pruned formula is
#: a candidate too: the network's field can carry terms the data do not support
SIGNIFICANCE = 2.0


def discover(result: FitResult, train: Trajectories, val: Trajectories,
             progress: bool = False) -> tuple[FitResult, dict[str, Any]]:
    """`result`, or a refitted formula's result (see the module docstring), and what to
    record in config.json's data.discover: every candidate formula with its validation loss,
    and which model was kept."""
    names = tuple(train.state_names)
    found = [(threshold, formula) for threshold, formula in explanations(
        user_field(result.model, result.scaling), observed_states([train, val]),
        tolerance=TOLERANCE, degree=DEGREE, state_names=names)
        if formula.coefficients.any()][:CANDIDATES]
    if not found:
        return result, {"candidates": [], "kept": "network",
                        "why": f"no polynomial of degree <= {DEGREE} explains the learned field "
                               f"within {TOLERANCE:.0%} of its range"}
    network = result.model
    config = dataclasses.replace(result.config, weight_decay=0.0, patience=None)
    judged: list[tuple[FitResult, dict[str, Any]]] = []
    seen: set[bytes] = set()  # each set of terms is fitted once
    for threshold, formula in found:
        key = _terms_key(formula.coefficients != 0)
        if key in seen:
            continue
        seen.add(key)
        model = PolynomialODE(formula.coefficients, DEGREE, result.scaling, state_names=names,
                              solver=network.solver, controller=network.controller,
                              adjoint=network.adjoint, max_steps=network.max_steps)
        refitted = fit(model, train, val=val, config=config, scaling=result.scaling,
                       progress=progress, initial_states=result.initial_states)
        entry = {"formula": formula.equations(), "threshold": threshold,
                 "terms": int((formula.coefficients != 0).sum()), "pruned_from": None}
        unfinished = {"train_loss": None, "val_loss": None}  # the fit did not finish
        if refitted.status != "finished":
            judged.append((refitted, {**entry, **unfinished, "status": refitted.status}))
            if refitted.status == "interrupted":  # Ctrl-C: no more candidates
                break
            continue
        before = len(judged)
        try:
            for fitted, train_loss in optimum_and_pruned(refitted, train, seen):
                formula_now = fitted.model
                assert isinstance(formula_now, PolynomialODE)
                pruned = {} if formula_now is model else {
                    "formula": formula_now.equations(), "pruned_from": entry["terms"],
                    "terms": formula_now.vector_field.coefficients.numel()}
                judged.append(_judged(fitted, train_loss, train, val, config,
                                      {**entry, **pruned}))
        except KeyboardInterrupt:  # Ctrl-C in a least-squares fit: no more candidates
            judged.append((refitted, {**entry, **unfinished, "status": "interrupted"}))
            break
        if len(judged) == before:  # its least-squares fit could not start
            judged.append((refitted, {**entry, **unfinished,
                                      "status": "its least-squares fit could not be solved"}))
    judged.sort(key=lambda pair: pair[1]["terms"])  # sparsest first
    fits, candidates = [fitted for fitted, _ in judged], [entry for _, entry in judged]
    record = {"candidates": candidates, "network_val_loss": result.best_val_loss,
              "epochs": config.epochs}
    chosen = choose(result.best_val_loss, [c["val_loss"] for c in candidates])
    if chosen is None:
        return result, {**record, "kept": "network"}
    refitted = fits[chosen]
    assert isinstance(refitted.model, PolynomialODE)
    equations = "; ".join(refitted.model.equations())
    message = (f"{result.message}; the learned field is explained by a formula, refitted to "
               f"the data ({equations}) and kept: validation loss {refitted.best_val_loss:.4g} "
               f"against the network's {result.best_val_loss:.4g}")
    kept = dataclasses.replace(result, model=refitted.model, message=message,
                               best_epoch=refitted.best_epoch,
                               best_val_loss=refitted.best_val_loss,
                               initial_states=refitted.initial_states)
    return kept, {**record, "kept": "formula", "chosen": chosen}


def optimum_and_pruned(result: FitResult, train: Trajectories, seen: set[bytes]
                       ) -> Iterator[tuple[FitResult, float]]:
    """A formula's fit carried to the least-squares optimum on `train`
    (`tidal.training.least_squares`, from the fit's coefficients and initial states), then,
    while its least significant coefficient is within `SIGNIFICANCE` standard errors of zero,
    the formula without that term at its optimum (backward elimination); each with its
    training loss. The pruning ends at a set of terms already in `seen` (its own pruning is
    another candidate's; the sets fitted here are added) or one that cannot be solved."""
    model = result.model
    assert isinstance(model, PolynomialODE)
    states = result.initial_states
    while True:
        try:
            found = least_squares(model, train, result.scaling, initial_states=states,
                                  learn_initial_states=result.config.learn_initial_states,
                                  dtype=getattr(torch, result.config.dtype))
        except InvalidArgumentError:  # the pruned formula's start cannot be solved
            return
        states = found.initial_states
        yield dataclasses.replace(result, model=model, initial_states=states), found.mse
        coefficients = model.vector_field.coefficients.detach().double().cpu().numpy()
        significance = np.abs(coefficients) / found.standard_errors
        if len(coefficients) == 1 or not (significance < SIGNIFICANCE).any():
            return
        model = model.without(int(np.argmin(significance)))
        key = _terms_key(model.vector_field.active.cpu().numpy())
        if key in seen:
            return
        seen.add(key)


def _judged(result: FitResult, train_loss: float, train: Trajectories, val: Trajectories,
            config: TrainConfig, entry: dict[str, Any]) -> tuple[FitResult, dict[str, Any]]:
    """A formula at its optimum with its validation loss, and its record."""
    val_loss, status = None, "finished"
    try:
        val_loss = validation_loss(result.model, train, val, config, result.scaling,
                                   result.initial_states)
    except SolveFailedError:
        status = "failed on the validation rows"
    return (dataclasses.replace(result, best_val_loss=math.nan if val_loss is None
                                else val_loss),
            {**entry, "train_loss": train_loss, "val_loss": val_loss, "status": status})


def _terms_key(active: np.ndarray) -> bytes:
    """A formula's set of terms ([D, F] booleans) as a dictionary key."""
    return np.asarray(active, dtype=bool).tobytes()


def choose(network_loss: float, losses: list[float | None]) -> int | None:
    """The first (sparsest) candidate whose validation loss is within `MARGIN` times the best
    of all, the network's included; None (the network) when there is none. `losses[i]` is
    None where candidate i's fit did not finish."""
    best = min([network_loss, *(loss for loss in losses if loss is not None)])
    return next((i for i, loss in enumerate(losses)
                 if loss is not None and loss <= MARGIN * best), None)


def user_field(model: NeuralODE, scaling: Scaling
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's field as rates in the data's units, at states in the data's units."""
    dtype = next(model.parameters()).dtype

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t, y = torch.as_tensor(t, dtype=dtype), y.to(dtype)
        rate = model.vector_field(scaling.scale_times(t), scaling.scale_values(y))
        return scaling.unscale_rates(rate)

    return field


def observed_states(datasets: Sequence[Trajectories | None]) -> np.ndarray:
    """Every fully observed state of `datasets`, [N, D], in the data's units."""
    rows = np.concatenate([np.concatenate(data.values) for data in datasets
                           if data is not None])
    return rows[~np.isnan(rows).any(axis=1)]
