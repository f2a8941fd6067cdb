"""Classification of JapaneseVowels (UEA multivariate archive: 9 speakers, 12 LPC cepstrum
channels, 7-29 frames per utterance, 270 train / 370 test), shipped inside the sktime wheel
(no download), with NeuralCDE, ODERNN and GRUDelta.

    .venv/bin/pip install -e ".[sequences]"  # sktime: ships the data set
    .venv/bin/python benchmarks/bench_vowels.py [--epochs 20] [--seed 0]

Utterances of different lengths are per-sample grids (time = frame index / 10), padded to the
longest by repeating the last time with an empty mask. Prints held-out accuracy per model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sktime.datasets import load_japanese_vowels

import tidal
from tidal.models import ODERNN, GRUDelta, NeuralCDE

HIDDEN, WIDTH = 32, 64


def load(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """times [K, B], values [K, B, 12] (standardized later), mask [K, B, 12], labels [B]."""
    frame, labels = load_japanese_vowels(split=split, return_type="pd-multiindex")
    series = [group.to_numpy() for _, group in frame.groupby(level=0, sort=False)]
    k = max(len(s) for s in series)
    times = np.zeros((k, len(series)))
    values = np.zeros((k, len(series), series[0].shape[1]))
    mask = np.zeros(values.shape, dtype=bool)
    for b, s in enumerate(series):
        n = len(s)
        times[:, b] = np.minimum(np.arange(k), n - 1) / 10
        values[:n, b], mask[:n, b] = s, True
    classes = torch.tensor([int(label) - 1 for label in labels])
    return (torch.tensor(times), torch.tensor(values, dtype=torch.float32),
            torch.tensor(mask), classes)


def models() -> dict[str, torch.nn.Module]:
    return {
        "GRUDelta": GRUDelta(12, HIDDEN, 9),
        "ODERNN": ODERNN(12, HIDDEN, 9, width=WIDTH, solver=tidal.RK4(),
                         controller=tidal.ConstantStepSize(1.0)),
        "NeuralCDE": NeuralCDE(12, HIDDEN, 9, width=WIDTH, solver=tidal.Midpoint(),
                               controller=tidal.ConstantStepSize(1.0)),
    }


def logits(name: str, model: torch.nn.Module, times, values, mask) -> torch.Tensor:
    if name == "NeuralCDE":
        return model(times, values, mask)[-1]
    return model.readout(model.encode(times, values, mask))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(models()))
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = load("train"), load("test")
    mean = train[1][train[2]].mean(0)
    std = train[1][train[2]].std(0)
    train = (train[0], (train[1] - mean) / std, *train[2:])
    test = (test[0], (test[1] - mean) / std, *test[2:])
    for name in args.models:
        torch.manual_seed(args.seed)
        model = models()[name]
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        start = time.perf_counter()
        for _ in range(args.epochs):
            for index in torch.randperm(train[3].shape[0]).split(32):
                optimizer.zero_grad()
                out = logits(name, model, train[0][:, index], train[1][:, index],
                             train[2][:, index])
                torch.nn.functional.cross_entropy(out, train[3][index]).backward()
                optimizer.step()
        with torch.no_grad():
            predicted = logits(name, model, *test[:3]).argmax(-1)
        accuracy = (predicted == test[3]).double().mean().item()
        print(f"{name:10s} held-out accuracy {accuracy:.4f} ({args.epochs} epochs, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
