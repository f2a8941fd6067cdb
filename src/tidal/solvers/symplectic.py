r"""Symplectic methods for Hamiltonian systems: `Leapfrog`, `Yoshida4` and `ImplicitMidpoint`.

The state's last dimension holds (q, p) in two equal halves, and the vector field returns
(dq/dt, dp/dt) = (dH/dp, -dH/dq). A symplectic method keeps the energy error bounded over
very long runs (it exactly conserves a nearby "modified" Hamiltonian), where an ordinary
Runge–Kutta method lets it drift.

**Splittings** (`Leapfrog`, `Yoshida4`) are explicit, for a separable H = T(p) + V(q). A step
alternates kicks p += a_i dt (dp/dt)(q) and drifts q += b_i dt (dq/dt)(p):

    kick a_0, drift b_0, kick a_1, drift b_1, ..., drift b_{s-1}, kick a_s

Since f(t, y) returns both halves, a kick evaluates f at the current state and keeps its
p-half, a drift keeps its q-half: correct exactly when dq/dt depends on p only and dp/dt on q
only, i.e. for separable H. It costs one call of f per sub-step (half of each call is thrown
away); the loop then evaluates f(t1, y1), which gives the cubic Hermite dense output and the
next step's first kick. Time advances with the drifts (t0 + dt * (b_0 + ... + b_i)). Applied
to a non-separable f the same steps are a consistent but only first-order partitioned method.

**Implicit midpoint** y1 = y0 + dt f(t0 + dt/2, (y0 + y1)/2) is symplectic for every H (and
conserves every quadratic invariant exactly); it needs no (q, p) layout. The midpoint is found
by fixed-point iteration, which converges when dt times the Lipschitz constant of f is below
2; an iteration that has not converged after `max_iters` raises `SolveFailedError`.

All three are fixed-step methods (`ConstantStepSize(dt)` or `StepTo(ts)`): a symplectic
method keeps its long-time properties only with a constant step.

References: Hairer, Lubich & Wanner, Geometric Numerical Integration, 2nd ed. (2006), Sec.
I.1, II.4-5, VI; Yoshida, Phys. Lett. A 150 (1990) 262; Forest & Ruth, Physica D 43 (1990) 105.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from tidal._errors import InvalidArgumentError, SolveFailedError, Status
from tidal.solvers.base import FixedStepMethod, IterativeStep, StepField, StepResult


@dataclass(frozen=True)
class Splitting:
    """A kick-drift composition for separable H, as data (see the module docstring).

    Args:
        kicks: a_0 .. a_s, the kick coefficients (one more than the drifts); they sum to 1.
        drifts: b_0 .. b_{s-1}, the drift coefficients; they sum to 1.
        order: the method's order.

    `steps` lists the sub-steps in order, [("kick", a_0), ("drift", b_0), ..., ("kick", a_s)],
    leaving out zero coefficients. A palindromic composition (kicks and drifts read the same
    backwards) is time-reversible, and its order is even.
    """

    kicks: tuple[float, ...]
    drifts: tuple[float, ...]
    order: int
    steps: tuple[tuple[str, float], ...] = dataclasses.field(init=False, repr=False,
                                                           compare=False)

    def __post_init__(self) -> None:
        if len(self.kicks) != len(self.drifts) + 1 or not self.drifts:
            raise ValueError(f"Splitting: needs one more kick than drifts (and >= 1 drift); "
                             f"got {len(self.kicks)} kicks and {len(self.drifts)} drifts.")
        for name, row in (("kicks", self.kicks), ("drifts", self.drifts)):
            if abs(math.fsum(row) - 1.0) > 1e-14 * max(1.0, sum(map(abs, row))):
                raise ValueError(f"Splitting: the {name} must sum to 1 (consistency); "
                                 f"got {math.fsum(row)!r}.")
        steps = [("kick", self.kicks[0])]
        for b, a in zip(self.drifts, self.kicks[1:]):
            steps += [("drift", b), ("kick", a)]
        object.__setattr__(self, "steps", tuple((kind, c) for kind, c in steps if c != 0.0))

    @property
    def symmetric(self) -> bool:
        return self.kicks == self.kicks[::-1] and self.drifts == self.drifts[::-1]


@lru_cache(maxsize=64)
def _weighted_halves(method: Splitting, width: int, last_dim: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[torch.Tensor, ...]:
    """One tensor per sub-step over the layout's last dimension (`width` entries): its
    coefficient on the half it moves (q for a drift, p for a kick), 0 on the other half. An
    entry belongs to q when its index along the user's last dimension (`last_dim` entries)
    lies in the first half."""
    if last_dim % 2:
        raise InvalidArgumentError(
            f"A symplectic splitting needs the state's last dimension to hold (q, p) in two "
            f"equal halves; got a last dimension of {last_dim}. Use ImplicitMidpoint() for a "
            "state without that layout.")
    is_q = ((torch.arange(width, device=device) % last_dim) < last_dim // 2).to(dtype)
    return tuple(c * (is_q if kind == "drift" else 1.0 - is_q)
                 for kind, c in method.steps)


def _advance(y0: torch.Tensor, dt: float | torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """y0 + dt * slope, dt a float (shared grid) or a tensor [B, 1] (per-sample grids)."""
    if isinstance(dt, torch.Tensor):
        return torch.addcmul(y0, dt, slope)
    return torch.add(y0, slope, alpha=dt)


def splitting_step(method: Splitting, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
                   dt: float | torch.Tensor) -> StepResult:
    """One step of a kick-drift composition. The state after each sub-step is y0 + dt * total,
    where total adds up the coefficient-weighted halves of f so far (at the end: the step's
    mean slope)."""
    weights = _weighted_halves(method, y0.shape[-1], field.last_dim, y0.dtype, y0.device)
    y, time, fevals = y0, 0.0, 0
    f: torch.Tensor | None = f0
    total: torch.Tensor | None = None
    for (kind, c), weight in zip(method.steps, weights):
        if f is None:  # the state moved since f was evaluated
            f = field.at(time, y)
            fevals += 1
        total = weight * f if total is None else torch.addcmul(total, weight, f)
        y = _advance(y0, dt, total)
        f = None
        if kind == "drift":
            time += c
    assert total is not None, "a splitting has at least one sub-step; this is a bug in tidal"
    return StepResult(y, total, fevals)


class Leapfrog(FixedStepMethod):
    """Leapfrog / velocity Verlet (kick-drift-kick): order 2, symplectic, time-reversible.

    p_{1/2} = p0 + dt/2 F(q0), q1 = q0 + dt G(p_{1/2}), p1 = p_{1/2} + dt/2 F(q1) for
    (dq/dt, dp/dt) = (G(p), F(q)), i.e. a separable H = T(p) + V(q). Two calls of f per step
    (the first kick reuses f(t0, y0)), plus f(t1, y1) for dense output.

    Verlet (1967); Hairer, Lubich & Wanner, Acta Numerica 12 (2003) 399.
    """

    name = "leapfrog"
    order = 2
    splits_state = True
    splitting = Splitting(kicks=(0.5, 0.5), drifts=(1.0,), order=2)

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        return splitting_step(self.splitting, field, y0, f0, dt)


_CBRT2 = 2.0 ** (1.0 / 3.0)
_W1 = 1.0 / (2.0 - _CBRT2)  # the outer sub-steps of the triple jump
_W0 = -_CBRT2 / (2.0 - _CBRT2)  # the middle one, backwards in time


class Yoshida4(FixedStepMethod):
    """Yoshida's (and Forest & Ruth's) 4th-order triple jump: three leapfrog steps of sizes
    w1 dt, w0 dt, w1 dt with w1 = 1/(2 - 2^(1/3)), w0 = 1 - 2 w1 < 0. Order 4, symplectic,
    time-reversible; six calls of f per step plus f(t1, y1). For separable H.

    Yoshida, Phys. Lett. A 150 (1990) 262; Forest & Ruth, Physica D 43 (1990) 105.
    """

    name = "yoshida4"
    order = 4
    splits_state = True
    splitting = Splitting(
        kicks=(_W1 / 2, (_W1 + _W0) / 2, (_W0 + _W1) / 2, _W1 / 2),
        drifts=(_W1, _W0, _W1),
        order=4,
    )

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        return splitting_step(self.splitting, field, y0, f0, dt)


class ImplicitMidpoint(IterativeStep, FixedStepMethod):
    """The implicit midpoint rule: order 2, symplectic for every H, conserves quadratic
    invariants exactly (up to the iteration's tolerance). Works on any state layout.

    Y = y0 + dt/2 f(t0 + dt/2, Y) is solved by fixed-point iteration from the explicit Euler
    guess y0 + dt/2 f(t0, y0), one call of f per iteration, until successive iterates differ
    by at most tol * (1 + |Y|) in every entry; then y1 = y0 + dt f(t0 + dt/2, Y). The
    iteration converges when dt * Lip(f) < 2 (faster for smaller steps); for stiff problems,
    use a smaller dt.

    Gradients flow through the iterations themselves (they converge to the exact derivative
    of the implicit step as the iterates converge); memory grows with the iteration count.

    Args:
        tol: relative tolerance of the iteration; default 100 machine epsilons of the state's
            dtype (2.2e-14 in float64, 1.2e-5 in float32).
        max_iters: the most iterations per step; more raises `SolveFailedError` with
            `Status.NOT_CONVERGED` (also under `solve(..., throw=False)`: the step has no
            result to return).

    Hairer, Lubich & Wanner, Geometric Numerical Integration, Sec. VI.3 and VIII.6.
    """

    name = "implicit_midpoint"
    order = 2

    def step(self, field: StepField, y0: torch.Tensor, f0: torch.Tensor,
             dt: float | torch.Tensor) -> StepResult:
        tol = self.tol if self.tol is not None else 100 * torch.finfo(y0.dtype).eps
        half = 0.5 * dt
        midpoint = y0 + half * f0
        change = math.inf
        for iteration in range(1, self.max_iters + 1):
            slope = field.at(0.5, midpoint)
            new = y0 + half * slope
            with torch.no_grad():
                change = float(((new - midpoint).abs() / (1.0 + new.abs())).max())
            midpoint = new
            if change <= tol:
                return StepResult(_advance(y0, dt, slope), slope, iteration)
            if not math.isfinite(change):
                break
        size = float(dt) if not isinstance(dt, torch.Tensor) else float(dt.abs().max())
        raise SolveFailedError(
            Status.NOT_CONVERGED,
            f"in an ImplicitMidpoint step of size {size:.3g}: after {iteration} fixed-point "
            f"iterations successive midpoints still differ by {change:.3g} (relative; the "
            f"tolerance is {tol:.3g})")
