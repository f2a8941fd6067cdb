"""The README's shell commands run as written, in order, in a fresh folder (with small
training settings appended: the results they claim are measured in docs/benchmarks.md)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tidal.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"

# Appended to each command (click keeps an option's last value): enough to run every step of
# the workflow, not to learn anything.
SMALL = {("simulate",): ["--trajectories", "6", "--obs", "10"],
         ("fit",): ["--epochs", "4", "--horizons", "1.0", "--width", "8", "--depth", "1",
                    "--quiet"],
         ("demo",): ["--epochs", "3", "--quiet"],
         ("flow", "fit"): ["--steps", "3", "--samples", "256", "--batch-size", "64",
                           "--width", "8", "--depth", "1", "--quiet"],
         ("flow", "sample"): ["-n", "20"]}


def bash_blocks() -> list[list[str]]:
    """The lines of each ```bash block of the README."""
    return [block.strip("\n").splitlines()
            for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)]


def test_the_first_block_is_the_two_setup_commands():
    """.ci/run executes the second line; the first sets up and runs `tidal demo`, which needs
    the `cli` extra (the test extra includes it: tests/test_extras.py)."""
    first = bash_blocks()[0]
    assert len(first) == 2
    demo, tests = first
    assert demo.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert '-e ".[cli]"' in demo and demo.endswith("&& .venv/bin/tidal demo")
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert '-e ".[test]"' in tests and tests.endswith(".venv/bin/python -m pytest -n 2")


def readme_commands() -> list[list[str]]:
    """Every command of the README as tidal arguments: the demo of the first block, then each
    line of the other blocks (comments dropped); `source .venv/bin/activate` is checked to
    name the environment the first block creates."""
    blocks = bash_blocks()
    commands = [shlex.split(blocks[0][0].split("&&")[-1])]
    for block in blocks[1:]:
        for line in block:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "source":
                assert words == ["source", ".venv/bin/activate"], line
                continue
            commands.append(words)
    for words in commands:
        assert words[0] in ("tidal", ".venv/bin/tidal"), words
    return [words[1:] for words in commands]


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 10
    runner = CliRunner()
    for args in commands:
        extra = SMALL.get(tuple(args[:2]), SMALL.get(tuple(args[:1]), []))
        result = runner.invoke(main, [*args, *extra])
        assert result.exit_code == 0, f"tidal {shlex.join(args)}\n{result.output}"
    for produced in ("runs/demo/report.html", "runs/toggle/report.html", "forecast.csv",
                     "runs/ham/report.html", "runs/ude/report.html", "samples.csv"):
        assert (tmp_path / produced).is_file(), produced


def test_the_solver_snippets_run_as_written():
    """The README's Python blocks that solve (the first solve, the stiff example, gradients),
    run in order in one namespace as a reader would paste them."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    snippets = [block for block in blocks if ("tidal.solve(f" in block or "rober" in block)
                and "solve_ensemble" not in block]  # (that one needs torchrun)
    assert len(snippets) == 3
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["stiff"].status == namespace["tidal"].Status.SUCCESS
    assert namespace["y0"].grad is not None and torch.isfinite(namespace["y0"].grad).all()
