"""A minimal fixed-step driver for the SDE step methods in tests (the library's loop is not
part of these tests): steps a method over a shared grid with increments from a BrownianTree."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tidal.brownian import BrownianTree, Increment
from tidal.solvers.sde import Noise, SDEMethod, StepSDE

Field = Callable[[float, torch.Tensor], torch.Tensor]


def step_sde(f: Field, g: Field, noise: Noise, t0: float, dt: float | torch.Tensor) -> StepSDE:
    """The equation inside the step [t0, t0 + dt] (dt a float, or a tensor [B, 1] of
    per-sample steps: then f and g receive t as a tensor [B, 1])."""
    return StepSDE(lambda c, y: f(t0 + c * dt, y), lambda c, y: g(t0 + c * dt, y), noise)


def fixed_step_solve(method: SDEMethod, f: Field, g: Field, noise: Noise, y0: torch.Tensor,
                     tree: BrownianTree, t0: float, t1: float, steps: int,
                     keep_all: bool = False):
    """y(t1) from `steps` equal steps (or every state and the method states, `keep_all`)."""
    ts = np.linspace(t0, t1, steps + 1)
    incs = tree.increments(ts)
    y, state = y0, method.init(step_sde(f, g, noise, t0, ts[1] - t0), y0)
    ys, states = [y0], [state]
    for i in range(steps):
        dt = float(ts[i + 1] - ts[i])
        area = None if incs.area is None else incs.area[i]
        out = method.step(step_sde(f, g, noise, float(ts[i]), dt), y, dt,
                          Increment(incs.dw[i], area), state)
        y, state = out.y1, out.state
        ys.append(y)
        states.append(state)
    return (ys, states) if keep_all else y


def fitted_order(step_counts: list[int], errors: list[float]) -> float:
    """Slope of log(error) against log(dt)."""
    return float(np.polyfit(-np.log(step_counts), np.log(errors), 1)[0])
