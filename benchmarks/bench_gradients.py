"""Training-step (gradient) benchmark of tidal's adjoints against torchdiffeq and torchode.

Run from the repository root:

    .venv/bin/python benchmarks/bench_gradients.py            # full run (~3 minutes)
    .venv/bin/python benchmarks/bench_gradients.py --quick    # smoke run (~30 s)
    .venv/bin/python benchmarks/bench_gradients.py --only W2  # or W5

W2 times one training step (solve, loss = mean of squared outputs, backward to the MLP's
parameters and y0) on the W1 and W1-long problems of bench_solvers.py, for every way of
differentiating a solve that tidal, torchdiffeq and torchode offer. Everything runs in one
process on one CPU thread; after one untimed warm-up per method (which also counts f calls and
measures the gradient's error), the repeats are interleaved as in bench_solvers.py, each sample
at least SAMPLE_SECONDS of back-to-back steps (`--cold`: one step after a garbage collection).

W5 measures the peak memory of one training step against the length of the solve (t_end in
{1, 10, 100} on W1-long's rotating field), each configuration in its own subprocess.

See benchmarks/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import numpy as np
import scipy
import torch
import torchdiffeq
import torchode

import tidal

# The solver benchmark's problem pieces, counter, timer and table printer.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_solvers import (
    ROT,
    SAMPLE_SECONDS,
    Counted,
    _batch_y0,
    _load,
    _mlp,
    _runs_per_sample,
    _timed,
    print_table,
)

RTOL, ATOL = 1e-5, 1e-6  # the solves being benchmarked (float32)
NUM_OUTPUTS = 10
W5_T_ENDS = (1.0, 10.0, 100.0)
W5_WARMUP_T_END = 0.1  # the warm-up solve of each W5 subprocess (a couple of steps)


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


class Field(torch.nn.Module):
    """The W1 MLP 2-64-64-2 (tanh, bench_solvers' seed), plus 2*pi*J*y for W1-long."""

    def __init__(self, rotation: bool, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.net = _mlp().to(dtype)
        self.rotation = rotation
        self.register_buffer("rot", ROT.to(dtype))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.net(y)
        return out + y @ self.rot if self.rotation else out


@dataclass
class Problem:
    name: str
    about: str
    t_end: float
    rotation: bool
    repeats: int  # timed repeats of the full run
    quick_repeats: int  # ... and of --quick (0: skipped)
    ref_tol: tuple[float, float]  # rtol, atol of the float64 reference gradient

    def ts(self, t_end: float | None = None) -> torch.Tensor:
        return torch.linspace(0.0, self.t_end if t_end is None else t_end, NUM_OUTPUTS,
                              dtype=torch.float64)


W1 = Problem("W1", "MLP 2-64-64-2 (tanh), batch 256, t in [0, 1], 10 outputs, dopri5, "
             "rtol 1e-5, atol 1e-6, float32; loss = mean(ys**2), grads of params and y0",
             t_end=1.0, rotation=False, repeats=15, quick_repeats=3, ref_tol=(1e-10, 1e-12))
W1_LONG = Problem("W1-long", "the W1 MLP + 2*pi*J*y, t in [0, 10], 10 outputs, same "
                  "tolerances and loss", t_end=10.0, rotation=True, repeats=3, quick_repeats=0,
                  ref_tol=(1e-8, 1e-10))


# --------------------------------------------------------------------------------------------
# Methods: each builder returns solve(y0) -> (ys [T, B, F], forward step attempts)
# --------------------------------------------------------------------------------------------

Solve = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "backprop" (autograd through the steps), "checkpoint" or "adjoint"
    build: Callable[[Counted, list[torch.Tensor], torch.Tensor, float, float], Solve]


def _tidal(adjoint_of: Callable[[list[torch.Tensor]], object], compile: bool = False):
    def build(f: Counted, params: list[torch.Tensor], ts: torch.Tensor, rtol: float,
              atol: float) -> Solve:
        solver, controller = tidal.Dopri5(), tidal.PIDController(rtol=rtol, atol=atol)
        adjoint = adjoint_of(params)
        # compiled: the bare field (a counting wrapper's side effect would keep the solve out
        # of the whole compiled loop); its forward calls are tidal's count, replays uncounted
        field = f.f if compile else f

        def solve(y0: torch.Tensor) -> tuple[torch.Tensor, int]:
            sol = tidal.solve(field, y0, ts, solver=solver, controller=controller,
                              adjoint=adjoint, compile=compile)
            f.solver_fevals = int(sol.stats.num_fevals)  # the adaptive solve's own f calls
            if compile:
                f.calls += f.solver_fevals
            return sol.ys, int(sol.stats.num_steps)
        return solve
    return build


def _torchdiffeq(adjoint: bool, seminorm: bool = False):
    def build(f: Counted, params: list[torch.Tensor], ts: torch.Tensor, rtol: float,
              atol: float) -> Solve:
        def solve(y0: torch.Tensor) -> tuple[torch.Tensor, int]:
            f.steps = 0  # counted by torchdiffeq's callback_step (forward attempts)
            if adjoint:
                ys = torchdiffeq.odeint_adjoint(
                    f, y0, ts, rtol=rtol, atol=atol, method="dopri5",
                    adjoint_params=tuple(params),
                    adjoint_options=dict(norm="seminorm") if seminorm else None)
            else:
                ys = torchdiffeq.odeint(f, y0, ts, rtol=rtol, atol=atol, method="dopri5")
            return ys, f.steps
        return solve
    return build


def _torchode(f: Counted, params: list[torch.Tensor], ts: torch.Tensor, rtol: float,
              atol: float) -> Solve:
    term = torchode.ODETerm(f)
    step_method = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    solver = torchode.AutoDiffAdjoint(step_method, controller)

    def solve(y0: torch.Tensor) -> tuple[torch.Tensor, int]:
        t_eval = ts.unsqueeze(0).expand(y0.shape[0], -1)  # the same grid for every sample
        sol = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
        assert bool((sol.status == 0).all()), sol.status
        return sol.ys.transpose(0, 1), int(sol.stats["n_steps"].max())  # [B, T, F] -> [T, B, F]
    return solve


METHODS = [
    Method("tidal Backprop", "backprop", _tidal(lambda p: tidal.BackpropAdjoint())),
    Method("tidal Checkpoint", "checkpoint", _tidal(lambda p: tidal.CheckpointAdjoint())),
    Method("tidal Backprop (compiled)", "backprop",
           _tidal(lambda p: tidal.BackpropAdjoint(), compile=True)),
    Method("tidal Checkpoint (compiled)", "checkpoint",
           _tidal(lambda p: tidal.CheckpointAdjoint(), compile=True)),
    Method("tidal Backsolve", "adjoint", _tidal(lambda p: tidal.BacksolveAdjoint(params=p))),
    Method("tidal Backsolve seminorm", "adjoint",
           _tidal(lambda p: tidal.BacksolveAdjoint(params=p, seminorm=True))),
    Method("torchdiffeq odeint", "backprop", _torchdiffeq(adjoint=False)),
    Method("torchdiffeq odeint_adjoint", "adjoint", _torchdiffeq(adjoint=True)),
    Method("torchdiffeq odeint_adjoint seminorm", "adjoint",
           _torchdiffeq(adjoint=True, seminorm=True)),
    Method("torchode AutoDiffAdjoint", "backprop", _torchode),
]
METHOD_BY_NAME = {m.name: m for m in METHODS}


@dataclass
class Step:
    """What one training step did."""

    fwd_calls: int  # calls of f during the solve (forward pass)
    bwd_calls: int  # calls of f during loss.backward()
    steps: int  # forward step attempts (accepted + rejected)
    grad_params: torch.Tensor  # all parameter gradients, flattened and concatenated
    grad_y0: torch.Tensor
    solver_fevals: int | None  # tidal: f calls of the adaptive solve itself (stats)


def make_step(method: Method, f: Counted, params: list[torch.Tensor], y0: torch.Tensor,
              ts: torch.Tensor, rtol: float = RTOL, atol: float = ATOL
              ) -> Callable[[], Step]:
    """One complete training step: solve, loss = mean(ys**2), backward."""
    solve = method.build(f, params, ts, rtol, atol)

    def step() -> Step:
        y = y0.clone().requires_grad_(True)
        for p in params:
            p.grad = None
        f.calls, f.solver_fevals = 0, None
        ys, steps = solve(y)
        fwd = f.calls
        ys.pow(2).mean().backward()
        assert y.grad is not None and all(p.grad is not None for p in params)
        return Step(fwd, f.calls - fwd, steps, torch.cat([p.grad.reshape(-1) for p in params]),
                    y.grad, f.solver_fevals)
    return step


def counted_field(rotation: bool, dtype: torch.dtype = torch.float32
                  ) -> tuple[Field, Counted, list[torch.Tensor]]:
    module = Field(rotation, dtype)
    f = Counted(module)
    f.solver_fevals = None
    return module, f, list(module.parameters())


# --------------------------------------------------------------------------------------------
# W2: time per training step, floors, gradient accuracy
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    method: Method
    first: Step  # the warm-up step
    first_seconds: float  # its CPU time: compilation included
    err_params: float
    err_y0: float
    times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _per_call_probe(call: Callable[[], object]) -> tuple[Callable[[], None], int]:
    """n repeated calls (SAMPLE_SECONDS of them) of `call`, and n; as bench_solvers' floor
    probe. (Timed beside every training step, so the medians take many samples.)"""
    call()
    once = _timed(lambda: [call() for _ in range(20)]) / 20
    n = max(20, int(SAMPLE_SECONDS / once))

    def calls() -> None:
        for _ in range(n):
            call()
    return calls, n


def _f_probes(f: Counted, params: list[torch.Tensor], y0: torch.Tensor
              ) -> dict[str, tuple[Callable[[], None], int]]:
    """Bare f (no graph), and f with a graph plus one vector-Jacobian product to (y, params):
    the work of one differentiated call of f (a backprop step's share, or one evaluation of
    the adjoint's augmented field without its bookkeeping)."""
    t = torch.tensor(0.0, dtype=y0.dtype)
    a = torch.randn(y0.shape, generator=torch.Generator().manual_seed(7), dtype=y0.dtype)

    def bare() -> None:
        with torch.no_grad():
            f(t, y0)

    def with_vjp() -> None:
        y = y0.detach().requires_grad_(True)
        torch.autograd.grad(f(t, y), (y, *params), grad_outputs=a)

    return {"f": _per_call_probe(bare), "f+vjp": _per_call_probe(with_vjp)}


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.double() - ref) / torch.linalg.vector_norm(ref))


