"""The defaults of `tidal.solve` and of the models built on it, in one place.

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

**Models** (`NeuralODE`, `UDE`, `HamiltonianNN`, `CNF`) all take solver, controller and
adjoint objects and share one set of training defaults, looser and cheaper in memory than
`solve`'s because a model is solved thousands of times while it learns from noisy data:

- solver: `Tsit5()` (`HamiltonianNN`: `Leapfrog()` for a separable energy, else
  `ImplicitMidpoint()`, with `ConstantStepSize(HAMILTONIAN_DT)`);
- controller: `PIDController(rtol=MODEL_RTOL, atol=MODEL_ATOL)` = 1e-4 / 1e-6: training rarely
  needs a tighter solve than the noise in the data (a fixed-step solver has no default; give
  `ConstantStepSize(dt)`);
- adjoint: `CheckpointAdjoint()`, the exact gradient in memory that grows as sqrt(steps);
- `MAX_STEPS` per solve, as for `solve`.

`tidal.odeint` keeps torchdiffeq's own defaults (rtol 1e-7, atol 1e-9, dopri5), the documented
exception, so that code moved from torchdiffeq behaves the same, `max_num_steps` included
(torchdiffeq's 2^31 - 1: a solve that finished there finishes here).
"""

from __future__ import annotations

from tidal.adjoint.backprop import BackpropAdjoint
from tidal.adjoint.checkpoint import CheckpointAdjoint
from tidal.controllers.pid import PIDController
from tidal.solvers.dopri5 import Dopri5
from tidal.solvers.sde import Calculus, EulerMaruyama, Heun, SDEMethod
from tidal.solvers.tsit5 import Tsit5

RTOL = 1e-6
ATOL = 1e-8
MAX_STEPS = 10_000
MODEL_RTOL = 1e-4
MODEL_ATOL = 1e-6
#: The sequence models and layers (`ODEBlock`, `ODERNN`, `LatentODE`, `NeuralCDE`): many short
#: solves inside a network trained on noisy data; Dopri5 with backprop, at these tolerances.
SEQUENCE_RTOL = 1e-3
SEQUENCE_ATOL = 1e-4
#: The step of `HamiltonianNN`'s default symplectic solver, in the model's time units: about
#: 60 steps per period of an oscillation of period 2 pi.
HAMILTONIAN_DT = 0.1


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


def model_solver() -> Tsit5:
    return Tsit5()


def model_controller() -> PIDController:
    return PIDController(rtol=MODEL_RTOL, atol=MODEL_ATOL)


def model_adjoint() -> CheckpointAdjoint:
    return CheckpointAdjoint()


def sequence_controller() -> PIDController:
    return PIDController(rtol=SEQUENCE_RTOL, atol=SEQUENCE_ATOL)
