"""Training through a stiff solver: learn ROBER's three rate constants from noisy data.

Robertson's kinetics (rates 0.04, 3e7, 1e4; B stays below 4e-5 while A and C move by 1)
defeats explicit solvers and, unscaled, any squared-error loss: B's errors are 1e-5 of A's.
Following Kim et al., "Stiff neural ordinary differential equations" (Chaos 31, 2021):

- observations at log-spaced times (t0, then 1e-5 .. 1e5: the fast transient and the slow
  decay both get points; the built-in "rober" system samples this way);
- per-species scaling: the model's state is y / range (each species divided by its range
  over the training data), so the loss weighs A, B and C alike and the field works on
  numbers of order one;
- a stiff solver with an exact gradient: Rodas5P, `CheckpointAdjoint` (backpropagation
  through the recorded steps, Jacobians included).

The model is a universal differential equation whose known part is the mass-action
structure (which species react, with which stoichiometry) and whose parameters are the three
log-rates, started a factor 2-3 away from the truth. It is trained with `tidal.fit` on 16
trajectories (A0 in [0.5, 1.5], 1% noise), then the recovered rates are compared with the
truth and the learned model predicts 8 held-out trajectories (new initial states, clean
data from scipy's Radau at rtol 1e-10): the error is the largest |y - y_true| / range over
species and times.

Run:  OMP_NUM_THREADS=1 .venv/bin/python examples/stiff_rober_training.py
(about two minutes on a laptop CPU; --quick for a smoke run). docs/benchmarks.md ("Training
through a stiff solver") records a run.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping

import numpy as np
import scipy.integrate
import torch

import tidal
from tidal.data import SYSTEMS, Scaling, simulate
from tidal.models.ude import UDE

TRUE_RATES = dict(SYSTEMS["rober"].params)  # k1, k2, k3
START = {"k1": 2.0, "k2": 0.5, "k3": 3.0}  # the initial guess: truth times these factors


def rober(y: torch.Tensor, k: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Robertson's mass-action kinetics in the data's units."""
    a, b, c = y.unbind(-1)
    return torch.stack([-k["k1"] * a + k["k3"] * b * c,
                        k["k1"] * a - k["k3"] * b * c - k["k2"] * b ** 2, k["k2"] * b ** 2], -1)


def scaled_kinetics(ranges: torch.Tensor):
    """The known part in the model's units: d(y / range)/dt = f(range * y_s) / range, with
    k = exp(log_k) (log-rates keep the rates positive and make steps relative)."""

    def known(t: torch.Tensor, y_scaled: torch.Tensor, p: Mapping[str, torch.Tensor]
              ) -> torch.Tensor:
        scale = ranges.to(y_scaled.dtype)
        rates = {name: torch.exp(p[f"log_{name}"]) for name in TRUE_RATES}
        return rober(y_scaled * scale, rates) / scale

    return known


def rober_model(ranges: torch.Tensor, rtol: float = 1e-4) -> UDE:
    """The log-rate UDE, started at `START` times the true rates, solved with Rodas5P at
    `rtol` (atol = rtol / 100 in the scaled units)."""
    params = {f"log_{name}": math.log(TRUE_RATES[name] * START[name]) for name in TRUE_RATES}
    return UDE(scaled_kinetics(ranges), None, params, solver=tidal.Rodas5P(),
               controller=tidal.PIDController(rtol, rtol * 1e-2),
               adjoint=tidal.CheckpointAdjoint(), max_steps=2000)


def recovered_rates(model: UDE) -> dict[str, float]:
    """k = exp(log_k) for each learned log-rate."""
    return {name.removeprefix("log_"): math.exp(value)
            for name, value in model.physical_parameters().items()}


def held_out_error(model: UDE, ranges: np.ndarray, a0s: np.ndarray, times: np.ndarray
                   ) -> float:
    """Largest |model - truth| / range over species, times and trajectories, the truth from
    scipy's Radau at rtol 1e-10, the model solved at rtol 1e-8 (so that the error is the
    learned rates', not the training tolerance's)."""
    rates = [TRUE_RATES[name] for name in ("k1", "k2", "k3")]
    worst = 0.0
    for a0 in a0s:
        y0 = np.array([a0, 0.0, 0.0])
        truth = scipy.integrate.solve_ivp(
            lambda t, y: rober(torch.from_numpy(y), dict(zip(("k1", "k2", "k3"), rates))
                               ).numpy(),
            (0.0, times[-1]), y0, method="Radau", rtol=1e-10, atol=1e-10 * ranges,
            t_eval=times).y.T
        with torch.no_grad():
            predicted = model.solve(torch.from_numpy(y0 / ranges), torch.from_numpy(times),
                                    controller=tidal.PIDController(1e-8, 1e-10)).ys.numpy()
        worst = max(worst, float((np.abs(predicted * ranges - truth) / ranges).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    epochs = 3 if args.quick else 40

    data = simulate("rober", 16, n_obs=25, noise=0.01, seed=0)
    observed = np.concatenate(data.values)
    ranges = np.ptp(observed[np.isfinite(observed).all(1)], axis=0)
    model = rober_model(torch.from_numpy(ranges))
    config = tidal.TrainConfig(epochs=epochs, lr=0.3, batch_size=8, horizons=(1.0,),
                               patience=None, eval_every=max(1, epochs // 6),
                               learn_initial_states=False, seed=0)
    start = time.perf_counter()
    result = tidal.fit(model, data, config=config, progress=False,
                       scaling=Scaling((0.0, 0.0, 0.0), tuple(ranges)))
    wall = time.perf_counter() - start
    print(f"trained {epochs} epochs in {wall:.0f} s, status {result.status}; final train loss "
          f"{result.history[-1]['train_loss']:.2e} (1% noise alone: about "
          f"{0.01 ** 2:.0e})")
    rates = recovered_rates(model)
    for name, value in rates.items():
        print(f"  {name}: {value:.4g} (true {TRUE_RATES[name]:g}, started at "
              f"{TRUE_RATES[name] * START[name]:g}; {100 * (value / TRUE_RATES[name] - 1):+.2f} %)")
    a0s = np.random.default_rng(1).uniform(0.5, 1.5, 8)
    times = np.concatenate([[0.0], np.geomspace(1e-5, 1e5, 30)])
    error = held_out_error(model, ranges, a0s, times)
    print(f"held-out error (8 new trajectories, 31 log-spaced times, vs Radau at rtol 1e-10): "
          f"{error:.2e} of each species' range")


if __name__ == "__main__":
    main()
