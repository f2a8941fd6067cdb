"""Wall-time benchmark of tidal against torchdiffeq, torchode and scipy on the same problems.

Run from the repository root:

    .venv/bin/python benchmarks/bench_solvers.py            # full run (~3 minutes)
    .venv/bin/python benchmarks/bench_solvers.py --quick    # smoke run (fewer repeats)
    .venv/bin/python benchmarks/bench_solvers.py --only W1,W4

Every library solves the same problem (same f, y0, output times and tolerances) in one process
on one CPU thread. After one untimed warm-up run per library (which also counts steps and checks
the accuracy), the repeats are interleaved: for each repeat, every library is timed once, in an
order that rotates between repeats. A timed sample is at least SAMPLE_SECONDS of back-to-back
runs of one job (a solve of a few milliseconds runs several times), as the floor's calls of f
are: both in the steady state a training loop sees. `--cold` times one run per sample after a
garbage collection instead (the harness before 2026-12-05: a fast solve then pays ~1 ms of cold
caches that the floor does not). See benchmarks/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy
import scipy.integrate
import scipy.integrate._ivp.rk as scipy_rk
import torch
import torchdiffeq
import torchode

import tidal

SEED = 0
BATCH = 256
REF_TOL = 1e-12  # rtol = atol of the float64 scipy DOP853 reference
# CPU time of one timed sample at least: back-to-back runs of one job. The first run of a
# sample finds the caches the other jobs left (~1 ms dearer for a few-millisecond solve): at
# 100 ms that is ~1% of a sample (at 20 ms, W1's compiled solve measured 1.21-1.27x its floor
# against 1.11x at 100 ms).
SAMPLE_SECONDS = 0.1


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


@dataclass
class Workload:
    """One problem, posed identically to every library.

    f_torch takes (t, y) with y of y0's shape (batch first where there is a batch) and ignores
    t; f_numpy is the same field on the flattened state, in float64, for scipy.
    """

    name: str
    about: str
    f_torch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    f_numpy: Callable[[float, np.ndarray], np.ndarray]
    y0: torch.Tensor
    ts: torch.Tensor  # [T] float64
    rtol: float
    atol: float
    reference: np.ndarray  # [T, *y0.shape] float64
    per_sample: bool  # also run tidal with per-sample grids ([T, B] ts)
    scipy_methods: tuple[str, ...]
    repeats: int  # timed repeats of the full run
    quick_repeats: int  # ... and of --quick


def _mlp() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 2))


def _batch_y0() -> torch.Tensor:
    return torch.randn(BATCH, 2, generator=torch.Generator().manual_seed(SEED + 1))


# y @ ROT applies 2*pi*J to every row y (J = [[0, -1], [1, 0]]).
ROT = 2 * math.pi * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64).T


def _numpy_field(f64: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 shape: tuple[int, ...]) -> Callable[[float, np.ndarray], np.ndarray]:
    """A float64 numpy version of a torch field, for scipy (flat state in, flat out)."""
    def f(t: float, y: np.ndarray) -> np.ndarray:
        return f64(torch.tensor(t), torch.from_numpy(y).view(shape)).numpy().reshape(-1)
    return f


def _reference(f_numpy: Callable, y0: torch.Tensor, ts: torch.Tensor) -> np.ndarray:
    sol = scipy.integrate.solve_ivp(
        f_numpy, (ts[0].item(), ts[-1].item()), y0.double().numpy().reshape(-1),
        method="DOP853", t_eval=ts.numpy(), rtol=REF_TOL, atol=REF_TOL)
    assert sol.success, sol.message
    return sol.y.T.reshape(len(ts), *y0.shape)


def _mlp_workload(name: str, about: str, t1: float, with_mlp: bool, with_rotation: bool,
                  repeats: int, quick_repeats: int, scipy_methods: tuple[str, ...] = ()
                  ) -> Workload:
    mlp = _mlp()
    mlp64 = _mlp().double()
    rot32 = ROT.float()

    def field_of(net: torch.nn.Module | None, rot: torch.Tensor):
        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if net is None:
                return y @ rot
            return net(y) + y @ rot if with_rotation else net(y)
        return f

    f32 = field_of(mlp if with_mlp else None, rot32)
    f64 = field_of(mlp64 if with_mlp else None, ROT)
    y0 = _batch_y0()
    ts = torch.linspace(0.0, t1, 10, dtype=torch.float64)
    f_numpy = _numpy_field(f64, tuple(y0.shape))
    with torch.no_grad():
        reference = _reference(f_numpy, y0, ts)
    return Workload(name=name, about=about, f_torch=f32, f_numpy=f_numpy, y0=y0, ts=ts,
                    rtol=1e-5, atol=1e-6, reference=reference, per_sample=True,
                    scipy_methods=scipy_methods, repeats=repeats, quick_repeats=quick_repeats)


def w1() -> Workload:
    return _mlp_workload(
        "W1", "MLP 2-64-64-2 (tanh), batch 256, t in [0, 1], 10 outputs, dopri5, rtol 1e-5, "
        "atol 1e-6, float32: few steps, start-up cost dominates",
        t1=1.0, with_mlp=True, with_rotation=False, repeats=40, quick_repeats=5)


def w1_long() -> Workload:
    return _mlp_workload(
        "W1-long", "the W1 MLP + 2*pi*J*y, t in [0, 10], 10 outputs: steady per-step cost",
        t1=10.0, with_mlp=True, with_rotation=True, repeats=9, quick_repeats=1)


def w1_solver_only() -> Workload:
    def rotation(t: float, y: np.ndarray) -> np.ndarray:
        return (y.reshape(-1, 2) @ ROT.numpy()).reshape(-1)

    work = _mlp_workload(
        "W1-solver-only", "f = 2*pi*J*y alone, batch 256, t in [0, 10], 10 outputs: nearly "
        "pure solver bookkeeping (scipy on the flattened batch, in float64)",
        t1=10.0, with_mlp=False, with_rotation=True, repeats=15, quick_repeats=1,
        scipy_methods=("RK45",))
    work.f_numpy = rotation  # a plain numpy field (no torch round trip) for scipy
    return work


def w4() -> Workload:
    alpha, beta, gamma, delta = 1.5, 1.0, 3.0, 1.0

    def f_torch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, z = y[..., 0], y[..., 1]
        return torch.stack((alpha * x - beta * x * z, delta * x * z - gamma * z), dim=-1)

    def f_numpy(t: float, y: np.ndarray) -> np.ndarray:
        x, z = y
        return np.array((alpha * x - beta * x * z, delta * x * z - gamma * z))

    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    ts = torch.linspace(0.0, 10.0, 100, dtype=torch.float64)
    return Workload(
        name="W4", about="Lotka-Volterra (1.5, 1, 3, 1), y0 = [1, 1], state [2] (batch 1), "
        "t in [0, 10], 100 outputs, rtol 1e-6, atol 1e-8, float64",
        f_torch=f_torch, f_numpy=f_numpy, y0=y0, ts=ts, rtol=1e-6, atol=1e-8,
        reference=_reference(f_numpy, y0, ts), per_sample=False,
        scipy_methods=("RK45", "DOP853"), repeats=25, quick_repeats=3)


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "W1": w1, "W1-long": w1_long, "W1-solver-only": w1_solver_only, "W4": w4}


# --------------------------------------------------------------------------------------------
# Libraries: each adapter returns a `Runner` whose run() does one complete solve
# --------------------------------------------------------------------------------------------


class Counted:
    """Counts calls of f (and, through torchdiffeq's callback, its step attempts)."""

    def __init__(self, f: Callable):
        self.f, self.calls, self.steps = f, 0, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.f(t, y)

    def callback_step(self, t0, y0, dt) -> None:  # torchdiffeq calls this once per attempt
        self.steps += 1


@dataclass
class Outcome:
    ys: np.ndarray  # [T, *y0.shape] float64
    steps: int | None = None  # step attempts (accepted + rejected); None: not known yet
    reported_nfe: int | None = None  # calls of f, as the library reports (None: no report)


@dataclass
class Runner:
    name: str
    counter: Counted
    run: Callable[[], Outcome]
    floor_kind: str  # "torch" or "numpy": which bare f its floor is timed with
    steps_note: str = ""  # marks steps that were counted rather than reported
    count_steps: Callable[[], contextlib.AbstractContextManager[Callable[[], int]]] | None = None


def tidal_runner(w: Workload, per_sample: bool, compile: bool | int = False) -> Runner:
    f = Counted(w.f_torch)
    solver = tidal.Dopri5()
    controller = tidal.PIDController(rtol=w.rtol, atol=w.atol)
    ts = w.ts.unsqueeze(1).expand(-1, w.y0.shape[0]) if per_sample else w.ts

    # The compiled loop runs f inside one graph, which a counting wrapper (a Python side
    # effect) would keep from compiling whole: it solves the bare f and counts tidal's report.
    field = w.f_torch if compile else f

    def run() -> Outcome:
        sol = tidal.solve(field, w.y0, ts, solver=solver, controller=controller,
                          compile=compile)
        stats = sol.stats
        if compile:
            f.calls += int(stats.num_fevals)
        steps = stats.num_steps
        # On per-sample grids stats are [B]; the loop runs as many iterations as the
        # sample that takes the most steps, and every f call advances the whole batch.
        if per_sample:
            return Outcome(sol.ys.double().numpy(), int(steps.max()),
                           int(stats.num_fevals.max()))
        return Outcome(sol.ys.double().numpy(), int(steps), int(stats.num_fevals))

    name = ("tidal (per-sample)" if per_sample else "tidal (compiled)" if compile
            else "tidal")
    return Runner(name, f, run, "torch")


def torchdiffeq_runner(w: Workload) -> Runner:
    f = Counted(w.f_torch)

    def run() -> Outcome:
        f.steps = 0
        ys = torchdiffeq.odeint(f, w.y0, w.ts, rtol=w.rtol, atol=w.atol, method="dopri5")
        return Outcome(ys.double().numpy(), f.steps)

    return Runner("torchdiffeq", f, run, "torch", steps_note="c")


def torchode_runner(w: Workload) -> Runner:
    f = Counted(w.f_torch)
    batched = w.y0.dim() == 2  # torchode needs [batch, features]; W4's [2] becomes [1, 2]
    y0 = w.y0 if batched else w.y0.unsqueeze(0)
    t_eval = w.ts.unsqueeze(0).expand(y0.shape[0], -1)  # the same grid for every sample
    term = torchode.ODETerm(f)
    step_method = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=w.atol, rtol=w.rtol, term=term)
    solver = torchode.AutoDiffAdjoint(step_method, controller)

    def run() -> Outcome:
        sol = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
        assert bool((sol.status == 0).all()), sol.status
        ys = sol.ys.transpose(0, 1)  # [B, T, F] -> [T, B, F]
        ys = ys if batched else ys[:, 0]
        return Outcome(ys.double().numpy(), int(sol.stats["n_steps"].max()),
                       int(sol.stats["n_f_evals"].max()))

    return Runner("torchode", f, run, "torch")


