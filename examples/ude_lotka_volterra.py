"""Structure from physics: a universal differential equation learns the missing terms of
Lotka-Volterra, and sparse regression turns them back into a formula.

    dx/dt = alpha x - beta x y          the birth and death terms (alpha x, -gamma y) are
    dy/dt = delta x y - gamma y         known; the interaction terms are left to a network

1. Simulate noisy predator-prey trajectories (alpha, beta, gamma, delta = 1.5, 1, 3, 1).
2. Fit `UDE(known, correction, params)`: known = the linear terms with the known rates,
   correction = an MLP (fed standardized states, its output scaled to the data's rates).
3. Compare the learned correction with the true interaction terms (-beta x y, delta x y) on
   the data's states: RMSE as a fraction of their range.
4. Recover a formula from the correction with `tidal.models.symbolic.recover` (SINDy: STLSQ on
   monomials up to degree 2), keeping the sparsest formula that still explains the network's
   output to within 5% of its range (a sweep over the threshold), and compare the x y
   coefficients with -beta and delta.

With `--learn-rates` the rates alpha, gamma are learned too (from 1.0 and 2.0). The split
between known terms and correction is then not identifiable from data (a correction can
absorb c x on the data's region), and the run shows how the network takes up the difference
while the x y terms are still recovered.

Run:  OMP_NUM_THREADS=1 .venv/bin/python examples/ude_lotka_volterra.py  (about five minutes
on a laptop CPU; --quick for a smoke run). docs/benchmarks.md ("Structure from physics")
records a run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import tidal
from tidal.data import SYSTEMS, Scaling, simulate
from tidal.models.symbolic import sparsest
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.nn import MLP

TRUE = dict(SYSTEMS["lotka-volterra"].params)


class Standardized(nn.Module):
    """`scale_out * net(t, (y - offset) / scale)`: a network for states of a few units."""

    def __init__(self, net: nn.Module, offset: np.ndarray, scale: np.ndarray,
                 scale_out: float) -> None:
        super().__init__()
        self.net, self.scale_out = net, scale_out
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale_out * self.net(t, (y - self.offset.to(y.dtype)) / self.scale.to(y.dtype))


def interaction(y: torch.Tensor) -> torch.Tensor:
    """The true missing terms (-beta x y, delta x y)."""
    xy = y[..., 0] * y[..., 1]
    return torch.stack([-TRUE["beta"] * xy, TRUE["delta"] * xy], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--learn-rates", action="store_true",
                        help="learn alpha and gamma too (from 1.0 and 2.0)")
    args = parser.parse_args()
    epochs = 20 if args.quick else 300
    torch.manual_seed(0)

    data = simulate("lotka-volterra", 32, t_span=(0.0, 5.0), n_obs=40, noise=0.01, seed=0)
    observed = np.concatenate(data.values)
    observed = observed[np.isfinite(observed).all(1)]
    rates = ({"alpha": 1.0, "gamma": 2.0} if args.learn_rates
             else {"alpha": TRUE["alpha"], "gamma": TRUE["gamma"]})
    typical_rate = float(np.abs(observed[:, 0] * observed[:, 1]).mean())
    correction = Standardized(MLP(2, width=64, depth=2), observed.mean(0), observed.std(0),
                              typical_rate)
    model = UDE(KNOWN_PHYSICS["lotka-volterra-linear"].equations, correction, rates)
    if not args.learn_rates:  # the rates are known: keep them fixed
        for value in model.vector_field.physical.values():
            value.requires_grad_(False)

    config = tidal.TrainConfig(epochs=epochs, lr=1e-2, batch_size=8, horizons=(0.3, 0.6, 1.0),
                               patience=None, eval_every=max(1, epochs // 10), seed=0)
    start = time.perf_counter()
    # the known terms are in the data's units: no standardization of the states
    result = tidal.fit(model, data, config=config, scaling=Scaling((0.0, 0.0), (1.0, 1.0)),
                       progress=False)
    print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s; final train loss "
          f"{result.history[-1]['train_loss']:.5f} (the noise alone gives about "
          f"{np.mean((0.01 * np.ptp(observed, axis=0)) ** 2):.5f})")
    print(f"rates: {model.physical_parameters()} (true alpha = {TRUE['alpha']}, gamma = "
          f"{TRUE['gamma']}; {'learned' if args.learn_rates else 'known, fixed'})")

    region = torch.as_tensor(observed, dtype=torch.float64)  # the data's states
    with torch.no_grad():
        learned = model.correction(torch.tensor(0.0, dtype=torch.float64), region)
    truth = interaction(region)
    spread = truth.max(0).values - truth.min(0).values
    rmse = (learned - truth).square().mean(0).sqrt()
    print(f"correction vs true interaction terms on {len(region)} observed states: RMSE "
          f"{rmse.numpy().round(4).tolist()} = "
          f"{(100 * rmse / spread).numpy().round(2).tolist()} % of their range "
          f"{spread.numpy().round(2).tolist()}")

    found = sparsest(model, region, state_names=("x", "y"))
    if found is None:
        raise SystemExit("no formula explains the correction; train longer")
    threshold, fit = found
    print(f"\nsymbolic recovery ({fit.backend}, threshold {threshold}):\n{fit.formula}")
    for output, truth_value in (("dx", -TRUE["beta"]), ("dy", TRUE["delta"])):
        value = fit.coefficient(output, "x y")
        print(f"  {output}: x y coefficient {value:.4f} vs {truth_value} "
              f"({100 * abs(value - truth_value) / abs(truth_value):.2f} % off)")


if __name__ == "__main__":
    main()
