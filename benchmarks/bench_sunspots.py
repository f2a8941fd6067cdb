"""A real small series fitted end to end with the command line, against classical baselines.

Run from the repository root (statsmodels ships the data inside its wheel; nothing is
downloaded):

    .venv/bin/pip install -e ".[baselines]"
    .venv/bin/python benchmarks/bench_sunspots.py                       # --augment 2, 300 epochs
    .venv/bin/python benchmarks/bench_sunspots.py --augment 0 --epochs 150

Data: statsmodels' yearly sunspot numbers (`statsmodels.datasets.sunspots`), years
`--first` to `--last` (default 1900-1989: 90 observations, about 8 solar cycles) for fitting;
the next `--ahead` years (default 19: 1990-2008) are the forecast window nobody fits on.

- tidal: `tidal fit` on the CSV (default options plus `--augment N`: one observed variable that
  oscillates needs an extra state, and `--test 0`: the forecast window is the test, so the last
  12.5% of the fitted years validate and the rest train); its forecast is the model's trajectory
  from the initial state it estimated for the first year, continued through the window (a model
  with extra states cannot restart from an observation: the extra states would start at zero).
- AR(p): `statsmodels.tsa.ar_model.AutoReg` on the same years, p chosen by AIC up to 12,
  forecast dynamically (each step from the previous forecasts).
- persistence (the last observed value) and the mean of the fitted years.

Printed: RMSE over the forecast window, and as a fraction of the fitted years' range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def sunspots(first: int, last: int, ahead: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    import statsmodels.api as sm

    table = sm.datasets.sunspots.load_pandas().data
    table = table.rename(columns={"YEAR": "t", "SUNACTIVITY": "sunspots"})
    fitted = table[(table.t >= first) & (table.t <= last)].reset_index(drop=True)
    window = table[(table.t > last) & (table.t <= last + ahead)].reset_index(drop=True)
    return fitted, window


def autoregressive(fitted: pd.DataFrame, steps: int) -> tuple[np.ndarray, int]:
    """AutoReg with the lag order chosen by AIC (statsmodels' ar_select_order), forecast
    `steps` years ahead; returns the forecast and the order."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    series = fitted.sunspots.to_numpy()
    lags = ar_select_order(series, maxlag=12, ic="aic").ar_lags
    order = int(max(lags)) if lags is not None and len(lags) else 1
    model = AutoReg(series, lags=order).fit()
    return np.asarray(model.predict(start=len(series), end=len(series) + steps - 1)), order


def tidal_forecast(fitted: pd.DataFrame, window: pd.DataFrame, folder: Path,
                   options: list[str]) -> tuple[np.ndarray, float, str]:
    """`tidal fit` on the fitted years; the forecast over `window`, the seconds and the
    command's summary."""
    from tidal.training import load_run

    data = folder / "sunspots.csv"
    shifted = fitted.assign(t=fitted.t - fitted.t[0])  # years since the first
    shifted.to_csv(data, index=False)
    command = [sys.executable, "-m", "tidal", "fit", str(data), "-o", str(folder / "run"),
               "--quiet", *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    run = load_run(folder / "run")
    start = pd.read_csv(folder / "run/data/initial_states.csv")["sunspots"].to_numpy()
    times = np.concatenate([[0.0], window.t.to_numpy() - fitted.t[0]])
    return run.predict(start, times)[1:, 0], seconds, done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=1900)
    parser.add_argument("--last", type=int, default=1989)
    parser.add_argument("--ahead", type=int, default=19)
    parser.add_argument("--augment", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fitted, window = sunspots(args.first, args.last, args.ahead)
    truth = window.sunspots.to_numpy()
    spread = float(np.ptp(fitted.sunspots))
    options = ["--epochs", str(args.epochs), "--seed", str(args.seed), "--test", "0"]
    if args.augment:
        options += ["--augment", str(args.augment)]
    ar, order = autoregressive(fitted, len(truth))
    with tempfile.TemporaryDirectory() as folder:
        ode, seconds, summary = tidal_forecast(fitted, window, Path(folder), options)
    rows = [(f"tidal fit {' '.join(options)}", ode),
            (f"AR({order}), order by AIC", ar),
            ("persistence (last value)", np.full_like(truth, fitted.sunspots.iloc[-1])),
            ("mean of the fitted years", np.full_like(truth, fitted.sunspots.mean()))]
    print(f"sunspots {args.first}-{args.last} ({len(fitted)} years) fitted, forecast "
          f"{int(window.t.iloc[0])}-{int(window.t.iloc[-1])} ({len(truth)} years); "
          f"tidal took {seconds:.0f} s")
    print("| method | forecast RMSE | % of range |")
    print("|---|---|---|")
    for name, forecast in rows:
        rmse = float(np.sqrt(np.mean((forecast - truth) ** 2)))
        print(f"| {name} | {rmse:.1f} | {100 * rmse / spread:.1f}% |")
    print("\ntidal's summary:\n" + summary)


if __name__ == "__main__":
    sys.exit(main())
