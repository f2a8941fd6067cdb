"""A neural ODE on stiff data: a GELU network learns ROBER's kinetics through Rodas5P.

Robertson's kinetics (rates 0.04, 3e7, 1e4) has B rise within ~1e-3 while A and C move on
~1e3, and B stays below 4e-5 while A and C move by 1. Following Kim et al., "Stiff neural
ordinary differential equations" (Chaos 31, 2021):

- log-spaced observation times, 1e-5 to 1e5 (the built-in "rober" system samples this way);
- per-species scaling of states and loss: the model works on standardized states (`tidal
  fit`'s default `Scaling`), so the loss weighs A, B and C alike;
- per-species scaling of the network's outputs: dy_i/dt = r_i * NN_i(y), r_i = species i's
  range over the time it takes to move half of it (`--rate-scale`, on by itself for data
  like these: `tidal.training.rates`);
- a GELU network, a stiff solver (Rodas5P) and an exact gradient (CheckpointAdjoint).

This script runs what `tidal fit data.csv --solver rodas5p --activation gelu --width 32 ...`
runs (`tidal.training.train_run`) on 12 simulated trajectories (A0 in [0.5, 1.5], 30
log-spaced times, 1% noise; 8 train, 2 validate, 2 test), then measures the learned model
on 8 held-out initial states against scipy's Radau at rtol 1e-10: the error of each
prediction as a fraction of the species' range, the largest and the median over species,
times and trajectories.

Run:  OMP_NUM_THREADS=1 .venv/bin/python examples/stiff_rober_neural.py [-o runs/rober-neural]
      .venv/bin/python examples/stiff_rober_neural.py --evaluate RUN_DIR   (any ROBER run of
      `tidal fit`, e.g. the command in docs/benchmarks.md, "Stiff neural ODE on ROBER")
(--quick: a smoke run of a few epochs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.integrate
import torch

from tidal.data import SYSTEMS, simulate
from tidal.training import ModelOptions, TrainConfig, load_run, train_run

ROBER = SYSTEMS["rober"]
#: Held-out initial states (A0; B0 = C0 = 0) and the times they are compared at.
HELD_OUT_A0 = np.random.default_rng(1).uniform(0.5, 1.5, 8)
TIMES = np.concatenate([[0.0], np.geomspace(1e-5, 1e5, 30)])


def reference(y0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """ROBER from y0 at `times` [T, 3]: scipy's Radau at rtol 1e-10 (atol 1e-14), with the
    equations and their Jacobian written out here (independent of tidal's)."""
    k1, k2, k3 = (ROBER.params[name] for name in ("k1", "k2", "k3"))

    def f(t: float, y: np.ndarray) -> np.ndarray:
        a, b, c = y
        return np.array([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b])

    def jac(t: float, y: np.ndarray) -> np.ndarray:
        _, b, c = y
        return np.array([[-k1, k3 * c, k3 * b], [k1, -k3 * c - 2 * k2 * b, -k3 * b],
                         [0.0, 2 * k2 * b, 0.0]])

    return scipy.integrate.solve_ivp(f, (times[0], times[-1]), y0, method="Radau", jac=jac,
                                     rtol=1e-10, atol=1e-14, t_eval=times).y.T


def held_out_errors(predict, a0s: np.ndarray = HELD_OUT_A0, times: np.ndarray = TIMES
                    ) -> np.ndarray:
    """|predict(y0, times) - reference| / range [N, T, 3] for the initial states (a0, 0, 0),
    range = each species' range over all the reference trajectories."""
    y0s = [np.array([a0, 0.0, 0.0]) for a0 in a0s]
    truth = np.stack([reference(y0, times) for y0 in y0s])
    predicted = np.stack([predict(y0, times) for y0 in y0s])
    ranges = np.ptp(truth.reshape(-1, 3), axis=0)
    return np.abs(predicted - truth) / ranges


def summary(errors: np.ndarray) -> str:
    worst = errors.max(axis=(0, 1))
    return (f"largest {errors.max():.2e}, median {np.median(errors):.2e} of each species' "
            f"range (largest per species: A {worst[0]:.2e}, B {worst[1]:.2e}, "
            f"C {worst[2]:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="runs/rober-neural",
                        help="run directory to write (replaced if it holds a run)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--evaluate", metavar="RUN_DIR", help="measure an existing run")
    parser.add_argument("--quick", action="store_true", help="a smoke run of 6 epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.evaluate is None:
        data = simulate("rober", 12, n_obs=30, noise=0.01, irregular=False, seed=0)
        model = ModelOptions(width=32, depth=2, activation="gelu", solver="rodas5p")
        epochs = 6 if args.quick else args.epochs
        config = TrainConfig(epochs=epochs, lr=3e-2, horizons=(1.0,), patience=None)
        start = time.perf_counter()
        result = train_run(data, args.output, model=model, config=config, overwrite=True,
                           source={"system": "rober", "simulated": True}, progress=False)
        print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s: "
              f"{result.status} ({result.message}); train loss "
              f"{result.history[-1]['train_loss']:.2e}, best validation loss "
              f"{result.best_val_loss:.2e} (1% noise alone: about 1e-3 in standardized units)")
    run = load_run(args.evaluate or args.output)
    scales = run.model.vector_field.config().get("output_scale")
    print(f"rate scales (scaled units per unit time): {scales}")
    print("held-out error, 8 new initial states x 31 times vs Radau at rtol 1e-10: "
          + summary(held_out_errors(run.predict)))


if __name__ == "__main__":
    main()
