"""The compiled solve loop: `tidal.solve(..., compile=True)`.

Two compiled functions take the adaptive steps of an explicit Runge–Kutta method on a shared
grid, the user's f traced in; each step is the same traced attempt (`_attempt`): the stages,
the scaled error norm, the accept/reject decision and the next step size from the controller
(`tidal.controllers.adaptive.next_step`), all as tensors.

- Without a graph to record (inference, the checkpoint adjoint's forward solve) the whole loop
  is one `torch._higher_order_ops.while_loop` (`_solve_loop`), compiled by inductor with its
  C++ wrapper: no Python and no dynamo guards per step. Each accepted step writes the outputs
  it passes by the method's interpolant (at most WINDOW; the host writes any more) into a
  buffer of at most BUFFER values (or 2 WINDOW rows), and saves its end for the checkpoint
  recorder; a call stops at the end, a failure, `max_steps`, a full window, a full buffer of
  outputs or a full store of saved ends, and the host reads its counts in one
  synchronisation.
- With a graph (Backprop: `while_loop` has no autograd for loops of unknown length here) one
  call takes n steps (`compile=n`; 1 for `compile=True`), masked past the end, and the host
  reads each step's record as the eager loop reads an attempt (`_steps`).
- A checkpoint replay (the backward pass of `CheckpointAdjoint`, which retakes the forward
  solve's accepted steps with a graph) takes each recorded step in one call of a third
  function (`_replay_step`: the stages only, no error control), fused forward and backward.

Time and step size are float64 0-d tensors (values, not constants: a new time grid does not
recompile), and the batch dimension of the state is marked dynamic (a new batch size does not
recompile either; a new f, another dtype, another trailing shape, tolerance or grad mode
does). The loop is `tidal._loop.SharedLoop` with `run` replaced, so outputs, results and
failures are the eager loop's own. (One count differs, truthfully: a method that is not FSAL
evaluates f(t1, y1) in every compiled step, the last included, which the eager loop skips.)

What the compiled step does not cover (events, dense output, `step_ts`/`jump_ts`, a user norm,
per-sample grids, methods without a Butcher tableau or with extra interpolation stages, fixed
steps) runs eagerly with a warning that says why. A field dynamo cannot trace (a call into
scipy, a `.item()`) falls back the same way, with one warning per field; a field with Python
side effects (one that counts its calls) cannot be traced into the whole loop and takes the
per-step function. Checkpoint replays are compiled wherever the method and the grid allow it
(the replay step needs neither error control nor events: only jumps among the step ends keep
it eager), and otherwise replay eagerly without a warning.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch._higher_order_ops import while_loop

from tidal._errors import Status
from tidal._loop import SLIVER, TINY, SharedLoop, _Step
from tidal._loop_io import LoopResult, LoopSetup
from tidal._problem import Problem
from tidal._vector_field import Field
from tidal.controllers.adaptive import AdaptiveControl, AdaptiveController, next_step
from tidal.interpolation import dense_weights
from tidal.solvers.base import ExplicitRungeKutta
from tidal.solvers.explicit_rk import BufferedStages
from tidal.solvers.tableau import ButcherTableau

# Fields dynamo could not trace: solved eagerly without trying again.
_untraceable: weakref.WeakSet[Any] = weakref.WeakSet()
# Fields the whole loop cannot take (Python side effects): solved by the per-step function.
_not_whole: weakref.WeakSet[Any] = weakref.WeakSet()
# Fields the replay step could not trace (with a graph): replayed eagerly.
_not_replayable: weakref.WeakSet[Any] = weakref.WeakSet()


def _on_first_call(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """`torch.compile(function, **options)`, made on the first call: `torch.compile` imports
    dynamo (about a second), which a program that never compiles should not pay for on
    `import tidal`."""
    compiled: list[Callable[..., Any]] = []

    @functools.wraps(function)
    def call(*args: Any) -> Any:
        if not compiled:
            compiled.append(torch.compile(function, **options))
        return compiled[0](*args)
    return call


@dataclass(frozen=True)
class StepSpec:
    """What is constant in a compiled step (dynamo guards on it): the tableau, the controller,
    the controller's exponent 1 / (q + 1), the direction of time, the method (it combines error
    norms) and the steps per call."""

    tableau: ButcherTableau
    controller: AdaptiveController
    exponent: float
    direction: float
    solver: ExplicitRungeKutta
    steps: int


def _combine(coefficients: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor | None:
    """sum_j coefficients_j k_j over the nonzero coefficients (None when all are zero)."""
    total = None
    for a, k in zip(coefficients, ks):
        if a != 0.0:
            total = a * k if total is None else total + a * k
    return total


def _stages(tableau: ButcherTableau, direction: float, field: Field, y: torch.Tensor,
            f0: torch.Tensor, tau: torch.Tensor, h: torch.Tensor, tau1: torch.Tensor
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The method's step from (tau, y) over h to tau1 (forward times, float64 0-d): (y1, the
    dense stages k_0 = f0, ..., f(t1, y1))."""
    dtype = y.dtype
    h_state = h.to(dtype)
    ks = [f0]
    y_stage = y
    for i in range(1, tableau.num_stages):
        increment = _combine(tableau.a[i], ks)
        y_stage = y if increment is None else y + h_state * increment
        t_i = ((tau + tableau.c[i] * h) * direction).to(dtype)
        ks.append(field(t_i, y_stage))
    if tableau.fsal and not tableau.reuse_last_stage:
        y1 = y_stage
    else:
        increment = _combine(tableau.b, ks)
        y1 = y if increment is None else y + h_state * increment
    if not tableau.fsal:  # f(t1, y1): the next step's first stage and a dense stage
        ks.append(field((tau1 * direction).to(dtype), y1))
    return y1, ks


