"""Peak memory of one training step, measured in a fresh process (run by `test_memory.py`).

Usage: python _memory_probe.py ADJOINT T_END [CHECKPOINTS]
  ADJOINT is backprop, checkpoint or backsolve; CHECKPOINTS (checkpoint only) fixes the number
  of segments (default: tidal's choice, about sqrt(steps)).

Prints one JSON line: the solve's step count and the peak resident-set growth (MiB) of one
training step (forward solve, loss = mean of squared outputs, backward) over the resident set
measured after setup and a warm-up. Linux only (/proc/self/statm, VmHWM in /proc/self/status).
"""

from __future__ import annotations

import gc
import json
import math
import resource
import sys
import time

import torch

import tidal

BATCH = 256  # states [BATCH, 2] float64
HIDDEN = 16  # width of the MLP perturbing the rotation
OUTPUTS = 5  # output times, evenly spaced over [0, t_end]
RTOL, ATOL = 1e-3, 1e-5


def current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (VmHWM). getrusage's ru_maxrss cannot be used:
    after fork + exec it still carries the parent's peak (the pytest worker's)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # KiB
    raise RuntimeError("no VmHWM in /proc/self/status")


class RotatingField(torch.nn.Module):
    """f(t, y) = 2 pi J y + MLP(y): one turn per unit time, so steps grow with t_end."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
        self.register_buffer("J", generator)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 2)).double()
        with torch.no_grad():
            self.mlp[-1].weight.mul_(0.01)
            self.mlp[-1].bias.zero_()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi * (y @ self.J.T) + self.mlp(y)


def make_adjoint(kind: str, checkpoints: int | None):
    if kind == "backprop":
        return tidal.BackpropAdjoint()
    if kind == "checkpoint":
        return tidal.CheckpointAdjoint(checkpoints)
    if kind == "backsolve":
        return tidal.BacksolveAdjoint()
    raise SystemExit(f"unknown adjoint {kind!r}")


def main(kind: str, t_end: float, checkpoints: int | None) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    f = RotatingField()
    y0 = torch.randn(BATCH, 2, dtype=torch.float64)
    ts = torch.linspace(0.0, t_end, OUTPUTS, dtype=torch.float64)
    adjoint = make_adjoint(kind, checkpoints)
    controller = tidal.PIDController(rtol=RTOL, atol=ATOL)

    def solve(y: torch.Tensor, times: torch.Tensor) -> tidal.Solution:
        return tidal.solve(f, y, times, solver=tidal.Dopri5(), controller=controller,
                           adjoint=adjoint)

    # Warm-up: a tiny training step (autograd and the adjoint's code paths), then a full-size
    # forward solve without a graph.
    warm = torch.linspace(0.0, 0.1, 2, dtype=torch.float64)
    solve(y0[:4], warm).ys.square().mean().backward()
    f.zero_grad(set_to_none=True)
    with torch.no_grad():
        solve(y0, torch.linspace(0.0, 1.0, OUTPUTS, dtype=torch.float64))
    gc.collect()
    reset_peak_rss()
    baseline = current_rss_mib()
    peak_before = peak_rss_mib()

    start = time.perf_counter()
    solution = solve(y0, ts)
    solution.ys.square().mean().backward()
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    grads_ok = all(p.grad is not None and bool(torch.isfinite(p.grad).all())
                   for p in f.parameters())
    return {
        "adjoint": kind, "t_end": t_end, "checkpoints": checkpoints,
        "steps": int(solution.stats.num_steps), "peak_mib": peak - baseline,
        "warmup_excess_mib": max(peak_before - baseline, 0.0), "baseline_mib": baseline,
        "seconds": seconds, "grads_ok": grads_ok,
    }


if __name__ == "__main__":
    name, end = sys.argv[1], float(sys.argv[2])
    segments = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(main(name, end, segments)))
