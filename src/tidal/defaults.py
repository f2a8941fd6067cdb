"""The defaults of `tidal.solve`, in one place (and so of everything built on it).

- solver: `Dopri5()`, the Dormand–Prince 5(4) pair (scipy's RK45, MATLAB's ode45);
- controller: `PIDController(rtol=1e-6, atol=1e-8)` for adaptive solvers (a fixed-step solver
  has no default: it needs `ConstantStepSize(dt)` or `StepTo(ts)`);
- adjoint: `BackpropAdjoint()`;
- `MAX_STEPS = 10_000` steps (accepted and rejected) per solve;
- `tidal.sdeint`: Euler–Maruyama (Itô) or Heun (Stratonovich), `BackpropAdjoint()`; no
  default step size (`dt` is required: no value fits every time scale).

`MAX_STEPS` bounds a runaway solve, not a normal one. At rtol = 1e-6 an explicit method needs
tens to a few thousand steps on a non-stiff problem (the examples and tests take at most ~3000);
more than 10^4 almost always means a stiff problem (steps limited by stability, not accuracy) or
a tolerance far below what the data need, and 10^4 Dopri5 steps cost 6 x 10^4 calls of f
(seconds for a small network). diffrax stops at 4096; torchdiffeq never stops (2^31 - 1), so a
non-finite or stiff field could run for hours. The failure says how to raise the limit:
`solve(..., max_steps=n)`, `odeint(..., options={"max_num_steps": n})`.

`tidal.odeint` keeps torchdiffeq's own defaults (rtol 1e-7, atol 1e-9, dopri5), the documented
exception, so that code moved from torchdiffeq behaves the same; its `max_num_steps` defaults
to `MAX_STEPS` too.
"""

from __future__ import annotations

from tidal.adjoint.backprop import BackpropAdjoint
from tidal.controllers.pid import PIDController
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.sde import Calculus, EulerMaruyama, Heun, SDEMethod

RTOL = 1e-6
ATOL = 1e-8
MAX_STEPS = 10_000


def solver() -> Dopri5:
    return Dopri5()


def controller() -> PIDController:
    return PIDController(rtol=RTOL, atol=ATOL)


def adjoint() -> BackpropAdjoint:
    return BackpropAdjoint()


def sde_solver(calculus: Calculus) -> SDEMethod:
    """`tidal.sdeint`'s default method: Euler–Maruyama for Itô SDEs, Heun for Stratonovich
    (both solve every noise shape)."""
    return EulerMaruyama() if calculus is Calculus.ITO else Heun()