def _attempt(spec: StepSpec, field: Field, y: torch.Tensor, f0: torch.Tensor,
             tau: torch.Tensor, dt: torch.Tensor, tau_end: torch.Tensor,
             history: tuple[torch.Tensor, torch.Tensor], rtol: Any, atol: Any,
             root_n: torch.Tensor) -> tuple[Any, ...]:
    """One masked adaptive step, all tensors: (the state after it, its end state y1, its stages,
    its parts: active, accepted, finite, tau, dt, tau1, next dt): the eager loop's `_clip`, the
    method's stages, the error norm and the controller's decision."""
    tableau, dtype = spec.tableau, y.dtype
    active = tau < tau_end
    last = tau + dt * (1.0 + SLIVER) >= tau_end
    h = torch.where(active, torch.where(last, tau_end - tau, dt), torch.zeros_like(dt))
    tau1 = torch.where(last, tau_end, tau + h)
    y1, ks = _stages(tableau, spec.direction, field, y, f0, tau, h, tau1)
    f1 = ks[-1]
    # the error ratio (step sizes are constants for autograd, as in the eager loop)
    y0_abs, y1_abs = y.detach().abs(), y1.detach().abs()
    scale = torch.maximum(y0_abs, y1_abs) * rtol + atol
    detached = [k.detach() for k in ks]
    norms = []
    for row in tableau.b_error:
        error = _combine(row, detached)
        norm = (torch.zeros((), dtype=dtype, device=y.device) if error is None
                else torch.linalg.vector_norm(error / scale))
        norms.append(norm.double() * h / root_n)
    ratio = spec.solver.combine_error_norms(norms)
    finite = torch.isfinite(ratio)
    accept, dt_next, new_history = next_step(spec.controller, ratio, h, history, spec.exponent)
    taken = accept & finite & active
    keep = taken.reshape((1,) * y.dim())
    state = (torch.where(keep, y1, y), torch.where(keep, f1, f0),
             torch.where(taken, tau1, tau), torch.where(active, dt_next, dt),
             tuple(torch.where(active, new, old) for new, old in zip(new_history, history)))
    return state, y1, torch.stack(ks), (active, taken, finite, tau, h, tau1, dt_next)


