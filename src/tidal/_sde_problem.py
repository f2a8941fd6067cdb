"""An SDE solve's checked arguments (`SDEProblem`), as the SDE loop and the adjoints use them.

`make_sde_problem` checks what `tidal.sdeint` was given, calls the drift and the diffusion once
to check their outputs against the noise, and builds the Brownian tree every step, rejected
step, checkpoint replay and reversible backward pass asks for its increments. An `SDEProblem`
has the fields the adjoints read from an ODE `Problem` (`f`, `args`, `y0`, `grid`, `event`,
`dense`, `throw`, `start`, `time_grad`, `replace`), so `BackpropAdjoint` and `CheckpointAdjoint`
run it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tidal import _checks as check
from tidal import defaults
from tidal._errors import IncompatibleOptionsError, InvalidArgumentError
from tidal._grid import Grid
from tidal._vector_field import VectorField, bind_args
from tidal.adjoint.backsolve import BacksolveAdjoint
from tidal.adjoint.checkpoint import CheckpointAdjoint
from tidal.adjoint.stochastic_backsolve import StochasticBacksolveAdjoint
from tidal.brownian import BrownianTree, sample_seeds
from tidal.controllers.adaptive import AdaptiveController
from tidal.controllers.base import StepSizeController
from tidal.controllers.constant import ConstantStepSize
from tidal.solvers.sde import SDEMethod
from tidal.solvers.sde.terms import Calculus, Noise

if TYPE_CHECKING:
    from tidal._loop_io import Start
    from tidal.adjoint.base import Adjoint

#: `sdeint(noise=...)` names
NOISES = {"diagonal": Noise("diagonal"), "scalar": Noise("scalar"),
          "general": Noise("general"), "additive": Noise("general", additive=True)}
#: the tree's resolution for adaptive steps without `dt_min`: this fraction of the first step
ADAPTIVE_TOL_FRACTION = 2.0**-10


@dataclass(frozen=True, kw_only=True)
class SDEProblem:
    """One SDE solve, checked. `drift` and `diffusion` have `args` bound; `f` is a probe whose
    graph reaches every tensor either uses (`tidal.adjoint.base.parameters_of` walks it);
    `brownian` is the path every query of the solve is answered from; `dt` the fixed (or first)
    step."""

    drift: VectorField
    diffusion: VectorField
    noise: Noise
    calculus: Calculus
    f: VectorField
    args: Any
    y0: torch.Tensor
    ts: Any
    grid: Grid
    solver: SDEMethod
    controller: StepSizeController
    adjoint: Adjoint
    brownian: BrownianTree
    dt: float
    max_steps: int
    throw: bool
    start: Start | None = None
    event: None = None
    dense: bool = False
    compile: int = 0  # (SDE solves are not compiled; the adjoints read it as for an ODE)

    @property
    def time_grad(self) -> bool:
        """SDE solves give no gradients with respect to the output times (`make_sde_problem`
        refuses times that require grad)."""
        return False

    def replace(self, **changes: Any) -> SDEProblem:
        return dataclasses.replace(self, **changes)


def make_sde_problem(drift: Callable[..., torch.Tensor], diffusion: Callable[..., torch.Tensor],
                     y0: torch.Tensor, ts: Any, *, noise: Any, calculus: Any, solver: Any,
                     dt: Any, controller: Any, adjoint: Any, seed: Any, brownian: Any,
                     args: Any, max_steps: Any, throw: bool) -> SDEProblem:
    """Check every argument of `tidal.sdeint` and build its `SDEProblem`."""
    for name, fn in (("drift", drift), ("diffusion", diffusion)):
        if not callable(fn):
            raise InvalidArgumentError(f"`sdeint({name}=...)` must be callable as {name}(t, y); "
                                       f"got {type(fn).__name__}.")
        check.takes_args(fn, args, owner="sdeint", name=name)
    check.state(y0, owner="sdeint")
    if y0.dim() != 2:
        raise InvalidArgumentError(
            f"`sdeint(y0=...)` must have shape [B, d] (a batch of states); got shape "
            f"{tuple(y0.shape)}. Use y0.unsqueeze(0) for a single state.")
    if isinstance(ts, torch.Tensor) and ts.requires_grad:
        raise InvalidArgumentError("`sdeint(ts=...)` requires grad; SDE solves give no "
                                   "gradients with respect to the output times. Pass ts.detach().")
    times = check.times(ts, y0, allow_infinite_end=False, owner="sdeint")
    if times.shape[0] < 2 or bool((times[1] < times[0]).any()):
        raise InvalidArgumentError(
            f"`sdeint(ts=...)` must be increasing with at least two times (SDE solves run "
            f"forward in time); got shape {tuple(times.shape)}, starting "
            f"{times[:2].tolist()}.")
    noise = _noise(noise)
    calculus = _calculus(calculus)
    solver = _solver(solver, calculus)
    solver.check(noise, calculus)
    controller, dt = _controller(controller, dt, solver)
    adjoint = check.adjoint(adjoint)
    if isinstance(adjoint, BacksolveAdjoint):  # for SDEs: the stochastic adjoint
        adjoint = StochasticBacksolveAdjoint(params=adjoint.params)
    if isinstance(adjoint, CheckpointAdjoint) and solver.stateful:
        raise IncompatibleOptionsError(
            f"`sdeint(solver={solver!r}, adjoint=CheckpointAdjoint())`: the method carries a "
            f"state from step to step that checkpoints do not keep. Use ReversibleAdjoint() "
            f"(O(1) memory, exact) or BackpropAdjoint().")
    g0 = _first_values(drift, diffusion, y0, times, noise, args)
    channels = y0.shape[1] if noise.shape == "diagonal" else (
        1 if noise.shape == "scalar" else g0.shape[-1])
    grid = Grid.of(times, y0.device)
    tree = _tree(brownian, seed, times, y0, channels, controller, dt, solver.needs_area)
    bound_drift, bound_diffusion = bind_args(drift, args), bind_args(diffusion, args)

    def probe(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = bound_diffusion(t, y)
        return bound_drift(t, y) + (g.sum(-1) if g.dim() > y.dim() else g)

    problem = SDEProblem(
        drift=bound_drift, diffusion=bound_diffusion, noise=noise, calculus=calculus, f=probe,
        args=args, y0=y0, ts=ts, grid=grid, solver=solver, controller=controller,
        adjoint=adjoint, brownian=tree, dt=dt, max_steps=check.max_steps(max_steps),
        throw=bool(throw))
    adjoint.check(problem)
    return problem


def _noise(noise: Any) -> Noise:
    if isinstance(noise, Noise):
        return noise
    if isinstance(noise, str) and noise in NOISES:
        return NOISES[noise]
    raise InvalidArgumentError(f"`sdeint(noise=...)` must be one of {sorted(NOISES)} or a "
                               f"tidal.solvers.sde.Noise; got {noise!r}.")


def _calculus(calculus: Any) -> Calculus:
    if isinstance(calculus, Calculus):
        return calculus
    names = [c.value for c in Calculus]
    if isinstance(calculus, str) and calculus in names:
        return Calculus(calculus)
    raise InvalidArgumentError(f"`sdeint(calculus=...)` must be one of {names}; got "
                               f"{calculus!r}.")


def _solver(solver: Any, calculus: Calculus) -> SDEMethod:
    if solver is None:
        return defaults.sde_solver(calculus)
    if isinstance(solver, SDEMethod):
        return solver
    if isinstance(solver, type) and issubclass(solver, SDEMethod):
        raise InvalidArgumentError(f"`sdeint(solver={solver.__name__})` needs an instance: "
                                   f"solver={solver.__name__}().")
    raise InvalidArgumentError(
        f"`sdeint(solver=...)` must be an SDE method such as tidal.EulerMaruyama(), "
        f"tidal.Milstein(), tidal.Heun(), tidal.SRA1() or tidal.ReversibleHeun(); got "
        f"{solver!r}.")


def _controller(controller: Any, dt: Any, solver: SDEMethod
                ) -> tuple[StepSizeController, float]:
    """(the controller, the fixed or first step). `dt` is required unless the controller
    carries a step of its own."""
    if controller is not None and not isinstance(controller, StepSizeController):
        raise InvalidArgumentError(
            f"`sdeint(controller=...)` must be tidal.PIDController(rtol, atol) (adaptive "
            f"steps) or tidal.ConstantStepSize(dt); got {type(controller).__name__}.")
    if isinstance(controller, AdaptiveController):
        if solver.error_order is None:
            raise IncompatibleOptionsError(
                f"`sdeint(solver={solver!r}, controller=PIDController(...))`: the method has no "
                f"error estimate. Use solver=tidal.SRA1() (additive noise) for adaptive steps, "
                f"or fixed steps (dt=...).")
        if dt is None and controller.dt0 is not None:
            dt = controller.dt0
    elif isinstance(controller, ConstantStepSize):
        if dt is not None:
            raise InvalidArgumentError(
                f"`sdeint(dt={dt!r}, controller={controller!r})` gives the step twice; pass "
                f"only dt=... .")
        dt = controller.dt
    if dt is None:
        raise InvalidArgumentError(
            "`sdeint(dt=...)` is required: the step size (fixed steps), or the first step "
            "with controller=PIDController(...). There is no default: a good dt depends on "
            "the time scale of the problem (e.g. (ts[-1] - ts[0]) / 1000).")
    if isinstance(dt, torch.Tensor) and dt.numel() == 1 and dt.is_floating_point():
        dt = dt.item()  # a one-element tensor is a number too
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (
            dt > 0 and math.isfinite(dt)):
        raise InvalidArgumentError(f"`sdeint(dt={dt!r})` must be a positive finite number of "
                                   f"time units.")
    if controller is None:
        controller = ConstantStepSize(float(dt))
    return controller, float(dt)


def _first_values(drift: Callable[..., torch.Tensor], diffusion: Callable[..., torch.Tensor],
                  y0: torch.Tensor, times: torch.Tensor, noise: Noise, args: Any
                  ) -> torch.Tensor:
    """Check drift and diffusion at (t0, y0) against the state and the noise; returns the
    diffusion there."""
    t0 = times[0].to(y0.dtype).to(y0.device)
    with torch.no_grad():
        f0 = drift(t0, y0) if args is None else drift(t0, y0, args)
        g0 = diffusion(t0, y0) if args is None else diffusion(t0, y0, args)
    for name, value in (("drift", f0), ("diffusion", g0)):
        if not isinstance(value, torch.Tensor):
            raise InvalidArgumentError(f"`sdeint(drift/diffusion)`: {name}(t, y) must return a "
                                       f"tensor; it returned {type(value).__name__}.")
        if value.dtype != y0.dtype or value.device != y0.device:
            raise InvalidArgumentError(
                f"`sdeint({name}=...)` returned {value.dtype} on {value.device} for y0 of "
                f"{y0.dtype} on {y0.device}; cast its output (or its parameters).")
    if f0.shape != y0.shape:
        raise InvalidArgumentError(f"`sdeint(drift=...)` returned shape {tuple(f0.shape)} for "
                                   f"y of shape {tuple(y0.shape)}; it must match the state.")
    want = ("[B, d, m]" if noise.shape == "general" else "[B, d] (the state's shape)")
    ok = (g0.dim() == 3 and g0.shape[:2] == y0.shape if noise.shape == "general"
          else g0.shape == y0.shape)
    if not ok:
        label = "additive" if noise.additive and noise.shape == "general" else noise.shape
        raise InvalidArgumentError(
            f"`sdeint(diffusion=...)` returned shape {tuple(g0.shape)} for y of shape "
            f"{tuple(y0.shape)}; with noise={label!r} it must be {want}. Use noise='general' "
            f"for a matrix [B, d, m], 'diagonal' or 'scalar' for [B, d].")
    if noise.additive:
        _check_additive(diffusion, t0, y0, g0, args)
    return g0


def _check_additive(diffusion: Callable[..., torch.Tensor], t0: torch.Tensor, y0: torch.Tensor,
                    g0: torch.Tensor, args: Any) -> None:
    """Refuse a diffusion declared additive that changes with y (at y0 moved by 0.1%): the
    methods would drop its Itô–Stratonovich and Milstein terms silently."""
    moved = y0 + 1e-3 * (1 + y0.abs())
    with torch.no_grad():
        g1 = diffusion(t0, moved) if args is None else diffusion(t0, moved, args)
    if isinstance(g1, torch.Tensor) and g1.shape == g0.shape and bool(
            torch.isfinite(g1).all()) and not torch.allclose(g1, g0, rtol=1e-6, atol=0.0):
        raise InvalidArgumentError(
            "`sdeint(noise='additive')` (or Noise(..., additive=True)) declares a diffusion "
            "g(t) that does not depend on y, but diffusion(t0, y) changes with y. Use "
            "noise='general' (or 'diagonal'/'scalar') for a state-dependent diffusion.")


def _tree(brownian: Any, seed: Any, times: torch.Tensor, y0: torch.Tensor, channels: int,
          controller: StepSizeController, dt: float, levy_area: bool) -> BrownianTree:
    """The solve's Brownian path: the user's tree, or one built over [t0, t0 + 2^L r] with
    resolution r = dt for fixed steps (every step end of a regular grid is then a tree node:
    the cheapest queries) and r = dt_min (else dt / 1024) for adaptive steps."""
    t0, t_end = float(times.min()), float(times.max())
    if brownian is not None:
        if seed is not None:
            raise InvalidArgumentError("`sdeint(seed=..., brownian=...)`: give one of them "
                                       "(the tree has its own seeds).")
        if not isinstance(brownian, BrownianTree):
            raise InvalidArgumentError(f"`sdeint(brownian=...)` must be a tidal.brownian."
                                       f"BrownianTree; got {type(brownian).__name__}.")
        problems = []
        if brownian.batch != y0.shape[0] or brownian.channels != channels:
            problems.append(f"batch {brownian.batch} and {brownian.channels} channels, not "
                            f"{y0.shape[0]} and {channels}")
        if brownian.t0 > t0 or brownian.t1 < t_end:
            problems.append(f"[{brownian.t0}, {brownian.t1}] does not cover [{t0}, {t_end}]")
        if brownian.dtype != y0.dtype or brownian.device != y0.device:
            problems.append(f"{brownian.dtype} on {brownian.device}, not {y0.dtype} on "
                            f"{y0.device}")
        if levy_area and not brownian.levy_area:
            problems.append("no Lévy area (the method needs levy_area=True)")
        leaf = brownian.span * 2.0**-brownian.depth
        if leaf > dt * (1 + 1e-9):
            problems.append(f"its resolution ({leaf:.6g}, the leaf width) is coarser than the "
                            f"step dt={dt:g}: increments inside a leaf are not Brownian (an Itô "
                            f"solve loses its correction); build it with tol <= dt")
        if problems:
            raise InvalidArgumentError("`sdeint(brownian=...)` does not fit this solve: "
                                       + "; ".join(problems) + ".")
        return brownian
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())  # torch.manual_seed controls it
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"`sdeint(seed={seed!r})` must be an int (or None to draw "
                                   f"one from torch's global generator).")
    resolution = dt
    if isinstance(controller, AdaptiveController):
        resolution = controller.dt_min if controller.dt_min > 0 else dt * ADAPTIVE_TOL_FRACTION
    levels = max(0, math.ceil(math.log2(max((t_end - t0) / resolution, 1.0))))
    t1 = t0 + resolution * 2.0**levels
    if not t1 >= t_end:
        t1 = t_end
    return BrownianTree(t0, t1, sample_seeds(seed, y0.shape[0], device=y0.device), channels,
                        tol=resolution, levy_area=levy_area, dtype=y0.dtype)
