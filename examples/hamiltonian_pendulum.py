"""Structure from physics: a Hamiltonian neural network keeps its energy, a plain one drifts.

Both models learn the ideal pendulum (H = p^2/2 - cos q) from short, noisy trajectories (about
half a swing each). Then each is run from held-out initial states for 1,000 periods:

- the `HamiltonianNN` (separable H = T(p) + V(q), integrated with leapfrog) keeps its own
  learned energy in a narrow band: no drift, whatever the learning error;
- a `NeuralODE` of similar size, integrated with Tsit5, has no energy to keep: its orbits
  spiral in or out, so the true energy drifts.

Run:  OMP_NUM_THREADS=1 .venv/bin/python examples/hamiltonian_pendulum.py  (a few minutes on
a laptop CPU; --quick for a smoke run). Prints the drifts; docs/benchmarks.md ("Structure from
physics") records a run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import tidal
from tidal.data import SYSTEMS, simulate
from tidal.models.hamiltonian import HamiltonianNN
from tidal.nn import MLP

PENDULUM = SYSTEMS["ideal-pendulum"]


def period(amplitude: float) -> float:
    """The ideal pendulum's period for a swing of `amplitude` radians: 4 K(sin^2(a/2)),
    K the complete elliptic integral of the first kind (by the arithmetic-geometric mean)."""
    a, b = 1.0, math.cos(amplitude / 2)
    for _ in range(30):
        a, b = (a + b) / 2, math.sqrt(a * b)
    return 2 * math.pi / a


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train(model: tidal.NeuralODE, data: tidal.Trajectories, epochs: int) -> tidal.FitResult:
    config = tidal.TrainConfig(epochs=epochs, lr=1e-2, horizons=(0.5, 1.0), patience=None,
                               eval_every=max(1, epochs // 10), seed=0)
    return tidal.fit(model, data, config=config, progress=False)


def long_run(result: tidal.FitResult, y0: np.ndarray, t_end: float, outputs: int
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """States [T, B, 2] in data units, times [T], wall seconds."""
    scaling, model = result.scaling, result.model
    ts = np.linspace(0.0, t_end, outputs)
    start = time.perf_counter()
    with torch.no_grad():
        scaled = model.solve(scaling.scale_values(torch.as_tensor(y0)),
                             torch.as_tensor(ts), max_steps=10_000_000,
                             adjoint=tidal.BackpropAdjoint()).ys
    seconds = time.perf_counter() - start
    return scaling.unscale_values(scaled).numpy(), ts, seconds


def relative_drift(energy: np.ndarray, floor: float) -> np.ndarray:
    """max over time of |E(t) - E(0)| / (E(0) - E_min), per trajectory."""
    return np.abs(energy - energy[0]).max(axis=0) / (energy[0] - floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    epochs, periods = (20, 10) if args.quick else (400, 1000)
    torch.manual_seed(0)

    # Short noisy trajectories: 2.5 time units (a period is 6.3 to 7.5 here), noise 1% of
    # each state's range.
    data = simulate(PENDULUM, 24, t_span=(0.0, 2.5), n_obs=25, noise=0.01, seed=0)
    hnn = HamiltonianNN.mlp(1, separable=True, width=48, depth=2,
                            controller=tidal.ConstantStepSize(0.05))
    node = tidal.NeuralODE(MLP(2, width=64, depth=2),
                           controller=tidal.PIDController(rtol=1e-6, atol=1e-8))
    results = {}
    for name, model in (("HamiltonianNN", hnn), ("NeuralODE", node)):
        start = time.perf_counter()
        results[name] = train(model, data, epochs)
        print(f"{name}: {parameters(model)} parameters, trained {epochs} epochs in "
              f"{time.perf_counter() - start:.0f} s, final train loss "
              f"{results[name].history[-1]['train_loss']:.4f}")

    # Held-out initial states (inside the training region), run for 1,000 of the slowest
    # one's periods.
    y0 = np.array([[1.0, 0.0], [0.5, 0.5], [-1.2, 0.3]])
    amplitudes = np.arccos(-PENDULUM.energy(torch.as_tensor(y0)).numpy())
    t_end = periods * max(period(a) for a in amplitudes)
    outputs = 20 * periods + 1
    true_start = PENDULUM.energy(torch.as_tensor(y0)).numpy()
    print(f"\n{periods} periods: t_end = {t_end:.0f}, initial states {y0.tolist()}, true energies "
          f"{np.round(true_start, 4).tolist()} (minimum -1)")

    for name, result in results.items():
        ys, _, seconds = long_run(result, y0, t_end, outputs)
        true = PENDULUM.energy(torch.as_tensor(ys)).numpy()  # [T, B]
        window = outputs // 100  # the first and the last 10 periods
        first, last = true[:window].mean(0), true[-window:].mean(0)
        print(f"\n{name}: {int(result.model.last_stats.num_steps)} steps in {seconds:.0f} s")
        print(f"  true energy, mean over the first 10 periods -> the last 10: "
              f"{np.round(first, 4).tolist()} -> {np.round(last, 4).tolist()}; drift "
              f"(last - first) / (E(0) - E_min): "
              f"{np.round(100 * (last - first) / (true[0] + 1.0), 2).tolist()} %")
        if isinstance(result.model, HamiltonianNN):
            scaled = result.scaling.scale_values(torch.as_tensor(ys))
            grid = torch.cartesian_prod(torch.linspace(-math.pi, math.pi, 201, dtype=torch.float64),
                                        torch.linspace(-2.5, 2.5, 201, dtype=torch.float64))
            with torch.no_grad():
                learned = result.model.energy(scaled).numpy()
                floor = float(result.model.energy(result.scaling.scale_values(grid)).min())
            drift = relative_drift(learned, floor)
            print(f"  learned energy, max over the run of |H(t) - H(0)| / (H(0) - H_min): "
                  f"{np.round(100 * drift, 4).tolist()} %")


if __name__ == "__main__":
    main()