def reference(problem: Problem, y0: torch.Tensor) -> tuple[Step, float]:
    """tidal Backprop in float64 at the problem's reference tolerances (the same weights, y0,
    times and loss): the gradient of the exact solution, far more accurately than any method
    measured (on W1-long rtol 1e-8 is within 5e-8 of rtol 1e-10; 1e-10 would take ~40 s and
    7 GB here)."""
    _, f, params = counted_field(problem.rotation, torch.float64)
    step = make_step(METHOD_BY_NAME["tidal Backprop"], f, params, y0.double(), problem.ts(),
                     *problem.ref_tol)
    start = time.perf_counter()
    out = step()
    return out, time.perf_counter() - start


def run_w2(problem: Problem, repeats: int, cold: bool = False) -> None:
    y0 = _batch_y0()
    ts = problem.ts()
    ref, ref_seconds = reference(problem, y0)
    jobs: list[tuple[str, Callable[[], object]]] = []
    results: dict[str, Result] = {}
    for method in METHODS:
        _, f, params = counted_field(problem.rotation)
        step = make_step(method, f, params, y0, ts)
        started = time.process_time()
        first = step()  # warm-up, counts and gradient
        results[method.name] = Result(method, first, time.process_time() - started,
                                      _rel_err(first.grad_params, ref.grad_params),
                                      _rel_err(first.grad_y0, ref.grad_y0))
        jobs.append((method.name, step))
    _, f, params = counted_field(problem.rotation)
    probes = _f_probes(f, params, y0)
    probe_times: dict[str, list[float]] = {kind: [] for kind in probes}
    runs = {name: _runs_per_sample(job, cold) for name, job in jobs}

    for rep in range(repeats):
        shift = rep % len(jobs)
        for name, job in jobs[shift:] + jobs[:shift]:
            # f and f+VJP are timed beside every training step, under the same conditions
            for kind, (probe, calls) in probes.items():
                probe_times[kind].append(_timed(probe) / calls)
            res = results[name]
            out: list[Step] = []
            res.times.append(_timed(lambda job=job, out=out: out.append(job()), runs[name]))
            if any((o.fwd_calls, o.bwd_calls) != (res.first.fwd_calls, res.first.bwd_calls)
                   for o in out):
                res.notes.append(f"{name}: f calls changed between runs")
    # the compiled checkpoint's replays call the bare f (uncounted): the eager one's count
    for name, res in results.items():
        eager = results.get(name.removesuffix(" (compiled)"))
        if (res.method.kind == "checkpoint" and res is not eager and eager is not None
                and res.first.steps == eager.first.steps):
            res.first = dataclasses.replace(res.first, bwd_calls=eager.first.bwd_calls)
            res.notes.append(f"{name}: bwd NFE is the eager checkpoint's (the backward replays "
                             "the same steps, the bare f traced into its compiled step, which "
                             "is not counted)")
    t_f = statistics.median(probe_times["f"])
    t_fv = statistics.median(probe_times["f+vjp"])
    report_w2(problem, list(results.values()), ref, ref_seconds, t_f, t_fv, repeats, cold)


