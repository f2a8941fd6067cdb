"""`tidal fit --model sde|latent-sde`: the SDE models' part of the `fit` command (the run
itself is `tidal.training.sde_run`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tidal.data import Trajectories
from tidal.training.config import TrainConfig

#: `fit` options that do not apply to SDE models, with the value that means "not given".
_NOT_FOR_SDE = {"ensemble": 1, "bootstrap": None, "workers": 1, "prefit": False,
                "shooting_segments": 1, "separable": False, "known": None, "params": (),
                "system": None, "solver": "auto", "adjoint": "checkpoint",
                "horizons": "0.3,0.6,1.0", "shooting_weight": 1.0, "rate_scale": "auto",
                "augment": 0, "linear_term": None, "auto": 0, "refit": None, "discover": False}


def fit_sde(ctx: click.Context, data: Trajectories, run_dir: str, kw: dict[str, Any],
            config: TrainConfig, *, split: tuple[float, float], split_by: str,
            source: dict[str, Any], overwrite: bool) -> Any:
    """Fit an SDE model on `data` into `run_dir`; options that do not apply are refused."""
    from tidal.cli.main import BadInput
    from tidal.training.sde_run import SDEOptions, train_sde_run

    given = {**ctx.params, **kw}
    wrong = [name for name, unset in _NOT_FOR_SDE.items() if given.get(name, unset) != unset]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise BadInput(f"{flags} do(es) not apply to --model {kw['kind']}; leave them out")
    dt_given = ctx.get_parameter_source("dt") != click.core.ParameterSource.DEFAULT
    options = SDEOptions(kind=kw["kind"], width=kw["width"], depth=kw["depth"],
                         activation=kw["activation"], dt=kw["dt"] if dt_given else None)
    config = dataclasses.replace(config, horizons=(1.0,))  # no curriculum for SDE models
    return train_sde_run(data, run_dir, options=options, config=config, split=split,
                         split_by=split_by, source=source, overwrite=overwrite,
                         progress=not kw["quiet"])


def resume_fit(run_dir: str, *, epochs: int | None, progress: bool,
               fallback: Callable[..., Any]) -> Any:
    """`fit --resume`: an SDE run continues through `resume_sde_run`, any other through
    `fallback` (the trajectory runs' `resume_run`)."""
    from tidal.training import RunDirectory
    from tidal.training.sde_run import resume_sde_run

    found = RunDirectory.find(Path(run_dir))
    if found is not None and found.kind == "sde":
        return resume_sde_run(run_dir, epochs=epochs, progress=progress)
    return fallback(run_dir, epochs=epochs, progress=progress)
