"""The command line end to end on a tiny run, its help and its exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tidal.cli.main import main
from tidal.data import SYSTEMS, read_table

COMMANDS = ["simulate", "fit", "predict", "report", "demo"]
TINY = ["--epochs", "6", "--horizons", "1.0", "--width", "8", "--depth", "1", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", [*COMMANDS, None])
def test_every_command_has_help(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_simulate_fit_predict_report_end_to_end(tmp_path):
    data = tmp_path / "data.csv"
    result = invoke("simulate", "lotka-volterra", "--trajectories", "6", "--obs", "12",
                    "--noise", "0.02", "--seed", "3", "-o", str(data))
    assert result.exit_code == 0, result.output
    table = read_table(data, time="t", id="id")
    assert len(table) == 6 and table.state_names == SYSTEMS["lotka-volterra"].state_names
    # an existing file is replaced only on request
    before = data.read_bytes()
    again = ["simulate", "lotka-volterra", "--trajectories", "2", "-o", str(data)]
    result = invoke(*again)
    assert result.exit_code == 2 and "add --overwrite" in result.output
    assert data.read_bytes() == before
    replaced = tmp_path / "replaced.csv"
    replaced.write_bytes(before)
    assert invoke(*again[:-1], str(replaced), "--overwrite").exit_code == 0
    assert len(read_table(replaced, time="t", id="id")) == 2

    run = tmp_path / "run"
    result = invoke("fit", str(data), "--id", "id", "--system", "lotka-volterra", "-o", str(run),
                    "--val", "0.2", "--test", "0.2", "--shooting-segments", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["shooting_segments"] == 2
    assert "segments" in pd.read_csv(run / "metrics.csv").columns
    for name in ("config.json", "model.pt", "checkpoint.pt", "metrics.csv", "metrics.json",
                 "report.html", "forecast.png", "vector_field.png", "loss.png",
                 "fit_test_1.png", "data/train.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fit"]["status"] == "finished"
    assert len(metrics["test"]["rmse"]) == 2
    assert "period" in metrics["truth"]
    assert (run / "fit_test_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    forecast = tmp_path / "forecast.csv"
    result = invoke("predict", str(run), "--y0", "1.0,0.5", "--t", "0:2:0.5", "-o",
                    str(forecast))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(forecast)
    np.testing.assert_allclose(table["t"], [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(table.iloc[0, -2:].to_numpy(float), [1.0, 0.5])  # y0, user units
    kept = forecast.read_bytes()
    result = invoke("predict", str(run), "--y0", "2.0,0.5", "--t", "0:1:0.5", "-o",
                    str(forecast))
    assert result.exit_code == 2 and "the file exists" in result.output
    assert forecast.read_bytes() == kept
    assert invoke("predict", str(run), "--y0", "2.0,0.5", "--t", "0:1:0.5", "-o",
                  str(forecast), "--overwrite").exit_code == 0
    assert len(pd.read_csv(forecast)) == 3
    # an ODE run forecasts from --y0 and --t; a table of series (--data) is for sequence runs
    for args, message in ((["--t", "0:2:0.5"], "give the initial state --y0 and the times --t"),
                          (["--data", str(data)], "--data applies to sequence runs")):
        result = invoke("predict", str(run), *args)
        assert result.exit_code == 2 and message in result.output, result.output

    # refuses to overwrite, resumes on request
    assert invoke("fit", str(data), "--id", "id", "-o", str(run), *TINY).exit_code == 2
    result = invoke("fit", "--resume", "-o", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    assert invoke("report", str(run)).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["fit", "missing.csv", "-o", "run"], "missing.csv"),
    (["simulate", "unicorn", "-o", "x.csv"], "unknown system"),
    (["predict", "no-such-run", "--y0", "1", "--t", "0:1:0.1"], "not a tidal run"),
    (["fit", "-o", "run"], "DATA"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["simulate", "lotka-volterra", "--trajectories", "2", "-o", "data.csv/new.csv"],
    ["simulate", "lotka-volterra", "--trajectories", "2", "-o", "data.csv/a/new.csv"],
    ["fit", "data.csv", "--id", "id", "-o", "data.csv/run"],
    ["flow", "fit", "--toy", "two-moons", "--steps", "2", "-o", "data.csv/flow"],
])
def test_an_output_path_through_a_file_is_refused_by_name(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.csv"
    text = "id,t,x,y\n" + "".join(f"a,{t},{1 + t % 2},1\n" for t in range(8))
    data.write_text(text)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "data.csv is a file, not a folder" in result.output
    assert "Traceback" not in result.output and "Errno" not in result.output
    assert data.read_text() == text  # the user's file is untouched


def test_malformed_csv_names_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,a,b\n0,1,2\n1,x,3\n")
    result = CliRunner().invoke(main, ["fit", str(bad), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "bad.csv: line 3, column 'a': 'x' is not a number" in result.output


def test_python_dash_m_tidal_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "tidal", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "simulate" in done.stdout


def test_flow_fit_and_sample_end_to_end(tmp_path):
    run = tmp_path / "flow"
    result = invoke("flow", "fit", "--toy", "two-moons", "--samples", "300", "--steps", "4",
                    "--width", "8", "--depth", "1", "-o", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.pt", "metrics.json", "report.html", "density.png",
                 "samples.png", "metrics.csv", "checkpoint.pt", "data/train.csv"):
        assert (run / name).is_file(), name
    out = tmp_path / "samples.csv"
    assert invoke("flow", "sample", str(run), "-n", "50", "-o", str(out)).exit_code == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["x", "y"] and len(table) == 50
    assert np.isfinite(table.to_numpy()).all()
    result = invoke("flow", "sample", str(run), "-n", "5", "-o", str(out))
    assert result.exit_code == 2 and "add --overwrite" in result.output
    assert len(pd.read_csv(out)) == 50
    assert invoke("flow", "sample", str(run), "-n", "5", "-o", str(out),
                  "--overwrite").exit_code == 0
    assert len(pd.read_csv(out)) == 5


def test_flow_density_in_user_units_integrates_to_one(tmp_path):
    """The run standardizes the data; its log_prob adds the log-Jacobian back, so the density
    in the user's units must still integrate to 1 (midpoint quadrature on a wide grid)."""
    from tidal.training.flow_run import FlowOptions, load_flow_run, train_flow_run

    rng = np.random.default_rng(0)
    data = rng.normal([3.0, -1.0], [2.0, 0.5], size=(200, 2))
    train_flow_run(data, tmp_path, columns=["a", "b"], progress=False,
                   options=FlowOptions(steps=3, width=8, depth=1, batch_size=64))
    run = load_flow_run(tmp_path)
    xs = np.linspace(3 - 14, 3 + 14, 141)
    ys = np.linspace(-1 - 3.5, -1 + 3.5, 141)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    density = run.log_prob(grid).exp().numpy()
    total = density.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(total - 1.0) < 0.01, total


