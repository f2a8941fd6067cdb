"""`prefit`: pre-train a model's vector field on (state, rate) pairs estimated by smoothing
splines (`tidal.data.collocation`), before fitting trajectories. Regression on the pairs needs
no ODE solve, so it is cheap, and it starts trajectory fitting near a field whose flow already
follows the data, instead of from a random one (as in DiffEqFlux's collocation).
`linear_start`: the same pairs' least-squares affine fit as the start of a field's linear
term (`MLP(linear_term=True)`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.data.collocation import derivative_estimates
from tidal.models import NeuralODE
from tidal.models.augmented import extra_states
from tidal.nn import MLP

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
    pairs = _pairs(model, train, scaling)
    if pairs is None:
        return float("nan")
    y, target = pairs
    t = torch.zeros((), dtype=y.dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model.vector_field(t, y) - target).square().mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _pairs(model: NeuralODE, train: Trajectories, scaling: Scaling
           ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The splines' (state, rate) pairs in the scaled units the model trains in
    (rate_scaled = rate time_scale / state_scale); None when no trajectory has enough
    observations."""
    states, rates = derivative_estimates(train)
    if len(states) == 0:
        return None
    dtype = next(model.parameters()).dtype
    y = scaling.scale_values(torch.as_tensor(states, dtype=dtype))
    return y, scaling.scale_rates(torch.as_tensor(rates, dtype=dtype))


def linear_start(model: NeuralODE, train: Trajectories, scaling: Scaling) -> bool:
    """Set the linear term A y + b of `model.vector_field` (an `MLP(linear_term=True)`) so
    that the whole field fits the splines' rates best in least squares, given the network's
    own (small, untrained) output: [A b] = argmin sum ||rate - g(y) - A y - b||^2. Returns
    False (the term left at zero) when the data give no pairs, or the model has augmented
    states (whose rates the data cannot estimate)."""
    field = model.vector_field
    assert isinstance(field, MLP) and field.linear is not None, "an MLP with a linear term"
    linear = field.linear
    pairs = None if extra_states(model) else _pairs(model, train, scaling)
    if pairs is None:
        return False
    y, target = pairs
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        # the field is (g(y) + A y + b) x output_scale
        scale = 1.0 if field.output_scale is None else field.output_scale
        residual = (target - field(torch.zeros((), dtype=y.dtype), y)) / scale
        design = torch.cat([y, torch.ones_like(y[:, :1])], 1)
        solution = torch.linalg.lstsq(design.double(), residual.double()).solution  # [D + 1, D]
        linear.weight.copy_(solution[:-1].T)
        linear.bias.copy_(solution[-1])
    return True


def build_with_linear_start(build: Callable[[int], NeuralODE], train: Trajectories,
                            scaling: Scaling, seed: int) -> NeuralODE:
    """`build(seed)` with its linear term started by `linear_start` (picklable with
    `functools.partial`, for ensemble members)."""
    model = build(seed)
    linear_start(model, train, scaling)
    return model


def build_prefitted(build: Callable[[int], NeuralODE], train: Trajectories, scaling: Scaling,
                    seed: int) -> NeuralODE:
    """`build(seed)`, prefitted on `train` (a picklable builder for ensemble members with
    `functools.partial`)."""
    model = build(seed).to(torch.float64)
    prefit(model, train, scaling)
    return model
