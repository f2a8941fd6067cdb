r"""`ODEBlock`: a continuous-depth layer, features mapped through the flow of an ODE.

A residual block x_{k+1} = x_k + h f(x_k) is one forward-Euler step of dx/dt = f(x); `ODEBlock`
takes the limit: it returns x(t1), where x(0) is the input and dx/dt = f(t, x). With a fixed
Euler step h = t1 / N and one f for every step it *is* an N-block weight-tied ResNet (the test
checks the equality to round-off); with an adaptive solver the depth is chosen per input by the
error control, and `nfe` reports what it cost.

Augmented dimensions (Dupont et al. 2019, "Augmented Neural ODEs"): the flow of an ODE is a
homeomorphism, so it cannot, for instance, pull apart two nested rings in the plane. Appending
`augment` zeros to x lets the flow move the points through the extra dimensions; the output
keeps them (d + augment features), for the layer after the block to read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.models.neural_ode import raise_dtype_mismatch
from tidal.models.solve_config import SolveConfig
from tidal.solution import Solution


class ODEBlock(nn.Module):
    """x -> x(t1) for dx/dt = f(t, x), x(0) = [x, 0 (augment zeros)].

    Args:
        vector_field: `f(t, x)` on [B, d + augment], e.g. `tidal.nn.MLP(d + augment)`.
        augment: zeros appended to the features before the flow (ANODE); default 0.
        t1: the end time (the "depth"); default 1.
        solver, controller, adjoint, max_steps: the solve's configuration, as for
            `tidal.solve` (objects; default Dopri5, rtol 1e-3 / atol 1e-4, backprop).

    `block(x)` takes [B, d] and returns [B, d + augment]. After a call, `nfe` is the number of
    calls of f in the forward solve, `last_solution` the full `Solution` (with
    `backward_stats` for the backsolve adjoint once gradients were computed).
    """

    def __init__(self, vector_field: nn.Module, *, augment: int = 0, t1: float = 1.0,
                 **solve_options: Any) -> None:
        super().__init__()
        if not isinstance(augment, int) or isinstance(augment, bool) or augment < 0:
            raise InvalidArgumentError(
                f"`ODEBlock(augment={augment!r})`: must be a non-negative integer (the number "
                "of zero features appended before the flow).")
        if not 0 < t1 < math.inf:
            raise InvalidArgumentError(f"`ODEBlock(t1={t1!r})`: the depth must be positive and "
                                       "finite.")
        self.vector_field = vector_field
        self.augment = augment
        self.t1 = float(t1)
        self.solve_config = SolveConfig.of("ODEBlock", solve_options)
        self.last_solution: Solution | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise InvalidArgumentError(
                f"`ODEBlock(x)`: expected features [batch, d]; got shape {tuple(x.shape)}. "
                "Flatten the features first (x.flatten(1)).")
        if self.augment:
            x = torch.cat([x, x.new_zeros(x.shape[0], self.augment)], dim=1)
        ts = torch.tensor([0.0, self.t1], dtype=torch.float64)
        self.solve_config.num_fevals = 0
        try:
            self.last_solution = self.solve_config.solve(self.vector_field, x, ts)
        except RuntimeError as error:
            raise_dtype_mismatch("ODEBlock(x)", "x", x, self, error)
            raise
        return self.last_solution.ys[-1]

    @property
    def nfe(self) -> int:
        """Calls of f in the last forward solve (0 before the first call)."""
        return self.solve_config.num_fevals
