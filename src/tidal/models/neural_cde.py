r"""`NeuralCDE`: a neural controlled differential equation (Kidger et al. 2020),

$$ z(s_0) = \zeta(X(s_0)), \qquad dz = F_\theta(z)\, dX(s), \qquad \hat y(s) = \ell(z(s)), $$

where X is a continuous path through the observations (`tidal.models.control_paths`), F maps
the hidden state to a [hidden, channels] matrix, and the solve is the ODE
dz/ds = F(z) dX/ds. Time is one of X's channels, so irregular sampling needs no special
treatment; missing values are filled forward and an observational-intensity channel per
feature (the count of observations so far) tells F where data were seen.

Cubic paths (natural, Hermite) are smooth inside and across knots: one adaptive solve over
all knots. Piecewise-linear paths (linear, rectilinear) have a kink at every knot, so each
interval is its own solve of dz/ds = F(z) (X(i+1) - X(i)) on [0, 1]; this is also how the
rectilinear path is used online, one interval per arriving observation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.models.control_paths import (
    CUBIC_PATHS,
    PATHS,
    observation_channels,
    own_lengths,
)
from tidal.models.solve_config import SolveConfig
from tidal.nn import MLP


class NeuralCDE(nn.Module):
    """A neural CDE reading irregular, partly observed multivariate series.

    Args:
        input_size: features per observation (C).
        hidden_size: size of z.
        output_size: size of the readout (classes for classification, features to predict).
        path: "natural_cubic" (default), "hermite_cubic", "linear" or "rectilinear".
        width, depth: of the MLP that gives F (its output goes through tanh, which keeps z
            bounded as Kidger et al. recommend).
        solve options: solver, controller, adjoint, max_steps (see `SolveConfig`).

    `model(times, values, mask)` with times [K] or [K, B] (per-sample, non-decreasing; padding
    repeats the last time with an empty mask and changes no state), values and mask
    [K, B, input_size] returns the readout at every observation, [K, B, output_size]; the last
    row has seen everything (for classification). `nfe` counts calls of F in the last call.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *,
                 path: str = "natural_cubic", width: int = 64, depth: int = 2,
                 **solve_options: Any) -> None:
        super().__init__()
        if path not in PATHS:
            raise InvalidArgumentError(
                f"`NeuralCDE(path={path!r})` is not known; choose one of {sorted(PATHS)}.")
        self.input_size, self.hidden_size, self.path = input_size, hidden_size, path
        channels = 1 + 2 * input_size
        self.channels = channels
        self.initial = nn.Linear(channels, hidden_size)
        self.field = MLP(hidden_size, hidden_size * channels, width=width, depth=depth,
                         final_scale=1.0)
        self.readout = nn.Linear(hidden_size, output_size)
        self.solve_config = SolveConfig.of("NeuralCDE", solve_options)

    @property
    def nfe(self) -> int:
        return self.solve_config.num_fevals

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        """F(z), [B, hidden, channels]."""
        return torch.tanh(self.field(None, z)).unflatten(-1, (self.hidden_size, self.channels))

    def hidden(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
        """z at every observation, [K, B, hidden]."""
        check_series("NeuralCDE", times, values, mask, self.input_size,
                     self.readout.weight.dtype)
        self.solve_config.num_fevals = 0
        knots = observation_channels(times, values, mask)
        z0 = self.initial(knots[0])
        if self.path in CUBIC_PATHS:
            path = CUBIC_PATHS[self.path](knots, own_lengths(times, mask))
            ts = torch.arange(knots.shape[0], dtype=torch.float64)

            def field(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                return (self.matrix(z) @ path.derivative(s).unsqueeze(-1)).squeeze(-1)

            return self.solve_config.solve(field, z0, ts).ys
        states = [z0]  # (padding repeats a knot: no increment)
        for increment in PATHS[self.path](knots).increments():
            def interval(s: torch.Tensor, z: torch.Tensor, dx: torch.Tensor = increment
                         ) -> torch.Tensor:
                return (self.matrix(z) @ dx.unsqueeze(-1)).squeeze(-1)

            states.append(self.solve_config.advance(interval, states[-1]))
        out = torch.stack(states)
        return out[::2] if self.path == "rectilinear" else out

    def forward(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        return self.readout(self.hidden(times, values, mask))


def check_series(model: str, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                 input_size: int, dtype: torch.dtype | None = None) -> None:
    """Shapes of an irregular batch: times [K] or [K, B], values and mask [K, B, input_size],
    times non-decreasing along K; values finite where observed and of the model's `dtype`."""
    check_tensors(model, times=times, values=values, mask=mask)
    if values.dim() != 3 or values.shape[-1] != input_size:
        raise InvalidArgumentError(
            f"`{model}(values)`: expected [K, B, {input_size}] (time first); got shape "
            f"{tuple(values.shape)}.")
    if dtype is not None and values.dtype != dtype:
        raise InvalidArgumentError(
            f"`{model}(values)` is {values.dtype} but the model's parameters are {dtype}; "
            f"convert one to the other: model.to({values.dtype}) or values.to({dtype}).")
    if mask.shape != values.shape or mask.dtype != torch.bool:
        raise InvalidArgumentError(
            f"`{model}(mask)`: expected a bool tensor shaped like values "
            f"{tuple(values.shape)}; got {mask.dtype} {tuple(mask.shape)}.")
    bad = mask & ~torch.isfinite(values)
    if bool(bad.any()):
        raise InvalidArgumentError(
            f"`{model}(values)` is NaN or infinite where the mask says observed (first at "
            f"index {tuple(bad.nonzero()[0].tolist())}); set the mask False there.")
    if times.shape not in (values.shape[:1], values.shape[:2]):
        raise InvalidArgumentError(
            f"`{model}(times)`: expected [K] or [K, B] = {tuple(values.shape[:2])}; got "
            f"{tuple(times.shape)}.")
    if not bool(torch.isfinite(times).all()):
        raise InvalidArgumentError(f"`{model}(times)` contains NaN or infinite values; every "
                                   "row needs a finite time (pad with the last time).")
    if times.shape[0] > 1 and bool((times[1:] < times[:-1]).any()):
        raise InvalidArgumentError(
            f"`{model}(times)` decrease somewhere; times must be non-decreasing along the "
            "first axis (pad a shorter series by repeating its last time).")


def check_tensors(model: str, **tensors: Any) -> None:
    """Each argument a tensor, else an error naming it."""
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise InvalidArgumentError(f"`{model}({name})` must be a torch.Tensor; got "
                                       f"{type(tensor).__name__}.")
