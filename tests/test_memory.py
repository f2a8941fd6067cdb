"""Memory of one training step against the number of solver steps, per adjoint.

A rotating field (one turn per unit time) is solved to t_end = 1, 10 and 100, so the number of
steps grows about tenfold each time; every configuration runs in its own fresh process
(`_memory_probe.py`), which reports the step count and the peak growth of its resident set
during forward solve + backward over the resident set after a warm-up. The properties:

- `BacksolveAdjoint`: memory does not grow with the number of steps;
- `BackpropAdjoint`: memory grows linearly with it (the same memory per step at 10 and 100);
- `CheckpointAdjoint`: far below Backprop (sqrt(steps) checkpoints by default; about
  steps/k steps of graph plus k states with `checkpoints=k`).

Run with `pytest -s` to see the table. The measurements are shared by the tests of this module
(and by the workers of pytest-xdist, through a file in the session's temporary directory).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="measures the resident set through /proc and ru_maxrss (Linux)"),
]

PROBE = Path(__file__).with_name("_memory_probe.py")
T_ENDS = (1.0, 10.0, 100.0)
FIXED_K = 30  # checkpoints for the fixed-k configuration (at t_end = 100)
STATE_MIB = 256 * 2 * 8 / 2**20  # one state of the probe: [256, 2] float64
SLACK_MIB = 5.0  # absolute slack for allocator noise

# (adjoint, t_end, checkpoints), the longest first so that the two workers finish together
CONFIGS = [
    ("checkpoint", 100.0, None), ("checkpoint", 100.0, FIXED_K), ("backsolve", 100.0, None),
    ("backprop", 100.0, None),
    *[(kind, t, None) for t in (10.0, 1.0) for kind in ("checkpoint", "backsolve", "backprop")],
]


def _key(kind: str, t_end: float, checkpoints: int | None) -> str:
    return f"{kind}/{t_end:g}/{checkpoints}"


def _measure(config: tuple[str, float, int | None]) -> dict:
    kind, t_end, checkpoints = config
    args = [sys.executable, str(PROBE), kind, repr(t_end)]
    if checkpoints is not None:
        args.append(str(checkpoints))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_all() -> dict[str, dict]:
    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_measure, CONFIGS))
    return {_key(*config): result for config, result in zip(CONFIGS, results)}


def _print_table(table: dict[str, dict]) -> None:
    print("\nmemory of one training step (peak RSS growth over the post-warm-up baseline)")
    print(f"{'adjoint':<18}{'t_end':>7}{'steps':>8}{'peak MiB':>11}{'KiB/step':>10}{'s':>7}")
    for config in CONFIGS:
        row = table[_key(*config)]
        name = row["adjoint"] + (f"(k={row['checkpoints']})" if row["checkpoints"] else "")
        per_step = 1024 * row["peak_mib"] / row["steps"]
        print(f"{name:<18}{row['t_end']:>7g}{row['steps']:>8}{row['peak_mib']:>11.1f}"
              f"{per_step:>10.1f}{row['seconds']:>7.2f}")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """All measurements, made once per session: the first xdist worker to get here measures,
    the others wait on the lock and read its results."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    results = root / "tidal_memory.json"
    with open(root / "tidal_memory.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if results.exists():
            measured = json.loads(results.read_text())
        else:
            measured = _measure_all()
            results.write_text(json.dumps(measured))
    _print_table(measured)
    for row in measured.values():
        assert row["grads_ok"], f"no finite gradient for the parameters: {row}"
    return measured


def _row(table: dict[str, dict], kind: str, t_end: float, checkpoints: int | None = None):
    return table[_key(kind, t_end, checkpoints)]


def test_steps_grow_with_t_end(table: dict[str, dict]) -> None:
    for kind in ("backprop", "checkpoint", "backsolve"):
        n1, n10, n100 = (_row(table, kind, t)["steps"] for t in T_ENDS)
        assert 5 * n1 < n10 and 5 * n10 < n100, (kind, n1, n10, n100)
    # Checkpointing replays the same accepted steps as the plain forward solve.
    for t_end in T_ENDS:
        assert _row(table, "checkpoint", t_end)["steps"] == _row(table, "backprop", t_end)["steps"]


def test_backsolve_memory_does_not_grow(table: dict[str, dict]) -> None:
    p1, p10, p100 = (_row(table, "backsolve", t)["peak_mib"] for t in T_ENDS)
    assert p10 <= 1.2 * p1 + SLACK_MIB, (p1, p10)
    assert p100 <= 1.2 * p1 + SLACK_MIB, (p1, p100)
    backprop = _row(table, "backprop", 100.0)["peak_mib"]
    assert p100 <= 0.05 * backprop, (p100, backprop)


def test_backprop_memory_grows_linearly_with_steps(table: dict[str, dict]) -> None:
    (n1, p1), (n10, p10), (n100, p100) = (
        (row["steps"], row["peak_mib"]) for row in (_row(table, "backprop", t) for t in T_ENDS))
    assert p100 >= 10 * max(p1, 1.0), (p1, p100)
    assert p100 - p1 >= 5 * (p10 - p1), (p1, p10, p100)
    per_step_10 = (p10 - p1) / (n10 - n1)
    per_step_100 = (p100 - p1) / (n100 - n1)
    assert 0.5 <= per_step_100 / per_step_10 <= 2.0, (per_step_10, per_step_100)
    # The graph of a step outweighs a state many times over: memory is dominated by steps.
    assert per_step_100 >= 10 * STATE_MIB, per_step_100


def test_checkpoint_memory_below_backprop(table: dict[str, dict]) -> None:
    backprop = _row(table, "backprop", 100.0)["peak_mib"]
    for checkpoints in (None, FIXED_K):
        peak = _row(table, "checkpoint", 100.0, checkpoints)["peak_mib"]
        assert peak <= 0.8 * backprop, (checkpoints, peak, backprop)


def test_checkpoint_default_is_far_below_backprop(table: dict[str, dict]) -> None:
    backprop = _row(table, "backprop", 100.0)["peak_mib"]
    checkpoint = _row(table, "checkpoint", 100.0)["peak_mib"]
    # sqrt(steps) segments of sqrt(steps) steps: ~sqrt(650) ~ 25x below; ask for 10x.
    assert checkpoint <= backprop / 10, (checkpoint, backprop)


def test_checkpoint_fixed_k_is_bounded_by_segments(table: dict[str, dict]) -> None:
    bp1, bp100 = (_row(table, "backprop", t) for t in (1.0, 100.0))
    per_step = (bp100["peak_mib"] - bp1["peak_mib"]) / (bp100["steps"] - bp1["steps"])
    row = _row(table, "checkpoint", 100.0, FIXED_K)
    # At most k stored states plus the graph of one segment: CheckpointAdjoint(k) keeps
    # between k/2 and k checkpoints, so a segment has at most 2 steps / k steps; 3x headroom.
    bound = 3 * (2 * row["steps"] / FIXED_K * per_step + FIXED_K * STATE_MIB) + SLACK_MIB
    assert row["peak_mib"] <= bound, (row["peak_mib"], bound)
