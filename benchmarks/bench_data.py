"""Large tables: reading time and peak memory against pandas, and the peak memory of `tidal fit`.

Run from the repository root:

    .venv/bin/python benchmarks/bench_data.py                   # 100, 300, 1000 trajectories
    .venv/bin/python benchmarks/bench_data.py --sizes 100,300   # quicker
    .venv/bin/python benchmarks/bench_data.py --skip-fit        # reading only

The files are made with numpy (not `tidal simulate`, so that the benchmark measures reading
and training, not simulation): N trajectories of a damped rotation dy/dt = [[-0.1, 1], [-1,
-0.1]] y from random initial states in [-2, 2]^2, each observed at its own `--obs` irregular
times (t = 0, then sorted uniform times in [0, 10)), with Gaussian noise of sd 0.05, written
as `t,id,x,y` rows with every float in its shortest round-trip form (~60 bytes a row).

Every measurement runs in a fresh Python process; its peak memory is the kernel's peak resident
set size of that process (`wait4`'s ru_maxrss, the same as VmHWM), and a watchdog kills it
when its resident set passes `--limit-gb` (reported as "killed"), so an unbounded run cannot
take the machine down. Read times are measured inside the child around the read call alone
(imports excluded); fit times are the whole command's wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RATE = 0.1  # damping of the generated rotation
NOISE = 0.05
T_END = 10.0

READERS = {  # each reads PATH between the two clock readings of READ_SCRIPT
    "import tidal": ("import tidal", ""),
    "tidal.read_table": ("import tidal", "tidal.read_table(PATH, id='id')"),
    "import pandas": ("import pandas", ""),
    "pandas.read_csv": ("import pandas", "pandas.read_csv(PATH)"),
}
READ_SCRIPT = """import json, time
PATH = {path!r}
{setup}
wall, cpu = time.perf_counter(), time.process_time()
{read}
print(json.dumps({{"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}}))
"""


def generate(path: Path, n_trajectories: int, n_obs: int, seed: int = 0) -> None:
    """The benchmark's table: see the module docstring."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([np.zeros((n_trajectories, 1)),
                            np.sort(rng.uniform(0.0, T_END, (n_trajectories, n_obs - 1)),
                                    axis=1)], axis=1)
    y0 = rng.uniform(-2.0, 2.0, (n_trajectories, 2))
    decay, cos, sin = np.exp(-RATE * times), np.cos(times), np.sin(times)
    x = decay * (cos * y0[:, :1] + sin * y0[:, 1:])
    y = decay * (-sin * y0[:, :1] + cos * y0[:, 1:])
    frame = pd.DataFrame({
        "t": times.ravel(), "id": np.repeat(np.arange(n_trajectories), n_obs),
        "x": (x + rng.normal(0.0, NOISE, x.shape)).ravel(),
        "y": (y + rng.normal(0.0, NOISE, y.shape)).ravel()})
    frame.to_csv(path, index=False)


PEAK_HOOK = """
import atexit, os
def _write_peak():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(peak.split()[1])
atexit.register(_write_peak)
"""


def measure(script: str, limit_bytes: int, src: str | None) -> dict[str, Any]:
    """Run the Python `script` in a fresh process: its wall time, peak resident set (MB, the
    child's own VmHWM, written at exit), exit code, output, and whether the watchdog killed it.

    (Not `wait4`'s ru_maxrss: after a fork and exec it also counts the parent's peak.)
    """
    env = dict(os.environ, BENCH_PEAK_FILE=str(Path(tempfile.mkstemp()[1])))
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", PEAK_HOOK + script],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed, watched_peak = threading.Event(), [0]

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            except (OSError, ValueError):
                return
            if "VmRSS" not in fields:  # starting or exiting
                time.sleep(0.05)
                continue
            watched_peak[0] = int(fields["VmHWM"].split()[0]) * 1024
            if int(fields["VmRSS"].split()[0]) * 1024 > limit_bytes:
                killed.set()
                process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.05)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    watchdog.join()
    peak_file = Path(env["BENCH_PEAK_FILE"])
    text = peak_file.read_text().strip()
    peak_file.unlink()
    peak = int(text) * 1024 if text else watched_peak[0]
    return {"seconds": seconds, "peak_mb": peak / 2**20, "killed": killed.is_set(),
            "code": process.returncode, "stdout": stdout.decode(), "stderr": stderr.decode()}


def read_rows(path: Path, limit_bytes: int, repeats: int, src: str | None
              ) -> list[tuple[str, float, float, float]]:
    """(reader, wall seconds and CPU seconds (medians over repeats), peak MB (largest)) for each
    of READERS; the seconds are those of the read alone (nan for the bare imports)."""
    rows = []
    for name, (setup, read) in READERS.items():
        script = READ_SCRIPT.format(path=str(path), setup=setup, read=read)
        runs = [measure(script, limit_bytes, src) for _ in range(repeats)]
        for run in runs:
            if run["code"] != 0:
                raise SystemExit(f"{name} failed: {run['stderr'].strip().splitlines()[-1:]}")
        times = [json.loads(r["stdout"]) for r in runs]
        wall, cpu = (float(np.median([t[key] for t in times])) if read else math.nan
                     for key in ("wall", "cpu"))
        rows.append((name, wall, cpu, max(r["peak_mb"] for r in runs)))
    return rows


def fit_row(path: Path, run_dir: Path, epochs: int, limit_bytes: int, extra: list[str],
            src: str | None) -> dict[str, Any]:
    """`tidal fit PATH --id id --epochs E -o RUN --quiet`: wall time, peak, training seconds."""
    arguments = ["tidal", "fit", str(path), "--id", "id", "--epochs", str(epochs),
                 "-o", str(run_dir), "--quiet", *extra]
    script = f"import sys\nsys.argv = {arguments!r}\nfrom tidal.cli.main import main\nmain()\n"
    run = measure(script, limit_bytes, src)
    training = float("nan")
    config = run_dir / "config.json"
    if run["code"] == 0 and config.is_file():
        training = float(json.loads(config.read_text())["fit"].get("seconds", float("nan")))
    elif not run["killed"]:
        raise SystemExit(f"tidal fit failed: {run['stderr'].strip()}")
    return {**run, "training": training}


def print_reads(path: Path, args: argparse.Namespace, limit: int) -> None:
    print(f"\n=== Reading {path.name} ({path.stat().st_size / 1e6:.1f} MB); median of "
          f"{args.repeats} reads, each in a fresh process (CPU s: all threads)")
    print(f"{'reader':<18} {'wall s':>7} {'CPU s':>7} {'peak MB':>8}")
    for name, wall, cpu, peak in read_rows(path, limit, args.repeats, args.src):
        shown = ["-" if math.isnan(x) else f"{x:.2f}" for x in (wall, cpu)]
        print(f"{name:<18} {shown[0]:>7} {shown[1]:>7} {peak:>8.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000",
                        help="numbers of trajectories, comma-separated")
    parser.add_argument("--obs", type=int, default=1000, help="observations per trajectory")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each read")
    parser.add_argument("--limit-gb", type=float, default=8.0,
                        help="kill a measured process whose resident set passes this")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument("--workdir", default=None, help="where the files go (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--src", default=None, help="measure the tidal in this source folder "
                        "(put first on PYTHONPATH), e.g. an export of an older commit's src/")
    parser.add_argument("fit_options", nargs="*", help="extra options for tidal fit "
                        "(after --)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    limit = int(args.limit_gb * 2**30)
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy "
          f"{np.__version__}, pandas {pd.__version__}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        work = Path(folder)
        files = {}
        for n in sizes:
            files[n] = work / f"table_{n}x{args.obs}.csv"
            generate(files[n], n, args.obs)
        largest = max(sizes)
        if not args.skip_read:
            print_reads(files[largest], args, limit)
        if args.skip_fit:
            return
        print(f"\n=== tidal fit TABLE --id id --epochs {args.epochs} --quiet "
              f"{' '.join(args.fit_options)} (one process each; limit {args.limit_gb:g} GB)")
        print(f"{'trajectories':>12} {'rows':>9} {'wall s':>8} {'train s':>8} {'peak MB':>8}")
        for n in sizes:
            row = fit_row(files[n], work / f"run_{n}", args.epochs, limit, args.fit_options,
                          args.src)
            peak = f">{args.limit_gb * 1024:.0f} killed" if row["killed"] else \
                f"{row['peak_mb']:.0f}"
            print(f"{n:>12} {n * args.obs:>9} {row['seconds']:>8.1f} {row['training']:>8.1f} "
                  f"{peak:>8}", flush=True)


if __name__ == "__main__":
    main()
