"""Neural CDE on the spiral toy: classify the turning direction of spirals observed at
irregular, per-sample times, with all values and with 30% of them dropped at random.

    .venv/bin/python examples/cde_spirals.py [--epochs 30] [--seed 0] [--path natural_cubic]

Prints the held-out accuracy and the calls of F per forward pass for both settings.
"""

from __future__ import annotations

import argparse
import time

import torch

import tidal
from tidal.data.sequences import IrregularSeries, spirals
from tidal.models import NeuralCDE


def train_and_test(train: IrregularSeries, test: IrregularSeries, args: argparse.Namespace
                   ) -> tuple[float, int]:
    torch.manual_seed(args.seed)
    # One midpoint step per knot interval: the path is a smooth cubic inside each interval.
    model = NeuralCDE(2, 8, 2, width=32, path=args.path, solver=tidal.Midpoint(),
                      controller=tidal.ConstantStepSize(1.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(args.seed)
    assert train.labels is not None and test.labels is not None
    for _ in range(args.epochs):
        for index in torch.randperm(train.values.shape[1], generator=generator).split(64):
            batch = train[index]
            optimizer.zero_grad()
            logits = model(batch.times, batch.values, batch.mask)[-1]
            torch.nn.functional.cross_entropy(logits, batch.labels).backward()
            optimizer.step()
    with torch.no_grad():
        logits = model(test.times, test.values, test.mask)[-1]
    return (logits.argmax(-1) == test.labels).double().mean().item(), model.nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", default="natural_cubic")
    args = parser.parse_args()
    for drop in (0.0, 0.3):
        start = time.perf_counter()
        train = spirals(256, drop=drop, seed=args.seed + 1)
        test = spirals(256, drop=drop, seed=args.seed + 1000)
        accuracy, nfe = train_and_test(train, test, args)
        print(f"spirals, {drop:.0%} of values dropped: held-out accuracy {accuracy:.4f}, "
              f"NFE per forward {nfe}, {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
