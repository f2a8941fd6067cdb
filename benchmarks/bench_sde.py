"""Speed of `tidal.sdeint` against torchsde (when installed) on a small neural SDE.

Run from the repository root (one CPU thread):

    .venv/bin/python benchmarks/bench_sde.py [--steps 1000] [--batch 256] [--dim 8]

The SDE: drift tanh(W1 y + b1), diagonal diffusion 0.1 sigmoid(W2 y + b2), d = dim, the same
torch modules for both libraries, float32, `steps` fixed steps over [0, 1]. Rows: Euler-Maruyama
(Itô) forward only and forward + backward (backprop through the steps); reversible Heun
(Stratonovich) forward only and forward + backward with each library's reversible adjoint
(tidal's `ReversibleAdjoint`, torchsde's `adjoint_reversible_heun`). Each cell is the median of
`--repeats` runs after one untimed warm-up, the two libraries interleaved; the loss is the sum
of the final states. torchsde draws its increments from its default `BrownianInterval`; tidal
from its `BrownianTree` (both reproducible per interval).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import torch

import tidal


class Drift(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.linear = torch.nn.Linear(d, d)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(y))


class Diffusion(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.linear = torch.nn.Linear(d, d)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.1 * torch.sigmoid(self.linear(y))


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, b, d = args.steps, args.batch, args.dim
    dt = 1.0 / n
    drift, diffusion = Drift(d), Diffusion(d)
    y0 = torch.randn(b, d)
    ts = torch.tensor([0.0, 1.0])

    def run_tidal(solver: tidal.solvers.sde.SDEMethod, calculus: str, grad: bool,
                  adjoint: tidal.adjoint.Adjoint | None = None) -> Callable[[], None]:
        def run() -> None:
            with torch.set_grad_enabled(grad):
                sol = tidal.sdeint(drift, diffusion, y0, ts, dt=dt, solver=solver,
                                   calculus=calculus, adjoint=adjoint, seed=0)
                if grad:
                    sol.ys[-1].sum().backward()
        return run

    rows: list[tuple[str, Callable[[], None], Callable[[], None] | None]] = [
        ("Euler-Maruyama, forward", run_tidal(tidal.EulerMaruyama(), "ito", False), None),
        ("Euler-Maruyama, forward + backprop",
         run_tidal(tidal.EulerMaruyama(), "ito", True), None),
        ("reversible Heun, forward",
         run_tidal(tidal.ReversibleHeun(), "stratonovich", False), None),
        ("reversible Heun, forward + reversible adjoint",
         run_tidal(tidal.ReversibleHeun(), "stratonovich", True, tidal.ReversibleAdjoint()),
         None),
    ]
    version = "not installed"
    try:
        import torchsde

        version = torchsde.__version__

        class SDE(torch.nn.Module):
            noise_type = "diagonal"

            def __init__(self, sde_type: str):
                super().__init__()
                self.sde_type = sde_type
                self.drift, self.diffusion = drift, diffusion

            def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.drift(t, y)

            def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.diffusion(t, y)

        def run_torchsde(method: str, sde_type: str, grad: bool,
                         adjoint_method: str | None = None) -> Callable[[], None]:
            sde = SDE(sde_type)

            def run() -> None:
                with torch.set_grad_enabled(grad):
                    if adjoint_method is None:
                        ys = torchsde.sdeint(sde, y0, ts, method=method, dt=dt)
                    else:
                        ys = torchsde.sdeint_adjoint(sde, y0, ts, method=method, dt=dt,
                                                     adjoint_method=adjoint_method)
                    if grad:
                        ys[-1].sum().backward()
            return run

        others = [run_torchsde("euler", "ito", False), run_torchsde("euler", "ito", True),
                  run_torchsde("reversible_heun", "stratonovich", False),
                  run_torchsde("reversible_heun", "stratonovich", True,
                               "adjoint_reversible_heun")]
        rows = [(name, mine, other) for (name, mine, _), other in zip(rows, others)]
    except ImportError:
        pass

    print(f"steps={n} batch={b} d={d} float32, 1 thread, torchsde {version}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'row':48s} {'tidal ms':>9s} {'torchsde ms':>12s} {'speed-up':>9s}")
    for name, mine, other in rows:
        mine()
        if other is not None:
            other()
        times_mine, times_other = [], []
        for _ in range(args.repeats):
            times_mine.append(_timed(mine))
            if other is not None:
                times_other.append(_timed(other))
        t_mine = statistics.median(times_mine) * 1e3
        if other is None:
            print(f"{name:48s} {t_mine:9.1f} {'-':>12s} {'-':>9s}")
            continue
        t_other = statistics.median(times_other) * 1e3
        print(f"{name:48s} {t_mine:9.1f} {t_other:12.1f} {t_other / t_mine:8.1f}x")


if __name__ == "__main__":
    main()
