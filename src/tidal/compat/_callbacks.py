"""torchdiffeq's step callbacks: `func.callback_step(t0, y0, dt)` before every attempted step,
`callback_accept_step` / `callback_reject_step` after the decision, and the `_adjoint` forms
for the backward solve of `odeint_adjoint`.

A controller wrapper: `WithCallbacks(controller, ...)` binds to a `StepControl` that the loops
call before each step (`observes_steps`) and whose `decide` reports the outcome. t0 is the
step's start in the user's time (a 0-d tensor), dt its size in the direction of integration
(a positive float64 tensor, as torchdiffeq passes it), y0 the state the solve runs on (for a
tuple state, the flat concatenation, as in torchdiffeq).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tidal.controllers.base import Scalar, StepControl, StepSizeController, TrialField

if TYPE_CHECKING:
    from tidal._grid import Grid
    from tidal.controllers.base import Boundaries
    from tidal.solvers.base import StepMethod
    from tidal.solvers.explicit_rk import Stages

NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
#: callbacks a fixed-step method calls (its steps are never rejected: no decision to report)
FIXED_NAMES = ("callback_step",)

Callback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]


@dataclass(frozen=True)
class Callbacks:
    """The callbacks found on a `func` (None where it has none)."""

    step: Callback | None = None
    accept: Callback | None = None
    reject: Callback | None = None

    @classmethod
    def of(cls, func: Any, method: str, supported: tuple[str, ...], adjoint: bool = False
           ) -> Callbacks:
        """`func`'s callbacks (their `_adjoint` forms with `adjoint`); a callback the method
        never calls gives a warning, as in torchdiffeq."""
        suffix = "_adjoint" if adjoint else ""
        found = {name: getattr(func, name + suffix, None) for name in NAMES}
        ignored = [name + suffix for name, cb in found.items()
                   if cb is not None and name not in supported]
        if ignored:
            warnings.warn(f"`odeint(method={method!r})` never calls {ignored}: "
                          + ("it does not step in tidal's loop (scipy steps on its own)."
                             if not supported else
                             "a fixed-step method accepts every step."), stacklevel=4)
        return cls(*(found[name] if name in supported else None for name in NAMES))

    def __bool__(self) -> bool:
        return any(cb is not None for cb in (self.step, self.accept, self.reject))


@dataclass(frozen=True)
class WithCallbacks(StepSizeController):
    """`inner`, calling `callbacks` around every step."""

    inner: StepSizeController
    callbacks: Callbacks

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        return self.inner.adaptive

    @property
    def step_ts(self) -> Any:  # type: ignore[override]
        return self.inner.step_ts

    @property
    def jump_ts(self) -> Any:  # type: ignore[override]
        return self.inner.jump_ts

    def bind(self, solver: StepMethod, y0: torch.Tensor, shape: torch.Size, groups: int
             ) -> StepControl:
        return _CallbackControl(self.inner.bind(solver, y0, shape, groups), self.callbacks)

    def boundaries(self, grid: Grid) -> Boundaries | None:
        return self.inner.boundaries(grid)


class _CallbackControl(StepControl):
    observes_steps = True

    def __init__(self, inner: StepControl, callbacks: Callbacks):
        self.inner, self.callbacks = inner, callbacks
        self.nonfinite_retries = inner.nonfinite_retries  # type: ignore[misc]
        self.current: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def first_step(self, trial: TrialField, y: torch.Tensor, f0: torch.Tensor
                   ) -> tuple[torch.Tensor, int]:
        return self.inner.first_step(trial, y, f0)

    def before_step(self, t0: torch.Tensor, dt: Scalar, y0: torch.Tensor) -> None:
        self.current = (t0, torch.as_tensor(dt, dtype=torch.float64), y0)
        if self.callbacks.step is not None:
            self.callbacks.step(*self.current_args())

    def current_args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.current is not None, "before_step comes first; this is a bug in tidal"
        t0, dt, y0 = self.current
        return t0, y0, dt

    def error_ratio(self, stages: Stages, y0: torch.Tensor, y1: torch.Tensor, dt: Scalar
                    ) -> Scalar:
        return self.inner.error_ratio(stages, y0, y1, dt)

    def decide(self, ratio: Scalar, taken: Scalar, proposed: Scalar) -> tuple[Scalar, Scalar]:
        accept, proposed = self.inner.decide(ratio, taken, proposed)
        report = self.callbacks.accept if accept else self.callbacks.reject
        if report is not None:
            report(*self.current_args())
        return accept, proposed
