r"""`CNF`: a continuous normalizing flow (Chen et al., 2018; FFJORD, Grathwohl et al., 2019)
with the RNODE regularizers (Finlay et al., 2020).

A sample of the base distribution z = y(0) flows along dy/dt = f(t, y) to a data point
x = y(t1). Along the path the log-density obeys the instantaneous change of variables

$$ \frac{d}{dt} \log p_t(y(t)) = -\operatorname{div} f(t, y(t)), $$

so log p(x) = log p_base(z) + ∫_0^{t1} div f dt, with z found by solving backwards from
x at t1 to t = 0. Every solve integrates the augmented state [y, Δ, (K, F)] with
Δ' = -div f and, when regularizing, the kinetic energy K' = ||f||^2 and the Jacobian's
squared Frobenius norm F' = ||∂f/∂y||_F^2 (both counted positive whichever way time runs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import torch
from torch import nn

from tidal import defaults
from tidal._errors import InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers import PIDController
from tidal.controllers.base import StepSizeController
from tidal.controllers.norms import LeadingRMS
from tidal.integrate import solve
from tidal.models import divergence
from tidal.models.neural_ode import raise_dtype_mismatch, solve_objects
from tidal.solution import Stats
from tidal.solvers.base import StepMethod

TRACES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")


class FlowResult(NamedTuple):
    """The end of one solve of a batch [B, d].

    Attributes:
        y: the state at the end, [B, d].
        delta_logp: log p_end(y_end) - log p_start(y_start) along each path, [B].
        kinetic: ∫ ||f||^2 dt over the path, [B] (None unless `kinetic` > 0).
        jacobian: ∫ ||∂f/∂y||_F^2 dt (Hutchinson's estimate with that trace), [B] (None unless
            `jacobian` > 0).
    """

    y: torch.Tensor
    delta_logp: torch.Tensor
    kinetic: torch.Tensor | None
    jacobian: torch.Tensor | None


class CNF(nn.Module):
    r"""A continuous normalizing flow: base samples at t = 0, data at t = t1.

    Args:
        vector_field: f(t, y) for y [B, d], e.g. `tidal.nn.MLP(d, time_input=True)` or
            `tidal.nn.ConcatSquashMLP(d)`. Its parameters are this module's.
        trace: "exact" (d vector-Jacobian products per evaluation; the choice in low
            dimensions) or "hutchinson" (one product with a random probe, drawn once per
            solve and fixed during it; unbiased, for high dimensions).
        noise: Hutchinson's probe, "rademacher" (lower variance) or "gaussian".
        base: the distribution at t = 0, any object with `log_prob(z) -> [B]` and
            `sample((n,))`; None is the standard normal in d dimensions.
        dim: d, needed by `sample` with the default base when the vector field does not say
            (a `tidal.nn` network does).
        t1: the time of the data, > 0.
        solver, controller, adjoint: objects, with the models' defaults (`tidal.defaults`:
            `Tsit5()`, `PIDController(rtol=1e-4, atol=1e-6)`, `CheckpointAdjoint()`). Unless
            the controller has its own `norm`, the error norm covers [y, Δ] only, so the
            regularizers do not set the step size. Evaluate densities at a tighter tolerance
            than you train with (`tidal flow fit` trains at 1e-3 and evaluates at 1e-5).
        kinetic: weight λ_K of the kinetic energy ∫ ||f||^2 dt in `forward`'s regularization.
        jacobian: weight λ_J of ∫ ||∂f/∂y||_F^2 dt (Hutchinson's estimate ||eps^T J||^2 with
            the Hutchinson trace).
        max_steps: most solver steps per solve.

    Directions: `transform(x)` runs data → base (t1 → 0, the normalizing direction),
    `inverse(z)` base → data (0 → t1, the generative direction). `cnf.last_stats` holds the
    `Stats` (`num_fevals`, ...) of the most recent solve.

    References:
        Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. FFJORD: free-form continuous
        dynamics for scalable reversible generative models. ICLR 2019.
        Finlay, Jacobsen, Nurbekyan, Oberman. How to train your neural ODE: the world of
        Jacobian and kinetic regularization. ICML 2020.
    """

    def __init__(self, vector_field: nn.Module, *, trace: str = "exact",
                 noise: str = "rademacher", base: Any = None, dim: int | None = None,
                 t1: float = 1.0, solver: StepMethod | None = None,
                 controller: StepSizeController | None = None, adjoint: Adjoint | None = None,
                 kinetic: float = 0.0, jacobian: float = 0.0,
                 max_steps: int = defaults.MAX_STEPS) -> None:
        super().__init__()
        _check_choice("trace", trace, TRACES)
        _check_choice("noise", noise, NOISES)
        if not callable(vector_field):
            raise InvalidArgumentError(
                f"`CNF(vector_field=...)` must be callable as f(t, y); got "
                f"{type(vector_field).__name__}.")
        if not (isinstance(t1, (int, float)) and math.isfinite(t1) and t1 > 0):
            raise InvalidArgumentError(f"`CNF(t1={t1!r})` must be a finite number > 0.")
        for name, weight in (("kinetic", kinetic), ("jacobian", jacobian)):
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise InvalidArgumentError(
                    f"`CNF({name}={weight!r})`: a regularization weight must be >= 0.")
        if base is not None and not (hasattr(base, "log_prob") and hasattr(base, "sample")):
            raise InvalidArgumentError(
                f"`CNF(base=...)` needs `log_prob` and `sample` (a torch.distributions "
                f"object); got {type(base).__name__}. Use None for a standard normal.")
        self.vector_field = vector_field
        self.trace, self.noise, self.base, self.t1 = trace, noise, base, float(t1)
        declared = _features(vector_field)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1
                                or declared not in (None, dim)):
            raise InvalidArgumentError(
                f"`CNF(dim={dim!r})` must be a positive integer"
                + (f" equal to the vector field's in_features ({declared})" if declared else "")
                + "; leave it out to take the network's.")
        self.dim = dim if dim is not None else declared
        self.solver, self.controller, self.adjoint = solve_objects(
            "CNF", solver if solver is not None else defaults.model_solver(), controller,
            adjoint)
        self.kinetic, self.jacobian, self.max_steps = float(kinetic), float(jacobian), max_steps
        self.last_stats: Stats | None = None

    def transform(self, x: torch.Tensor, probe: torch.Tensor | None = None) -> FlowResult:
        """Data x [B, d] at t1 → base z at 0; `delta_logp` = log p_base(z) - log p(x)."""
        return self.integrate(x, self.t1, 0.0, probe)

    def inverse(self, z: torch.Tensor) -> FlowResult:
        """Base z [B, d] at 0 → data x at t1; `delta_logp` = log p(x) - log p_base(z)."""
        return self.integrate(z, 0.0, self.t1)

    def integrate(self, y0: torch.Tensor, t_start: float, t_end: float,
                  probe: torch.Tensor | None = None) -> FlowResult:
        """Solve the augmented system from y0 [B, d] at `t_start` to `t_end`. With the
        Hutchinson trace, `probe` [B, d] is the probe (None: drawn from torch's generator);
        the exact trace ignores it."""
        _check_batch(y0, self.dim)
        if probe is not None and probe.shape != y0.shape:
            raise InvalidArgumentError(
                f"`CNF(...)`: the Hutchinson probe must have the batch's shape "
                f"{tuple(y0.shape)}; got {tuple(probe.shape)}.")
        d = y0.shape[-1]
        extras = [name for name in ("kinetic", "jacobian") if getattr(self, name) > 0]
        if self.trace == "hutchinson" and probe is None:
            probe = divergence.probe(y0, self.noise)
        field = _AugmentedField(
            self.vector_field, d, self.trace, extras,
            eps=probe if self.trace == "hutchinson" else None,
            sign=1.0 if t_end > t_start else -1.0)
        start = torch.cat([y0, y0.new_zeros(y0.shape[0], 1 + len(extras))], dim=-1)
        ts = torch.tensor([t_start, t_end], dtype=torch.float64)
        try:
            sol = solve(field, start, ts, solver=self.solver, controller=self._controller(d),
                        adjoint=self.adjoint, max_steps=self.max_steps)
        except RuntimeError as error:
            raise_dtype_mismatch("CNF(x)", "x", y0, self, error)
            raise
        self.last_stats = sol.stats
        end = sol.ys[-1]
        regs = dict(zip(extras, end[:, d + 1:].unbind(-1)))
        return FlowResult(end[:, :d], end[:, d], regs.get("kinetic"), regs.get("jacobian"))

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_base(z) [B] for z [B, d]."""
        if self.base is None:
            return -0.5 * z.square().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        out = self.base.log_prob(z)
        if out.shape != z.shape[:1]:
            raise InvalidArgumentError(
                f"`CNF(base=...)`: base.log_prob(z) for z of shape {tuple(z.shape)} gave shape "
                f"{tuple(out.shape)}; it must give one value per sample. Wrap a factorized "
                f"base as `torch.distributions.Independent(base, 1)`.")
        return out

    def log_prob(self, x: torch.Tensor, probe: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) [B] of data x [B, d]: log p_base(z) - Δ with (z, Δ) = `transform(x)`
        (`probe`: as `integrate`'s)."""
        flow = self.transform(x, probe)
        return self.base_log_prob(flow.y) - flow.delta_logp

    def forward(self, x: torch.Tensor, probe: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x) [B], regularization [B] = λ_K K + λ_J F) for a training loss
        `-(log_prob - regularization).mean()`; the regularization is zero without weights.
        `probe`: as `integrate`'s."""
        flow = self.transform(x, probe)
        reg = torch.zeros_like(flow.delta_logp)
        if flow.kinetic is not None:
            reg = reg + self.kinetic * flow.kinetic
        if flow.jacobian is not None:
            reg = reg + self.jacobian * flow.jacobian
        return self.base_log_prob(flow.y) - flow.delta_logp, reg

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples [n, d] of the model: base samples carried from t = 0 to t1.

        `generator` seeds the base samples (with a custom base, through a seed drawn from it).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgumentError(f"`CNF.sample(n={n!r})`: n must be a positive integer.")
        return self.inverse(self._base_sample(n, generator)).y

    def _base_sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        like = next(self.parameters(), torch.empty(()))
        if self.base is not None:
            if generator is None:
                return self.base.sample((n,))
            seed = int(torch.randint(2**62, (), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.base.sample((n,))
        if self.dim is None:
            raise InvalidArgumentError(
                "`CNF.sample(...)` with the default standard normal base needs the dimension: "
                "pass `CNF(..., dim=d)`.")
        return torch.randn(n, self.dim, generator=generator, dtype=like.dtype,
                           device=like.device)

    def _controller(self, d: int) -> Any:
        """The controller, measuring the error on [y, Δ] only unless it has its own norm."""
        c = self.controller
        if not isinstance(c, PIDController) or c.norm is not None:
            return c
        return dataclasses.replace(c, norm=LeadingRMS(d + 1))  # y and Δ, not the regularizers


class _AugmentedField:
    """[f, -div f, ||f||^2, ||J||_F^2] at (t, [y, Δ, K, F]); the last two only when listed in
    `extras`, with `sign` making them accumulate positively backwards in time."""

    def __init__(self, f: nn.Module, d: int, trace: str, extras: list[str],
                 eps: torch.Tensor | None, sign: float) -> None:
        self.f, self.d, self.trace, self.extras = f, d, trace, extras
        self.eps, self.sign = eps, sign

    def __call__(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        graph = torch.is_grad_enabled()  # False in no_grad solves: results are detached
        y = state[:, :self.d]
        frobenius = "jacobian" in self.extras
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            if self.trace == "exact":
                terms = divergence.exact(self.f, t, y, frobenius=frobenius, create_graph=graph)
            else:
                assert self.eps is not None  # drawn for every Hutchinson solve
                terms = divergence.hutchinson(self.f, t, y, self.eps, frobenius=frobenius,
                                              create_graph=graph)
        columns = [terms.dy, -terms.divergence.unsqueeze(-1)]
        if "kinetic" in self.extras:
            columns.append(self.sign * terms.dy.square().sum(-1, keepdim=True))
        if terms.frobenius is not None:
            columns.append(self.sign * terms.frobenius.unsqueeze(-1))
        out = torch.cat(columns, dim=-1)
        return out if graph else out.detach()


def _features(vector_field: Any) -> int | None:
    """The state dimension a `tidal.nn` network declares, else None."""
    config = getattr(vector_field, "config", None)
    return config().get("in_features") if callable(config) else None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgumentError(
            f"`CNF({name}={value!r})` is not known; choose one of {list(choices)}.")


def _check_batch(y: torch.Tensor, dim: int | None) -> None:
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or not y.is_floating_point():
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InvalidArgumentError(
            f"A CNF works on a floating-point batch of shape [B, d]; got {shape}. Reshape "
            f"single points with `x.unsqueeze(0)`.")
    if dim is not None and y.shape[-1] != dim:
        raise InvalidArgumentError(
            f"A CNF of dimension {dim} got points of dimension {y.shape[-1]} (shape "
            f"{tuple(y.shape)}).")