def _steps(spec: StepSpec, field: Field, y: torch.Tensor, f0: torch.Tensor, tau: torch.Tensor,
           dt: torch.Tensor, tau_end: torch.Tensor, history: tuple[torch.Tensor, torch.Tensor],
           rtol: Any, atol: Any, root_n: torch.Tensor) -> tuple[Any, ...]:
    """`spec.steps` masked steps: the state after them and each step's start state, end state,
    stages and record, stacked."""
    starts, ends, stages, records = [], [], [], []
    for _ in range(spec.steps):
        starts.append(y)
        (y, f0, tau, dt, history), y1, ks, parts = _attempt(
            spec, field, y, f0, tau, dt, tau_end, history, rtol, atol, root_n)
        ends.append(y1)
        stages.append(ks)
        records.append(torch.stack([part.double() for part in parts]))
    return ((y, f0, tau, dt, history), torch.stack(starts), torch.stack(ends),
            torch.stack(stages), torch.stack(records))


_compiled_steps = _on_first_call(_steps, fullgraph=True)


def _replay_step(tableau: ButcherTableau, direction: float, field: Field, y: torch.Tensor,
                 f0: torch.Tensor, tau: torch.Tensor, tau1: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A checkpoint replay's recorded step from tau to tau1: (y1, its dense stages stacked,
    whether y1 is finite)."""
    y1, ks = _stages(tableau, direction, field, y, f0, tau, tau1 - tau, tau1)
    return y1, torch.stack(ks), torch.isfinite(y1).all()


def _without_donated_buffers(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
    """inductor with no buffer of the backward given up to it (AOTAutograd's donated
    buffers): the checkpoint's backward retains the graph outside f across its segments."""
    from torch._inductor.compile_fx import compile_fx  # (1.6 s to import: when compiling)

    with torch._functorch.config.patch(donated_buffer=False):
        return compile_fx(graph, inputs)


_compiled_replay_step = _on_first_call(_replay_step, fullgraph=True,
                                       backend=_without_donated_buffers)


WINDOW = 8  # outputs one step of the whole loop writes at most (the host writes any more)
# Output values one call of the whole loop holds before it hands them to the host (at least
# WINDOW rows of N). The loop carries its output buffer, and a carried tensor is copied every
# step: a buffer for all T outputs made each step cost O(T N) (694 us a step for 1,000
# outputs of 256 x 2 states, against 40 us for 10), while each call costs the host ~0.2 ms:
# 2^16 values was the fastest of 2^14 .. 2^18 there. On a GPU a copy is cheaper still and a
# call dearer (a launch of every set-up tensor): the buffer may hold GPU_FACTOR times more
# (not measured: the H200 runs preceded this).
BUFFER = 2**16
GPU_FACTOR = 64  # 2^22 values on a GPU
SAVED = 16  # step ends one call of the whole loop saves for the checkpoint recorder at most


@dataclass(frozen=True)
class LoopLimits:
    """The whole loop's tensors that are not carried from step to step: the end, the output
    times (padded with WINDOW infinities), the index of the output in the buffer's first row,
    the steps left before `max_steps`, the tolerances, the error norm's sqrt(N) and the
    interpolant's polynomials."""

    tau_end: torch.Tensor
    taus: torch.Tensor
    first_out: torch.Tensor
    steps_left: torch.Tensor
    rtol: Any
    atol: Any
    root_n: torch.Tensor
    dense: torch.Tensor


