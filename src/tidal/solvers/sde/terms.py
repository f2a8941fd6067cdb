r"""The SDE as a step method sees it: dy = f(t, y) dt + g(t, y) dW, with W an m-dimensional
Brownian motion per sample.

`Noise` says how g multiplies an increment dW [B, m] (its *shape*) and whether g depends on y:

| shape      | g(t, y)   | m     | g dW                 |
|------------|-----------|-------|----------------------|
| diagonal   | [B, D]    | D     | g * dW (elementwise) |
| scalar     | [B, D]    | 1     | g * dW (broadcast)   |
| general    | [B, D, m] | any   | matrix-vector, per sample |

`additive=True` declares that g does not depend on y (it may depend on t); then the Itô and
Stratonovich readings of the equation coincide, and the order-1.5 SRA methods apply. The
named noises `DIAGONAL`, `SCALAR`, `GENERAL` and `ADDITIVE` (general shape, additive) cover
torchsde's four noise types; `Noise("diagonal", additive=True)` is diagonal additive noise.

`StepSDE` is the equation inside one step [t0, t0 + dt]: `drift(c, y)` is f(t0 + c dt, y)
and `diffusion(c, y)` is g(t0 + c dt, y), so a method only names the fraction c of the step
and the loop keeps the time bookkeeping (shared Python-float time or per-sample tensors), as
`tidal.solvers.base.StepField` does for ODEs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from tidal._errors import InvalidArgumentError

SHAPES = ("diagonal", "scalar", "general")


class Calculus(enum.Enum):
    """Which stochastic integral the equation means."""

    ITO = "ito"
    STRATONOVICH = "stratonovich"


@dataclass(frozen=True)
class Noise:
    """How the diffusion multiplies the Brownian increment (see the module docstring)."""

    shape: str
    additive: bool = False

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise InvalidArgumentError(f"`Noise(shape=...)` must be one of {SHAPES}; got "
                                       f"{self.shape!r}.")

    def product(self, g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        """g dW: [B, D] from g ([B, D] or [B, D, m]) and dW [B, m]."""
        if self.shape == "general":
            return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)
        return g * dw


DIAGONAL = Noise("diagonal")
SCALAR = Noise("scalar")
GENERAL = Noise("general")
ADDITIVE = Noise("general", additive=True)


class StepSDE(NamedTuple):
    """The equation inside one step [t0, t0 + dt], as the loop hands it to a method."""

    drift: Callable[[float, torch.Tensor], torch.Tensor]  # (c, y) -> f(t0 + c dt, y)
    diffusion: Callable[[float, torch.Tensor], torch.Tensor]  # (c, y) -> g(t0 + c dt, y)
    noise: Noise