@contextlib.contextmanager
def _count_scipy_steps() -> Iterator[Callable[[], int]]:
    """Counts scipy's RK step attempts by wrapping its internal rk_step (warm-up run only)."""
    original, count = scipy_rk.rk_step, [0]

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    scipy_rk.rk_step = counting
    try:
        yield lambda: count[0]
    finally:
        scipy_rk.rk_step = original


def scipy_runner(w: Workload, method: str) -> Runner:
    f = Counted(w.f_numpy)
    y0 = w.y0.double().numpy().reshape(-1)
    t_span, t_eval = (w.ts[0].item(), w.ts[-1].item()), w.ts.numpy()

    def run() -> Outcome:
        sol = scipy.integrate.solve_ivp(f, t_span, y0, method=method, t_eval=t_eval,
                                        rtol=w.rtol, atol=w.atol)
        assert sol.success, sol.message
        return Outcome(sol.y.T.reshape(len(t_eval), *w.y0.shape), None, int(sol.nfev))

    return Runner(f"scipy {method}", f, run, "numpy", steps_note="c",
                  count_steps=_count_scipy_steps)


def runners_for(w: Workload) -> list[Runner]:
    runners = [tidal_runner(w, per_sample=False), tidal_runner(w, False, compile=True)]
    if w.per_sample:
        runners.append(tidal_runner(w, per_sample=True))
    runners += [torchdiffeq_runner(w), torchode_runner(w)]
    runners += [scipy_runner(w, method) for method in w.scipy_methods]
    return runners


