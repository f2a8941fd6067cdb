r"""Batched Jacobians of a vector field for the stiff methods: J = df/dy [B, D, D] and
df/dt [B, D] at (t, y), with y [B, D] and t [B] (or 0-d, shared by the batch).

The field must act on each row of y independently (as every per-sample solve assumes); then
J_b = df_b/dy_b is the diagonal block of the full [B D, B D] Jacobian, and column j of every
J_b at once is one Jacobian-vector product of the whole batch with the tangent e_j in every
row. So D JVPs (plus one in t for df/dt) give the batched Jacobian, whatever B, and per-sample
tensors the field captures (rates [B], a direction [B, 1]) keep their batch.

How the D + 1 JVPs are computed is chosen on the first call and kept:

1. `"vmap"`: `torch.func.jvp` under `torch.func.vmap` over the tangents (forward-mode
   `jacfwd` restricted to the diagonal blocks); one vectorized call.
2. `"jvp"`: the same JVPs one at a time, when vmap cannot run the field: random operations
   (dropout, noise; vmap refuses them in its default randomness mode), custom
   `autograd.Function`s without a vmap rule. `.item()`, in-place writes and Python control
   flow on y are fine under mode 1, since only the tangents are batched.
3. `"double_vjp"`: reverse mode twice (g(v) = J^T v is linear in v, and the derivative of
   g . w with respect to v is J w), when forward mode is unavailable: custom
   `autograd.Function`s without a `jvp` (or old-style ones without `setup_context`).

A user `jac(t, y) -> [B, D, D]` replaces all of this for J (df/dt still takes one JVP unless
the field is autonomous). Gradients: J and df/dt are differentiable functions of y, t and the
field's parameters whenever grad mode is on (forward mode composes with autograd; mode 3
builds its graph with `create_graph`), so a step that uses them can be backpropagated exactly.
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
MODES = ("vmap", "jvp", "double_vjp")


class Jacobian(NamedTuple):
    """J [B, D, D] (J[b, i, j] = df_i/dy_j of sample b) and df/dt [B, D] (None when the field
    is declared autonomous)."""

    J: torch.Tensor
    dfdt: torch.Tensor | None


@functools.cache
def _load_forward_mode_rules() -> None:
    """Load torch's forward-mode decompositions once, quietly: torch 2.13 compiles them with
    `torch.jit.script` on the first JVP, which emits a DeprecationWarning (an error under
    `-W error`, and the import would then be left half done)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401


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
        self._tangent_mode: str | None = None  # how user-`jac` runs its df/dt JVP
        self.num_evaluations = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> Jacobian:
        self.num_evaluations += 1
        if self.jac is not None:
            J = self._user_jacobian(t, y)
            if self.autonomous:
                return Jacobian(J, None)
            ts, ys = _time_tangent(t, y)
            return Jacobian(J, self._columns(t, y, ts, ys, "_tangent_mode")[0])
        ts, ys = _basis(t, y, with_time=not self.autonomous)
        columns = self._columns(t, y, ts, ys, "mode")  # [D (+1), B, D]
        dim = y.shape[-1]
        J = columns[:dim].permute(1, 2, 0)
        return Jacobian(J, None if self.autonomous else columns[dim])

    def _user_jacobian(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.jac is not None
        J = self.jac(t, y)
        want = (*y.shape, y.shape[-1])
        if not isinstance(J, torch.Tensor) or tuple(J.shape) != want:
            got = tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__
            raise InvalidArgumentError(
                f"`jac=`: must return the batched Jacobian df/dy of shape {want} ([B, D, D]) "
                f"for a state of shape {tuple(y.shape)}; got {got}. Return one D x D matrix "
                "per sample, J[b, i, j] = d f_i / d y_j.")
        return J

    def _columns(self, t: torch.Tensor, y: torch.Tensor, ts: torch.Tensor, ys: torch.Tensor,
                 attribute: str) -> torch.Tensor:
        """J-columns [K, B, D] for the K tangents (ts[k], ys[k]); picks a mode on first use
        and stores it in `attribute`."""
        mode = getattr(self, attribute)
        if mode in MODES:
            return _COLUMNS[mode](self.field, t, y, ts, ys)
        failures = []
        for candidate in MODES:
            try:
                columns = _COLUMNS[candidate](self.field, t, y, ts, ys)
            except Exception as error:  # the field's own error; the next mode may avoid it
                failures.append(f"{candidate}: {type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''}")
                continue
            setattr(self, attribute, candidate)
            return columns
        raise InvalidArgumentError(
            "Cannot differentiate the vector field to form the Jacobian a stiff solver needs; "
            "tried forward mode under vmap, forward mode, and reverse mode twice ("
            + "; ".join(failures) + "). Write f with differentiable torch operations, or "
            "pass its Jacobian as `jac=`.")


def _basis(t: torch.Tensor, y: torch.Tensor, with_time: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tangents (t_dot [K, *t.shape], y_dot [K, B, D]): e_j in every row for j < D, then the
    unit time tangent when `with_time`."""
    dim = y.shape[-1]
    eye = torch.eye(dim, dtype=y.dtype, device=y.device)
    ys = eye.unsqueeze(1).expand(dim, *y.shape)
    ts = torch.zeros(dim, *t.shape, dtype=t.dtype, device=t.device)
    if with_time:
        t_time, y_time = _time_tangent(t, y)
        ys, ts = torch.cat([ys, y_time]), torch.cat([ts, t_time])
    return ts, ys


def _time_tangent(t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(1, *t.shape, dtype=t.dtype, device=t.device), torch.zeros_like(y)[None]


def _by_vmap(field: Field, t: torch.Tensor, y: torch.Tensor, ts: torch.Tensor,
             ys: torch.Tensor) -> torch.Tensor:
    _load_forward_mode_rules()
    return vmap(lambda t_dot, y_dot: jvp(field, (t, y), (t_dot, y_dot))[1])(ts, ys)


def _by_jvp(field: Field, t: torch.Tensor, y: torch.Tensor, ts: torch.Tensor,
            ys: torch.Tensor) -> torch.Tensor:
    _load_forward_mode_rules()
    return torch.stack([jvp(field, (t, y), (t_dot, y_dot))[1] for t_dot, y_dot in zip(ts, ys)])


def _by_double_vjp(field: Field, t: torch.Tensor, y: torch.Tensor, ts: torch.Tensor,
                   ys: torch.Tensor) -> torch.Tensor:
    """Column k = d/dv [ (J^T v) . ys[k] + (f_t^T v) . ts[k] ], with the graph kept when grad
    mode is on so the columns stay differentiable."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        t_in = t if t.requires_grad else t.detach().requires_grad_()
        y_in = y if y.requires_grad else y.detach().requires_grad_()
        out = field(t_in, y_in)
        v = torch.zeros_like(out, requires_grad=True)
        g_y, g_t = torch.autograd.grad(out, (y_in, t_in), v, create_graph=True,
                                       allow_unused=True, materialize_grads=True)
        # A part that does not depend on v (f constant in y, or in t) contributes nothing.
        parts = [(g, k) for k, g in enumerate((g_y, g_t)) if g.requires_grad]
        columns = []
        for tangent in zip(ys, ts):
            if not parts:
                columns.append(torch.zeros_like(out))
                continue
            (column,) = torch.autograd.grad(
                [g for g, _ in parts], v, [tangent[k] for _, k in parts], retain_graph=True,
                create_graph=create_graph, allow_unused=True, materialize_grads=True)
            columns.append(column)
    return torch.stack(columns)


_COLUMNS = {"vmap": _by_vmap, "jvp": _by_jvp, "double_vjp": _by_double_vjp}
