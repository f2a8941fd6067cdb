"""Optional dependencies. `pip install tidal` brings the solver library (torch, numpy, scipy);
the `cli` extra adds what the command line, data files, training, plots and reports need.
Those layers check for it here, so that a missing one is named with the command to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from types import ModuleType

from tidal._errors import MissingExtraError

CLI_MODULES = ("click", "matplotlib", "pandas", "pyarrow", "tqdm")
INSTALL_CLI = 'pip install "tidal[cli]"'


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level modules among `modules` that are not installed (found without importing
    them)."""
    return [name for name in modules if not _installed(name)]


def require(modules: Iterable[str], feature: str) -> None:
    """Raise MissingExtraError if `feature` needs one of `modules` and it is not installed."""
    absent = missing(modules)
    if absent:
        raise MissingExtraError(missing_message(absent, feature))


def import_layer(module: str, feature: str) -> ModuleType:
    """Import a tidal layer that imports the `cli` extra's modules; one of them missing raises
    MissingExtraError naming it, any other import error propagates."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        name = (error.name or "").partition(".")[0]
        if name not in CLI_MODULES:
            raise
        raise MissingExtraError(missing_message([name], feature)) from error


def missing_message(absent: list[str], feature: str) -> str:
    return f"{feature} needs {', '.join(absent)} (not installed); install with: {INSTALL_CLI}"


def _installed(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None