def floor_of(r: Result, t_f: float, t_fv: float) -> float:
    """The time with zero overhead: every differentiated call of f costs f+VJP, every other
    call costs f. Backprop-type: all forward calls are differentiated; checkpoint and adjoint:
    forward calls without a graph, backward calls (recomputation / augmented field) with one."""
    if r.method.kind == "backprop":
        return r.first.fwd_calls * t_fv
    return r.first.fwd_calls * t_f + r.first.bwd_calls * t_fv


def report_w2(problem: Problem, results: list[Result], ref: Step, ref_seconds: float,
              t_f: float, t_fv: float, repeats: int, cold: bool = False) -> None:
    print(f"\n=== W2 training step on {problem.name}: {problem.about}")
    sample = ("one step after a garbage collection" if cold else
              f"at least {SAMPLE_SECONDS * 1e3:.0f} ms of back-to-back steps")
    print(f"    median of {repeats} interleaved repeats (a sample: {sample}); f "
          f"{t_f * 1e6:.1f} us/call, f+VJP "
          f"{t_fv * 1e6:.1f} us/call (on y0, timed beside every step)")
    print(f"    reference: tidal Backprop float64 rtol {problem.ref_tol[0]:g} atol "
          f"{problem.ref_tol[1]:g}: "
          f"{ref.fwd_calls} f calls, {ref.steps} steps, {ref_seconds:.1f} s")
    base = statistics.median(results[0].times)  # tidal Backprop comes first
    by_name = {r.method.name: r for r in results}
    rows = []
    for r in results:
        t = statistics.median(r.times)
        floor = floor_of(r, t_f, t_fv)
        bwd = str(r.first.bwd_calls) if r.method.kind != "backprop" else "-"
        rows.append([r.method.name, f"{t * 1e3:.1f}", f"{t / base:.2f}", str(r.first.fwd_calls),
                     bwd, str(r.first.steps), f"{floor * 1e3:.1f}", f"{t / floor:.2f}",
                     f"{r.err_params:.1e}", f"{r.err_y0:.1e}"])
    print_table(["method", "time ms", "x Backprop", "fwd NFE", "bwd NFE", "steps", "floor ms",
                 "x floor", "err dL/dθ", "err dL/dy0"], rows)
    for r in results:
        if r.method.name.endswith(" (compiled)"):
            eager = by_name[r.method.name.removesuffix(" (compiled)")]
            saved = statistics.median(eager.times) - statistics.median(r.times)
            pays = (f"pays for itself after {r.first_seconds / saved:.0f} steps" if saved > 0
                    else "never pays for itself here")
            print(f"    note: {r.method.name}: first step {r.first_seconds:.1f} s CPU "
                  f"(compilation), {pays}")
    for r in results:  # (the call that finds the tensors f uses is the solve's first)
        extra = (None if r.first.solver_fevals is None
                 else r.first.fwd_calls - r.first.solver_fevals)
        if r.method.kind == "checkpoint" and extra:
            print(f"    note: {r.method.name}: fwd NFE = {r.first.solver_fevals} (its adaptive "
                  f"solve) + {extra} outside it")
        for note in dict.fromkeys(r.notes):
            print(f"    note: {note}")