# --------------------------------------------------------------------------------------------
# Timing harness
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    nfe: int
    steps: int | None
    steps_note: str
    error: float
    floor_kind: str
    first: float  # seconds of the first (warm-up) run: compilation included
    times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _timed(fn: Callable[[], object], number: int = 1) -> float:
    """CPU seconds of one fn() (one thread: the machine's other load does not count), the mean
    of `number` back-to-back runs after a garbage collection."""
    gc.collect()
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def _runs_per_sample(fn: Callable[[], object], cold: bool) -> int:
    """Back-to-back runs of fn that take at least SAMPLE_SECONDS (1 with `cold`)."""
    return 1 if cold else max(1, math.ceil(SAMPLE_SECONDS / _timed(fn)))


def _floor_probe(w: Workload, kind: str) -> tuple[Callable[[], object], int]:
    """A callable making n bare calls of f (through the same call counter) on y0, and n."""
    if kind == "torch":
        f, t, y = Counted(w.f_torch), w.ts[0].to(w.y0.dtype), w.y0
    else:
        f, t, y = Counted(w.f_numpy), w.ts[0].item(), w.y0.double().numpy().reshape(-1)
    f(t, y)
    once = _timed(lambda: [f(t, y) for _ in range(20)]) / 20
    n = max(20, int(SAMPLE_SECONDS / once))  # a sample of SAMPLE_SECONDS of calls

    def calls() -> None:
        for _ in range(n):
            f(t, y)

    return calls, n


