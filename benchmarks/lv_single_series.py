"""One Lotka-Volterra series of 16 observations (bench_small_data.py's case), fitted by `fit`
with exactly the TrainConfig given (no defaults chosen for one series by `train_run`).

Run from the repository root:

    .venv/bin/python benchmarks/lv_single_series.py 0 0,1 '{"patience": null}'
    .venv/bin/python benchmarks/lv_single_series.py 1 1 '{"shooting_segments": 6, \
        "horizons": [1.0]}'

Arguments: the data seed, the model seeds (comma-separated), TrainConfig fields as JSON
(epochs 300 unless given) and optionally ModelOptions fields as JSON. The series is split in
time as `tidal fit` splits it (12 train, 3 validation, 3 test rows, one shared at each cut).
Printed per model seed: the status, the kept epoch, the last training loss (standardized
units; the noise alone is about 0.003), the validation loss of the kept weights, and the
RMSE ratios against a least-squares fit of the true model (on all 16 observations): over the
12 training observations, over all 16, and over the forecast [10, 13] against the truth.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from bench_small_data import least_squares_baseline, lotka_volterra_data
from tidal.data import Scaling
from tidal.training import TrainConfig
from tidal.training.fit import fit
from tidal.training.pipeline import ModelOptions
from tidal.training.time_split import split_in_time


def main() -> None:
    torch.set_num_threads(1)
    data_seed, model_seeds = int(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")]
    config_fields = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    model_fields = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    data, future, truth = lotka_volterra_data(data_seed)
    fitted, forecast = least_squares_baseline(data, future)
    values = data.values[0]
    train, val, _ = split_in_time(data, 0.125, 0.125)
    n = len(train.times[0])
    scaling = Scaling.fit(train)
    baseline = (np.sqrt(np.mean((fitted - values)[:n] ** 2)),
                np.sqrt(np.mean((fitted - values) ** 2)), np.sqrt(np.mean((forecast - truth) ** 2)))
    for seed in model_seeds:
        model = ModelOptions(**model_fields).build(2, seed)
        config = TrainConfig(**{"epochs": 300, "seed": seed, **config_fields})
        started = time.perf_counter()
        result = fit(model, train, val=val, config=config, scaling=scaling, progress=False)
        y0 = torch.as_tensor(scaling.scale_values(result.initial_states[:1]), dtype=torch.float64)
        ts = np.concatenate((data.times[0], future))
        with torch.no_grad():
            p = scaling.unscale_values(result.model(y0, torch.as_tensor(ts))).numpy()[:, 0]
        inside, ahead = p[:len(values)], p[len(values):]
        ratios = (np.sqrt(np.mean((inside - values)[:n] ** 2)) / baseline[0],
                  np.sqrt(np.mean((inside - values) ** 2)) / baseline[1],
                  np.sqrt(np.mean((ahead - truth) ** 2)) / baseline[2])
        print(f"seed {seed} status {result.status} best_epoch {result.best_epoch} last_train "
              f"{result.history[-1]['train_loss']:.4f} best_val {result.best_val_loss:.4f} | "
              f"train {ratios[0]:.2f}x all {ratios[1]:.2f}x forecast {ratios[2]:.2f}x  "
              f"{time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
