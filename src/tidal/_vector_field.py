"""The user's vector field as the solver calls it.

`bind_args` turns f(t, y, args) into f(t, y) once per solve. `Field` calls it from the loop:
inside, time runs forward (tau = direction * t, see `tidal._grid`), and on per-sample grids the
state is laid out [B, D]; `Field` takes the user's time (a tensor of the state's dtype: 0-d on a
shared grid, [B] on per-sample grids, made by the loop), restores the user's shape and flips the
sign of f where a group integrates backwards in time. A user's Jacobian `jac(t, y)` (given to a
stiff solver, `tidal.Rodas5P(jac=...)`) goes the same way: `Field.jacobian` lays it out as one
block per group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal._grid import Grid
from tidal.solvers.jacobian import checked_jacobian

UserField = Callable[..., torch.Tensor]
VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bind_args(f: UserField, args: Any) -> VectorField:
    """f(t, y), with `args` passed as f's third argument when given."""
    if args is None:
        return f

    def with_args(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return f(t, y, args)

    return with_args


class Field:
    """dy/dtau in the loop's layout, at a user time t (0-d or [B]) and a loop-layout state;
    `jac` is the user's df/dy (args bound), None when the solver differentiates f itself."""

    __slots__ = ("f", "groups", "jac", "loop_shape", "shape", "sign", "unflatten")

    def __init__(self, f: VectorField, grid: Grid, shape: torch.Size, dtype: torch.dtype,
                 jac: VectorField | None = None):
        self.f, self.shape, self.jac, self.groups = f, shape, jac, grid.groups
        self.loop_shape = grid.loop_shape(shape)
        self.unflatten = self.loop_shape != shape
        self.sign: torch.Tensor | None = None
        if not grid.forward:
            sign = grid.direction.to(dtype)
            self.sign = sign.unsqueeze(-1) if grid.batched else sign.reshape(())

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.unflatten:
            dy = self.f(t, y.view(self.shape)).reshape(self.loop_shape)
        else:
            dy = self.f(t, y)
        return dy if self.sign is None else dy * self.sign

    def jacobian(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(dy/dtau)/dy from the user's `jac` at a loop-layout state, one block per group
        [G, N, N] (G = 1 and N = the state's size on a shared grid, G = B per sample).

        `jac(t, y)` returns one D x D matrix per row of the state (D its last dimension):
        shape (*y.shape, D). Rows are independent, so a group's block is block-diagonal."""
        assert self.jac is not None
        J = checked_jacobian(self.jac(t, y.view(self.shape)), self.shape)
        dim = self.shape[-1] if len(self.shape) else 1
        rows = J.reshape(self.groups, -1, dim, dim)  # [G, R, D, D]
        count = rows.shape[1]
        if count > 1:  # block-diagonal [G, R D, R D]
            eye = torch.eye(count, dtype=J.dtype, device=J.device)
            rows = rows[:, :, :, None, :] * eye[None, :, None, :, None]
        J = rows.reshape(self.groups, count * dim, count * dim)
        return J if self.sign is None else J * self.sign.reshape(-1, 1, 1)

    def from_user(self, dy: torch.Tensor) -> torch.Tensor:
        """A value of f as the user returned it (the user's shape) in the loop's terms."""
        if self.unflatten:
            dy = dy.reshape(self.loop_shape)
        return dy if self.sign is None else dy * self.sign


def check_output(f0: Any, y0: torch.Tensor) -> None:
    if not isinstance(f0, torch.Tensor):
        raise InvalidArgumentError(
            f"The vector field f(t, y) must return a tensor shaped like y; it returned "
            f"{type(f0).__name__}.")
    if f0.shape != y0.shape:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned shape {tuple(f0.shape)} for y of shape "
            f"{tuple(y0.shape)}; dy/dt must have the state's shape.")
    if f0.dtype != y0.dtype:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned dtype {f0.dtype} for y of dtype {y0.dtype}; "
            "cast its output (or the parameters it uses) to the state's dtype.")
    if f0.device != y0.device:
        raise InvalidArgumentError(
            f"The vector field f(t, y) returned a tensor on {f0.device} for y on {y0.device}; "
            "move its parameters to the state's device.")
