"""`ExplicitRungeKutta`: the base of every explicit RK method. A method is a tableau plus a
docstring; the stepping code lives in `tidal.solvers.explicit_rk` and is shared by all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from tidal.solvers.tableau import ButcherTableau


class ExplicitRungeKutta:
    """An explicit Runge–Kutta method described by `tableau`.

    Subclasses set `tableau` and `name` (the string used by `tidal.odeint(method=...)` and the
    command line). Instances hold no state, so one can be shared between solves.
    """

    tableau: ClassVar[ButcherTableau]
    name: ClassVar[str]

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def error_order(self) -> int | None:
        return self.tableau.error_order

    @property
    def adaptive(self) -> bool:
        return self.tableau.adaptive

    def combine_error_norms(self, norms: Sequence):
        """Error ratio of a step from the norms of its error estimates (one per b_error row)."""
        return norms[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def step_exponent(solver: ExplicitRungeKutta) -> float:
    """Exponent 1/(q+1) of the error ratio in step-size control, q the embedded order."""
    q = solver.error_order
    return 1.0 / (q + 1) if q is not None else math.nan
