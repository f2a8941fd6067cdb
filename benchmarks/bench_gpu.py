"""GPU benchmark: solves and training steps at GPU batch sizes, tidal against torchdiffeq and
diffrax (compiled JAX) in the same run, with wall-clock times around device synchronisation.

Run from the repository root on a machine with CUDA (torchdiffeq and diffrax optional):

    python benchmarks/bench_gpu.py                 # the full table (~4 minutes on an H200)
    python benchmarks/bench_gpu.py --quick         # fewer repeats
    python benchmarks/bench_gpu.py --device cpu --quick --batches 256   # a check without a GPU

Problems (bench_solvers.py's W1 and W4, bench_gradients.py's W2, at issue 17's sizes):
- W1: MLP 2-64-64-2 (tanh) field, t in [0, 1], 10 outputs, dopri5, rtol 1e-5, atol 1e-6,
  float32, batch 256 and 65,536;
- W2: one training step on W1 (loss = mean of squared outputs, backward to the MLP);
- W4: Lotka-Volterra (1.5, 1, 3, 1), t in [0, 10], 100 outputs, rtol 1e-6, atol 1e-8, float64,
  batch 1 and 4,096 (initial states spread around [1, 1]).
Every row solves the same problem. After one untimed first run (which measures the error
against scipy DOP853 at rtol 1e-10 on up to 64 samples, and the first run's time: compilation
for the compiled rows), the repeats are interleaved and the median wall time is reported.
`syncs/step`: host synchronisations per step attempt, counted in one more run under
`torch.cuda.set_sync_debug_mode("warn")` (CUDA only). `floor`: the bare field's calls (NFE
times one synchronised call on the whole batch); `x floor` = time / floor. The CUDA graphs
rows try the compiled per-step function recorded as CUDA graphs (`mode="reduce-overhead"`)
instead of the whole-loop function. `stiff` (ROBER, Rodas5P, per-sample rates and grids) and
`sde` (geometric Brownian motion, Milstein) time tidal on the CPU beside the device.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.integrate
import torch

import tidal
import tidal.compiled

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX beside PyTorch

REFERENCE_SAMPLES = 64


@dataclass
class Case:
    """One problem: the field on the device, its float64 numpy twin for the reference, and a
    JAX twin builder for diffrax."""

    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    f_numpy: Callable[[np.ndarray], np.ndarray]  # batched rows [n, d] -> [n, d]
    jax_field: Callable[[], Callable] | None
    y0: torch.Tensor
    ts: torch.Tensor  # [T] float64 on the CPU
    rtol: float
    atol: float
    reference: np.ndarray = field(init=False)  # [T, min(B, 64), d]

    def __post_init__(self) -> None:
        rows = self.y0.reshape(-1, self.y0.shape[-1])[:REFERENCE_SAMPLES]
        rows = rows.detach().double().cpu().numpy()
        shape = rows.shape
        sol = scipy.integrate.solve_ivp(
            lambda t, y: self.f_numpy(y.reshape(shape)).reshape(-1),
            (self.ts[0].item(), self.ts[-1].item()), rows.reshape(-1), method="DOP853",
            t_eval=self.ts.numpy(), rtol=1e-10, atol=1e-10)
        assert sol.success, sol.message
        self.reference = sol.y.T.reshape(len(self.ts), *shape)

    @property
    def batch(self) -> int:
        return self.y0.shape[0] if self.y0.dim() == 2 else 1

    def error(self, ys: torch.Tensor | np.ndarray) -> float:
        ys = ys.detach().double().cpu().numpy() if isinstance(ys, torch.Tensor) else ys
        rows = ys.reshape(len(self.ts), -1, ys.shape[-1])[:, :REFERENCE_SAMPLES]
        return float(np.max(np.abs(rows - self.reference)))


def mlp(device: torch.device) -> torch.nn.Sequential:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                              torch.nn.Tanh(), torch.nn.Linear(64, 2))
    return net.to(device)


def w1(batch: int, device: torch.device) -> Case:
    net = mlp(device)
    weights = [(layer.weight.detach().double().cpu().numpy(),
                layer.bias.detach().double().cpu().numpy()) for layer in net[::2]]

    def f_numpy(y: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(weights):
            y = y @ w.T + b
            y = np.tanh(y) if i < 2 else y
        return y

    def jax_field() -> Callable:
        import jax.numpy as jnp
        params = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in weights]

        def f(t, y, args):
            for i, (w, b) in enumerate(params):
                y = y @ w.T + b
                y = jnp.tanh(y) if i < 2 else y
            return y
        return f

    y0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1)).to(device)
    return Case(f"W1 batch {batch}", lambda t, y: net(y), f_numpy, jax_field, y0,
                torch.linspace(0.0, 1.0, 10, dtype=torch.float64), 1e-5, 1e-6)


LV = (1.5, 1.0, 3.0, 1.0)


def w4(batch: int, device: torch.device) -> Case:
    alpha, beta, gamma, delta = LV

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, z = y[..., 0], y[..., 1]
        return torch.stack((alpha * x - beta * x * z, delta * x * z - gamma * z), dim=-1)

    def f_numpy(y: np.ndarray) -> np.ndarray:
        x, z = y[..., 0], y[..., 1]
        return np.stack((alpha * x - beta * x * z, delta * x * z - gamma * z), -1)

    def jax_field() -> Callable:
        import jax.numpy as jnp

        def f_jax(t, y, args):
            x, z = y[..., 0], y[..., 1]
            return jnp.stack((alpha * x - beta * x * z, delta * x * z - gamma * z), -1)
        return f_jax

    if batch == 1:
        y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    else:
        spread = torch.rand(batch, 2, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(2))
        y0 = 0.5 + spread  # in [0.5, 1.5]^2
    return Case(f"W4 batch {batch}", f, f_numpy, jax_field, y0.to(device),
                torch.linspace(0.0, 10.0, 100, dtype=torch.float64), 1e-6, 1e-8)


# --------------------------------------------------------------------------------------------
# Rows: each returns a run() that does one solve (or training step) and returns
# (ys, step attempts or None, f evaluations or None)
# --------------------------------------------------------------------------------------------

Run = Callable[[], tuple[object, int | None, int | None]]


def tidal_solve(case: Case, per_sample: bool = False, compile: bool | int = False,
                f: Callable | None = None) -> Run:
    field = case.f if f is None else f
    controller = tidal.PIDController(rtol=case.rtol, atol=case.atol)
    ts = case.ts.unsqueeze(1).expand(-1, case.batch).contiguous() if per_sample else case.ts
    ts = ts.to(case.y0.device) if per_sample else ts

    def run():
        with torch.no_grad():
            sol = tidal.solve(field, case.y0, ts, solver=tidal.Dopri5(), controller=controller,
                              compile=compile)
        return sol.ys, int(sol.stats.num_steps.max()), int(sol.stats.num_fevals.max())
    return run


class Counted:
    def __init__(self, f: Callable):
        self.f, self.calls = f, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.f(t, y)


def torchdiffeq_solve(case: Case) -> Run:
    import torchdiffeq
    f, ts = Counted(case.f), case.ts.to(case.y0.device)

    def run():
        f.calls = 0
        with torch.no_grad():
            ys = torchdiffeq.odeint(f, case.y0, ts, rtol=case.rtol, atol=case.atol,
                                    method="dopri5")
        return ys, None, f.calls
    return run


def diffrax_solve(case: Case) -> Run:
    import diffrax
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if case.y0.dtype == torch.float64 else jnp.float32
    ts = jnp.asarray(case.ts.numpy(), dtype)
    y0 = jnp.asarray(case.y0.cpu().numpy(), dtype)
    term = diffrax.ODETerm(case.jax_field())
    controller = diffrax.PIDController(rtol=case.rtol, atol=case.atol)

    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
                                  saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                  max_steps=100_000)
        return sol.ys, sol.stats["num_steps"]

    def run():
        ys, steps = solve(y0)
        ys.block_until_ready()
        return np.asarray(ys), int(steps), None
    return run


@contextlib.contextmanager
def cuda_graph_steps() -> Iterator[None]:
    """The compiled per-step function recorded as CUDA graphs, used for every solve (the whole
    loop switched off by naming the field as one it cannot take)."""
    original = tidal.compiled._compiled_steps
    tidal.compiled._compiled_steps = torch.compile(tidal.compiled._steps, fullgraph=True,
                                                   mode="reduce-overhead")
    try:
        yield
    finally:
        tidal.compiled._compiled_steps = original


def graphed_solve(case: Case, steps_per_call: int) -> Run:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # its own, kept off the whole loop
        return case.f(t, y)
    tidal.compiled._not_whole.add(f)
    inner = tidal_solve(case, compile=steps_per_call, f=f)

    def run():
        with cuda_graph_steps():
            return inner()
    return run


def training_step(case: Case, net: torch.nn.Module, kind: str) -> Run:
    """One W2 step: solve, loss = mean of squares, backward to the MLP's parameters."""
    ts = case.ts
    controller = tidal.PIDController(rtol=case.rtol, atol=case.atol)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return net(y)

    def forward() -> torch.Tensor:
        if kind.startswith("torchdiffeq"):
            import torchdiffeq

            class Field(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.net = net

                def forward(self, t, y):
                    return self.net(y)
            odeint = torchdiffeq.odeint_adjoint if kind == "torchdiffeq adjoint" else \
                torchdiffeq.odeint
            return odeint(Field(), case.y0, ts.to(case.y0.device), rtol=case.rtol,
                          atol=case.atol, method="dopri5")
        adjoint = tidal.CheckpointAdjoint() if "Checkpoint" in kind else tidal.BackpropAdjoint()
        return tidal.solve(f, case.y0, ts, controller=controller,
                           adjoint=adjoint, compile="compiled" in kind).ys

    def run():
        net.zero_grad(set_to_none=True)
        ys = forward()
        ys.square().mean().backward()
        grads = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        return grads, None, None
    return run


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Run, device: torch.device) -> tuple[float, tuple]:
    synchronize(device)
    start = time.perf_counter()
    out = run()
    synchronize(device)
    return time.perf_counter() - start, out


