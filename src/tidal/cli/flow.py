"""`tidal flow`: continuous normalizing flows from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click


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
@click.option("--steps", default=800, show_default=True)
@click.option("--batch-size", default=512, show_default=True)
@click.option("--lr", default=5e-3, show_default=True)
@click.option("--width", default=64, show_default=True)
@click.option("--depth", default=3, show_default=True)
@click.option("--trace", default="exact", show_default=True,
              type=click.Choice(["exact", "hutchinson"]))
@click.option("--kinetic", default=0.05, show_default=True, help="Kinetic-energy weight.")
@click.option("--jacobian", default=0.05, show_default=True, help="Jacobian-norm weight.")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Replace the run in -o: deletes only the files tidal listed as its own.")
@click.option("--quiet", is_flag=True)
def flow_fit(data: str | None, toy: str | None, samples: int, columns: str | None,
             run_dir: str, seed: int, overwrite: bool, quiet: bool, **options) -> None:
    """Fit a flow to the rows of DATA (CSV or Parquet, one column per dimension) or to --toy."""
    import functools

    import numpy as np
    import torch

    from tidal.cli.main import BadInput
    from tidal.data.toys import TOYS, sample_toy, toy_log_prob
    from tidal.training.flow_run import FlowOptions, train_flow_run

    if (data is None) == (toy is None):
        raise BadInput("give either DATA or --toy NAME")
    true_log_prob = None
    if toy is not None:
        if toy not in TOYS:
            raise BadInput(f"--toy {toy!r} is not known; choose one of {', '.join(TOYS)}")
        points = sample_toy(toy, samples, seed=seed, dtype=torch.float64).numpy()
        names, source = ["x", "y"], {"toy": toy, "samples": samples}
        if toy == "eight-gaussians":
            true_log_prob = functools.partial(toy_log_prob, toy)
    else:
        names, points = _read_samples(Path(data), columns)
        source = {"path": str(data)}
    metrics = train_flow_run(np.asarray(points), run_dir, columns=names,
                             options=FlowOptions(seed=seed, **options), source=source,
                             true_log_prob=true_log_prob, overwrite=overwrite,
                             progress=not quiet)
    if metrics["status"] != "finished":
        click.echo(metrics["message"], err=True)
    line = f"held-out NLL {metrics['val_nll']:.4f} nats"
    if "gap" in metrics:
        line += f" (true density {metrics['true_val_nll']:.4f}, gap {metrics['gap']:+.4f})"
    click.echo(line)
    click.echo(f"report: {Path(run_dir) / 'report.html'}")
    if metrics["status"] == "diverged":
        from tidal.cli.main import EXIT_DIVERGED

        sys.exit(EXIT_DIVERGED)


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


def _read_samples(path: Path, columns: str | None):
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
