"""`tidal fit --nproc 2` end to end: the command starts torchrun itself, two processes train, and
rank 0 alone writes one run whose losses equal a one-process `tidal fit`'s (fixed RK4 steps, so
a trajectory's solve does not depend on which rank computes it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tidal.cli.main import main

#: Seconds the 2-process command may take (torchrun, two imports of torch, the report).
TIMEOUT = 300
ARGS = ["--epochs", "4", "--solver", "rk4", "--dt", "0.1", "--width", "8", "--depth", "1",
        "--val", "0.25", "--test", "0.25", "--split-by", "trajectory", "--seed", "1", "--quiet"]


def _data(path: Path) -> Path:
    """8 damped oscillations, 6 observations each."""
    t = np.linspace(0.0, 2.0, 6)
    rows = [{"id": i, "t": time, "x": np.exp(-0.3 * time) * np.cos(time + i),
             "y": -np.exp(-0.3 * time) * np.sin(time + i)} for i in range(8) for time in t]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_fit_nproc_2_writes_one_run_equal_to_one_process(tmp_path: Path) -> None:
    data = _data(tmp_path / "data.csv")
    command = [sys.executable, "-m", "tidal", "fit", str(data), "--id", "id", "-o",
               str(tmp_path / "two"), "--nproc", "2", *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tidal fit --nproc 2` did not finish within {TIMEOUT} s (hang)")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("report: ") == 1  # rank 0 alone reports
    one = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "-o",
                                    str(tmp_path / "one"), *ARGS])
    assert one.exit_code == 0, one.output
    two, alone = (pd.read_csv(tmp_path / name / "metrics.csv") for name in ("two", "one"))
    assert len(two) == len(alone) >= 1 and two["epoch"].iloc[-1] == 4
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(two[column], alone[column], rtol=1e-9)
    # the sum of the two ranks' evaluations: each solves its trajectories on the same grid
    assert (two["num_fevals"] == 2 * alone["num_fevals"]).all()
    # one run: the files one process writes, listed once, nothing else in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "one", "two"]
    listed = [json.loads((tmp_path / name / "tidal-run.json").read_text())["files"]
              for name in ("two", "one")]
    assert sorted(listed[0]) == sorted(listed[1])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    assert not list((tmp_path / "two").rglob("*tidal-tmp*"))