def test_flow_bad_data_names_the_line(tmp_path):
    bad = tmp_path / "samples.csv"
    bad.write_text("a,b\n1,2\n3,oops\n")
    result = CliRunner().invoke(main, ["flow", "fit", str(bad), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "line 3, column 'b': 'oops' is not a finite number" in result.output


def test_fit_hamiltonian_and_ude_models(tmp_path):
    """--model hamiltonian reports the learned energy's drift along forecasts (leapfrog keeps
    it small even untrained: measured ~1e-4 relative); --model ude reports the physical
    parameters it learned, starting from --param."""
    data = tmp_path / "pendulum.csv"
    assert invoke("simulate", "ideal-pendulum", "--trajectories", "6", "--obs", "12",
                  "--noise", "0.01", "-o", str(data)).exit_code == 0
    run = tmp_path / "ham"
    result = invoke("fit", str(data), "--id", "id", "--system", "ideal-pendulum", "--model",
                    "hamiltonian", "--separable", "--dt", "0.05", "-o", str(run), *TINY)
    assert result.exit_code == 0, result.output
    energy = json.loads((run / "metrics.json").read_text())["energy"]
    assert max(energy["learned_relative_drift"]) < 0.01, energy

    data = tmp_path / "lv.csv"
    assert invoke("simulate", "lotka-volterra", "--trajectories", "6", "--obs", "12",
                  "--noise", "0.01", "-o", str(data)).exit_code == 0
    run = tmp_path / "ude"
    result = invoke("fit", str(data), "--id", "id", "--model", "ude", "--known",
                    "lotka-volterra-linear", "--param", "alpha=1.5", "--param", "gamma=3",
                    "-o", str(run), *TINY)
    assert result.exit_code == 0, result.output
    ude = json.loads((run / "metrics.json").read_text())["ude"]
    assert set(ude["physical_parameters"]) == {"alpha", "gamma"}
    assert invoke("fit", str(data), "--id", "id", "--model", "ude", "--known", "nope",
                  "-o", str(tmp_path / "bad"), *TINY).exit_code == 2


@pytest.mark.parametrize("args, message", [
    (["predict", "RUN", "--y0", "1,2", "--t", "5:1:0.1"], "start:stop:step"),
    (["predict", "RUN", "--y0", "1,x", "--t", "0:1:0.1"], "comma-separated numbers"),
    (["predict", "RUN", "--y0", "1,nan", "--t", "0:1:0.1"], "--y0 '1,nan': every number must"),
    (["predict", "RUN", "--y0", "1,2", "--t", "0,inf"], "--t '0,inf': every number must be"),
    (["predict", "RUN", "--y0", "1,2,3", "--t", "0:1:0.1"], "--y0 has 3 values"),
    (["simulate", "toggle-switch", "--obs", "a:b", "-o", "x.csv"], "--obs 'a:b'"),
    (["fit", "DATA", "-o", "r", "--model", "ude", "--known", "lotka-volterra-linear",
      "--param", "alpha"], "expected name=value"),
    (["flow", "fit", "-o", "r"], "either DATA or --toy"),
    (["flow", "fit", "--toy", "nope", "-o", "r"], "--toy 'nope' is not known"),
    (["flow", "fit", "DATA", "--columns", "zz", "-o", "r"], "unknown column(s) ['zz']"),
    (["flow", "sample", "RUN"], "not a flow"),
])
def test_more_bad_input_exits_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8", "-o", str(data))
    run = tmp_path / "run"
    if "RUN" in args:
        assert invoke("fit", str(data), "--id", "id", "-o", str(run), "--val", "0",
                      "--test", "0", *TINY).exit_code == 0
    args = [str(run) if a == "RUN" else str(data) if a == "DATA" else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# --- issue 10: small things a user meets ------------------------------------------------------

def test_files_get_the_umask_mode_and_json_is_strict(tmp_path):
    """Files are created like any program's (0666 & ~umask: 0644 under umask 022), not 0600;
    JSON has null where a number is not finite (no validation split: best_val_loss = inf)."""
    old = os.umask(0o022)
    try:
        data = tmp_path / "data.csv"
        assert invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8",
                      "-o", str(data)).exit_code == 0
        run = tmp_path / "run"
        assert invoke("fit", str(data), "--id", "id", "-o", str(run), "--val", "0",
                      "--test", "0", *TINY).exit_code == 0
        forecast = tmp_path / "forecast.csv"
        assert invoke("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5", "-o",
                      str(forecast)).exit_code == 0
    finally:
        os.umask(old)
    written = [data, forecast, *(p for p in run.rglob("*") if p.is_file())]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))

    config = strict((run / "config.json").read_text())
    assert config["fit"]["best_val_loss"] is None
    assert strict((run / "metrics.json").read_text())["fit"]["best_val_loss"] is None


