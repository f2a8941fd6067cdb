"""`tidal flow`: continuous normalizing flows from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tidal.cli.density import (
    checked_output,
    fit_options,
    resume_if_asked,
    sample_options,
    table_samples,
    toy_samples,
    write_samples,
)


@click.group()
def flow() -> None:
    """Learn a probability density with a continuous normalizing flow (FFJORD)."""


@flow.command("fit")
@fit_options(samples=4000, steps=800, lr=5e-3, width=64, model_options=(
    click.option("--trace", default="exact", show_default=True,
                 type=click.Choice(["exact", "hutchinson"])),
    click.option("--kinetic", default=0.05, show_default=True, help="Kinetic-energy weight."),
    click.option("--jacobian", default=0.05, show_default=True, help="Jacobian-norm weight."),
    click.option("--checkpoint-every", default=100, show_default=True,
                 help="Steps between checkpoints (for --resume)."),
))
def flow_fit(ctx: click.Context, data: str | None, toy: str | None, samples: int,
             columns: str | None, run_dir: str, seed: int, resume: bool, nproc: int,
             overwrite: bool, quiet: bool, **options: Any) -> None:
    """Fit a flow to the rows of DATA (CSV or Parquet, one column per dimension) or to --toy.

    --resume continues the run in -o with its own data and settings (only --steps may change:
    a new total); the result equals an uninterrupted run."""
    import numpy as np

    from tidal.cli.main import BadInput, start_processes
    from tidal.training.flow_run import FlowOptions, resume_flow_run, train_flow_run

    if resume_if_asked(ctx, run_dir, resume, nproc, quiet, options["steps"], resume_flow_run,
                       _finish):
        return
    if (data is None) == (toy is None):
        raise BadInput("give either DATA or --toy NAME")
    if toy is not None:
        names, points, source = toy_samples(toy, samples, seed)
    else:
        assert data is not None  # one of the two, checked above
        names, points, source = table_samples(data, columns)
    start_processes(nproc)
    history = train_flow_run(np.asarray(points), run_dir, columns=names,
                             options=FlowOptions(seed=seed, **options), source=source,
                             overwrite=overwrite, progress=not quiet)
    _finish(history.status, history.message, Path(run_dir))


def _finish(status: str, message: str, run_dir: Path) -> None:
    from tidal.cli.main import finish_run
    from tidal.report.flow import flow_summary, write_flow_report

    finish_run(status, message, run_dir, report=write_flow_report, summary=flow_summary,
               resume="tidal flow fit", remedy="a lower --lr or stronger --kinetic/--jacobian")


@flow.command("sample")
@click.argument("run_dir", type=click.Path(file_okay=False))
@sample_options
@click.option("--seed", default=0, show_default=True)
def flow_sample(run_dir: str, count: int, output: str | None, overwrite: bool,
                seed: int) -> None:
    """Draw samples from the flow in RUN_DIR."""
    from tidal.cli.main import notify
    from tidal.training.flow_run import load_flow_run

    output = checked_output(output, overwrite)
    run = load_flow_run(run_dir)
    notify(run.notice)
    write_samples(run.sample(count, seed=seed), run.config["columns"], output)