class Carry(NamedTuple):
    """What the whole loop carries from step to step: the state and f(t, y); the output buffer
    `ys` [R + WINDOW, N] (row i holds output first_out + i; see BUFFER); the scalars packed in
    two vectors; the start state and stages of the last step (for a step that filled its
    window of outputs). Every carried tensor is a new buffer each step: two vectors instead of
    13 0-d tensors saved ~3 us a step on the CPU (docs/benchmarks.md)."""

    y: torch.Tensor
    f0: torch.Tensor
    ys: torch.Tensor
    # float64 [6]: time, next step size, the controller's history (r_{n-1}, r_{n-2}), and the
    # last step's start and size
    clock: torch.Tensor
    # int64 [7]: the next output's index; this call's attempts, accepted and rejected steps;
    # the non-finite streak; the status; whether the last step filled its window of outputs
    counts: torch.Tensor
    y_last: torch.Tensor
    ks_last: torch.Tensor


def _solve_loop(spec: StepSpec, field: Field, retries: int, limits: LoopLimits, start: Carry,
                store: tuple[torch.Tensor, ...]) -> tuple[Carry, tuple[torch.Tensor, ...]]:
    """Adaptive steps in one `while_loop` until the end, a failure, `max_steps`, a step that
    passes more than WINDOW outputs, a buffer `ys` without room for another WINDOW outputs or
    a full store. Each accepted step writes the outputs it passes into `ys` by the method's
    interpolant (its end exactly), as `SharedLoop._emit_outputs` does, and its end into
    `store` = (saved [S, ...], saved_taus [S]) for the checkpoint recorder (empty without a
    recorder: nothing carried); the counts and the failure rules are the eager loop's
    (`SharedLoop._attempt_step`)."""
    window = torch.arange(WINDOW, device=limits.taus.device)
    capacity = store[0].shape[0] if store else 0

    def cond(c: Carry, *store: torch.Tensor) -> torch.Tensor:
        tau = c.clock[0]
        k, steps, accepted, _, _, status, full = c.counts.unbind()
        room = k - limits.first_out + WINDOW <= c.ys.shape[0]
        going = ((tau < limits.tau_end) & (steps < limits.steps_left) & (status == 0)
                 & (full == 0) & room)
        return going & (accepted < capacity) if capacity else going

    def body(c: Carry, *store: torch.Tensor) -> tuple[Any, ...]:
        y, (tau, dt, history_1, history_2, _, _) = c.y, c.clock.unbind()
        k, steps, accepted, rejected, streak, status, _ = c.counts.unbind()
        (y_next, f_next, tau_next, dt_next, history), y1, ks, parts = _attempt(
            spec, field, y, c.f0, tau, dt, limits.tau_end, (history_1, history_2),
            limits.rtol, limits.atol, limits.root_n)
        _, taken, finite, _, h, tau1, _ = parts
        # the outputs in (tau, tau1]: interpolated, the one at tau1 exactly y1
        index = k + window
        t_out = limits.taus[index]
        slot = index - limits.first_out  # the rows of the buffer
        passed = taken & (t_out <= tau1)
        weights = dense_weights((t_out - tau) / h, limits.dense, y.dtype)  # [WINDOW, S]
        flat_y, flat_y1 = y.reshape(1, -1), y1.reshape(1, -1)
        rows = flat_y + h.to(y.dtype) * (weights @ ks.reshape(ks.shape[0], -1))
        rows = torch.where((t_out == tau1).unsqueeze(1), flat_y1, rows)
        ys = c.ys.index_copy(0, slot, torch.where(passed.unsqueeze(1), rows, c.ys[slot]))
        if store:  # a rejected step's end is overwritten by the next accepted one
            saved, saved_taus = store
            store = (saved.index_copy(0, accepted.view(1), y1.unsqueeze(0)),
                     saved_taus.index_copy(0, accepted.view(1), tau1.view(1)))
        streak = torch.where(finite, 0, streak + 1)
        rejected_now = ~taken
        gave_up = rejected_now & (streak > retries)
        underflow = rejected_now & (dt_next <= TINY * tau.abs())
        status = torch.where(gave_up | (underflow & ~finite), int(Status.NONFINITE),
                             torch.where(underflow, int(Status.DT_UNDERFLOW), status))
        clock = torch.stack([tau_next, dt_next, *history, tau, h])
        counts = torch.stack([k + passed.sum(), steps + 1, accepted + taken.long(),
                              rejected + rejected_now.long(), streak, status,
                              passed[-1].long()])
        return (Carry(y_next, f_next, ys, clock, counts, y.clone(), ks), *store)

    end, *store = while_loop(cond, body, (start, *store))
    return end, tuple(store)


