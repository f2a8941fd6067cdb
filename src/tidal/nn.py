"""Building blocks for vector fields: an MLP that takes `(t, y)`, with an optional time input,
and `ConcatSquashMLP`, whose every layer is gated and shifted by t (for CNFs).

A vector field in tidal is a callable `f(t, y)`; `MLP` is one, so `tidal.solve(MLP(2, 2), y0,
ts)` works as it is. Its constructor arguments are plain values, returned by `MLP.config()`, so a
saved model is rebuilt from JSON without executing code from the file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


class MLP(nn.Module):
    """A multilayer perceptron used as a vector field `f(t, y) -> dy/dt`.

    Args:
        in_features: size of the state's last dimension.
        out_features: size of the output's last dimension (default: `in_features`).
        width: hidden units per layer.
        depth: number of hidden layers (>= 1).
        activation: one of `ACTIVATIONS` ("tanh", "softplus", "silu", "elu", "gelu", "relu").
            Prefer smooth activations: adaptive solvers and exact divergences need them.
        time_input: concatenate t to the state as an extra input (non-autonomous fields).
        final_scale: the last layer's initial weights are multiplied by this, so an untrained
            field is gentle and the first solves take few steps.
        output_scale: one positive factor per output, fixed (not trained): output i is
            output_scale[i] times the network's. Per-species rate scales for data whose
            species move on time scales decades apart (`tidal.training.rates`): each output
            of the network proper stays of order one. None: no factors.
        linear_term: add an affine term beside the network, f(y) = A y + b + g(y), with A and
            b zero here (`tidal.training.collocation.linear_start` starts them at a fit to
            the data) and exempt from weight decay (`undecayed_parameters`): with
            weight decay the network g stays a small correction and the linear part carries
            what the data determine, e.g. a damped oscillation's frequency near its fixed
            point, where a tanh network alone extrapolates freely.

    `t` is a scalar or has the state's batch shape (per-sample grids pass t of shape [B]).
    """

    output_scale: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int | None = None, *, width: int = 64,
                 depth: int = 2, activation: str = "tanh", time_input: bool = False,
                 final_scale: float = 0.1, output_scale: Sequence[float] | None = None,
                 linear_term: bool = False) -> None:
        super().__init__()
        out_features = _checked("MLP", in_features, out_features, width, depth, activation)
        if isinstance(final_scale, bool) or not isinstance(final_scale, (int, float)) \
                or not math.isfinite(final_scale):
            raise InvalidArgumentError(f"`MLP(final_scale={final_scale!r})`: must be a finite "
                                       "number (the last layer's initial weights are scaled by "
                                       "it; default 0.1).")
        factors = None if output_scale is None else [float(x) for x in output_scale]
        if factors is not None and (len(factors) != out_features or not all(
                0 < x < math.inf for x in factors)):
            raise InvalidArgumentError(
                f"`MLP(output_scale={output_scale!r})`: need {out_features} finite factors > 0 "
                "(one per output), or None.")
        self._config = {"in_features": in_features, "out_features": out_features,
                        "width": width, "depth": depth, "activation": activation,
                        "time_input": time_input, "final_scale": final_scale,
                        **({"output_scale": factors} if factors is not None else {}),
                        **({"linear_term": True} if linear_term else {})}
        # not in the state_dict: config() carries it, as the other constructor arguments
        self.register_buffer("output_scale", None if factors is None else torch.tensor(
            factors, dtype=torch.get_default_dtype()), persistent=False)
        self.time_input = time_input
        layers: list[nn.Module] = []
        size = in_features + int(time_input)
        for _ in range(depth):
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            size = width
        last = nn.Linear(size, out_features)
        with torch.no_grad():
            last.weight.mul_(final_scale)
            last.bias.zero_()
        self.net = nn.Sequential(*layers, last)
        self.linear: nn.Linear | None = None
        if linear_term:
            self.linear = nn.Linear(in_features, out_features)
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.zero_()

    def undecayed_parameters(self) -> list[nn.Parameter]:
        """The parameters a trainer leaves out of weight decay: the linear term's."""
        return [] if self.linear is None else list(self.linear.parameters())

    def forward(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        if self.time_input:
            t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
            t = t.reshape(*t.shape, 1).expand(*y.shape[:-1], 1)
            out = self.net(torch.cat([y, t], dim=-1))
        else:
            out = self.net(y)
        if self.linear is not None:
            out = out + self.linear(y)
        return out if self.output_scale is None else out * self.output_scale

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able: `MLP(**mlp.config())` rebuilds the network."""
        return dict(self._config)


class ConcatSquashLinear(nn.Module):
    r"""A time-conditioned linear layer (FFJORD's "concatsquash"):

    $$ h(t, x) = (W x + b) \odot \sigma(w_g t + b_g) + w_s t, $$

    a gate and a shift that depend on t, so every layer sees the time, not only the first.
    `t` is a scalar or has x's batch shape.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.shift = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(*t.shape, 1)
        return self.linear(x) * torch.sigmoid(self.gate(t)) + self.shift(t)


class ConcatSquashMLP(nn.Module):
    """A vector field `f(t, y)` of `ConcatSquashLinear` layers and smooth activations: the
    time-conditioned network of FFJORD, the usual choice for continuous normalizing flows.

    Args:
        in_features: size of the state's last dimension.
        out_features: size of the output's last dimension (default: `in_features`).
        width: hidden units per layer.
        depth: number of hidden layers (>= 1).
        activation: one of `ACTIVATIONS`; prefer smooth ones ("tanh", "softplus", "silu").
        final_scale: the last layer's initial weights are multiplied by this.

    `ConcatSquashMLP(**net.config())` rebuilds the network, as for `MLP`.
    """

    def __init__(self, in_features: int, out_features: int | None = None, *, width: int = 64,
                 depth: int = 3, activation: str = "tanh", final_scale: float = 0.1) -> None:
        super().__init__()
        out_features = _checked("ConcatSquashMLP", in_features, out_features, width, depth,
                                activation)
        self._config = {"in_features": in_features, "out_features": out_features,
                        "width": width, "depth": depth, "activation": activation,
                        "final_scale": final_scale}
        sizes = [in_features] + [width] * depth + [out_features]
        layers = [ConcatSquashLinear(a, b) for a, b in itertools.pairwise(sizes)]
        self.layers = nn.ModuleList(layers)
        self.activation = ACTIVATIONS[activation]()
        last = layers[-1]
        with torch.no_grad():
            last.linear.weight.mul_(final_scale)
            last.linear.bias.zero_()
            last.shift.weight.mul_(final_scale)

    def forward(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            y = self.activation(layer(t, y))
        return self.layers[-1](t, y)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able."""
        return dict(self._config)


class RotationMLP(nn.Module):
    r"""A vector field with a learned rotation generator as its linear part:

    $$ f(t, y) = (S - S^\top)\, y + \mathrm{MLP}(y). $$

    The skew-symmetric S - S^T has purely imaginary eigenvalues, so its flow turns y without
    growing or shrinking it: a field that starts as a bank of oscillators, which the MLP
    bends (e.g. to make a frequency depend on the state). A latent ODE's decoder learns
    periodic series far faster from it than from an MLP alone, whose linearisation starts
    near zero with random growth and decay (docs/benchmarks.md, issue 15).

    Args:
        features: size of y.
        width, depth, activation: of the MLP (`MLP`, autonomous, `final_scale` 1).
        rotation_scale: the standard deviation of S's initial entries; the frequencies of the
            initial rotation (in radians per unit of time) are of order
            `rotation_scale * sqrt(2 * features)`.
    """

    def __init__(self, features: int, *, width: int = 64, depth: int = 2,
                 activation: str = "tanh", rotation_scale: float = 1.0) -> None:
        super().__init__()
        if not rotation_scale >= 0:
            raise InvalidArgumentError(
                f"`RotationMLP(rotation_scale={rotation_scale!r})`: must be >= 0.")
        self.mlp = MLP(features, width=width, depth=depth, activation=activation,
                       final_scale=1.0)
        self.generator = nn.Parameter(rotation_scale * torch.randn(features, features))

    def forward(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        return y @ (self.generator - self.generator.T) + self.mlp(t, y)


def _checked(network: str, in_features: int, out_features: int | None, width: int,
             depth: int, activation: str) -> int:
    """Validate a network's sizes and activation; returns out_features (default in_features).
    """
    out_features = in_features if out_features is None else out_features
    for name, value in (("in_features", in_features), ("out_features", out_features),
                        ("width", width), ("depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(
                f"`{network}({name}={value!r})`: must be a positive integer.")
    if activation not in ACTIVATIONS:
        raise InvalidArgumentError(
            f"`{network}(activation={activation!r})` is not known; choose one of "
            f"{sorted(ACTIVATIONS)}.")
    return out_features
