r"""`SDEMethod`: the protocol of a stochastic step method, and what a step returns.

A method is a pure function of its inputs: `step(sde, y0, dt, dw, state)` takes the equation
inside the step (`StepSDE`), the state y0 [B, D], the step size dt (a Python float on a shared
grid, or a tensor [B, 1] of per-sample steps, >= 0), the Brownian increment over the step
(`tidal.brownian.Increment`: dW [B, m], and the space-time Lévy area H [B, m] when
`needs_area`), and the method's own state (None for one-step methods; `init` makes the first).
It returns the new state y1, an error estimate (methods with `error_order`) and the state for
the next step. It draws no random numbers itself: the loop asks the Brownian tree for the
increment over [t0, t0 + dt] of each sample, so a rejected step, a replay or a backward pass
sees the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from tidal._errors import IncompatibleOptionsError
from tidal.brownian import Increment
from tidal.solvers.sde.terms import Calculus, Noise, StepSDE


class SDEStep(NamedTuple):
    """One step: the new state, its error estimate (None without an embedded method) and the
    method's state for the next step (None for one-step methods)."""

    y1: torch.Tensor
    error: torch.Tensor | None
    state: Any


@dataclass(frozen=True)
class SDEMethod:
    """Base of the SDE step methods: immutable values (equal when type and options are).

    Class attributes: `name` (the string used at the edges), `calculus` (the integral the
    method's limit solves; for additive noise both coincide and every method applies),
    `strong_order` (on the noise it supports, see each method), `needs_area` (the step reads
    `Increment.area`), `stateful` (see below), `error_order` (strong order of the embedded
    solution behind `error`, None if the method has none), and the number of drift and
    diffusion evaluations per step.
    """

    name: ClassVar[str]
    calculus: ClassVar[Calculus]
    strong_order: ClassVar[float]
    needs_area: ClassVar[bool] = False
    error_order: ClassVar[float | None] = None
    #: the method carries a state from step to step (`init`); a checkpoint replay, which
    #: restarts from saved states y alone, cannot retake its steps
    stateful: ClassVar[bool] = False
    drift_evals: ClassVar[int]
    diffusion_evals: ClassVar[int]

    def check(self, noise: Noise, calculus: Calculus) -> None:
        """Raise `IncompatibleOptionsError` unless this method solves such an equation."""
        if calculus is not self.calculus and not noise.additive:
            raise IncompatibleOptionsError(
                f"`{self!r}` solves {self.calculus.value} SDEs; this one is "
                f"{calculus.value} with non-additive noise, where the two differ. Use a "
                f"{calculus.value} method, or convert the drift (f_strat = f_ito - "
                f"(1/2) sum_j (dg_j/dy) g_j).")

    def init(self, sde: StepSDE, y0: torch.Tensor) -> Any:
        """The method's state before the first step."""
        return None

    def step(self, sde: StepSDE, y0: torch.Tensor, dt: float | torch.Tensor, dw: Increment,
             state: Any) -> SDEStep:
        raise NotImplementedError
