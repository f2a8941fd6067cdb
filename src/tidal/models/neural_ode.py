"""`NeuralODE`: a learned vector field together with the configuration of its solve."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.adjoint import BackpropAdjoint
from tidal.controllers import ConstantStepSize, PIDController
from tidal.integrate import solve
from tidal.nn import MLP
from tidal.registry import ADJOINTS, SOLVERS
from tidal.solution import Solution
from tidal.solvers import Solver, Tsit5

VECTOR_FIELDS: dict[str, type[nn.Module]] = {"MLP": MLP}


class NeuralODE(nn.Module):
    """dy/dt = f_theta(t, y), solved from y0 and returned at the times ts.

    Args:
        vector_field: an `nn.Module` called as `f(t, y)`, e.g. `tidal.nn.MLP(d)`.
        solver: default `Tsit5()`.
        rtol, atol: tolerances of the adaptive step (`PIDController`). Training rarely needs
            tighter than the noise in the data; 1e-4 / 1e-6 by default.
        dt: a fixed step size (`ConstantStepSize(dt)`) instead of the adaptive step; needed by
            fixed-step solvers (`RK4`, `Leapfrog`, ...), which have no error estimate.
        adjoint: "checkpoint" (default: the exact gradient with bounded memory), "backprop" or
            "backsolve" (constant memory, approximate gradient), or an adjoint object.
        max_steps: most solver steps per solve.

    `model(y0, ts)` returns the states [T, *y0.shape]; ts is [T] (one grid for the batch) or
    [T, B] (every trajectory its own grid).
    """

    def __init__(self, vector_field: nn.Module, *, solver: Solver | None = None,
                 rtol: float = 1e-4, atol: float = 1e-6, dt: float | None = None,
                 adjoint: str | Any = "checkpoint", max_steps: int = 10_000) -> None:
        super().__init__()
        if isinstance(adjoint, str):
            if adjoint not in ADJOINTS:
                raise InvalidArgumentError(
                    f"`NeuralODE(adjoint={adjoint!r})` is not known; choose one of "
                    f"{sorted(ADJOINTS)} or pass an adjoint object.")
            adjoint = ADJOINTS[adjoint]()
        self.vector_field = vector_field
        self.solver = solver if solver is not None else Tsit5()
        if dt is None and not self.solver.adaptive:
            name = type(self).__name__
            raise InvalidArgumentError(
                f"`{name}(solver={self.solver!r})` has no error estimate to adapt its step; "
                f"give a fixed step: {name}(..., dt=0.05) (in the model's time units).")
        self.rtol, self.atol, self.dt = rtol, atol, dt
        self.controller: PIDController | ConstantStepSize = (
            PIDController(rtol=rtol, atol=atol) if dt is None else ConstantStepSize(dt))
        self.adjoint = adjoint
        self.max_steps = max_steps
        self.last_stats = None

    def forward(self, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return self.solve(y0, ts).ys

    def solve(self, y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> Solution:
        """The full `Solution` (statistics, status, dense output with `dense=True`).

        `options` override this model's solve configuration (see `tidal.solve`).
        """
        settings: dict[str, Any] = {"solver": self.solver, "controller": self.controller,
                                    "adjoint": self.adjoint, "max_steps": self.max_steps}
        if options.get("dense") or options.get("event") is not None:
            settings["adjoint"] = BackpropAdjoint()
        settings.update(options)
        solution = solve(self.vector_field, y0, ts, **settings)
        self.last_stats = solution.stats
        return solution

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (with `from_config`), as plain JSON values."""
        field_config = getattr(self.vector_field, "config", None)
        name = type(self.vector_field).__name__
        if field_config is None or VECTOR_FIELDS.get(name) is not type(self.vector_field):
            raise InvalidArgumentError(
                f"`NeuralODE.config()`: the vector field {name} cannot be described as data; "
                f"use one of {sorted(VECTOR_FIELDS)}, or save its state_dict yourself.")
        return {"type": "NeuralODE", "vector_field": {"type": name, **field_config()},
                **self._solve_config()}

    def _solve_config(self) -> dict[str, Any]:
        """The solve configuration as plain values (shared by the models built on this one)."""
        adjoint = next((key for key, cls in ADJOINTS.items() if isinstance(self.adjoint, cls)),
                       "checkpoint")
        config = {"solver": self.solver.name, "rtol": self.rtol, "atol": self.atol,
                  "adjoint": adjoint, "max_steps": self.max_steps}
        options = getattr(self.solver, "__dict__", {})
        if self.dt is not None:
            config["dt"] = self.dt
        if options:
            config["solver_options"] = dict(options)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NeuralODE:
        """Rebuild a model from `config()`; only registered classes are constructed."""
        field = dict(config["vector_field"])
        field_type = field.pop("type")
        if field_type not in VECTOR_FIELDS:
            raise InvalidArgumentError(
                f"Model config names vector field {field_type!r}; known: {sorted(VECTOR_FIELDS)}.")
        return cls(VECTOR_FIELDS[field_type](**field), **solve_options(config))


def solve_options(config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a model's solve configuration, from its `config()`."""
    if config["solver"] not in SOLVERS:
        raise InvalidArgumentError(
            f"Model config names solver {config['solver']!r}; known: {sorted(SOLVERS)}.")
    solver = SOLVERS[config["solver"]](**config.get("solver_options", {}))
    return {"solver": solver, "rtol": config["rtol"], "atol": config["atol"],
            "dt": config.get("dt"), "adjoint": config["adjoint"],
            "max_steps": config["max_steps"]}