@pytest.mark.parametrize("args, flag, python", [
    (["--epochs", "-5"], "`--epochs -5`: must be > 0", "TrainConfig"),
    (["--horizons", "0.6,0.3"], "`--horizons", "TrainConfig"),
    (["--time", "tt"], "Name it with `--time`", "time=..."),
    (["--states", "x,zz"], "no state column(s) ['zz']", "states="),
])
def test_errors_name_the_command_line_flag(tmp_path, args, flag, python):
    data = tmp_path / "data.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8", "-o", str(data))
    result = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "-o",
                                       str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert flag in result.stderr and python not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--threads", "0", "report", "x"], "'--threads': 0 is not in the range"),
    (["fit", "data.csv"], "Missing option '-o'"),
    (["fit", "data.csv", "-o", "r", "--model", "magic"], "'--model': 'magic' is not one of"),
])
def test_usage_errors_are_one_line_too(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr


def test_a_wrong_system_is_refused_before_training(tmp_path):
    data = tmp_path / "data.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8", "-o", str(data))
    result = CliRunner().invoke(main, ["fit", str(data), "--id", "id", "--system", "lorenz",
                                       "-o", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2, result.output
    assert "`--system lorenz` has 3 states (x, y, z); the data has 2 (x, y)" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    swapped = tmp_path / "swapped.csv"
    pd.read_csv(data)[["t", "id", "y", "x"]].to_csv(swapped, index=False)
    result = CliRunner().invoke(main, ["fit", str(swapped), "--id", "id", "--system",
                                       "lotka-volterra", "-o", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2 and "in another order" in result.stderr
    assert "--states x,y" in result.stderr


def test_resume_refuses_what_it_would_ignore_and_extends_epochs(tmp_path):
    data = tmp_path / "data.csv"
    invoke("simulate", "lotka-volterra", "--trajectories", "4", "--obs", "8", "-o", str(data))
    run = tmp_path / "run"
    assert invoke("fit", str(data), "--id", "id", "-o", str(run), "--val", "0.25",
                  "--test", "0", *TINY).exit_code == 0
    before = (run / "checkpoint.pt").read_bytes()
    for extra, named in ((["--lr", "0.1"], "--lr"), (["--width", "16"], "--width"),
                         ([str(data)], "DATA"), (["--overwrite"], "--overwrite")):
        result = CliRunner().invoke(main, ["fit", "--resume", "-o", str(run), *extra])
        assert result.exit_code == 2 and named in result.stderr, result.stderr
        assert "only --epochs may change" in result.stderr
    result = CliRunner().invoke(main, ["fit", "--resume", "-o", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and "already trained 6 epochs" in result.stderr
    assert (run / "checkpoint.pt").read_bytes() == before  # refused before touching the run
    assert invoke("fit", "--resume", "-o", str(run), "--epochs", "9", "--quiet").exit_code == 0
    assert pd.read_csv(run / "metrics.csv")["epoch"].iloc[-1] == 9
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 9


def test_simulate_help_lists_every_system():
    result = invoke("simulate", "--help")
    listed = " ".join(result.output.split())
    assert all(name in listed for name in SYSTEMS), listed


def test_every_output_option_creates_missing_folders(tmp_path):
    data = tmp_path / "a" / "b" / "data.csv"
    assert invoke("simulate", "lotka-volterra", "--trajectories", "3", "--obs", "8",
                  "-o", str(data)).exit_code == 0
    run = tmp_path / "c" / "d" / "run"
    assert invoke("fit", str(data), "--id", "id", "-o", str(run), "--val", "0", "--test", "0",
                  *TINY).exit_code == 0
    forecast = tmp_path / "e" / "f" / "forecast.csv"
    result = invoke("predict", str(run), "--y0", "1,1", "--t", "0:1:0.5", "-o", str(forecast))
    assert result.exit_code == 0 and forecast.is_file()


def test_predict_times_and_numbers_refuse_huge_grids_and_empty_values():
    """`--t start:stop:step` asking for more than MAX_TIMES times is one line (not numpy's
    MemoryError traceback), and `--y0 1,,1` (an empty value) is refused instead of being
    read as `1,1`; a trailing comma stays harmless."""
    from tidal.cli.main import MAX_TIMES, BadInput, _floats, _times

    for text in ("0:1e9:1e-9", "0:1e300:1e-300", f"0:{MAX_TIMES}:1"):
        with pytest.raises(BadInput, match="at most"):
            _times(text)
    assert len(_times(f"0:{MAX_TIMES - 1}:1")) == MAX_TIMES
    for text, message in (("0", "at least two times"), ("3,2,1", "increasing"),
                          ("0,1,1", "increasing"), ("0:0.05:0.1", "gives one time")):
        with pytest.raises(BadInput, match=message):  # (they were data-file errors about
            _times(text)                              # a trajectory named 'forecast')
    assert _times("0,0.5,2") == [0.0, 0.5, 2.0]
    for text in ("1,,1", ",1", ","):
        with pytest.raises(BadInput, match="empty value"):
            _floats(text, "--y0")
    assert _floats("1, 0.5,", "--y0") == [1.0, 0.5]


@pytest.mark.parametrize(("text", "message"), [
    (b"", "the file is empty"),
    (b"a,b\n\xe9,1\n", "not UTF-8"),
    (b"a,b\n1,2\n3,4,5\n", "line 3 has 3 fields but the header has 2"),
    (b"a,b\n1,2,9\n3,4,9\n", "line 2 has 3 fields"),
    (b'a,b\n"1,2\n', "fields but the header has 2"),
    (b"a;b\n1;2\n", "the file seems to use ';' as separator"),
])
def test_flow_bad_sample_files_are_one_line_errors(tmp_path, text, message):
    """The sample tables of `flow fit` / `diffusion fit` / `score entropy`: an empty file, bad
    UTF-8, a row with too many fields or bad quoting, another separator are exit 2 and one
    line naming the file (they were pandas tracebacks, or rows silently shifted)."""
    bad = tmp_path / "samples.csv"
    bad.write_bytes(text)
    for command in (["flow", "fit"], ["diffusion", "fit"]):
        result = CliRunner().invoke(main, [*command, str(bad), "-o", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_flow_samples_allow_trailing_blank_lines_and_a_bom(tmp_path):
    from tidal.cli.density import read_samples

    path = tmp_path / "samples.csv"
    path.write_bytes("\ufeffa,b\r\n1,2\r\n3,4\r\n\r\n\r\n".encode())
    names, values = read_samples(path, None)
    assert names == ["a", "b"] and values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    parquet = tmp_path / "broken.parquet"
    parquet.write_bytes(b"PAR1 not really")
    with pytest.raises(Exception, match="not a readable Parquet file"):
        read_samples(parquet, None)


@pytest.mark.parametrize("columns", [
    "a",                                         # one dimension: no 2-D figures
    "c,b",                                       # a column of one value: refused
    "big,b",                                     # 1e140: a float32 grid overflowed to NaN
])
def test_flow_report_of_one_column_constant_or_large_data(tmp_path, columns):
    """The flow fit finished but its report raised (one-line errors from the plotting code,
    exit 2, and no report.html): for one column and large values. A constant column is
    refused before training (a point mass has no density; its NLL "passed" its check), and a
    figure's bounds around one value still have a width."""
    from tidal.report.flow import data_bounds

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60), "c": 1.0,
                          "big": 1e140 * rng.normal(size=60)})
    data = tmp_path / "samples.csv"
    table.to_csv(data, index=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["flow", "fit", str(data), "--columns", columns,
                                       "--steps", "2", "--quiet", "-o", str(run)])
    if columns == "c,b":
        assert result.exit_code == 2 and "['c'] hold one value in every row" in result.output
        assert not run.exists()
        low, high = data_bounds(np.array([[1.0, 0.0], [1.0, 2.0]]))[:2]
        assert low < 1.0 < high
        return
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()


def test_interrupted_ensemble_does_not_promise_a_resume(tmp_path, capsys):
    """An interrupted ensemble said "checkpoint saved; continue with: tidal fit --resume",
    which `tidal fit --resume` then refuses (an ensemble keeps no checkpoints)."""
    from tidal.cli.main import finish_run

    for resumable, expected in ((True, "--resume -o"), (False, "cannot be resumed")):
        with pytest.raises(SystemExit) as stop:
            finish_run("interrupted", "stopped", tmp_path, report=lambda _: "r.html",
                       summary=lambda _: "", resume="tidal fit", remedy="",
                       resumable=resumable)
        assert stop.value.code == 130
        err = capsys.readouterr().err
        assert expected in err and (resumable or "--resume -o" not in err)


def test_predict_of_a_model_that_blows_up_is_one_line_in_the_cli_s_terms(tmp_path):
    """dx = x^2 from x = 1 reaches infinity at t = 1: `tidal predict --t 0:2:0.5` fails with
    exit 2 and a line that names --y0 and --t and what to try (the solver's own message
    names `solve(...)` options a command-line user has not got)."""
    from tidal.data import Scaling, Trajectories
    from tidal.models.polynomial import PolynomialODE
    from tidal.training import TrainConfig, save_run

    model = PolynomialODE.from_terms({"dx": {"x^2": 1.0}}, ("x", "y")).double()
    times = np.linspace(0.0, 0.4, 5)
    data = Trajectories([times], [np.stack([1 / (1 - times), np.ones(5)], 1)],
                        state_names=("x", "y"))
    save_run(tmp_path / "run", model, Scaling((0.0, 0.0), (1.0, 1.0)),
             data={"state_names": ["x", "y"]}, train_config=TrainConfig().to_dict(),
             splits={"train": data})
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "--y0", "1,1",
                                       "--t", "0:2:0.5"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot be solved from --y0 1,1 over --t 0:2:0.5" in result.output
    assert "solve(" not in result.output and "shorter --t span" in result.output
    ok = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "--y0", "1,1", "--t",
                                   "0:0.5:0.25"])
    assert ok.exit_code == 0 and len(ok.output.strip().splitlines()) == 4
