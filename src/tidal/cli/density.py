"""What the density commands (`tidal flow`, `tidal diffusion`) share: the fit's common
options, the toy or table the samples come from, resuming a run and writing samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tidal.cli.main import nproc_option, overwrite_file_option

Command = Callable[..., Any]


def fit_options(*, samples: int, steps: int, lr: float, width: int,
                sources: tuple[Callable[[Command], Command], ...] = (),
                model_options: tuple[Callable[[Command], Command], ...] = ()
                ) -> Callable[[Command], Command]:
    """The options of every density fit, with this model's defaults; `sources` (other
    built-in data than --toy) follow --toy, `model_options` (this model's own) follow the
    shared training options."""
    shared_head = (
        click.argument("data", required=False, type=click.Path(dir_okay=False)),
        click.option("--toy", default=None, help="A built-in 2-D density instead of DATA: "
                     "eight-gaussians, two-moons, rings, checkerboard, pinwheel."),
    )
    shared_body = (
        click.option("--samples", default=samples, show_default=True,
                     help="Samples drawn from --toy."),
        click.option("--columns", default=None,
                     help="Columns of DATA to model (default: all)."),
        click.option("-o", "--output", "run_dir", required=True,
                     type=click.Path(file_okay=False)),
        click.option("--steps", default=steps, show_default=True,
                     help="Optimizer steps; with --resume, a new total (at least those "
                          "trained)."),
        click.option("--batch-size", default=512, show_default=True),
        click.option("--lr", default=lr, show_default=True),
        click.option("--width", default=width, show_default=True),
        click.option("--depth", default=3, show_default=True),
    )
    shared_tail = (
        click.option("--seed", default=0, show_default=True),
        click.option("--resume", is_flag=True,
                     help="Continue the run in -o from its checkpoint."),
        nproc_option,
        click.option("--overwrite", is_flag=True,
                     help="Replace the run in -o: deletes only the files tidal listed as its "
                          "own."),
        click.option("--quiet", is_flag=True),
        click.pass_context,
    )

    def apply(command: Command) -> Command:
        decorators = shared_head + sources + shared_body + model_options + shared_tail
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def resume_if_asked(ctx: click.Context, run_dir: str, resume: bool, nproc: int,
                    quiet: bool, steps: int, resume_run: Callable[..., Any],
                    finish: Callable[[str, str, Path], None]) -> bool:
    """With --resume: refuse any other changed option, continue the run in `run_dir` (a new
    --steps total if given) and finish it; True when it did."""
    from tidal.cli.main import refuse_changes_on_resume, start_processes

    if not resume:
        return False
    refuse_changes_on_resume(ctx, run_dir, frozenset({"run_dir", "resume", "steps", "quiet",
                                                      "nproc"}), "--steps")
    start_processes(nproc)
    given = ctx.get_parameter_source("steps") != click.core.ParameterSource.DEFAULT
    history = resume_run(run_dir, steps=steps if given else None, progress=not quiet)
    finish(history.status, history.message, Path(run_dir))
    return True


def toy_samples(toy: str, samples: int, seed: int) -> tuple[list[str], Any, dict[str, Any]]:
    """`samples` points of the built-in density `toy`: column names, points, source."""
    import torch

    from tidal.cli.main import BadInput
    from tidal.data.toys import TOYS, sample_toy

    if toy not in TOYS:
        raise BadInput(f"--toy {toy!r} is not known; choose one of {', '.join(TOYS)}")
    points = sample_toy(toy, samples, seed=seed, dtype=torch.float64).numpy()
    return ["x", "y"], points, {"toy": toy, "samples": samples}


def table_samples(data: str, columns: str | None) -> tuple[list[str], Any, dict[str, Any]]:
    """The rows of the table `data` to fit a density to: column names, points, source. A
    column of one value is refused: a density has no spread to learn there (a point mass),
    and the fit's log-likelihood would mean nothing."""
    import numpy as np

    from tidal.cli.main import BadInput

    names, points = read_samples(Path(data), columns)
    constant = [name for name, column in zip(names, points.T) if np.ptp(column) == 0]
    if constant:
        raise BadInput(f"{data}: column(s) {constant} hold one value in every row: there is no "
                       "spread to learn a density of; leave them out with --columns")
    return names, points, {"path": str(data)}


def read_samples(path: Path, columns: str | None) -> tuple[list[str], Any]:
    """A table of samples: every chosen column numeric and complete; errors name the line."""
    import numpy as np
    import pandas as pd

    from tidal.cli.main import BadInput
    from tidal.data.io import _CsvTable

    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    if path.suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as error:  # pyarrow's (ArrowInvalid is a ValueError)
            raise BadInput(f"{path}: not a readable Parquet file ({error})") from None
        where = [f"row {row + 1}" for row in range(len(table))]
    else:
        # tidal's exact CSV reader: UTF-8 (with or without BOM), blank lines skipped, a row
        # with the wrong number of fields or bad quoting named by its line, a header of one
        # column holding another separator named as such
        csv_table = _CsvTable(path)
        table = pd.DataFrame(csv_table.cells, columns=csv_table.columns, dtype=object)
        where = [f"line {line}" for line in csv_table.lines]
    names = list(table.columns) if columns is None else [c.strip() for c in columns.split(",")]
    unknown = [name for name in names if name not in table.columns]
    if unknown:
        raise BadInput(f"{path}: unknown column(s) {unknown}; the file has "
                       f"{list(table.columns)}")
    values = table[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = bad[0]
        raise BadInput(f"{path}: {where[row]}, column {names[column]!r}: "
                       f"{table[names[column]].iloc[row]!r} is not a finite number")
    return names, values


def sample_options(command: Command) -> Command:
    """`-n`, `-o` and `--overwrite` of the sample commands."""
    command = overwrite_file_option(command)
    command = click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
                           help="CSV file (default: print CSV).")(command)
    return click.option("-n", "count", default=1000, show_default=True,
                        help="Number of samples.")(command)


def checked_output(output: str | None, overwrite: bool) -> str | None:
    """The sample file named with -o, checked before sampling (`output_file`)."""
    from tidal.cli.main import output_file

    return None if output is None else output_file(output, overwrite)


def write_samples(values: Any, columns: list[str], output: str | None) -> None:
    """Print the samples as CSV, or write them to `output` (checked; atomically)."""
    import pandas as pd

    from tidal._files import atomic_path

    table = pd.DataFrame(values, columns=columns)
    if output is None:
        click.echo(table.to_csv(index=False), nl=False)
        return
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    click.echo(f"wrote {len(table)} samples to {output}")
