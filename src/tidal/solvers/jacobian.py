r"""Batched Jacobians of a vector field for the stiff methods: J = df/dy [B, D, D] and
df/dt [B, D] at (t, y), with y [B, D] and t [B] (or 0-d, shared by the batch).

The field must act on each row of y independently (as every per-sample solve assumes); then
J_b = df_b/dy_b is the diagonal block of the full [B D, B D] Jacobian. Row i of every J_b at
once is one vector-Jacobian product of the whole batch with the cotangent e_i in every row;
column j is one Jacobian-vector product with the tangent e_j in every row. So D products give
the batched Jacobian whatever B, and per-sample tensors the field captures (rates [B], a
direction [B, 1]) keep their batch.

How the products are computed is chosen on the first call and kept (the first that runs):

1. `"reverse_vmap"`: the D rows in one vectorized backward pass (`is_grads_batched`); with a
   per-sample t [B], the same pass gives df/dt.
2. `"reverse"`: one backward pass per row, when the backward pass cannot be vectorized.
3. `"forward_vmap"`: the D columns (and df/dt, a JVP in t) by `torch.func.jvp` under
   `torch.func.vmap` over the tangents: forward-mode `jacfwd` restricted to the diagonal
   blocks, when reverse mode is unavailable.
4. `"jvp"`: the forward-mode products one at a time, when vmap cannot run the field either
   (random operations such as dropout; vmap refuses them).

Reverse mode comes first because in torch 2.13 on CPU a multiplication of a dual tensor
dispatches to torch's Python reference implementation (milliseconds per operation): on ROBER,
mode 3 takes ~5x and mode 4 ~15x the time of mode 1, at batch 1 and 1024 alike. `.item()`,
in-place writes and Python control flow on y work in every mode (only the tangents or
cotangents are batched, never y).

df/dt with a 0-d t (one time for the batch) cannot come from reverse mode (the gradient with
respect to a shared t sums the batch); modes 1-2 then take it as one JVP written as reverse
mode twice (g(v) = f_t^T v is linear in v, and dg/dv = f_t), refusing a graph where v is
unreachable (a custom `autograd.Function` whose backward is `once_differentiable` would
otherwise give 0 silently). The field must use t through torch operations: `float(t)` inside
f hides df/dt from every mode.

A user `jac(t, y) -> [B, D, D]` replaces all of this for J (df/dt is then one such JVP, or a
forward-mode one, unless the field is autonomous).

Gradients: J and df/dt are differentiable functions of y, t and the field's parameters whenever
grad mode is on and one of those requires grad (reverse mode then keeps its graph with
`create_graph`; forward mode composes with autograd), so a step that uses them can be
backpropagated exactly; otherwise they carry no graph.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import jvp, vmap

from tidal._errors import InvalidArgumentError

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("reverse_vmap", "reverse", "forward_vmap", "jvp")


class Jacobian(NamedTuple):
    """J [B, D, D] (J[b, i, j] = df_i/dy_j of sample b) and df/dt [B, D] (None when the field
    is declared autonomous)."""

    J: torch.Tensor
    dfdt: torch.Tensor | None


class BatchedJacobian:
    """Evaluates `Jacobian`s of `field(t, y)` at any (t, y); one instance per solve.

    Args:
        field: f(t, y) -> [B, D] for y [B, D], t [B] or 0-d; rows independent.
        jac: optional user Jacobian, jac(t, y) -> [B, D, D].
        autonomous: the field does not depend on t (df/dt is then not computed).

    Attributes:
        mode: how J is computed: "user", or one of `MODES` once the first call has chosen.
        num_evaluations: Jacobians computed so far (for the solve's statistics).
    """

    def __init__(self, field: Field, *, jac: Field | None = None, autonomous: bool = False):
        self.field, self.jac, self.autonomous = field, jac, autonomous
        self.mode: str | None = "user" if jac is not None else None
        self.num_evaluations = 0
        self._has_parameters: bool | None = None  # does f's value require grad by itself?

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> Jacobian:
        self.num_evaluations += 1
        graph = self._differentiable(t, y)
        if self.jac is not None:
            J = self._user_jacobian(t, y)
            return Jacobian(J, None if self.autonomous
                            else time_derivative(self.field, t, y, graph))
        if self.mode in MODES:
            return _MODES[self.mode](self.field, t, y, self.autonomous, graph)
        failures = []
        for mode in MODES:
            try:
                result = _MODES[mode](self.field, t, y, self.autonomous, graph)
            except Exception as error:  # the field's own error; the next mode may avoid it
                first_line = str(error).splitlines()[0] if str(error) else ""
                failures.append(f"{mode}: {type(error).__name__}: {first_line}")
                continue
            self.mode = mode
            return result
        raise InvalidArgumentError(
            "Cannot differentiate the vector field to form the Jacobian a stiff solver needs; "
            "tried reverse and forward mode, with and without vmap (" + "; ".join(failures)
            + "). Write f with differentiable torch operations, or pass its Jacobian as "
            "`jac=`.")

    def _differentiable(self, t: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether J must carry a graph: grad mode is on and y, t or the field's parameters
        require grad (the last is found once, by one call of f at detached inputs)."""
        if not torch.is_grad_enabled():
            return False
        if y.requires_grad or t.requires_grad:
            return True
        if self._has_parameters is None:
            self._has_parameters = bool(self.field(t.detach(), y.detach()).requires_grad)
        return self._has_parameters

    def _user_jacobian(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.jac is not None
        return checked_jacobian(self.jac(t, y), y.shape)


def checked_jacobian(J: object, shape: torch.Size) -> torch.Tensor:
    """A user Jacobian for a state of `shape`: one D x D matrix per row (D the last
    dimension), shape (*shape, D); a 0-d state has a 0-d Jacobian."""
    dim = shape[-1] if len(shape) else 1
    want = (*shape, dim) if len(shape) else ()
    if not isinstance(J, torch.Tensor) or tuple(J.shape) != want:
        got = tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__
        raise InvalidArgumentError(
            f"`jac=`: jac(t, y) must return df/dy with one {dim} x {dim} matrix per row of the "
            f"state, shape {want} for a state of shape {tuple(shape)}; got {got}. "
            "J[..., i, j] = d f_i / d y_j.")
    return J


# ---------------------------------------------------------------------------------------------
# Reverse mode: rows


def _by_rows(field: Field, t: torch.Tensor, y: torch.Tensor, autonomous: bool,
             create_graph: bool, batched: bool) -> Jacobian:
    """Row i of every J_b (and of df/dt for a per-sample t) from the cotangent e_i."""
    dim = y.shape[-1]
    time_rows = not autonomous and t.dim() > 0
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_()
        t_in = t if t.requires_grad or not time_rows else t.detach().requires_grad_()
        out = field(t_in, y_in)
        inputs = (y_in, t_in) if time_rows else (y_in,)
        cotangents = torch.eye(dim, dtype=y.dtype, device=y.device).unsqueeze(1).expand(
            dim, *out.shape)
        grads: tuple[torch.Tensor | None, ...]
        if batched:
            grads = torch.autograd.grad(out, inputs, cotangents, create_graph=create_graph,
                                        allow_unused=True, is_grads_batched=True)
        else:
            per_row = [torch.autograd.grad(out, inputs, e, retain_graph=True,
                                           create_graph=create_graph, allow_unused=True)
                       for e in cotangents]
            grads = tuple(None if parts[0] is None else torch.stack(parts)
                          for parts in zip(*per_row))
    # An input f does not use has a zero derivative.
    rows = [torch.zeros(dim, *x.shape, dtype=out.dtype, device=out.device) if r is None
            else r for r, x in zip(grads, inputs)]
    J = rows[0].permute(1, 0, 2)  # [D (rows i), B, D (columns j)] -> [B, i, j]
    if autonomous:
        return Jacobian(J, None)
    dfdt = (rows[1].T if time_rows
            else time_derivative(field, t, y, create_graph, forward_fallback=False))
    return Jacobian(J, dfdt)


def time_derivative(field: Field, t: torch.Tensor, y: torch.Tensor, create_graph: bool,
                    forward_fallback: bool = True) -> torch.Tensor:
    """df/dt [B, D] by one JVP in t, written as reverse mode twice (its graph kept when
    `create_graph`); forward mode if that is unavailable (and `forward_fallback`)."""
    try:
        return _time_derivative_reverse(field, t, y, create_graph)
    except RuntimeError:
        if not forward_fallback:
            raise
        _load_forward_mode_rules()
        return jvp(field, (t, y), (torch.ones_like(t), torch.zeros_like(y)))[1]


def _time_derivative_reverse(field: Field, t: torch.Tensor, y: torch.Tensor,
                             create_graph: bool) -> torch.Tensor:
    with torch.enable_grad():
        t_in = t if t.requires_grad else t.detach().requires_grad_()
        out = field(t_in, y)
        if not out.requires_grad:  # f does not use t (nor parameters that require grad)
            return torch.zeros_like(out)
        v = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, t_in, v, create_graph=True, allow_unused=True)
        if g is None:  # f does not use t
            return torch.zeros_like(out)
        (dfdt,) = torch.autograd.grad(g, v, torch.ones_like(g), create_graph=create_graph,
                                      allow_unused=True)
    if dfdt is None:
        raise RuntimeError("the field's backward pass is not differentiable (a custom "
                           "autograd.Function marked once_differentiable?)")
    return dfdt


# ---------------------------------------------------------------------------------------------
# Forward mode: columns


@functools.cache
def _load_forward_mode_rules() -> None:
    """Load torch's forward-mode decompositions once, quietly: torch compiles them with
    `torch.jit.script` on the first JVP, which warns that it is deprecated (a
    DeprecationWarning in torch 2.13, a FutureWarning in 2.14; an error under `-W error`, and
    the import would then be left half done). Only torch's own code runs in this import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401


def _by_columns(field: Field, t: torch.Tensor, y: torch.Tensor, autonomous: bool,
                create_graph: bool, batched: bool) -> Jacobian:
    """Column j of every J_b from the tangent e_j in every row, then df/dt from the unit
    tangent in t. Forward mode composes with autograd by itself: `create_graph` is implied."""
    _load_forward_mode_rules()
    dim = y.shape[-1]
    ys = torch.eye(dim, dtype=y.dtype, device=y.device).unsqueeze(1).expand(dim, *y.shape)
    ts = torch.zeros(dim, *t.shape, dtype=t.dtype, device=t.device)
    if not autonomous:
        ys = torch.cat([ys, torch.zeros_like(y)[None]])
        ts = torch.cat([ts, torch.ones(1, *t.shape, dtype=t.dtype, device=t.device)])

    def column(t_dot: torch.Tensor, y_dot: torch.Tensor) -> torch.Tensor:
        return jvp(field, (t, y), (t_dot, y_dot))[1]

    columns = (vmap(column)(ts, ys) if batched
               else torch.stack([column(t_dot, y_dot) for t_dot, y_dot in zip(ts, ys)]))
    return Jacobian(columns[:dim].permute(1, 2, 0), None if autonomous else columns[dim])


_MODES = {
    "reverse_vmap": functools.partial(_by_rows, batched=True),
    "reverse": functools.partial(_by_rows, batched=False),
    "forward_vmap": functools.partial(_by_columns, batched=True),
    "jvp": functools.partial(_by_columns, batched=False),
}


class StepJacobian:
    """The Jacobian at the start of the current step, for a loop's `StepField`: computed once
    per step start and reused by every rejected attempt from the same point (only W = I -
    gamma h J changes with h). The loop keeps the same state object while no group moves, so
    the state's identity says whether the point changed.

    Args:
        field: f(t, y) on group rows [G, N] (rows independent), f in forward time, t the
            user's time.
        direction: +1 or -1 per group ([G, 1], the state's dtype), None when all run forward:
            the loop steps in forward time tau = direction t, so df/dtau = direction df/dt.
        jac: the user's Jacobian on group rows ([G, N, N], in forward time), or None.
    """

    def __init__(self, field: Field, direction: torch.Tensor | None, jac: Field | None = None):
        self.jacobian = BatchedJacobian(field, jac=jac)
        self.direction = direction
        self.y: torch.Tensor | None = None
        self.value: Jacobian | None = None

    def at(self, t: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> tuple[Jacobian, bool]:
        """(the Jacobian at (t, y), whether it was computed now); `rows` is y as group rows."""
        if self.value is not None and y is self.y:
            return self.value, False
        J, dfdt = self.jacobian(t, rows)
        # in the state's dtype, whatever f returns (a float64 f of a float32 state)
        J, dfdt = J.to(rows.dtype), None if dfdt is None else dfdt.to(rows.dtype)
        if dfdt is not None and self.direction is not None:
            dfdt = dfdt * self.direction
        self.y, self.value = y, Jacobian(J, dfdt)
        return self.value, True
