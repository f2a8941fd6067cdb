"""Run directories: tidal deletes or replaces only files it listed as its own, never the folder,
never the input data; a run records its state, and a killed run never serves untrained weights.

References: the bytes of every user file before the command (they must survive unchanged),
the weights stored in the checkpoint a killed run left (predictions must use exactly those),
and the process table (a SIGKILLed process is gone).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tidal._errors import InvalidArgumentError
from tidal.cli.main import main
from tidal.data import simulate, write_table
from tidal.models.registry import model_from_config
from tidal.training import RunDirectory
from tidal.training.run_directory import MARKER

TINY = ["--epochs", "6", "--horizons", "1.0", "--width", "8", "--depth", "1", "--quiet"]


def run_cli(*args: str, cwd: Path | None = None):
    """The CLI in-process; an unexpected exception shows as exit code 1 (never raised)."""
    if cwd is None:
        return CliRunner().invoke(main, list(args))
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        os.chdir(old)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tidal: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "osc.csv"
    write_table(simulate("lotka-volterra", 6, n_obs=12, noise=0.02, seed=3), path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_csv) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--val", "0.2",
                     "--test", "0.2", *TINY)
    assert result.exit_code == 0, result.output
    return run


def user_files(folder: Path, *, config: bool = True) -> dict[str, bytes]:
    """Put a user's files in `folder` (created if missing), with a config.json of their own
    unless told not to; returns their bytes by name."""
    files = {"main.py": b"print('mine')\n", "notes/plan.txt": b"do not delete\n",
             "osc.csv": b"t,x\n0,1\n1,2\n"}
    if config:
        files["config.json"] = b'{"mine": true}\n'
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


# --- the blocker: nothing but tidal's own files is ever deleted -------------------------------

def test_demo_refuses_a_folder_that_is_not_a_run(tmp_path):
    project = tmp_path / "proj"
    user_files(project)
    before = snapshot(project)
    result = run_cli("demo", "--epochs", "3", "-o", str(project), "--quiet")
    assert_one_line_error(result, "is not empty and is not a tidal run")
    assert snapshot(project) == before


def test_fit_into_the_working_directory_with_overwrite_deletes_nothing(tmp_path, data_csv):
    shutil.copy(data_csv, tmp_path / "input.csv")
    user_files(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli("fit", "input.csv", "--id", "id", "-o", ".", "--overwrite", *TINY,
                     cwd=tmp_path)
    assert_one_line_error(result, "is not empty and is not a tidal run")
    assert snapshot(tmp_path) == before


def test_overwrite_of_a_run_keeps_the_files_a_user_added(tmp_path, finished_run, data_csv):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    mine = user_files(run, config=False)
    (run / "data" / "extra.csv").write_bytes(b"my own table\n")
    inode = run.stat().st_ino
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--overwrite", *TINY)
    assert result.exit_code == 0, result.output
    after = snapshot(run)
    for name, content in mine.items():
        assert after[name] == content, name
    assert after["data/extra.csv"] == b"my own table\n"
    assert run.stat().st_ino == inode  # the folder itself was never removed
    assert json.loads((run / MARKER).read_text())["state"] == "finished"


def test_overwrite_never_deletes_the_input_data(tmp_path, finished_run, data_csv):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    # the run's folder is a parent of the data: the data, a user file, survives
    shutil.copy(data_csv, run / "input.csv")
    result = run_cli("fit", str(run / "input.csv"), "--id", "id", "-o", str(run),
                     "--overwrite", *TINY)
    assert result.exit_code == 0, result.output
    assert (run / "input.csv").read_bytes() == data_csv.read_bytes()
    # the data is one of the run's own files: refused before anything is deleted
    before = snapshot(run)
    result = run_cli("fit", str(run / "data" / "train.csv"), "--id", "id", "-o", str(run),
                     "--overwrite", *TINY)
    assert_one_line_error(result, "is your input data")
    assert snapshot(run) == before


def test_a_file_tidal_did_not_write_is_never_replaced(tmp_path):
    run = RunDirectory.create(tmp_path / "run", "neural-ode", command="test")
    run.write_text("a.txt", "tidal's")
    (tmp_path / "run" / "b.txt").write_text("the user's")
    with pytest.raises(InvalidArgumentError, match="was not written by tidal"):
        run.write_text("b.txt", "tidal's")
    assert (tmp_path / "run" / "b.txt").read_text() == "the user's"
    run.write_text("a.txt", "tidal's, again")  # its own file it may replace


@pytest.mark.parametrize("name", ["../victim.txt", "/etc/passwd", "data/../../victim.txt"])
def test_a_tampered_marker_cannot_send_overwrite_outside_the_run(tmp_path, finished_run,
                                                                 data_csv, name):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (tmp_path / "victim.txt").write_text("keep me")
    marker = json.loads((run / MARKER).read_text())
    marker["files"].append(name)
    (run / MARKER).write_text(json.dumps(marker))
    before = snapshot(tmp_path)
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--overwrite", *TINY)
    assert_one_line_error(result, MARKER, "damaged")
    assert snapshot(tmp_path) == before


def test_overwrite_does_not_follow_a_link_out_of_the_run(tmp_path, finished_run, data_csv):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "data", elsewhere)  # the user's folder, holding files named like tidal's
    (run / "data").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(elsewhere)
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--overwrite", *TINY)
    assert_one_line_error(result, "outside the run's folder")
    assert snapshot(elsewhere) == before


def test_flow_runs_follow_the_same_rules(tmp_path):
    flow = ["flow", "fit", "--toy", "two-moons", "--samples", "200", "--steps", "2",
            "--width", "8", "--depth", "1", "--quiet", "-o"]
    project = tmp_path / "proj"
    user_files(project)
    before = snapshot(project)
    assert_one_line_error(run_cli(*flow, str(project)), "is not empty and is not a tidal run")
    assert run_cli(*flow, str(project), "--overwrite").exit_code == 2
    assert snapshot(project) == before

    run = tmp_path / "flow"
    assert run_cli(*flow, str(run)).exit_code == 0
    (run / "mine.txt").write_text("mine")
    assert_one_line_error(run_cli(*flow, str(run)), "already holds a tidal run", "--overwrite")
    result = run_cli(*flow, str(run), "--overwrite")
    assert result.exit_code == 0, result.output
    assert (run / "mine.txt").read_text() == "mine"
    assert RunDirectory.find(run).kind == "flow" and RunDirectory.find(run).state == "finished"
    assert_one_line_error(run_cli("predict", str(run), "--y0", "1,2", "--t", "0:1:0.5"),
                          "holds a flow run", "tidal flow sample")


def test_demo_replaces_only_an_earlier_demo(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    assert_one_line_error(run_cli("demo", "--epochs", "3", "-o", str(run), "--quiet"),
                          "not by `tidal demo`")
    assert snapshot(run) == before


def test_a_run_another_live_process_is_training_is_left_alone(tmp_path, finished_run,
                                                              data_csv):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = json.loads((run / MARKER).read_text())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker.update(state="running", process={"pid": sleeper.pid,
                                                "host": __import__("socket").gethostname()})
        (run / MARKER).write_text(json.dumps(marker))
        before = snapshot(run)
        for args in (["fit", str(data_csv), "--id", "id", "-o", str(run), "--overwrite"],
                     ["fit", "--resume", "-o", str(run)]):
            assert_one_line_error(run_cli(*args, *(["--quiet"])), f"process {sleeper.pid}")
        assert snapshot(run) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    stale = [run / ".report.html.0a1b2c3d.tidal-tmp", run / "data" / ".test.csv.deadbeef.tidal-tmp"]
    for path in stale:
        path.write_bytes(b"")  # what a kill during writing leaves
    user = [run / ".report.html.tmp", run / "notes.tidal-tmp"]  # not tidal's pattern
    for path in user:
        path.write_text("mine")
    assert run_cli("report", str(run)).exit_code == 0
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "mine" for path in user)


# --- a run's state: killed, interrupted, diverged ---------------------------------------------

def _start_fit(data_csv: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tidal", "fit", str(data_csv), "--id", "id", "-o", str(run),
         "--horizons", "1.0", "--width", "8", "--depth", "1", "--quiet", "--val", "0.2",
         "--test", "0.2", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """SIGKILL `process` as soon as `ready()` holds (it must not have ended by then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "training never reached the point to kill it"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _marker(run: Path) -> dict:
    try:
        return json.loads((run / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_a_killed_run_serves_its_last_checkpoint_and_says_so(tmp_path, data_csv):
    run = tmp_path / "run"
    process = _start_fit(data_csv, run, "--epochs", "100000", "--checkpoint-every", "3")
    _kill_when(process, lambda: "checkpoint.pt" in _marker(run).get("files", [])
               and (run / "checkpoint.pt").is_file())
    marker = _marker(run)
    assert marker["state"] == "running" and "model.pt" not in marker["files"]

    result = run_cli("predict", str(run), "--y0", "1.0,0.5", "--t", "0:2:0.5")
    assert result.exit_code == 0, result.output
    assert "was stopped (killed)" in result.stderr and "--resume" in result.stderr
    # reference: the weights stored in the checkpoint, through the saved config and scaling
    config = json.loads((run / "config.json").read_text())
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    weights = checkpoint["best_weights" if checkpoint["best_epoch"] >= 0 else "model"]
    model = model_from_config(config["model"]).double()
    model.load_state_dict(weights)
    offset = torch.tensor(config["scaling"]["state_offset"], dtype=torch.float64)
    scale = torch.tensor(config["scaling"]["state_scale"], dtype=torch.float64)
    ts = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    with torch.no_grad():
        expected = model((torch.tensor([1.0, 0.5], dtype=torch.float64) - offset) / scale,
                         ts) * scale + offset
    printed = np.loadtxt(result.stdout.splitlines()[1:], delimiter=",")[:, 1:]
    np.testing.assert_allclose(printed, expected.numpy(), rtol=1e-12, atol=1e-12)
    assert checkpoint["epoch"] >= 3  # trained weights, not the initial ones

    result = run_cli("report", str(run))
    assert result.exit_code == 0 and "was stopped (killed)" in result.stderr
    trained = checkpoint["epoch"]
    result = run_cli("fit", "--resume", "-o", str(run), "--epochs", str(trained + 2), "--quiet")
    assert result.exit_code == 0, result.output
    assert _marker(run)["state"] == "finished"
    result = run_cli("predict", str(run), "--y0", "1.0,0.5", "--t", "0:2:0.5")
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_points_to_resume_which_works(tmp_path,
                                                                               data_csv):
    run = tmp_path / "run"
    process = _start_fit(data_csv, run, "--epochs", "100000", "--checkpoint-every", "100000")
    _kill_when(process, lambda: "config.json" in _marker(run).get("files", [])
               and (run / "config.json").is_file())
    for command in (["predict", str(run), "--y0", "1,1", "--t", "0:1:0.5"],
                    ["report", str(run)]):
        assert_one_line_error(run_cli(*command), "before its first checkpoint",
                              f"tidal fit --resume -o {run}")
    # the advice works (it does not send the user on to --overwrite)
    result = run_cli("fit", "--resume", "-o", str(run), "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "started over from epoch 0" in result.stdout
    assert _marker(run)["state"] == "finished"
    assert run_cli("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5").exit_code == 0


def test_a_diverged_run_exits_3_and_keeps_its_last_good_weights(tmp_path, data_csv,
                                                                 monkeypatch):
    from tidal.training.fit import TrajectoryObjective
    from tidal.training.trainer import Diverged

    original = TrajectoryObjective.train_round

    def diverge_at_epoch_4(self, epoch, *args):
        if epoch >= 4:
            raise Diverged("the loss became nan")
        return original(self, epoch, *args)

    monkeypatch.setattr(TrajectoryObjective, "train_round", diverge_at_epoch_4)
    run = tmp_path / "run"
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--epochs", "10",
                     "--checkpoint-every", "2", "--horizons", "1.0", "--width", "8",
                     "--depth", "1", "--quiet")
    assert result.exit_code == 3, result.output
    assert "diverged" in result.stderr and "Traceback" not in result.output
    assert _marker(run)["state"] == "diverged"
    result = run_cli("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5")
    assert result.exit_code == 0 and "training diverged" in result.stderr


def test_a_diverged_flow_exits_3(tmp_path, monkeypatch):
    from tidal.training import flow_run

    original = flow_run.fit_flow

    def diverging(*args, **kwargs):
        history = original(*args, **kwargs)
        history.status, history.message = "diverged", "the loss became nan at step 2"
        return history

    monkeypatch.setattr(flow_run, "fit_flow", diverging)
    run = tmp_path / "flow"
    result = run_cli("flow", "fit", "--toy", "two-moons", "--samples", "200", "--steps", "2",
                     "--width", "8", "--depth", "1", "--quiet", "-o", str(run))
    assert result.exit_code == 3, result.output
    assert _marker(run)["state"] == "diverged"
    result = run_cli("flow", "sample", str(run), "-n", "5")
    assert result.exit_code == 0 and "training diverged" in result.stderr


def test_an_interrupted_run_exits_130_says_so_and_resumes(tmp_path, data_csv, monkeypatch):
    from tidal.training.fit import TrajectoryObjective

    original = TrajectoryObjective.train_round

    def ctrl_c_at_epoch_5(self, epoch, *args):
        if epoch == 5:
            raise KeyboardInterrupt
        return original(self, epoch, *args)

    monkeypatch.setattr(TrajectoryObjective, "train_round", ctrl_c_at_epoch_5)
    run = tmp_path / "run"
    result = run_cli("fit", str(data_csv), "--id", "id", "-o", str(run), "--epochs", "8",
                     "--horizons", "1.0", "--width", "8", "--depth", "1", "--quiet")
    assert result.exit_code == 130 and f"tidal fit --resume -o {run}" in result.stderr
    assert _marker(run)["state"] == "interrupted"
    result = run_cli("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5")
    assert result.exit_code == 0 and "training was interrupted" in result.stderr
    monkeypatch.setattr(TrajectoryObjective, "train_round", original)
    assert run_cli("fit", "--resume", "-o", str(run), "--quiet").exit_code == 0
    assert _marker(run)["state"] == "finished"
    assert run_cli("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5").stderr == ""


def test_every_run_kind_names_the_commands_that_write_and_read_it(tmp_path):
    """Opening a folder that is no run, or a run of another kind, names the right command."""
    from tidal._errors import InvalidArgumentError
    from tidal.training.run_directory import KINDS, READ_BY, WRITTEN_BY, RunDirectory

    assert set(WRITTEN_BY) == set(READ_BY) == set(KINDS)
    with pytest.raises(InvalidArgumentError, match=r"written by `tidal diffusion fit -o RUN`"):
        RunDirectory.open(tmp_path, "diffusion")
    RunDirectory.create(tmp_path / "flow", "flow", command="flow fit")
    with pytest.raises(InvalidArgumentError,
                       match=r"holds a flow run, not a diffusion run; use `tidal flow sample`"):
        RunDirectory.open(tmp_path / "flow", "diffusion")
