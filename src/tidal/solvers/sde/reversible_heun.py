r"""The reversible Heun method (Kidger, Foster, Li & Lyons, "Efficient and Accurate Gradients
for Neural SDEs", NeurIPS 2021): a Stratonovich method whose step can be undone exactly in
algebra, which gives an O(1)-memory adjoint whose gradients are those of the forward steps.

The method carries an auxiliary state yh with its drift and diffusion, (yh, fh, gh):

    yh1 = 2 y0 - yh0 + fh0 dt + gh0 dW,        fh1, gh1 = f(t1, yh1), g(t1, yh1),
    y1  = y0 + (fh0 + fh1) dt / 2 + (gh0 + gh1) dW / 2.

Given (y1, yh1, fh1, gh1) and the same dt and dW, `backward` recovers the step's start:

    yh0 = 2 y1 - yh1 - fh1 dt - gh1 dW,        fh0, gh0 = f(t0, yh0), g(t0, yh0),
    y0  = y1 - (fh0 + fh1) dt / 2 - (gh0 + gh1) dW / 2,

which is the forward step solved for its inputs (substitute y1 into the first line), so a
backward pass can rebuild every state from the last one instead of storing them. In floating
point the reconstruction is exact up to round-off.

One drift and one diffusion evaluation per step (the pair at yh1 is reused by the next step).
Strong order 0.5 in general and 1.0 for additive noise (Kidger et al. 2021, Sec. 3).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from tidal.brownian import Increment
from tidal.solvers.sde.base import SDEMethod, SDEStep
from tidal.solvers.sde.terms import Calculus, StepSDE


class ReversibleHeunState(NamedTuple):
    """The auxiliary state and its drift and diffusion, carried from step to step."""

    yh: torch.Tensor
    fh: torch.Tensor
    gh: torch.Tensor


class ReversibleHeun(SDEMethod):
    """The reversible Heun method (module docstring): Stratonovich, every noise shape."""

    name = "reversible_heun"
    calculus = Calculus.STRATONOVICH
    strong_order = 0.5
    stateful = True
    drift_evals = diffusion_evals = 1

    def init(self, sde: StepSDE, y0: torch.Tensor) -> ReversibleHeunState:
        return ReversibleHeunState(y0, sde.drift(0.0, y0), sde.diffusion(0.0, y0))

    def step(self, sde: StepSDE, y0: torch.Tensor, dt: float | torch.Tensor, dw: Increment,
             state: ReversibleHeunState) -> SDEStep:
        yh0, fh0, gh0 = state
        yh1 = 2 * y0 - yh0 + fh0 * dt + sde.noise.product(gh0, dw.dw)
        fh1, gh1 = sde.drift(1.0, yh1), sde.diffusion(1.0, yh1)
        y1 = y0 + (fh0 + fh1) * (0.5 * dt) + 0.5 * sde.noise.product(gh0 + gh1, dw.dw)
        return SDEStep(y1, None, ReversibleHeunState(yh1, fh1, gh1))

    def backward(self, sde: StepSDE, y1: torch.Tensor, dt: float | torch.Tensor,
                 dw: Increment, state: ReversibleHeunState
                 ) -> tuple[torch.Tensor, ReversibleHeunState]:
        """Undo `step`: the step's start (y0, state0) from its end (y1, state1), for the same
        `sde` (the step's [t0, t1]), `dt` and `dw`."""
        yh1, fh1, gh1 = state
        yh0 = 2 * y1 - yh1 - fh1 * dt - sde.noise.product(gh1, dw.dw)
        fh0, gh0 = sde.drift(0.0, yh0), sde.diffusion(0.0, yh0)
        y0 = y1 - (fh0 + fh1) * (0.5 * dt) - 0.5 * sde.noise.product(gh0 + gh1, dw.dw)
        return y0, ReversibleHeunState(yh0, fh0, gh0)