_compiled_loop = _on_first_call(_solve_loop, fullgraph=True, options={"cpp_wrapper": True})


#: The oldest torch the compiled loop runs on. torch 2.4, 2.5 and 2.6 (the range's oldest,
#: checked in the tenth session) cannot compile the whole `while_loop` (2.4, 2.5: the loop
#: is not captured whole; 2.6: inductor cannot carry a view through it) and guard the
#: per-step function on the identity of each solve's field object, so every solve compiled
#: again (seconds each); torch 2.4 also left the process flushing subnormal numbers to zero.
#: Checked to compile once: 2.13 and 2.14 here, 2.11 on the H200 machine (ninth session).
MIN_TORCH = "2.11"
_TORCH_VERSION = torch.__version__  # a TorchVersion: compares as a version, "2.9" < "2.11"


def unsupported(problem: Problem) -> str | None:
    """Why the compiled step cannot run this problem (None: it can)."""
    solver, controller = problem.solver, problem.controller
    reasons = [
        (_TORCH_VERSION < MIN_TORCH,
         f"torch {torch.__version__} (the compiled loop needs torch >= {MIN_TORCH}: before, "
         "the whole loop does not compile and the per-step function compiles again for every "
         "solve)"),
        (problem.grid.batched, "per-sample time grids"),
        (not isinstance(solver, ExplicitRungeKutta) or not solver.adaptive,
         f"the solver {solver!r} (adaptive explicit Runge–Kutta methods only)"),
        (isinstance(solver, ExplicitRungeKutta) and bool(solver.tableau.c_extra),
         f"the interpolant's extra stages of {solver!r}"),
        (not isinstance(controller, AdaptiveController) or controller.norm is not None
         or bool(controller.step_ts) or bool(controller.jump_ts),
         "this controller (a PIDController without norm, step_ts or jump_ts only)"),
        (problem.event is not None, "events"),
        (problem.dense, "dense output"),
    ]
    return next((reason for failed, reason in reasons if failed), None)


def compiled_loop(problem: Problem, setup: LoopSetup) -> SharedLoop | None:
    """The compiled loop for `problem`, or None (with a warning saying why, except for the
    internal checkpoint replays) when it must run eagerly."""
    if problem.f in _untraceable:  # warned when it was found out
        return None
    if problem.start is not None:  # a checkpoint replay: its recorded steps
        return (CompiledReplay(setup) if replayable(problem, setup)
                and problem.f not in _not_replayable else None)
    reason = unsupported(problem)
    if reason is not None:
        _warn(reason)
        return None
    return CompiledLoop(setup, problem)


def replayable(problem: Problem, setup: LoopSetup) -> bool:
    """Whether a checkpoint replay can take its steps in `_replay_step`: those of an adaptive
    explicit Runge–Kutta method without extra interpolation stages, on a shared grid, with no
    jump among the recorded step ends."""
    solver = problem.solver
    return (_TORCH_VERSION >= MIN_TORCH and not problem.grid.batched
            and isinstance(solver, ExplicitRungeKutta) and solver.adaptive
            and not solver.tableau.c_extra
            and not (setup.boundaries is not None and setup.boundaries.any_jump))


def _warn(reason: str) -> None:
    warnings.warn(f"tidal.solve(compile=True): not compiled because of {reason}; solving "
                  "eagerly.", stacklevel=4)


