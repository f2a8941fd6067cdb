"""`SolveConfig`: the solver, step control and adjoint a sequence model or layer solves with.

The sequence models (`ODEBlock`, `ODERNN`, `LatentODE`, `NeuralCDE`) make many short solves;
their defaults (`tidal.defaults.sequence_controller` and neighbours) are looser than
`tidal.solve`'s (rtol 1e-3, atol 1e-4), as training on noisy data needs, and gradients are taken
by backprop through the steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal import _checks as check
from tidal import defaults
from tidal._errors import InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers.base import StepSizeController
from tidal.integrate import solve
from tidal.solution import Solution
from tidal.solvers.base import StepMethod


@dataclass
class SolveConfig:
    """Objects handed to `tidal.solve` (see there); `max_steps` bounds each solve."""

    solver: StepMethod = field(default_factory=defaults.solver)
    controller: StepSizeController = field(default_factory=defaults.sequence_controller)
    adjoint: Adjoint = field(default_factory=defaults.adjoint)
    max_steps: int = defaults.MAX_STEPS
    num_fevals: int = field(default=0, init=False)

    @classmethod
    def of(cls, owner: str, options: dict[str, Any]) -> SolveConfig:
        """The configuration a model's `**solve_options` give, checked; `owner` names the
        model (with the argument) in messages."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidArgumentError(
                f"`{owner}(...)` got unknown solve option(s) {unknown}; the solve options are "
                f"{sorted(known)}, e.g. controller=tidal.PIDController(rtol=1e-3, atol=1e-4).")
        check.solve_objects(owner, options.get("solver"), options.get("controller"),
                            options.get("adjoint"))
        check.max_steps(options.get("max_steps", defaults.MAX_STEPS), owner=owner)
        return cls(**options)

    def solve(self, f: Callable[..., torch.Tensor], y0: torch.Tensor,
              ts: torch.Tensor) -> Solution:
        """`tidal.solve` with this configuration; adds its calls of f to `num_fevals` (the
        most over the samples on per-sample grids)."""
        solution = solve(f, y0, ts, solver=self.solver, controller=self.controller,
                         adjoint=self.adjoint, max_steps=self.max_steps)
        self.num_fevals += int(solution.stats.num_fevals.max())
        return solution

    def advance(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                y0: torch.Tensor) -> torch.Tensor:
        """y(1) for dy/ds = f(s, y), y(0) = y0: one interval of a sequence model, its own
        time span mapped onto [0, 1] by the caller (so one shared grid serves every sample)."""
        return self.solve(f, y0, _UNIT).ys[-1]


_UNIT = torch.tensor([0.0, 1.0], dtype=torch.float64)
