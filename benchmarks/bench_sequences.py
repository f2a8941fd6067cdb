"""Interpolation and extrapolation on the irregular periodic signals of the latent ODE paper
(Rubanova et al. 2019, section 4.1), for GRUDelta, ODERNN, LatentODE and NeuralCDE, over
several seeds; and the cost of an ODE-RNN pass on the union grid against per-sample grids.

    .venv/bin/python benchmarks/bench_sequences.py [--seeds 0 1 2] [--epochs 6] [--train 96]
        [--data reference|varied] [--models GRUDelta ...]
        [--tasks interpolation extrapolation] [--skip-grid-costs] [--lr 1e-2]
        [--obs-std 0.1] [--observed 0.5] [--latent-sizes 8 16 32] [--progress N]
        [--encoder-drop P] [--refine N|auto]

Data: `tidal.data.sequences.periodic_signals` (100 irregular times in [0, 5], each point
observed with probability `--observed`, 0.5 as in the reference implementation's command):
`--data reference` (the default) is the reference implementation's family (1 + sin(2 pi f t),
f ~ U(0.4, 0.8)), `--data varied` a harder one with random amplitude and phase and
f ~ U(0.5, 1.5).
Interpolation: the models see the observed points of the whole span; MSE on
the points not observed. Extrapolation: they see the observed points of the first half; MSE on
every point of the second half. Each model trains on its own natural objective: one-step-ahead
prediction (GRUDelta, ODERNN: the readout before each update), the negative ELBO (LatentODE),
and for NeuralCDE (whose readout at an observed point could copy it) the prediction of 30% of
the observed points hidden from its input. Adam at lr 1e-2 with a cosine decay, gradients
clipped to norm 10 (`--lr` sets the initial rate). The latent ODE's likelihood has the
observation noise `--obs-std` (0.1; the reference implementation's is 0.01); it predicts
from its posterior mean, or with `--refine N` from z_0 after N steps toward the posterior's
mode given the points it reads (`LatentODE.posterior_mode`; `--refine auto`: N chosen on the
unobserved points of the first 100 training series, `LatentODE.choose_refinement`). Prints
mean and spread (min-max / 2) over seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import tidal
from tidal.data.sequences import IrregularSeries, periodic_signals
from tidal.models import ODERNN, GRUDelta, LatentODE, NeuralCDE
from tidal.nn import RotationMLP

HIDDEN, WIDTH, LATENT = 16, 32, 8
#: The initial rotation's frequencies are of order ROTATION_SCALE * sqrt(2 LATENT) = 4 rad per
#: unit of time; the reference family's are 2 pi (0.4..0.8) = 2.5..5.
ROTATION_SCALE = 1.0
#: Training series whose unobserved points choose the latent ODE's refinement (`--refine auto`).
VALIDATION_SERIES = 100
ONE_RK4_STEP = {"solver": tidal.RK4(), "controller": tidal.ConstantStepSize(1.0)}
#: `periodic_signals` options of each `--data` family.
DATA: dict[str, dict[str, Any]] = {"reference": {},
        "varied": {"frequency": (0.5, 1.5), "amplitude": (0.5, 1.5), "phase": (0.0, 2 * math.pi),
                   "offset": 0.0, "offset_std": 0.0}}


def make_models(decoder: str = "rotation", obs_std: float = 0.1,
                latent_sizes: tuple[int, int, int] = (LATENT, HIDDEN, WIDTH)
                ) -> dict[str, torch.nn.Module]:
    """The four models; `decoder` is the latent ODE decoder's field: "rotation" (a learned
    rotation plus an MLP, `tidal.nn.RotationMLP`) or "mlp" (the MLP alone); `obs_std` its
    likelihood's observation noise; `latent_sizes` its (latent, hidden, width)."""
    latent, hidden, width = latent_sizes
    field = (RotationMLP(latent, width=width, rotation_scale=ROTATION_SCALE)
             if decoder == "rotation" else None)
    return {
        "GRUDelta": GRUDelta(1, HIDDEN),
        "ODERNN": ODERNN(1, HIDDEN, width=WIDTH, **ONE_RK4_STEP),
        # one RK4 step per encoder interval; the decoder crosses the whole span in one solve
        # (up to 7.5 periods), so it takes fine steps: 0.05 is 100 steps over [0, 5]
        "LatentODE": LatentODE(1, latent, hidden, width=width, obs_std=obs_std, vector_field=field,
                               decoder_options={"solver": tidal.RK4(),
                                                "controller": tidal.ConstantStepSize(0.05)},
                               **ONE_RK4_STEP),
        "NeuralCDE": NeuralCDE(1, HIDDEN, 1, width=WIDTH, solver=tidal.Midpoint(),
                               controller=tidal.ConstantStepSize(1.0)),
    }