class CompiledLoop(SharedLoop):
    """`SharedLoop` whose steps run in the compiled function (see the module docstring)."""

    def __init__(self, s: LoopSetup, problem: Problem):
        super().__init__(s)
        control = s.control
        assert isinstance(control, AdaptiveControl)
        solver = s.solver
        assert isinstance(solver, ExplicitRungeKutta)
        self.problem, self.control = problem, control
        self.spec = StepSpec(solver.tableau, control.controller, control.exponent,
                             self.clock.direction, solver, problem.compile)

    def run(self) -> LoopResult:
        if self.status is not Status.SUCCESS or self.tau >= self.tau_end:
            return self._result()
        y0 = self.y
        if y0.dim() >= 2:  # the batch: a new batch size does not recompile
            y0 = y0.view_as(y0)  # marks a view, not the user's tensor
            torch._dynamo.maybe_mark_dynamic(y0, 0)
            torch._dynamo.maybe_mark_dynamic(self.f0, 0)

        def scalar(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=torch.float64, device=y0.device)

        norm = self.control.norm
        tau_end, root_n = scalar(self.tau_end), scalar(norm.root_n)
        # no graph to record: the whole loop in one compiled call
        whole = isinstance(self.stages, BufferedStages) and self.problem.f not in _not_whole
        with _compiling():
            if whole and self._run_whole(y0, tau_end, root_n):
                return self._result()
            try:
                out = _compiled_steps(self.spec, self.s.field, y0, self.f0, scalar(self.tau),
                                      scalar(self.dt), tau_end, (scalar(1.0), scalar(1.0)),
                                      norm.rtol, norm.atol, root_n)
            except torch._dynamo.exc.TorchDynamoException as error:
                out, reason = None, (f"a vector field torch.compile cannot trace "
                                     f"({_first_line(error)})")
            if out is not None:
                self._continue(out, tau_end, root_n)
                return self._result()
        _remember(_untraceable, self.problem.f)
        _warn(reason)
        return SharedLoop(self.s).run()

    def _run_whole(self, y0: torch.Tensor, tau_end: torch.Tensor, root_n: torch.Tensor) -> bool:
        """The solve in calls of the whole loop (`_solve_loop`); the host reads each call's
        counts in one synchronisation, writes the outputs of a step that passed more than
        WINDOW of them and hands the saved step ends to the checkpoint recorder. False
        (nothing done) when the loop cannot be traced with this field: a field with Python
        side effects (counting its calls, say) can only be traced into the per-step function,
        whose side effects dynamo replays."""
        tableau, device, recorder = self.spec.tableau, y0.device, self.s.recorder
        attempt_fevals = tableau.num_stages - 1 + (0 if tableau.fsal else 1)

        def count(value: int) -> torch.Tensor:
            return torch.tensor(value, dtype=torch.int64, device=device)

        taus = torch.tensor(self.taus + [math.inf] * WINDOW, dtype=torch.float64, device=device)
        torch._dynamo.maybe_mark_dynamic(taus, 0)  # a new time grid does not recompile
        norm = self.control.norm
        y, f0 = y0, self.f0
        # the controller's history starts at (1, 1); each call's end is the next one's start
        clock = torch.tensor([self.tau, self.dt, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64,
                             device=device)
        while self.tau < self.tau_end and self.status is Status.SUCCESS:
            if self.steps >= self.s.max_steps:
                self.status = Status.MAX_STEPS
                break
            limits = LoopLimits(tau_end, taus, count(self.next_out),
                                count(self.s.max_steps - self.steps), norm.rtol, norm.atol,
                                root_n, self.coef.dense)
            budget = BUFFER * (1 if device.type == "cpu" else GPU_FACTOR)
            rows = min(len(self.taus) - self.next_out, max(WINDOW, budget // y0.numel()))
            rows += WINDOW
            counts = torch.tensor([self.next_out, 0, 0, 0, self.nonfinite_streak, 0, 0],
                                  dtype=torch.int64, device=device)
            start = Carry(
                y, f0, y0.new_empty(rows, y0.numel()), clock, counts,
                y_last=torch.zeros_like(y), ks_last=y.new_zeros(len(self.coef.dense), *y.shape))
            store: tuple[torch.Tensor, ...] = (() if recorder is None else
                     (y.new_empty(SAVED, *y.shape), taus.new_empty(SAVED)))
            torch._dynamo.maybe_mark_dynamic(start.ys, 0)
            if y.dim() >= 2:  # the batch, as in `run`
                for tensor, dim in ((start.ys, 1), (start.y_last, 0), (start.ks_last, 1),
                                    *((saved, 1) for saved in store[:1])):
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
            try:
                end, store = _compiled_loop(self.spec, self.s.field,
                                            self.control.nonfinite_retries, limits, start, store)
            except torch._dynamo.exc.TorchDynamoException:
                if self.steps:  # a later call that failed to compile: not the field's doing
                    raise
                _remember(_not_whole, self.problem.f)
                return False
            y, f0, clock = end.y, end.f0, end.clock
            self.tau, self.dt, _, _, tau_last, h_last, *numbers = torch.cat(
                [clock, end.counts.double()]).tolist()
            k, steps, accepted, rejected, streak, status, full = map(int, numbers)
            self.steps += steps
            self.accepted += accepted
            self.rejected += rejected
            self.fevals += attempt_fevals * steps
            self.nonfinite_streak = streak
            if k > self.next_out:
                self.rows.append(end.ys[:k - self.next_out])
                self.next_out = k
            if recorder is not None:
                for j in range(accepted):
                    recorder.record(None, store[1][j:j + 1], store[0][j])
            self.y, self.f0 = y, f0
            if status:
                self.status = Status(status)
                if streak > self.control.nonfinite_retries:  # as the eager loop leaves it
                    self.dt = h_last
            if full:  # the step passed more outputs than its window: the rest here
                ks_last = end.ks_last
                step = _Step(tau_last, h_last, end.y_last, y, ks_last.reshape(len(ks_last), -1))
                self._emit_outputs(step, self.tau, self.tau)
        return True

    def _continue(self, out: tuple[Any, ...], tau_end: torch.Tensor, root_n: torch.Tensor
                  ) -> None:
        """Read each call's steps and call again until the end or a stop."""
        norm = self.control.norm
        while True:
            (y, f0, tau, dt, history), starts, ends, stages, records = out
            if not self._take(records.tolist(), starts, ends, stages):
                return
            self.y, self.f0 = y, f0
            if self.tau >= self.tau_end:
                return
            out = _compiled_steps(self.spec, self.s.field, y, f0, tau, dt, tau_end, history,
                                  norm.rtol, norm.atol, root_n)

    def _take(self, records: list[list[float]], starts: torch.Tensor, ends: torch.Tensor,
              stages: torch.Tensor) -> bool:
        """The host's part of a call's steps, in order, as the eager loop does after each
        attempt; False when the solve stopped (a failure or `max_steps`) at one of them, with
        the state where it stopped."""
        tableau, control = self.spec.tableau, self.s.control
        fevals = tableau.num_stages - 1 + (0 if tableau.fsal else 1)
        for j, (active, taken, finite, tau, dt, tau1, next_dt) in enumerate(records):
            if not active:  # masked steps past the end: f was called all the same
                self.fevals += fevals * (len(records) - j)
                return True
            if self.steps >= self.s.max_steps:
                self.status, self.y = Status.MAX_STEPS, starts[j]
                return False
            self.steps += 1
            self.fevals += fevals
            self.dt = next_dt
            self.nonfinite_streak = 0 if finite else self.nonfinite_streak + 1
            if taken:
                self._accept_record(_Step(tau, dt, starts[j], ends[j],
                                          stages[j].reshape(len(stages[j]), -1)), tau1)
                continue
            self.rejected += 1
            if self.nonfinite_streak > control.nonfinite_retries:
                self.status, self.dt = Status.NONFINITE, dt
            elif self.dt <= TINY * abs(self.tau):
                self.status = Status.DT_UNDERFLOW if finite else Status.NONFINITE
            if self.status is not Status.SUCCESS:
                self.y = starts[j]
                return False
        return True

    def _accept_record(self, step: _Step, tau1: float) -> None:
        """An accepted step: outputs, the recorder and the new time (the state itself comes
        back from the compiled function)."""
        self.accepted += 1
        if self.s.recorder is not None:
            self.s.recorder.record(None, torch.full((1,), tau1, dtype=torch.float64,
                                                    device=step.y1.device), step.y1)
        self._emit_outputs(step, tau1, tau1)
        self.tau = tau1


class CompiledReplay(SharedLoop):
    """A checkpoint replay (`tidal.adjoint.checkpoint`) whose recorded steps each run in the
    compiled `_replay_step`, recording the graph the backward pass differentiates: the stages
    and f fused forward and backward, as the compiled Backprop step is. Outputs, counts and
    results are the eager loop's (`SharedLoop`); a field the step cannot trace replays
    eagerly."""

    def __init__(self, s: LoopSetup):
        super().__init__(s)
        assert isinstance(s.solver, ExplicitRungeKutta)
        self.butcher, self.eager = s.solver.tableau, False

    def run(self) -> LoopResult:
        if self.y.dim() >= 2:  # the batch (of the segment's start): a new batch size does not
            torch._dynamo.maybe_mark_dynamic(self.y, 0)  # recompile
            torch._dynamo.maybe_mark_dynamic(self.f0, 0)
        with _compiling():  # once a replay, not once a step (~20 us)
            return super().run()

    def _attempt_step(self) -> None:
        if self.eager:
            super()._attempt_step()
            return
        tau1, dt, boundary = self._clip(self.dt)
        y, f0 = self.y, self.f0
        times = torch.tensor([self.tau, tau1], dtype=torch.float64, device=y.device)
        try:
            y1, ks, finite = _compiled_replay_step(
                self.butcher, self.clock.direction, self.s.field, y, f0, times[0], times[1])
        except torch._dynamo.exc.TorchDynamoException as error:
            _remember(_not_replayable, self.s.field.f)
            self.eager = True
            warnings.warn("tidal.solve(compile=True): a checkpoint replay was not compiled "
                          f"({_first_line(error)}); replaying eagerly.", stacklevel=2)
            super()._attempt_step()
            return
        self.fevals += len(ks) - 1
        self.steps += 1
        if not bool(finite):  # (the eager replay retries the same step and fails too)
            self.status, self.rejected = Status.NONFINITE, self.rejected + 1
            return
        self.accepted += 1
        self._emit_outputs(_Step(self.tau, dt, y, y1, ks.view(len(ks), -1)), tau1, tau1)
        if boundary is not None:
            self.next_boundary += 1
        self.tau, self.y, self.f0 = tau1, y1, ks[-1]


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
    """The settings of every call of a compiled function (any call may compile: a new field,
    grad mode, dtype). Without dynamo's automatic dynamic shapes: a second graph would
    otherwise make every size symbolic (the batch is marked dynamic where it is one), and
    W4's whole loop ran 6x slower after W1-solver-only's. torch's own warnings ignored,
    which a `-W error` run would turn into failures; f's and tidal's warnings pass."""
    with warnings.catch_warnings(), torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        warnings.filterwarnings("ignore", module=r"torch(\.|$)")
        # dynamo reads .grad of every input while it traces (a state may be a view)
        warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not")
        yield


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _remember(fields: weakref.WeakSet[Any], f: Any) -> None:
    # a bound method is not weakly referenceable: it is tried again next time
    with contextlib.suppress(TypeError):
        fields.add(f)

