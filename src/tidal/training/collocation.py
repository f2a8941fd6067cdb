"""`prefit`: pre-train a model's vector field on (state, rate) pairs estimated by smoothing
splines (`tidal.data.collocation`), before fitting trajectories. Regression on the pairs needs
no ODE solve, so it is cheap, and it starts trajectory fitting near a field whose flow already
follows the data, instead of from a random one (as in DiffEqFlux's collocation)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.data.collocation import derivative_estimates
from tidal.models import NeuralODE
from tidal.models.augmented import extra_states

PREFIT_STEPS = 500
PREFIT_LR = 1e-2


def prefit(model: NeuralODE, train: Trajectories, scaling: Scaling, *,
           steps: int = PREFIT_STEPS, lr: float = PREFIT_LR) -> float:
    """Fit `model.vector_field` (in place) to the splines' (state, rate) pairs of `train` by
    full-batch Adam on their mean squared error, in the scaled units the model trains in
    (rate_scaled = rate time_scale / state_scale). Returns the final loss (NaN when no
    trajectory has 5 observations of every state; the model is then left as it was).

    The field is evaluated at t = 0: a time-dependent field cannot be prefitted this way.
    """
    if extra_states(model):
        raise InvalidArgumentError("`prefit`: the model has extra (augmented) states, whose "
                                   "rates the data cannot estimate; leave out --prefit or "
                                   "--augment.")
    if getattr(model.vector_field, "time_input", False):
        raise InvalidArgumentError("`prefit`: the vector field takes time as an input; "
                                   "collocation fits an autonomous field only.")
    states, rates = derivative_estimates(train)
    if len(states) == 0:
        return float("nan")
    dtype = next(model.parameters()).dtype
    y = scaling.scale_values(torch.as_tensor(states, dtype=dtype))
    scale = torch.as_tensor(scaling.state_scale, dtype=dtype)
    target = torch.as_tensor(rates, dtype=dtype) * scaling.time_scale / scale
    t = torch.zeros((), dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model.vector_field(t, y) - target).square().mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def build_prefitted(build: Callable[[int], NeuralODE], train: Trajectories, scaling: Scaling,
                    seed: int) -> NeuralODE:
    """`build(seed)`, prefitted on `train` (a picklable builder for ensemble members with
    `functools.partial`)."""
    model = build(seed).to(torch.float64)
    prefit(model, train, scaling)
    return model