# --------------------------------------------------------------------------------------------
# W5: peak memory against t_end, one subprocess per configuration
# --------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _release_free_memory() -> None:
    """Give memory that is free but still resident (the parent's, inherited by fork) back to
    the OS, so that the step's own allocations show in the RSS (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    """Reset this process's peak-RSS mark, which getrusage's ru_maxrss reads (Linux >= 4.0);
    False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def w5_measure(method_name: str, t_end: float) -> dict:
    """One configuration, in a fresh forked process: a warm-up training step on a short solve,
    then one measured training step; MB = peak RSS during the step - RSS before it."""
    method = METHOD_BY_NAME[method_name]
    _, f, params = counted_field(rotation=True)
    y0 = _batch_y0()
    make_step(method, f, params, y0, W1_LONG.ts(W5_WARMUP_T_END))()
    step = make_step(method, f, params, y0, W1_LONG.ts(t_end))
    _release_free_memory()
    reset = _reset_peak()
    # With the mark reset, ru_maxrss is the peak from here on; without it, only its growth.
    before = _status_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"mb": (peak - before) / 1024, "steps": out.steps, "fwd": out.fwd_calls,
            "bwd": out.bwd_calls, "seconds": seconds, "reset": reset}


def _w5_child(conn: Connection, method_name: str, t_end: float) -> None:
    try:
        conn.send(w5_measure(method_name, t_end))
    except BaseException as e:  # report, whatever it is, to the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def _w5_measure_all(configs: list[tuple[str, float]], jobs: int) -> dict:
    """Each configuration in its own forked process (no re-import of torch; one thread, as set
    before anything ran in the parent), at most `jobs` at a time."""
    ctx = multiprocessing.get_context("fork")
    pending, running, measured = list(configs), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            config = pending.pop(0)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_w5_child, args=(send, *config))
            proc.start()
            send.close()
            running[receive] = (config, proc)
        for conn in wait(list(running)):
            config, proc = running.pop(conn)
            try:
                measured[config] = conn.recv()
            except EOFError:
                measured[config] = {"error": "the subprocess died (out of memory?)"}
            proc.join()
            conn.close()
    return measured