def benchmark(w: Workload, repeats: int, cold: bool = False
              ) -> tuple[list[Result], dict[str, float]]:
    """Warm-up (and count) every library once, then time them interleaved `repeats` times (a
    sample: `_runs_per_sample` runs); the compiled tidal row solves without a graph: the whole
    compiled loop."""
    runners = runners_for(w)
    results: dict[str, Result] = {}
    for runner in runners:
        runner.counter.calls = 0
        start = time.process_time()
        if runner.count_steps is not None:
            with runner.count_steps() as counted_steps:
                out = runner.run()
            out.steps = counted_steps()
        else:
            out = runner.run()
        first = time.process_time() - start
        res = Result(runner.name, runner.counter.calls, out.steps, runner.steps_note,
                     float(np.max(np.abs(out.ys - w.reference))), runner.floor_kind, first)
        if out.reported_nfe is not None and out.reported_nfe != res.nfe:
            res.notes.append(f"{runner.name} reports {out.reported_nfe} f evaluations, "
                             f"f was called {res.nfe} times")
        results[runner.name] = res

    kinds = sorted({r.floor_kind for r in runners})
    probes = {kind: _floor_probe(w, kind) for kind in kinds}
    floor_times: dict[str, list[float]] = {kind: [] for kind in kinds}
    jobs: list[tuple[str, Callable[[], object]]] = [(r.name, r.run) for r in runners]
    jobs += [(f"f:{kind}", probes[kind][0]) for kind in kinds]
    runs = {name: _runs_per_sample(job, cold) for name, job in jobs if not name.startswith("f:")}
    for rep in range(repeats):
        shift = rep % len(jobs)
        for name, job in jobs[shift:] + jobs[:shift]:
            if name.startswith("f:"):
                kind = name[2:]
                floor_times[kind].append(_timed(job) / probes[kind][1])
                continue
            runner = next(r for r in runners if r.name == name)
            runner.counter.calls = 0
            results[name].times.append(_timed(job, runs[name]))
            if runner.counter.calls != results[name].nfe * runs[name]:
                results[name].notes.append(
                    f"{name}: f calls changed between runs ({results[name].nfe} -> "
                    f"{runner.counter.calls / runs[name]:g} a run)")
    f_time = {kind: statistics.median(ts) for kind, ts in floor_times.items()}
    return list(results.values()), f_time


