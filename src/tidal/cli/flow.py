"""`tidal flow`: continuous normalizing flows from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tidal.cli.main import nproc_option


@click.group()
def flow() -> None:
    """Learn a probability density with a continuous normalizing flow (FFJORD)."""


@flow.command("fit")
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option("--toy", default=None, help="A built-in 2-D density instead of DATA: "
              "eight-gaussians, two-moons, rings, checkerboard, pinwheel.")
@click.option("--samples", default=4000, show_default=True, help="Samples drawn from --toy.")
@click.option("--columns", default=None, help="Columns of DATA to model (default: all).")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--steps", default=800, show_default=True,
              help="Optimizer steps; with --resume, a new total (at least those trained).")
@click.option("--batch-size", default=512, show_default=True)
@click.option("--lr", default=5e-3, show_default=True)
@click.option("--width", default=64, show_default=True)
@click.option("--depth", default=3, show_default=True)
@click.option("--trace", default="exact", show_default=True,
              type=click.Choice(["exact", "hutchinson"]))
@click.option("--kinetic", default=0.05, show_default=True, help="Kinetic-energy weight.")
@click.option("--jacobian", default=0.05, show_default=True, help="Jacobian-norm weight.")
@click.option("--checkpoint-every", default=100, show_default=True,
              help="Steps between checkpoints (for --resume).")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the flow run in -o from its checkpoint.")
@nproc_option
@click.option("--overwrite", is_flag=True,
              help="Replace the run in -o: deletes only the files tidal listed as its own.")
@click.option("--quiet", is_flag=True)
@click.pass_context
def flow_fit(ctx: click.Context, data: str | None, toy: str | None, samples: int,
             columns: str | None, run_dir: str, seed: int, resume: bool, nproc: int,
             overwrite: bool, quiet: bool, **options: Any) -> None:
    """Fit a flow to the rows of DATA (CSV or Parquet, one column per dimension) or to --toy.

    --resume continues the run in -o with its own data and settings (only --steps may change:
    a new total); the result equals an uninterrupted run."""
    import numpy as np
    import torch

    from tidal.cli.main import BadInput, refuse_changes_on_resume, start_processes
    from tidal.data.toys import TOYS, sample_toy
    from tidal.training.flow_run import FlowOptions, resume_flow_run, train_flow_run

    if resume:
        refuse_changes_on_resume(ctx, run_dir, frozenset({"run_dir", "resume", "steps",
                                                          "quiet", "nproc"}), "--steps")
        start_processes(nproc)
        given = ctx.get_parameter_source("steps") != click.core.ParameterSource.DEFAULT
        history = resume_flow_run(run_dir, steps=options["steps"] if given else None,
                                  progress=not quiet)
        _finish(history.status, history.message, Path(run_dir))
        return
    if (data is None) == (toy is None):
        raise BadInput("give either DATA or --toy NAME")
    if toy is not None:
        if toy not in TOYS:
            raise BadInput(f"--toy {toy!r} is not known; choose one of {', '.join(TOYS)}")
        points = sample_toy(toy, samples, seed=seed, dtype=torch.float64).numpy()
        names, source = ["x", "y"], {"toy": toy, "samples": samples}
    else:
        assert data is not None  # one of the two, checked above
        names, points = _read_samples(Path(data), columns)
        source = {"path": str(data)}
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
@click.option("-n", "count", default=1000, show_default=True, help="Number of samples.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="CSV file (default: print CSV).")
@click.option("--seed", default=0, show_default=True)
def flow_sample(run_dir: str, count: int, output: str | None, seed: int) -> None:
    """Draw samples from the flow in RUN_DIR."""
    import pandas as pd

    from tidal._files import atomic_path
    from tidal.cli.main import notify, output_file
    from tidal.training.flow_run import load_flow_run

    run = load_flow_run(run_dir)
    notify(run.notice)
    table = pd.DataFrame(run.sample(count, seed=seed), columns=run.config["columns"])
    if output is None:
        click.echo(table.to_csv(index=False), nl=False)
        return
    with atomic_path(output_file(output)) as tmp:
        table.to_csv(tmp, index=False)
    click.echo(f"wrote {count} samples to {output}")


def _read_samples(path: Path, columns: str | None) -> tuple[list[str], Any]:
    """A table of samples: every chosen column numeric and complete; errors name the line."""
    import numpy as np
    import pandas as pd

    from tidal.cli.main import BadInput

    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    table = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else \
        pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    names = list(table.columns) if columns is None else [c.strip() for c in columns.split(",")]
    unknown = [name for name in names if name not in table.columns]
    if unknown:
        raise BadInput(f"{path}: unknown column(s) {unknown}; the file has "
                       f"{list(table.columns)}")
    values = table[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = bad[0]
        raise BadInput(f"{path}: line {row + 2}, column {names[column]!r}: "
                       f"{table[names[column]].iloc[row]!r} is not a finite number")
    return names, values
