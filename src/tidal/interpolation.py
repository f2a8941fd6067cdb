"""Dense output: evaluate a step's interpolant y(t0 + theta dt) = y0 + dt sum_i w_i(theta) K_i.

The weights w_i are polynomials in theta stored in the tableau (see `ButcherTableau`); K are
the step's dense stages. One matrix product evaluates any number of output times at once.
`DenseOutput` keeps the interpolants of every step of a solve for `Solution.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from tidal._errors import InvalidArgumentError
from tidal._grid import Grid


@lru_cache(maxsize=16)
def _exponents(degree: int, device: torch.device) -> torch.Tensor:
    return torch.arange(1, degree + 1, dtype=torch.float64, device=device)


def dense_weights(theta: torch.Tensor, dense: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w(theta) [..., S] from float64 theta [...] and float64 polynomials [S, degree], cast to
    the state's dtype only at the end (the polynomials cancel heavily, DOP853's above all)."""
    exponents = _exponents(dense.shape[1], dense.device)
    powers = theta.to(dtype=torch.float64, device=dense.device).unsqueeze(-1) ** exponents
    return (powers @ dense.T).to(dtype)


def interpolate_shared(y0: torch.Tensor, dt: float, stages: torch.Tensor, dense: torch.Tensor,
                       theta: torch.Tensor) -> torch.Tensor:
    """Flat state [N], one step size, dense stages [S, N]; theta [m] -> [m, N]."""
    weights = dense_weights(theta, dense, y0.dtype)  # [m, S]
    return torch.addmm(y0.unsqueeze(0), weights, stages, alpha=dt)


def interpolate_per_sample(y0: torch.Tensor, dt: torch.Tensor, stages: torch.Tensor,
                           dense: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """State [B, D], step sizes dt [B, 1] (state dtype), dense stages [S, B, D];
    theta [m, B] -> [m, B, D]."""
    weights = dense_weights(theta, dense, y0.dtype)  # [m, B, S]
    increments = torch.bmm(weights.transpose(0, 1), stages.transpose(0, 1))  # [B, m, D]
    return torch.addcmul(y0, dt, increments.transpose(0, 1))  # broadcast over m


@dataclass(frozen=True)
class DenseSteps:
    """The steps of a solve, as group tensors (I steps or loop iterations, G groups): each
    loop stacks its own record of steps into this one form."""

    starts: torch.Tensor  # [I, G] forward time where each step began
    sizes: torch.Tensor  # [I, G] float64 step sizes (0 where a group did not step)
    accepted: torch.Tensor  # [I, G] bool
    ys: torch.Tensor  # [I, G, N] the states the steps began from
    stages: torch.Tensor  # [I, S, G, N] their dense stages


class DenseOutput:
    """The interpolants of every accepted step of a solve, evaluated at any time within it.

    `evaluate(t)`: on a shared grid t has any shape and the result is [*t.shape, *state]; on
    per-sample grids t is [B] or [M, B] and the result [B, *state] or [M, B, *state].
    """

    def __init__(self, steps: DenseSteps, grid: Grid, shape: torch.Size, dense: torch.Tensor):
        self.steps, self.grid, self.shape, self.dense = steps, grid, shape, dense
        ends = torch.where(steps.accepted, steps.starts + steps.sizes, steps.starts)
        # Rejected steps get an empty interval at the last accepted end, so searchsorted on the
        # running maximum lands on the accepted step that contains each time.
        self.ends = ends.cummax(0).values.T.contiguous()  # [G, I]

    def evaluate(self, t: torch.Tensor | float) -> torch.Tensor:
        grid, steps = self.grid, self.steps
        times = torch.as_tensor(t, dtype=torch.float64).detach()
        if not len(steps.starts):
            raise _outside("every time", grid, steps)
        device = self.ends.device
        if grid.batched:
            if times.dim() == 0:  # one time for every sample
                times = times.expand(grid.groups)
            if times.dim() not in (1, 2) or times.shape[-1] != grid.groups:
                raise InvalidArgumentError(
                    f"`Solution.evaluate(t)` on per-sample grids takes one time per sample: t "
                    f"of shape [B] or [M, B] with B = {grid.groups} (or one time for all); got "
                    f"shape {tuple(times.shape)}.")
            queries = times.reshape(-1, grid.groups).to(device)
        else:
            queries = times.reshape(-1, 1).to(device)
        tau = queries * grid.direction  # [M, G]
        low, high = steps.starts[0], self.ends[:, -1]
        if bool(((tau < low - 1e-12 * low.abs()) | (tau > high + 1e-12 * high.abs())).any()):
            raise _outside(f"t={times.tolist()}" if times.numel() <= 8 else "a time", grid,
                           steps)
        index = torch.searchsorted(self.ends, tau.T.contiguous()).T.clamp(max=len(steps.starts)
                                                                          - 1)  # [M, G]
        start, size = steps.starts.gather(0, index), steps.sizes.gather(0, index)
        theta = torch.where(size > 0, (tau - start) / size.clamp(min=1e-300), 0.0)
        groups = torch.arange(grid.groups, device=device)
        y0 = steps.ys[index, groups]  # [M, G, N]
        stages = steps.stages.permute(0, 2, 1, 3)[index, groups]  # [M, G, S, N]
        weights = dense_weights(theta, self.dense, y0.dtype).to(device)  # [M, G, S]
        increments = torch.einsum("mgs,mgsn->mgn", weights, stages)
        values = torch.addcmul(y0, size.to(y0.dtype).unsqueeze(-1), increments)
        if grid.batched:
            values = values.reshape(-1, *self.shape)
            return values[0] if times.dim() <= 1 else values
        return values.reshape((*times.shape, *self.shape))


def _outside(name: str, grid: Grid, steps: DenseSteps) -> InvalidArgumentError:
    if not len(steps.starts):
        span = "the solve took no step"
    else:
        ends = (steps.starts + steps.sizes).amax(0) * grid.direction
        starts = steps.starts[0] * grid.direction
        low, high = torch.minimum(starts, ends), torch.maximum(starts, ends)
        span = (f"the solved span is [{float(low.min()):.17g}, {float(high.max()):.17g}]"
                if not grid.batched else "each sample's solved span ends at its own times")
    return InvalidArgumentError(
        f"`Solution.evaluate(t)`: {name} lies outside the solved span ({span}); dense output "
        "only covers the times the solve went through.")