def run_w5(t_ends: tuple[float, ...], jobs: int) -> None:
    configs = [(m.name, t) for t in t_ends for m in METHODS]
    start = time.perf_counter()
    measured = _w5_measure_all(configs, jobs)
    seconds = time.perf_counter() - start
    print("\n=== W5 peak memory of one training step vs t_end: W1-long's field (MLP + "
          "2*pi*J*y), batch 256, float32, 10 outputs on [0, t_end], rtol 1e-5, atol 1e-6")
    reset = all(m.get("reset", True) for m in measured.values())
    how = ("MB = getrusage peak (reset through /proc/self/clear_refs after the warm-up) - RSS "
           "before the step" if reset else "MB = getrusage peak after - peak before the step")
    print(f"    one forked subprocess per configuration ({jobs} at a time, {seconds:.0f} s in "
          f"all), warm-up step on [0, {W5_WARMUP_T_END:g}] first; {how}")
    ends = [f"{t:g}" for t in t_ends]
    base = measured.get(("tidal Backprop", t_ends[-1]), {}).get("mb")
    rows = []
    for m in METHODS:
        cells = [measured[(m.name, t)] for t in t_ends]
        row = [m.name]
        row += [f"{c['mb']:.1f}" if "mb" in c else "failed" for c in cells]
        row += [str(c.get("steps", "-")) for c in cells]
        last = cells[-1].get("mb")
        row.append(f"{base / last:.1f}" if base and last and last > 0 else "-")
        rows.append(row)
    print_table(["method", *(f"MB t={e}" for e in ends), *(f"steps t={e}" for e in ends),
                 f"Backprop/this t={ends[-1]}"], rows)
    for (name, t), c in measured.items():
        if "error" in c:
            print(f"    note: {name} at t_end={t:g} failed: {c['error']}")


