"""Dense output: evaluate a step's interpolant y(t0 + theta dt) = y0 + dt sum_i w_i(theta) K_i.

The weights w_i are polynomials in theta stored in the tableau (see `ButcherTableau`); K are
the step's dense stages. One matrix product evaluates any number of output times at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch


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
    increments = torch.einsum("mbs,sbd->mbd", weights, stages)
    return torch.addcmul(y0.unsqueeze(0), dt.unsqueeze(0), increments)


def _as_times(t: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64).detach()


def _outside(name: str, low: float, high: float) -> Exception:
    from tidal._errors import InvalidArgumentError

    return InvalidArgumentError(
        f"`Solution.evaluate(t)`: {name} lies outside the solved span [{low:.17g}, {high:.17g}]"
        "; dense output only covers the times the solve went through.")


class SharedDenseOutput:
    """The interpolants of every accepted step of a shared-grid solve."""

    def __init__(self, steps: Sequence, direction: float, shape: torch.Size,
                 dtype: torch.dtype, tableau) -> None:
        from tidal.solvers.explicit_rk import rk_coefficients

        if not steps:
            raise _outside("every time", math.nan, math.nan)
        self.direction, self.shape = direction, shape
        self.starts = torch.tensor([s.tau for s in steps], dtype=torch.float64)
        self.dts = torch.tensor([s.dt for s in steps], dtype=torch.float64)
        self.ends = self.starts + self.dts
        self.ys = torch.stack([s.y.reshape(-1) for s in steps])  # [n, N]
        self.stages = torch.stack([s.stages for s in steps])  # [n, S, N]
        self.dense = rk_coefficients(tableau, dtype, self.ys.device).dense

    def evaluate(self, t: torch.Tensor | float) -> torch.Tensor:
        times = _as_times(t)
        tau = (self.direction * times).reshape(-1)
        low, high = float(self.starts[0]), float(self.ends[-1])
        if bool(((tau < low - 1e-12 * abs(low)) | (tau > high + 1e-12 * abs(high))).any()):
            raise _outside(f"t={times.tolist()}", self.direction * low, self.direction * high)
        index = torch.searchsorted(self.ends, tau).clamp(max=len(self.dts) - 1)
        theta = (tau - self.starts[index]) / self.dts[index]
        weights = dense_weights(theta, self.dense, self.ys.dtype)  # [Q, S]
        dt = self.dts[index].to(self.ys.dtype).unsqueeze(-1)
        index = index.to(self.ys.device)
        increments = torch.einsum("qs,qsn->qn", weights.to(self.ys.device), self.stages[index])
        values = torch.addcmul(self.ys[index], dt.to(self.ys.device), increments)
        return values.reshape(*times.shape, *self.shape)


class PerSampleDenseOutput:
    """The interpolants of a per-sample solve: each sample's accepted steps."""

    def __init__(self, steps: Sequence, direction: torch.Tensor, shape: torch.Size,
                 tableau) -> None:
        from tidal.solvers.explicit_rk import rk_coefficients

        self.shape, self.steps = shape, steps
        self.direction = direction
        accepted = torch.stack([s.accept for s in steps])  # [I, B]
        starts = torch.stack([s.tau for s in steps])
        ends = torch.stack([s.tau1 for s in steps])
        # Rejected steps get an empty interval at the last accepted end, so searchsorted on the
        # running maximum lands on the accepted step that contains each time.
        self.ends = torch.where(accepted, ends, starts).cummax(0).values.T.contiguous()  # [B, I]
        self.first = starts[0]
        self.dense = rk_coefficients(tableau, steps[0].y.dtype, steps[0].y.device).dense

    def evaluate(self, t: torch.Tensor | float) -> torch.Tensor:
        times = _as_times(t).to(self.ends.device)
        single = times.dim() <= 1
        tau = (times.reshape(-1, self.ends.shape[0]) * self.direction.to(times.device))
        high = self.ends[:, -1]
        if bool(((tau < self.first - 1e-12) | (tau > high + 1e-12 * high.abs())).any()):
            raise _outside("a time", float(self.first.min()), float(high.max()))
        index = torch.searchsorted(self.ends, tau.T.contiguous()).clamp(
            max=len(self.steps) - 1).T  # [M, B]
        batch = torch.arange(tau.shape[1], device=tau.device)
        out = []
        for m in range(tau.shape[0]):
            rows = []
            for i in index[m].unique().tolist():
                step = self.steps[i]
                theta = torch.where(step.h > 0, (tau[m] - step.tau) / step.h.clamp(min=1e-300),
                                    0.0)
                values = interpolate_per_sample(step.y, step.h.to(step.y.dtype).unsqueeze(-1),
                                                step.stages, self.dense, theta.unsqueeze(0))[0]
                rows.append((index[m] == i, values))
            result = rows[0][1]
            for mask, values in rows[1:]:
                result = torch.where(mask.unsqueeze(-1), values, result)
            out.append(result)
        del batch
        stacked = torch.stack(out).reshape(tau.shape[0], *self.shape)
        return stacked[0] if single else stacked
