"""Damaged or edited run files: every one is a one-line error naming the file and what is
wrong (exit code 2), never a traceback, a wrong answer from mismatched weights, or a huge
allocation. A hypothesis test edits config.json and model.pt at random.

References: the CLI's contract (exit 0 or 2, one line on stderr), and for the malicious
pickle, the absence of the file its payload would create.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidal.cli.main import main
from tidal.data import simulate, write_table

TINY = ["--epochs", "4", "--horizons", "1.0", "--width", "8", "--depth", "1", "--quiet"]
PREDICT = ["--y0", "1.0,0.5", "--t", "0:1:0.5"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pristine")
    write_table(simulate("lotka-volterra", 5, n_obs=10, noise=0.02, seed=1), folder / "d.csv")
    result = CliRunner().invoke(main, ["fit", str(folder / "d.csv"), "--id", "id",
                                       "--system", "lotka-volterra", "-o",
                                       str(folder / "run"), "--val", "0.2", "--test", "0.2",
                                       *TINY])
    assert result.exit_code == 0, result.output
    return folder / "run"


def edit_config(run: Path, change) -> None:
    config = json.loads((run / "config.json").read_text())
    config = change(config)
    (run / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))


def set_key(path: str, value):
    def change(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
        return config
    return change


def drop_key(key: str):
    def change(config):
        del config[key]
        return config
    return change


class _Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _hostile(run: Path) -> None:
    (run / "model.pt").write_bytes(pickle.dumps({"weights": _Payload()}))


CASES = {
    "empty model.pt": (lambda run: (run / "model.pt").write_bytes(b""), "predict",
                       ["model.pt", "cannot be loaded"]),
    "config.json is []": (lambda run: edit_config(run, lambda c: "[]"), "predict",
                          ["config.json", "expected an object, got a list"]),
    "config.json misses scaling": (lambda run: edit_config(run, drop_key("scaling")),
                                   "predict", ["config.json", "scaling: missing"]),
    "edited width": (lambda run: edit_config(run, set_key("model.vector_field.width", 9)),
                     "predict", ["model.pt", "shape"]),
    "width 1e9": (lambda run: edit_config(run, set_key("model.vector_field.width", 10**9)),
                  "predict", ["config.json", "model.vector_field.width",
                              "outside [1, 65536]"]),
    "width and depth at their limits": (
        lambda run: edit_config(run, lambda c: set_key("model.vector_field.depth", 100)(
            set_key("model.vector_field.width", 65536)(c))),
        "predict", ["config.json", "parameters, above the limit"]),
    "removed data/": (lambda run: shutil.rmtree(run / "data"), "report",
                      ["data/train.csv", "is missing"]),
    "NaN in config.json": (lambda run: edit_config(
        run, lambda c: json.dumps(c).replace('"rtol": 0.0001', '"rtol": NaN')), "predict",
        ["config.json", "not valid JSON", "NaN"]),
    "unknown solver": (lambda run: edit_config(run, set_key("model.solver", "magic")),
                       "predict", ["config.json", "model.solver", "'magic' is not one of"]),
    "system of another size": (lambda run: edit_config(run, set_key("data.system", "lorenz")),
                               "predict", ["config.json", "system 'lorenz' has 3 states"]),
    "unknown split": (lambda run: edit_config(run, set_key("data.split", "nope")),
                      "report", ["config.json", "data.split", "'nope' is not one of"]),
    "negative epochs": (lambda run: edit_config(run, set_key("train.epochs", -5)),
                        "predict", ["config.json", "train:", "epochs"]),
    "states mismatch": (lambda run: edit_config(run, set_key("data.state_names", ["a"])),
                        "predict", ["config.json", "scaling has 2 offsets"]),
    "damaged marker": (lambda run: (run / "tidal-run.json").write_text("{"), "predict",
                       ["tidal-run.json", "not valid JSON"]),
    "marker of an unknown state": (lambda run: (run / "tidal-run.json").write_text(
        json.dumps({**json.loads((run / "tidal-run.json").read_text()), "state": "zombie"})),
        "report", ["tidal-run.json", "state 'zombie'"]),
    "removed model.pt": (lambda run: (run / "model.pt").unlink(), "predict",
                         ["model.pt", "is missing"]),
    "malicious pickle": (_hostile, "predict", ["model.pt", "cannot be loaded"]),
    "weights of the wrong dtype": (lambda run: __import__("torch").save(
        {k: v.to(__import__("torch").int64) for k, v in __import__("torch").load(
            run / "model.pt", weights_only=True).items()}, run / "model.pt"),
        "predict", ["model.pt", "dtype"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_file_is_a_one_line_error(tmp_path, monkeypatch, pristine, case):
    damage, command, fragments = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    damage(run)
    monkeypatch.chdir(tmp_path)
    args = [command, str(run), *(PREDICT if command == "predict" else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("tidal: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert "weights_only" not in line  # never advise loading untrusted pickles
    assert not (tmp_path / "PWNED").exists()


# --- random edits -----------------------------------------------------------------------------

def _leaves(value, path=()):
    """Paths to every value in a JSON document (containers included)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


REPLACEMENTS = st.sampled_from(
    [None, True, False, -1, 0, 1, 3, 0.5, -0.5, 2**31, 10**9, 10**30, 1e300, -1e300, 1e-300,
     "", "x", "tsit5", "MLP", "NeuralODE", [], [1.0], [1.0, 2.0, 3.0], {}, {"type": "MLP"}])


def _invoke_predict(run: Path):
    return CliRunner().invoke(main, ["predict", str(run), *PREDICT])


def _assert_clean(result) -> None:
    assert result.exit_code in (0, 2), (result.output, repr(result.exception))
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


RANDOM_EDITS = settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _fresh_copy(tmp_path: Path, pristine: Path) -> Path:
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(pristine, run)
    return run


@RANDOM_EDITS
@given(data=st.data())
def test_random_edits_of_config_json_exit_0_or_2(tmp_path, pristine, data):
    run = _fresh_copy(tmp_path, pristine)
    config = json.loads((run / "config.json").read_text())
    paths = list(_leaves(config))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(paths), label="path")
        action = data.draw(st.sampled_from(["replace", "delete"]), label="action")
        if not path:
            config = data.draw(REPLACEMENTS, label="document")
            break
        try:
            parent = config
            for key in path[:-1]:
                parent = parent[key]
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(REPLACEMENTS, label="value")
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    (run / "config.json").write_text(json.dumps(config))
    _assert_clean(_invoke_predict(run))


@RANDOM_EDITS
@given(data=st.data())
def test_random_bytes_in_config_json_and_model_pt_exit_0_or_2(tmp_path, pristine, data):
    run = _fresh_copy(tmp_path, pristine)
    name = data.draw(st.sampled_from(["config.json", "model.pt"]), label="file")
    content = bytearray((run / name).read_bytes())
    action = data.draw(st.sampled_from(["truncate", "flip", "overwrite"]), label="action")
    at = data.draw(st.integers(0, len(content) - 1), label="at")
    if action == "truncate":
        del content[at:]
    elif action == "flip":
        content[at] ^= data.draw(st.integers(1, 255), label="bits")
    else:
        patch = data.draw(st.binary(min_size=1, max_size=16), label="patch")
        content[at:at + len(patch)] = patch
    (run / name).write_bytes(bytes(content))
    _assert_clean(_invoke_predict(run))
