"""Tuple states <-> one flat vector, as torchdiffeq treats them: the solve runs on the
concatenation, `func`, norms and callbacks see the user's tuple."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal.controllers.norms import rms

State = torch.Tensor | tuple[torch.Tensor, ...]


class Flattener:
    """Tuple states <-> one flat vector. A plain tensor passes through unchanged."""

    shapes: list[torch.Size] | None
    sizes: list[int]
    #: elements of the state
    size: int

    def __init__(self, y0: State):
        self.sizes = []
        if isinstance(y0, torch.Tensor):
            self.shapes, self.shape, self.size = None, y0.shape, y0.numel()
            return
        if not isinstance(y0, tuple) or not all(isinstance(y, torch.Tensor) for y in y0):
            raise InvalidArgumentError(f"`odeint(y0=...)` must be a tensor or a tuple of "
                                       f"tensors; got {type(y0).__name__}.")
        if not y0:
            raise InvalidArgumentError("`odeint(y0=())` is an empty tuple; there is nothing to "
                                       "integrate.")
        self.shapes = [y.shape for y in y0]
        self.sizes = [y.numel() for y in y0]
        self.size = sum(self.sizes)

    def parts(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The user's tensors of one flat state: the tuple's, or the one tensor's."""
        if self.shapes is None:
            return (y.view(self.shape),)
        return tuple(part.view(shape) for part, shape in
                     zip(torch.split(y, self.sizes), self.shapes))

    def shape_of_flat(self) -> torch.Size:
        """The shape a user norm gets a flat state in (a tuple's norm unflattens itself)."""
        return self.shape if self.shapes is None else torch.Size((self.size,))

    def flatten(self, y: State) -> torch.Tensor:
        if self.shapes is None:
            assert isinstance(y, torch.Tensor)
            return y
        return torch.cat([part.reshape(-1) for part in y])

    def unflatten(self, y: torch.Tensor, leading: int = 0) -> State:
        if self.shapes is None:
            return y
        parts = torch.split(y, self.sizes, dim=leading)
        return tuple(part.reshape(y.shape[:leading] + shape)
                     for part, shape in zip(parts, self.shapes))

    def wrap(self, func: Callable) -> Callable:
        shapes = self.shapes
        if shapes is None:
            return func

        def flat_func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = func(t, self.unflatten(y))
            if not isinstance(out, tuple) or len(out) != len(shapes):
                raise InvalidArgumentError(
                    f"`odeint(func=...)` with a tuple state of {len(shapes)} tensors must "
                    f"return a tuple of {len(shapes)} tensors; got {type(out).__name__}.")
            for i, (part, shape) in enumerate(zip(out, shapes)):
                if part.shape != shape:
                    raise InvalidArgumentError(
                        f"`odeint(func=...)` returned shape {tuple(part.shape)} for tuple "
                        f"element {i} of shape {tuple(shape)}.")
            return self.flatten(out)

        return flat_func

    def tolerance(self, name: str, tol: Any) -> Any:
        if isinstance(tol, (tuple, list)):
            if self.shapes is None or len(tol) != len(self.shapes):
                raise InvalidArgumentError(
                    f"`odeint({name}=tuple)` needs one tolerance per tuple element of y0.")
            return torch.cat([torch.as_tensor(v, dtype=torch.float64).expand(size)
                              for v, size in zip(tol, self.sizes)])
        if isinstance(tol, torch.Tensor) and tol.numel() == 1:
            return float(tol)
        if isinstance(tol, torch.Tensor) and self.shapes is not None:
            return tol.reshape(-1)
        return tol

    def mixed_norm(self, scaled: torch.Tensor) -> torch.Tensor:
        return torch.stack([rms(part) for part in torch.split(scaled, self.sizes)]).max()

    def wrap_norm(self, norm: Callable) -> Callable:
        if self.shapes is None:
            return norm
        return lambda scaled: norm(self.unflatten(scaled))