def count_syncs(run: Run, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def floor_per_call(case: Case, device: torch.device) -> float:
    t = case.ts[0].to(case.y0)
    with torch.no_grad():
        for _ in range(3):
            case.f(t, case.y0)
        seconds, _ = timed(lambda: [case.f(t, case.y0) for _ in range(50)], device)
    return seconds / 50


@dataclass
class Row:
    name: str
    first: float = math.nan
    times: list[float] = field(default_factory=list)
    steps: int | None = None
    nfe: int | None = None
    syncs: int | None = None
    error: float = math.nan
    peak_mb: float | None = None
    failure: str = ""


def measure(rows: dict[str, Run], device: torch.device, repeats: int,
            error: Callable[[object], float]) -> list[Row]:
    results: dict[str, Row] = {}
    for name, run in rows.items():
        row = Row(name)
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row.first, (out, row.steps, row.nfe) = timed(run, device)
            if device.type == "cuda":
                row.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
            row.error = error(out)
            if not name.startswith("diffrax"):  # JAX's synchronisations are not torch's
                row.syncs = count_syncs(run, device)
        except Exception as exc:  # a library or mode that does not run here: say so, go on
            row.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:150]}"
        results[name] = row
    names = [n for n, r in results.items() if not r.failure]
    for rep in range(repeats):
        shift = rep % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            results[name].times.append(timed(rows[name], device)[0])
    return list(results.values())


