r"""`Auto`: automatic stiffness switching between an explicit method (Tsit5) and a Rosenbrock
method (Rodas5P), per group (the whole state on a shared grid, each sample on per-sample
grids), as LSODA and OrdinaryDiffEq's `AutoTsit5(Rodas5P())` do.

**Detection.** In explicit mode, the estimate of Hairer & Wanner (I, Sec. II.10 for DOPRI5)
from two stages at the same node c = 1 (Tsit5's stages 6 and 7, the second at y1):

    h rho ~ h ||f(y1) - f(y6)|| / ||y1 - y6||,

the step size times the dominant eigenvalue's modulus along the step, at no extra call of f.
An explicit method working at its stability boundary (|h lambda| ~ 3.5 for Tsit5 on the
negative real axis) is limited by stability, not accuracy: after `patience` attempts in a
row with h rho > `stiff_bound` (not interrupted by 6 attempts below it), the group switches
to Rodas5P. In Rosenbrock mode the step's
own Jacobian gives the bound rho <= ||J||_inf (no extra work); after `patience` attempts in
a row with h ||J||_inf < `nonstiff_bound` (an explicit step of this size would be stable
with margin) it switches back. The counters run over attempts, rejected ones too. On a
shared grid in explicit mode the estimate is taken at every 4th attempt only while no
attempt argues for a switch (DOPRI5 likewise tests every NSTIFF-th step unless suspicious),
and at every attempt from the first that does: a switch comes at most 3 attempts later.

**One stage layout for both methods.** The loop keeps one stage store and one set of
dense-output weights per solve, so each attempt stores the same rows whichever method took it:

    [f(t0, y0), Q_1, ..., Q_4, E, f(t1, y1)],

with the interpolant y(t0 + theta h) = y0 + h sum_k theta^k Q_k (both methods have a
degree-4 interpolant; Q_k = sum_i w_ik K_i from the method's own weights), the error estimate
E (before the factor h) and f(t1, y1), taken by the method itself (FSAL for the loop: Tsit5
has it as its last stage, the Rosenbrock path calls f once more per attempt). Both error
estimates have order 4, so the controller's exponent is the same. Dense output, events
and gradients therefore work unchanged.

**Checkpoint replays.** A replay restarts mid-solve and retakes only the accepted steps, so
it cannot rebuild the switching counters (rejected attempts count too). Under
`CheckpointAdjoint` the forward solve runs a `recording` copy that notes each attempt's mode
per group, the recorder keeps it for every accepted step, and the replay runs a `replaying`
copy that takes each step in its recorded mode, found by the step's start: the replay
steps with the forward solve's methods, so the gradient is the same as `BackpropAdjoint`'s.

**Cost.** In explicit mode Tsit5 steps in the loop's own stage store, one product of its
stages with a fixed [5, 7] matrix gives the stored rows and, at a stiffness estimate, one
with a fixed [2, 7] matrix both differences; the rest is one norm and, on a shared grid, one
host synchronisation (two numbers) with the switching counters in Python. That is exactly
Tsit5's calls of f and two extra tensor operations per attempt (the product and a copy into
the store), five at a stiffness estimate. On per-sample grids a batch whose samples are in
different modes runs both methods and keeps each sample's own (it pays for both;
`num_jacobians` then counts the Jacobian for every stepping sample). Switches are counted in
`Stats.num_switches`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from tidal._errors import InvalidArgumentError
from tidal.solvers.base import StepField, StepMethod, checked_jac
from tidal.solvers.explicit_rk import BufferedStages, RKCoefficients, StackedStages, Stages
from tidal.solvers.rosenbrock_solver import Rodas5P, checked_calibration
from tidal.solvers.tsit5 import Tsit5

_DEGREE = 4  # both interpolants: theta^1 .. theta^4
_ERROR_ROW = 1 + _DEGREE
_ROWS = _ERROR_ROW + 2  # f0, Q_1..Q_4, E, f1
_FORGET = 6  # attempts in a row against a switch that reset its count (Hairer's DOPRI5)
# On a shared grid in explicit mode with no attempt arguing for a switch, the stiffness is
# estimated at every _TEST_EVERY-th attempt only (DOPRI5 tests every NSTIFF-th step unless
# suspicious); once an attempt argues for a switch, at every attempt.
_TEST_EVERY = 4


@dataclass(frozen=True)
class AutoLayout:
    """The loop's view of `Auto`'s stages (see the module docstring)."""

    num_dense_stages: int = _ROWS
    fsal: bool = True
    c_extra: tuple[float, ...] = ()
    end_derivative_unused: bool = False


@lru_cache(maxsize=16)
def _coefficients(dtype: torch.dtype, device: torch.device) -> RKCoefficients:
    dense = torch.zeros(_ROWS, _DEGREE, dtype=torch.float64)
    dense[1:1 + _DEGREE] = torch.eye(_DEGREE, dtype=torch.float64)
    error = torch.zeros(1, _ROWS, dtype=dtype)
    error[0, _ERROR_ROW] = 1.0
    return RKCoefficients(a_rows=(), b=torch.zeros(_ROWS, dtype=dtype), b_error=error.to(device),
                          dense=dense.to(device), extra_rows=())


class _Mode:
    """Per-solve switching state, kept in the loop's `StepField.state`: the mode of each
    group (True: stiff) and how many attempts in a row argued for the other mode. The modes
    are also kept on the host (`any_stiff`, `all_stiff`, updated at a switch) so that an
    attempt chooses its method without a synchronisation; on a shared grid (one group) the
    counters are Python numbers."""

    def __init__(self, groups: int, device: torch.device):
        self.shared = groups == 1
        self.stiff = torch.zeros(groups, dtype=torch.bool, device=device)
        self.streak: torch.Tensor | int = 0 if self.shared else torch.zeros(
            groups, dtype=torch.long, device=device)
        self.misses: torch.Tensor | int = 0 if self.shared else torch.zeros(
            groups, dtype=torch.long, device=device)
        self.any_stiff = self.all_stiff = False
        self.untested = 0  # explicit attempts since the last stiffness estimate (shared grid)
        self.scratch: dict[str, Stages] = {}

    def follow(self, stiff: torch.Tensor) -> None:
        """Take the modes `stiff` [G] (a replay's recorded ones)."""
        self.stiff = stiff
        self.any_stiff, self.all_stiff = bool(stiff.any()), bool(stiff.all())


@dataclass
class _ModeLog:
    """The mode of a recording `Auto`'s latest attempt, per group [G]."""

    latest: torch.Tensor | None = None

    def read(self) -> torch.Tensor:
        assert self.latest is not None, "read after an attempt"
        return self.latest


class Auto(StepMethod):
    """Tsit5 while the problem is not stiff, Rodas5P while it is, switching per group (see
    the module docstring). Adaptive: use with `PIDController`.

    Args:
        stiff_bound: switch to Rodas5P when h rho exceeds this (Tsit5 is stable to ~3.5).
        nonstiff_bound: switch back when h ||J||_inf is below this.
        patience: attempts in a row that must agree before a switch.
        jac: the Jacobian for the Rosenbrock steps, as for `tidal.Rodas5P(jac=...)`.
        tolerance_calibration: the Rosenbrock steps' tolerance calibration, as for
            `tidal.Rodas5P(tolerance_calibration=...)` (default: Rodas5P's); the explicit
            steps are not calibrated.
    """

    name = "auto"
    tableau = AutoLayout()
    order = 5
    error_order = 4
    adaptive = True
    uses_jacobian = True
    keeps_state = True

    def __init__(self, stiff_bound: float = 3.0, nonstiff_bound: float = 1.5,
                 patience: int = 10, jac: Callable[..., torch.Tensor] | None = None,
                 tolerance_calibration: float | None = None) -> None:
        for label, value in (("stiff_bound", stiff_bound), ("nonstiff_bound", nonstiff_bound)):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise InvalidArgumentError(f"`Auto({label}={value!r})`: must be a positive "
                                           "number (a bound on step size x eigenvalue).")
        if nonstiff_bound >= stiff_bound:
            raise InvalidArgumentError(
                f"`Auto(nonstiff_bound={nonstiff_bound!r}, stiff_bound={stiff_bound!r})`: "
                "nonstiff_bound must be below stiff_bound, or the modes would alternate.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise InvalidArgumentError(f"`Auto(patience={patience!r})`: must be a positive "
                                       "integer (attempts in a row before a switch).")
        self.stiff_bound, self.nonstiff_bound = float(stiff_bound), float(nonstiff_bound)
        self.patience = patience
        self.jac = checked_jac(jac, "Auto")
        self._explicit = Tsit5()
        self._stiff = Rodas5P(jac=self.jac, tolerance_calibration=checked_calibration(
            tolerance_calibration, Rodas5P.default_calibration, "Auto"))
        self._log: _ModeLog | None = None  # set on a `recording` copy
        self._schedule: tuple[torch.Tensor, torch.Tensor] | None = None  # a `replaying` copy's

    def recording(self) -> tuple[Auto, Callable[[], torch.Tensor]]:
        twin = copy.copy(self)
        twin._log = _ModeLog()
        return twin, twin._log.read

    def replaying(self, step_ends: torch.Tensor, choices: torch.Tensor) -> Auto:
        twin = copy.copy(self)
        twin._log, twin._schedule = None, (step_ends.contiguous(), choices)
        return twin

    def _replayed_modes(self, field: StepField) -> torch.Tensor:
        """[G] the recorded mode of the step each group starts now: step k of a group starts
        where its (k-1)-th recorded step ended."""
        assert self._schedule is not None
        ends, choices = self._schedule
        start = torch.as_tensor(field.tau0, dtype=ends.dtype, device=ends.device).reshape(-1, 1)
        k = torch.searchsorted(ends, start.expand(len(ends), 1), right=True)
        return choices.gather(1, k.clamp(max=ends.shape[1] - 1)).squeeze(1)

    def __repr__(self) -> str:
        return (f"Auto(stiff_bound={self.stiff_bound}, nonstiff_bound={self.nonstiff_bound}, "
                f"patience={self.patience})")

    def coefficients(self, dtype: torch.dtype, device: torch.device) -> RKCoefficients:
        return _coefficients(dtype, device)

    def attempt(self, field: StepField, stages: Stages, coefficients: RKCoefficients
                ) -> tuple[torch.Tensor, int]:
        y0 = stages.y0
        mode = field.state.get("auto")
        if mode is None:
            mode = field.state["auto"] = _Mode(len(field.rows(y0)), y0.device)
        replay = self._schedule is not None
        if replay:
            mode.follow(self._replayed_modes(field))
        if self._log is not None:
            self._log.latest = mode.stiff
        if not mode.any_stiff:  # the common case: Tsit5 steps in the loop's own store
            test = not replay and (not mode.shared or int(mode.streak) > 0  # (an int if shared)
                                   or mode.untested + 1 >= _TEST_EVERY)
            y1, rows, norms = self._explicit_step(field, stages, stages, mode, test)
            _replace_rows(stages, rows)
            if norms is None:
                mode.untested += 1
            else:
                mode.untested = 0
                self._update_mode(field, mode, norms)
            return y1, self._explicit.tableau.num_stages - 1
        (y_s, store_s), rho_s = self._stiff_step(field, stages, mode)
        fevals = self._stiff.rosenbrock.num_stages
        if mode.all_stiff:
            y1, store, rho = y_s, store_s, rho_s
        else:  # per-sample grids with samples in both modes: each keeps its own
            scratch = _scratch(mode, stages, "explicit", self._explicit.tableau.num_dense_stages)
            y_e, rows, dy_dk = self._explicit_step(field, stages, scratch, mode)
            assert dy_dk is not None
            store_e = torch.cat([rows, scratch.matrix()[_ROWS - 1:]])  # and f1
            fevals += self._explicit.tableau.num_stages - 1
            pick = mode.stiff.unsqueeze(-1)
            y1 = torch.where(pick, y_s, y_e)
            shape = (len(store_e), len(mode.stiff), -1)
            store = torch.where(pick.unsqueeze(0), store_s.view(shape), store_e.view(shape)
                                ).view(len(store_e), -1)
            rho = torch.where(mode.stiff, rho_s, _stiffness(dy_dk))
        _append_rows(stages, store)
        if not replay:
            self._update_mode(field, mode, rho)
        return y1, fevals

    def _explicit_step(self, field: StepField, stages: Stages, store: Stages, mode: _Mode,
                       test: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A Tsit5 attempt into `store` (the loop's own or a scratch store): y1, [Q_1..Q_4, E]
        [5, N] (f1 is the store's last row) and, if `test`, the norms ||y1 - y6|| / h and
        ||f(y1) - f(y6)|| per group [2, G] (else None)."""
        if store is not stages:
            store.begin(stages.y0, stages.dt, stages.first())
        y1, _ = self._explicit.attempt(field, store, _tsit5_coefficients(stages.y0.dtype,
                                                                          stages.y0.device))
        K = store.matrix()
        # K [7, N]: f0, k_2 .. k_6, f(t1, y1). Stage 6 (c = 1) is taken
        # at y6 = y0 + h sum_j a_6j k_j, stage 7 at y1 = y0 + h sum_j b_j k_j, so
        # y1 - y6 = h sum_j (b_j - a_6j) k_j: one product gives both differences, and h
        # cancels from h ||f(y1) - f(y6)|| / ||y1 - y6||.
        rows = _explicit_rows(K.dtype, K.device) @ K
        if not test:
            return y1, rows, None
        differences = _stiffness_rows(K.dtype, K.device) @ K.detach()  # [dy / h, dk]
        norms = torch.linalg.vector_norm(differences.view(2, len(mode.stiff), -1), dim=-1)
        return y1, rows, norms

    def _update_mode(self, field: StepField, mode: _Mode, h_rho: torch.Tensor) -> None:
        """`_update`, or `_update_shared` in Python numbers for the one group of a shared grid
        (h_rho: [G], or the norms [2, G] of an explicit attempt)."""
        if not mode.shared:
            self._update(field, mode, _stiffness(h_rho) if h_rho.dim() == 2 else h_rho)
            return
        values = h_rho.reshape(-1).tolist()
        if len(values) == 1:
            self._update_shared(field, mode, values[0])
            return
        dy, dk = values
        ratio = (dk / dy if dy > 0 else math.inf if dk > 0 else 0.0)
        self._update_shared(field, mode, 0.0 if math.isnan(ratio) else ratio)

    def _stiff_step(self, field: StepField, stages: Stages, mode: _Mode
                    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A Rodas5P attempt in a scratch store: ((y1, [Q_1..Q_4, E, f1]), h ||J||_inf)."""
        y0 = stages.y0
        y1, K, coef = _run(self._stiff, "stiff", field, stages, mode)
        # K [S + 1, N]: f0, u_1 / h, ..., u_S / h; f(t1, y1) is taken here.
        f1 = field.at(1.0, y1)
        J, _ = field.jacobian(y0)
        h = torch.as_tensor(stages.dt, dtype=y0.dtype, device=y0.device).reshape(-1)
        h_rho = h * J.detach().abs().sum(-1).amax(-1)
        return (y1, _store(K, coef, f1.reshape(-1))), h_rho

    def _update(self, field: StepField, mode: _Mode, h_rho: torch.Tensor) -> None:
        """Count the attempts that argue for the other mode; switch after `patience` of them,
        forgetting them after `_FORGET` attempts in a row that do not (Hairer's rule in
        DOPRI5: an explicit method at its stability boundary alternates accepted and
        rejected steps, so its estimate is not above the bound at every attempt)."""
        other = torch.where(mode.stiff, h_rho < self.nonstiff_bound, h_rho > self.stiff_bound)
        mode.misses = torch.where(other, 0, mode.misses + 1)
        mode.streak = torch.where(other, mode.streak + 1,
                                  torch.where(mode.misses >= _FORGET, 0, mode.streak))
        switch = mode.streak >= self.patience
        if bool(switch.any()):
            mode.stiff = mode.stiff ^ switch
            mode.streak = torch.where(switch, 0, mode.streak)
            field.count_switches(switch)
            mode.any_stiff, mode.all_stiff = bool(mode.stiff.any()), bool(mode.stiff.all())

    def _update_shared(self, field: StepField, mode: _Mode, h_rho: float) -> None:
        """`_update` for the one group of a shared grid, in Python numbers."""
        stiff = mode.any_stiff
        other = h_rho < self.nonstiff_bound if stiff else h_rho > self.stiff_bound
        mode.misses = 0 if other else int(mode.misses) + 1
        if other:
            mode.streak = int(mode.streak) + 1
        elif mode.misses >= _FORGET:
            mode.streak = 0
        if mode.streak >= self.patience:
            mode.streak = 0
            mode.stiff = ~mode.stiff
            mode.any_stiff = mode.all_stiff = not stiff
            field.count_switches(torch.ones(1, dtype=torch.bool))


def _stiffness(norms: torch.Tensor) -> torch.Tensor:
    """h rho = ||f(y1) - f(y6)|| / (||y1 - y6|| / h) per group from the norms [2, G]."""
    return torch.nan_to_num(norms[1] / norms[0], nan=0.0, posinf=math.inf)


def _replace_rows(stages: Stages, rows: torch.Tensor) -> None:
    """Overwrite stages 1.. (Tsit5's k_2 .., already stored) by `rows` [5, N]: Q_1..Q_4, E;
    f1 stays in place."""
    if isinstance(stages, BufferedStages):
        stages.buffer[1:1 + len(rows)].copy_(rows)
    else:
        assert isinstance(stages, StackedStages)
        stages.ks[1:1 + len(rows)] = [row.view(stages.y0.shape) for row in rows.unbind(0)]


def _append_rows(stages: Stages, rows: torch.Tensor) -> None:
    """Append flat rows [R, N] to the loop's store (one copy into a buffered store)."""
    if isinstance(stages, BufferedStages):
        stages.buffer[stages.count:stages.count + len(rows)].copy_(rows)
        stages.count += len(rows)
    else:
        for row in rows.unbind(0):
            stages.append(row.view(stages.y0.shape))


def _scratch(mode: _Mode, stages: Stages, key: str, num_rows: int) -> Stages:
    """A private stage store of the loop's kind (buffered or stacked, shared or per-sample)
    for one method's own stages, made once per solve."""
    if key not in mode.scratch:
        if isinstance(stages, BufferedStages):
            mode.scratch[key] = type(stages)(num_rows, stages.y0)
        else:
            mode.scratch[key] = type(stages)()
    return mode.scratch[key]


def _run(method: StepMethod, key: str, field: StepField, stages: Stages, mode: _Mode
         ) -> tuple[torch.Tensor, torch.Tensor, RKCoefficients]:
    """One attempt of `method` in its private store: (y1, its stages K, its coefficients)."""
    coef = method.coefficients(stages.y0.dtype, stages.y0.device)
    scratch = _scratch(mode, stages, key, method.tableau.num_dense_stages)
    scratch.begin(stages.y0, stages.dt, stages.first())
    y1, _ = method.attempt(field, scratch, coef)
    return y1, scratch.matrix(), coef


def _store(K: torch.Tensor, coef: RKCoefficients, f1: torch.Tensor) -> torch.Tensor:
    """[Q_1..Q_4, E, f1] from a method's stages K and its own dense and error weights."""
    weights = _weights(coef, len(K), K.dtype)  # [count, 5]
    return torch.cat([weights.T @ K, f1.reshape(1, -1)])


@lru_cache(maxsize=16)
def _weights(coef: RKCoefficients, count: int, dtype: torch.dtype) -> torch.Tensor:
    """A method's dense weights (theta^1..theta^4) and error weights over its first `count`
    stages, as the columns of one matrix."""
    return torch.cat([coef.dense[:count].to(dtype), coef.b_error[:1, :count].T.to(dtype)], 1)


@lru_cache(maxsize=16)
def _explicit_rows(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[5, 7]: Tsit5's stages -> [Q_1..Q_4, E] (its dense and error weights)."""
    coef = _tsit5_coefficients(dtype, device)
    return _weights(coef, coef.dense.shape[0], dtype).T


@lru_cache(maxsize=16)
def _tsit5_coefficients(dtype: torch.dtype, device: torch.device) -> RKCoefficients:
    return Tsit5().coefficients(dtype, device)


@lru_cache(maxsize=16)
def _stiffness_rows(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[2, 7] over Tsit5's stages: b - a_6 ((y1 - y6) / h) and e_7 - e_6 (f(y1) - f(y6))."""
    coef = _tsit5_coefficients(torch.float64, torch.device("cpu"))
    a6 = torch.cat([coef.a_rows[5], torch.zeros(2, dtype=torch.float64)])
    last, sixth = torch.eye(7, dtype=torch.float64)[6], torch.eye(7, dtype=torch.float64)[5]
    return torch.stack([coef.b - a6, last - sixth]).to(dtype=dtype, device=device)