# --------------------------------------------------------------------------------------------
# Table printer
# --------------------------------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(headers))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(row)))


def report(w: Workload, results: list[Result], f_time: dict[str, float], repeats: int,
           cold: bool = False) -> None:
    print(f"\n=== {w.name}: {w.about}")
    floors = ", ".join(f"{kind} f {t * 1e6:.1f} us/call" for kind, t in f_time.items())
    sample = ("one run after a garbage collection" if cold else
              f"at least {SAMPLE_SECONDS * 1e3:.0f} ms of back-to-back runs")
    print(f"    median of {repeats} interleaved repeats (a sample: {sample}); bare {floors}")
    base = statistics.median(results[0].times)  # tidal (shared grid) comes first
    rows = []
    for r in results:
        t = statistics.median(r.times)
        floor = r.nfe * f_time[r.floor_kind]
        steps = "-" if r.steps is None else f"{r.steps}{r.steps_note}"
        per_step = "-" if not r.steps else f"{(t - floor) / r.steps * 1e6:.1f}"
        rows.append([r.name, f"{t * 1e3:.3f}", f"{t / base:.2f}", str(r.nfe), steps,
                     f"{floor * 1e3:.3f}", f"{t / floor:.2f}", per_step, f"{r.error:.1e}"])
    print_table(["library", "time ms", "x tidal", "NFE", "steps", "floor ms", "x floor",
                 "us/step", "max|err|"], rows)
    compiled = next(r for r in results if r.name == "tidal (compiled)")
    t_compiled = statistics.median(compiled.times)
    saved = base - t_compiled
    pays = f"pays for itself after {compiled.first / saved:.0f} solves" if saved > 0 else \
        "never pays for itself here"
    print(f"    tidal (compiled): first solve {compiled.first:.2f} s CPU (compilation), {pays} "
          f"(compile time / time saved per solve against eager tidal)")
    for r in results:
        for note in dict.fromkeys(r.notes):  # unique, in order
            print(f"    note: {note}")


# --------------------------------------------------------------------------------------------


def _load() -> str:
    """The machine's load average: other processes competing for the CPUs skew timings."""
    one, five, _ = os.getloadavg()
    return f"load average (1 min, 5 min): {one:.2f}, {five:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--only", default="",
                        help=f"comma-separated workloads, from {', '.join(WORKLOADS)}")
    parser.add_argument("--repeats", type=int, default=None, help="repeats for every workload")
    parser.add_argument("--cold", action="store_true",
                        help="one run per timed sample after a garbage collection (the harness "
                             "before 2026-12-05), not SAMPLE_SECONDS of back-to-back runs")
    args = parser.parse_args()
    names = list(WORKLOADS)
    if args.only:
        wanted = {n.strip().lower() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {n.lower() for n in names}
        if unknown:
            parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n.lower() in wanted]

    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, torch {torch.__version__}, tidal "
          f"{tidal.__version__}, torchdiffeq {torchdiffeq.__version__}, torchode "
          f"{getattr(torchode, '__version__', '?')}, scipy {scipy.__version__}, numpy "
          f"{np.__version__}; {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")
    print(_load())
    try:
        import diffrax  # noqa: F401
        print("diffrax: installed but not benchmarked (it needs a JAX version of each f)")
    except ImportError:
        print("diffrax: not installed")

    for name in names:
        with torch.no_grad():
            work = WORKLOADS[name]()
            repeats = args.repeats or (work.quick_repeats if args.quick else work.repeats)
            results, f_time = benchmark(work, repeats, args.cold)
        report(work, results, f_time, repeats, args.cold)
        sys.stdout.flush()
    print(f"\n{_load()}")
    print("steps: step attempts (accepted + rejected); on per-sample grids the most any "
          "sample took.\n  c = counted by the benchmark (torchdiffeq: its callback_step; "
          "scipy: wrapping its rk_step in the warm-up run); others as the library reports.")


if __name__ == "__main__":
    main()