def print_rows(title: str, rows: list[Row], base: str, floor: float | None) -> None:
    print(f"\n=== {title}")
    by_name = {r.name: r for r in rows}
    base_time = statistics.median(by_name[base].times) if by_name[base].times else math.nan
    header = ["row", "ms", f"x {base}", "first s", "steps", "NFE", "syncs", "syncs/step",
              "x floor",
              "peak MB", "max|err|"]
    table = []
    for r in rows:
        if r.failure:
            table.append([r.name, "failed: " + r.failure] + [""] * (len(header) - 2))
            continue
        t = statistics.median(r.times)
        syncs = "-" if r.syncs is None or not r.steps else f"{r.syncs / r.steps:.2f}"
        x_floor = "-" if floor is None or not r.nfe else f"{t / (r.nfe * floor):.2f}"
        table.append([r.name, f"{t * 1e3:.2f}", f"{t / base_time:.2f}", f"{r.first:.2f}",
                      "-" if r.steps is None else str(r.steps),
                      "-" if r.nfe is None else str(r.nfe),
                      "-" if r.syncs is None else str(r.syncs), syncs, x_floor,
                      "-" if r.peak_mb is None else f"{r.peak_mb:.0f}", f"{r.error:.1e}"])
    measured = [row for row in table if not row[1].startswith("failed")]
    widths = [max([len(h), *(len(row[i]) for row in measured)]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                    enumerate(zip(header, widths))))
    for row in table:
        if row[1].startswith("failed"):
            print(f"{row[0].ljust(widths[0])}  {row[1]}")
            continue
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths))))
    if floor is not None:
        print(f"    floor: bare f {floor * 1e6:.1f} us a call on the whole batch")
    sys.stdout.flush()


