"""`BackpropAdjoint`: differentiate a solve by recording every step with autograd."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackpropAdjoint:
    """Autograd records every operation of every step: the exact gradient of the discrete
    solve, in any mode (shared or per-sample grids, events, dense output). Memory grows with
    the number of steps; prefer `BacksolveAdjoint` when that is the limit.

    Step sizes are treated as constants (their dependence on the state is not differentiated),
    as in torchdiffeq and diffrax. A terminal event's time and state get their gradients from
    the implicit function theorem at the located event (`tidal.events.differentiable_event`).
    """
