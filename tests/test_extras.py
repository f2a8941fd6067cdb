"""`pip install tidal` without the `cli` extra: the solver library works, the command line and
the data/training layers name the extra to install. Each check runs in a subprocess in which
the extra's modules cannot be found (every import finder is told to skip them), as in an
environment where they were never installed; `tests/test_readme.py` checks the install
commands."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

from tidal._extras import CLI_MODULES, INSTALL_CLI

ROOT = Path(__file__).resolve().parents[1]

# Wraps every import finder so that it finds none of HIDDEN: importing one then raises
# ModuleNotFoundError and importlib.util.find_spec returns None, as for an absent package.
HIDE = """
import sys

class Hidden:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)

sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def run_without(hidden: tuple[str, ...], script: str) -> subprocess.CompletedProcess[str]:
    code = f"HIDDEN = {set(hidden)!r}\n{HIDE}\n{textwrap.dedent(script)}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_the_solver_library_works_without_the_cli_extra():
    """odeint, solve and a model against exp(A t) y0, with no module of the extra imported;
    the training and data-file names raise MissingExtraError naming the install command."""
    done = run_without(CLI_MODULES, """
        import torch
        import tidal

        A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)
        y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        ts = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
        exact = torch.stack([torch.linalg.matrix_exp(A * t) @ y0 for t in ts])
        field = lambda t, y: y @ A.T
        ys = tidal.odeint(field, y0, ts, rtol=1e-9, atol=1e-12)
        assert (ys - exact).abs().max() < 1e-7, ys
        controller = tidal.PIDController(rtol=1e-9, atol=1e-12)
        ys = tidal.solve(field, y0, ts, controller=controller).ys
        assert (ys - exact).abs().max() < 1e-7, ys

        class Linear(torch.nn.Module):
            def forward(self, t, y):
                return y @ A.T

        ys = tidal.NeuralODE(Linear())(y0, ts)
        assert (ys - exact).abs().max() < 1e-3, ys

        for name in ("fit", "TrainConfig", "load_run"):
            try:
                getattr(tidal, name)
            except tidal.TidalError as error:
                assert isinstance(error, ModuleNotFoundError), type(error)
                print(error)
            else:
                raise AssertionError(name)
        try:
            tidal.read_table("data.csv")
        except tidal.TidalError as error:
            print(error)
        else:
            raise AssertionError("read_table")
        namespace = {}
        exec("from tidal import *", namespace)  # the names that need the extra are left out
        assert "solve" in namespace and "fit" not in namespace, sorted(namespace)
        loaded = sorted(set(sys.modules) & HIDDEN)
        assert not loaded, loaded
        """)
    assert done.returncode == 0, done.stderr
    messages = done.stdout.splitlines()
    assert messages[:3] == [f"tidal.{name} needs pandas (not installed); install with: "
                            f"{INSTALL_CLI}" for name in ("fit", "TrainConfig", "load_run")]
    assert messages[3] == f"tidal.read_table needs pyarrow (not installed); install with: " \
                          f"{INSTALL_CLI}"


def cli_without(hidden: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `tidal` console script's entry point, called with `args`."""
    (entry,) = metadata.entry_points(group="console_scripts", name="tidal")
    assert entry.value == "tidal.__main__:main", (
        f"the console script runs {entry.value}, not the launcher that checks the extra "
        "(pip install -e again after editing pyproject.toml)")
    return run_without(hidden, f"""
        import sys
        from tidal.__main__ import main
        sys.argv = ["tidal", *{list(args)!r}]
        main()
        """)


def test_the_command_without_the_cli_extra_names_it_in_one_line():
    done = cli_without(CLI_MODULES, "demo")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("tidal: error: the tidal command needs click, matplotlib, pandas, "
                           f"pyarrow, tqdm (not installed); install with: {INSTALL_CLI}\n")


def test_the_command_names_a_module_missing_from_a_partial_install():
    """matplotlib is imported only when a report is drawn: the check at start names it."""
    done = cli_without(("matplotlib",), "demo", "--help")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"tidal: error: the tidal command needs matplotlib (not installed); install with: "
        f"{INSTALL_CLI}"]


def extra(name: str) -> set[str]:
    """The requirements of an extra of the installed tidal, as `name[extras]` without versions
    (pip install -e again after editing pyproject.toml)."""
    requirements = [text.split(";") for text in metadata.requires("tidal") or []]
    return {re.split("[<>=~!]", requirement)[0].strip() for requirement, *marker in requirements
            if marker and marker[0].strip() == f'extra == "{name}"'}


def test_the_cli_extra_brings_the_modules_the_check_looks_for():
    """The check names the packages the `cli` extra installs (their import names are theirs),
    and the test extra pulls the cli extra."""
    assert extra("cli") == set(CLI_MODULES)
    assert "tidal[cli]" in extra("test")