def stiff_rows(batch: int, device: torch.device) -> tuple[dict[str, Run], Callable]:
    """ROBER with per-sample rates on per-sample grids: tidal on the CPU and on `device`."""
    k = (0.04, 3e7, 1e4)
    scales = torch.linspace(0.5, 2.0, batch, dtype=torch.float64)
    ts = torch.linspace(0.0, 100.0, 5, dtype=torch.float64)

    def run_on(where: torch.device) -> Run:
        k1, k2, k3 = (rate * scales.to(where) for rate in k)

        def rober(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            a, b, c = y.unbind(-1)
            return torch.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b ** 2,
                                k2 * b ** 2], -1)

        y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(batch, 3).to(where)
        grid = ts.unsqueeze(1).expand(-1, batch).contiguous().to(where)
        atol = torch.tensor([1e-8, 1e-14, 1e-8], dtype=torch.float64, device=where)
        controller = tidal.PIDController(rtol=1e-6, atol=atol)

        def run():
            with torch.no_grad():
                sol = tidal.solve(rober, y0, grid, solver=tidal.Rodas5P(), controller=controller)
            return sol.ys, int(sol.stats.num_steps.max()), int(sol.stats.num_fevals.max())
        return run

    picks = [0, batch // 3, 2 * batch // 3, batch - 1]
    references = []
    for b in picks:
        r1, r2, r3 = (rate * float(scales[b]) for rate in k)
        sol = scipy.integrate.solve_ivp(
            lambda t, y, r1=r1, r2=r2, r3=r3: [-r1 * y[0] + r3 * y[1] * y[2],
                                               r1 * y[0] - r3 * y[1] * y[2] - r2 * y[1] ** 2,
                                               r2 * y[1] ** 2],
            (0.0, 100.0), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10, atol=1e-16)
        references.append(sol.y[:, -1])

    def error(ys: object) -> float:
        assert isinstance(ys, torch.Tensor)
        last = ys[-1, picks].double().cpu().numpy()
        return float(np.max(np.abs(last - np.array(references)) / np.abs(references)))

    rows = {"tidal (cpu)": run_on(torch.device("cpu"))}
    if device.type != "cpu":
        rows[f"tidal ({device.type})"] = run_on(device)
    return rows, error


def sde_rows(paths: int, device: torch.device) -> tuple[dict[str, Run], Callable]:
    """Geometric Brownian motion by Milstein: tidal on the CPU and on `device`."""
    mu, sigma = 0.5, 0.3

    def run_on(where: torch.device) -> Run:
        y0 = torch.ones(paths, 1, device=where)

        def run():
            sol = tidal.sdeint(lambda t, y: mu * y, lambda t, y: sigma * y, y0, [0.0, 1.0],
                               dt=1.0 / 256, solver=tidal.Milstein(), seed=0)
            return sol.ys, int(sol.stats.num_steps.max()), None
        return run

    def error(ys: object) -> float:
        assert isinstance(ys, torch.Tensor)
        return abs(float(ys[-1].double().mean()) - math.exp(mu))

    rows = {"tidal (cpu)": run_on(torch.device("cpu"))}
    if device.type != "cpu":
        rows[f"tidal ({device.type})"] = run_on(device)
    return rows, error


def solver_rows(case: Case, with_jax: bool) -> dict[str, Run]:
    rows = {"tidal": tidal_solve(case), "tidal (compiled)": tidal_solve(case, compile=True)}
    if case.batch > 1:
        rows["tidal (per-sample)"] = tidal_solve(case, per_sample=True)
    with contextlib.suppress(ImportError):
        rows["torchdiffeq"] = torchdiffeq_solve(case)
    if with_jax:
        rows["diffrax (jit)"] = diffrax_solve(case)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    parser.add_argument("--batches", default="256,65536", help="W1 and W2 batch sizes")
    parser.add_argument("--w4-batches", default="1,4096")
    parser.add_argument("--only", default="W1,W4,W2,stiff,sde,graphs", help="parts, in order")
    parser.add_argument("--stiff-batch", type=int, default=4096)
    parser.add_argument("--sde-paths", type=int, default=65536)
    parser.add_argument("--deadline", type=float, default=math.inf,
                        help="seconds after which no new part starts")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 3 if args.quick else 15
    started = time.perf_counter()
    try:
        import jax
        with_jax = True
        jax_about = f"jax {jax.__version__} on {jax.devices()[0].platform}"
    except ImportError:
        with_jax, jax_about = False, "jax not installed: no diffrax rows"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"python {platform.python_version()}, torch {torch.__version__}, tidal "
          f"{tidal.__version__}, {jax_about}; device {name}, {os.cpu_count()} CPUs")
    batches = [int(b) for b in args.batches.split(",")]
    for part in args.only.split(","):
        if time.perf_counter() - started > args.deadline:
            print(f"\n(deadline: {part} not run)")
            continue
        if part == "W1":
            for batch in batches:
                case = w1(batch, device)
                rows = measure(solver_rows(case, with_jax), device, repeats, case.error)
                print_rows(f"W1, batch {batch}: MLP field, float32, rtol 1e-5", rows, "tidal",
                           floor_per_call(case, device))
        elif part == "W4":
            for batch in [int(b) for b in args.w4_batches.split(",")]:
                case = w4(batch, device)
                rows = measure(solver_rows(case, with_jax), device, repeats, case.error)
                print_rows(f"W4, batch {batch}: Lotka-Volterra, float64, rtol 1e-6", rows,
                           "tidal", floor_per_call(case, device))
        elif part == "W2":
            for batch in batches:
                case = w1(batch, device)
                net = mlp(device)
                kinds = ["tidal Backprop", "tidal Checkpoint", "tidal Backprop (compiled)",
                         "tidal Checkpoint (compiled)", "torchdiffeq", "torchdiffeq adjoint"]
                runs = {kind: training_step(case, net, kind) for kind in kinds}
                reference = runs["tidal Backprop"]()[0]

                def gradient_error(grads: object, reference: torch.Tensor = reference) -> float:
                    assert isinstance(grads, torch.Tensor)
                    return float((grads - reference).abs().max() / reference.abs().max())
                rows = measure(runs, device, repeats, gradient_error)
                print_rows(f"W2, batch {batch}: training step on W1 (max|err| = gradient's "
                           "largest difference to tidal Backprop's, relative)", rows,
                           "tidal Backprop", None)
        elif part == "stiff":
            rows, error = stiff_rows(args.stiff_batch, device)
            print_rows(f"stiff: ROBER, {args.stiff_batch} samples with rates scaled by 0.5-2, "
                       "per-sample grids to t = 100, Rodas5P, rtol 1e-6, float64 (max|err|: "
                       "relative, 4 samples against scipy Radau at 1e-10)",
                       measure(rows, device, max(3, repeats // 3), error), "tidal (cpu)", None)
        elif part == "sde":
            rows, error = sde_rows(args.sde_paths, device)
            print_rows(f"sde: geometric Brownian motion, {args.sde_paths} paths, Milstein, dt "
                       "1/256, float32 (max|err|: the sample mean at t = 1 against exp(mu))",
                       measure(rows, device, max(3, repeats // 3), error), "tidal (cpu)", None)
        elif part == "graphs":
            for case in (w1(batches[0], device), w4(1, device)):
                runs = {"tidal (compiled)": tidal_solve(case, compile=True)}
                for n in (1, 8):
                    runs[f"tidal (CUDA graphs, {n} steps a call)"] = graphed_solve(case, n)
                rows = measure(runs, device, repeats, case.error)
                print_rows(f"{case.name}: the compiled step recorded as CUDA graphs", rows,
                           "tidal (compiled)", floor_per_call(case, device))
        else:
            parser.error(f"unknown part {part!r}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