# --------------------------------------------------------------------------------------------


def _source_digest() -> str:
    root = os.path.dirname(os.path.abspath(tidal.__file__))
    digest = hashlib.sha1()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: W2 on W1 only (3 repeats), W5 without t_end=100")
    parser.add_argument("--only", default="", help="comma-separated parts: W2, W5")
    parser.add_argument("--repeats", type=int, default=None, help="repeats for every W2 problem")
    parser.add_argument("--cold", action="store_true",
                        help="one training step per timed sample after a garbage collection "
                             "(the harness before 2026-12-05)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="W5 subprocesses at a time (memory is per process; default 2)")
    args = parser.parse_args()
    parts = ["W2", "W5"]
    if args.only:
        wanted = {p.strip().upper() for p in args.only.split(",") if p.strip()}
        if wanted - set(parts):
            parser.error(f"unknown part(s) {sorted(wanted - set(parts))}; choose from {parts}")
        parts = [p for p in parts if p in wanted]

    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, torch {torch.__version__}, tidal "
          f"{tidal.__version__}, torchdiffeq {torchdiffeq.__version__}, torchode "
          f"{getattr(torchode, '__version__', '?')}, scipy {scipy.__version__}, numpy "
          f"{np.__version__}; {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")
    print(f"tidal source: {_source_digest()} (sha1 of src/tidal/**/*.py, to match numbers to "
          f"code)")
    print(_load())
    wall = time.perf_counter()
    if "W2" in parts:
        for problem in (W1, W1_LONG):
            repeats = args.repeats or (problem.quick_repeats if args.quick else problem.repeats)
            if repeats > 0:
                run_w2(problem, repeats, args.cold)
            sys.stdout.flush()
    if "W5" in parts:
        run_w5(W5_T_ENDS[:2] if args.quick else W5_T_ENDS, max(1, args.jobs))
    print(f"\n{_load()}; {time.perf_counter() - wall:.0f} s")
    print("fwd/bwd NFE: calls of f (counted by a wrapper) during the solve / during backward; "
          "steps: forward step attempts.\n  floor: every call of f that is differentiated "
          "costs f+VJP, every other one f; err: relative 2-norm error of the gradient against "
          "the float64 reference.")


if __name__ == "__main__":
    main()