def visible(data: IrregularSeries, task: str) -> torch.Tensor:
    """The mask of what the model may read."""
    if task == "interpolation":
        return data.mask
    return data.mask & (torch.arange(data.mask.shape[0]) < data.mask.shape[0] // 2)[:, None,
                                                                                    None]


def scored(data: IrregularSeries, task: str) -> torch.Tensor:
    """Where the MSE is measured."""
    if task == "interpolation":
        return ~data.mask
    return ~visible(data, task) & (torch.arange(data.mask.shape[0]) >= data.mask.shape[0] // 2
                                   )[:, None, None]


def masked_mse(predicted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    return torch.where(mask, predicted - values, 0.0).square().sum() / mask.sum().clamp(min=1)


def predict(name: str, model: torch.nn.Module, data: IrregularSeries, seen: torch.Tensor,
            refine: int = 0) -> torch.Tensor:
    if name == "LatentODE":
        prefix = int(seen.any(-1).any(-1).nonzero().max()) + 1
        return model(data.times[:prefix], data.values[:prefix], seen[:prefix], data.times,
                     refine=refine)
    return model(data.times, data.values, seen)


def loss_of(name: str, model: torch.nn.Module, data: IrregularSeries, task: str,
            generator: torch.Generator, progress: float, encoder_drop: float = 0.0
            ) -> torch.Tensor:
    seen = visible(data, task)
    target = data.mask if task == "interpolation" else data.mask | scored(data, task) & data.mask
    if name == "LatentODE":
        if encoder_drop:  # the encoder reads a random (1 - encoder_drop) of what the model
            # may read; the ELBO scores all of it (the reference implementation's training)
            seen = seen & (torch.rand(seen.shape, generator=generator) >= encoder_drop)
            seen[0] |= ~seen.any(0)
        prefix = int(seen.any(-1).any(-1).nonzero().max()) + 1
        return model.loss(data.times[:prefix], data.values[:prefix], seen[:prefix],
                          data.times, data.values, target, kl_weight=min(1.0, progress))
    if name == "NeuralCDE":
        hidden = seen & (torch.rand(seen.shape, generator=generator) < 0.3)
        return masked_mse(model(data.times, data.values, seen & ~hidden), data.values,
                          target & ~(seen & ~hidden))
    return masked_mse(model(data.times, data.values, seen), data.values, target)


def run(name: str, task: str, seed: int, args: argparse.Namespace
        ) -> tuple[float, float]:
    torch.manual_seed(seed)
    data = periodic_signals(args.train + args.test, observed=args.observed, seed=seed,
                            **DATA[args.data])
    train, test = data[:args.train], data[args.train:]
    model = make_models(args.decoder, args.obs_std, tuple(args.latent_sizes))[name]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    steps = args.epochs * -(-args.train // args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    step = 0
    for _ in range(args.epochs):
        for index in torch.randperm(args.train, generator=generator).split(args.batch):
            optimizer.zero_grad()
            # the latent ODE's KL weight rises from 0 to 1 over the first 30% of the steps
            loss = loss_of(name, model, train[index], task, generator, step / (0.3 * steps),
                           args.encoder_drop)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            schedule.step()
            step += 1
            if args.progress and step % args.progress == 0:
                print(f"  seed {seed} {name} {task} step {step}/{steps} loss {loss.item():.4g} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    refine = 0
    if name == "LatentODE" and args.refine == "auto":
        refine = choose_refinement(model, train[:VALIDATION_SERIES], task)
    elif name == "LatentODE":
        refine = int(args.refine)
    with torch.no_grad():
        mse = masked_mse(predict(name, model, test, visible(test, task), refine),
                         test.values, scored(test, task)).item()
    return mse, time.perf_counter() - start


def choose_refinement(model: LatentODE, data: IrregularSeries, task: str) -> int:
    """The latent ODE's steps toward the posterior's mode, chosen on the points of `data`
    (training series) that no observation holds (never a training target: the ELBO scores
    observed points only) and the task scores."""
    seen = visible(data, task)
    prefix = int(seen.any(-1).any(-1).nonzero().max()) + 1
    chosen, losses = model.choose_refinement(
        data.times[:prefix], data.values[:prefix], seen[:prefix], data.times, data.values,
        scored(data, task) & ~data.mask)
    print(f"  refinement: {chosen} steps chosen on the unobserved points of "
          f"{data.values.shape[1]} training series (MSE "
          f"{', '.join(f'{k}: {v:.5f}' for k, v in losses.items())})", flush=True)
    return chosen


def grid_costs() -> None:
    """One ODE-RNN forward and backward pass on the union grid and on per-sample grids."""
    torch.manual_seed(0)
    data = periodic_signals(64, observed=0.3, seed=0)
    model = ODERNN(1, HIDDEN, width=WIDTH)
    print("\nODE-RNN encoder, 64 series, 30% of 100 points observed, dopri5 rtol 1e-3:")
    print(f"{'grid':28s} {'rows':>5s} {'NFE':>6s} {'seconds':>8s}")
    for label, series in (("union of times [100]", data), ("per-sample [K', 64]",
                                                           data.compacted())):
        start = time.perf_counter()
        model.encode(series.times, series.values, series.mask).square().sum().backward()
        print(f"{label:28s} {series.values.shape[0]:5d} {model.nfe:6d} "
              f"{time.perf_counter() - start:8.2f}")


def table(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> None:
    print(f"\nMSE on held-out points, mean +- spread over seeds {args.seeds}:")
    print(f"{'model':12s}" + "".join(f" {task:>24s}" for task in args.tasks))
    for name in args.models:
        cells = []
        for task in args.tasks:
            values = results[name, task]
            spread = (max(values) - min(values)) / 2
            cells.append(f"{statistics.mean(values):.5f} +- {spread:.5f}")
        print(f"{name:12s}" + "".join(f" {cell:>24s}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's initial learning rate")
    parser.add_argument("--data", choices=list(DATA), default="reference")
    parser.add_argument("--decoder", choices=["rotation", "mlp"], default="rotation",
                        help="the latent ODE decoder's field")
    parser.add_argument("--obs-std", type=float, default=0.1,
                        help="the latent ODE likelihood's observation noise")
    parser.add_argument("--latent-sizes", type=int, nargs=3, default=[LATENT, HIDDEN, WIDTH],
                        metavar=("LATENT", "HIDDEN", "WIDTH"),
                        help="the latent ODE's latent size, encoder hidden size and MLP width "
                             "(the reference implementation's toy run: 10 20 100)")
    parser.add_argument("--observed", type=float, default=0.5,
                        help="the fraction of the 100 points observed")
    parser.add_argument("--encoder-drop", type=float, default=0.0, metavar="P",
                        help="the latent ODE's encoder reads each visible point with "
                             "probability 1 - P in training; the ELBO scores them all")
    parser.add_argument("--refine", default="0", metavar="N|auto",
                        help="the latent ODE predicts from z_0 after N Adam steps toward the "
                             "posterior's mode; 0: the posterior mean; auto: N chosen on the "
                             f"unobserved points of the first {VALIDATION_SERIES} training "
                             "series")
    parser.add_argument("--models", nargs="+", default=list(make_models()))
    parser.add_argument("--tasks", nargs="+", default=["interpolation", "extrapolation"])
    parser.add_argument("--skip-grid-costs", action="store_true")
    parser.add_argument("--progress", type=int, default=0, metavar="N",
                        help="print the training loss every N steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, tidal {tidal.__version__}; {args}")
    results: dict[tuple[str, str], list[float]] = {}
    report: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    for seed in args.seeds:
        for name in args.models:
            for task in args.tasks:
                mse, seconds = run(name, task, seed, args)
                results.setdefault((name, task), []).append(mse)
                report(f"seed {seed} {name:10s} {task:13s} MSE {mse:.5f} ({seconds:.0f} s)")
    table(results, args)
    if not args.skip_grid_costs:
        grid_costs()


if __name__ == "__main__":
    main()
