"""`tidal diffusion`: score-based generative models from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tidal.cli.density import (
    checked_output,
    fit_options,
    read_samples,
    resume_if_asked,
    sample_options,
    table_samples,
    toy_samples,
    write_samples,
)


@click.group()
def diffusion() -> None:
    """Learn a density with a score-based diffusion model (VP SDE): fit, sample, likelihood."""


@diffusion.command("fit")
@fit_options(samples=20000, steps=4000, lr=2e-3, width=128, sources=(
    click.option("--digits", is_flag=True, help="scikit-learn's 8 x 8 handwritten digits "
                 "(1797 images, 17 grey levels; needs scikit-learn: pip install "
                 "tidal[examples])."),
), model_options=(
    click.option("--weighting", default="likelihood", show_default=True,
                 type=click.Choice(["likelihood", "standard"])),
))
def diffusion_fit(ctx: click.Context, data: str | None, toy: str | None, digits: bool,
                  samples: int, columns: str | None, run_dir: str, seed: int, resume: bool,
                  nproc: int, overwrite: bool, quiet: bool, **options: Any) -> None:
    """Fit a score model to the rows of DATA (CSV or Parquet), --toy or --digits; write the
    run and its report (held-out likelihood by the probability-flow ODE, samples).

    --resume continues the run in -o with its own data and settings (only --steps may change:
    a new total); the result equals an uninterrupted run."""
    import numpy as np

    from tidal.cli.main import BadInput, start_processes
    from tidal.diffusion.processes import VPSDE
    from tidal.training.diffusion_run import (
        DiffusionOptions,
        resume_diffusion_run,
        train_diffusion_run,
    )

    if resume_if_asked(ctx, run_dir, resume, nproc, quiet, options["steps"],
                       resume_diffusion_run, _finish):
        return
    if sum(x is not None and x is not False for x in (data, toy, digits)) != 1:
        raise BadInput("give one of DATA, --toy NAME or --digits")
    levels = None
    if toy is not None:
        names, points, source = toy_samples(toy, samples, seed)
    elif digits:
        try:
            from sklearn.datasets import load_digits  # type: ignore[import-untyped]
        except ImportError:
            raise BadInput("--digits needs scikit-learn: pip install 'tidal[examples]'") from None
        points = load_digits().data
        names, source, levels = [f"p{i}" for i in range(64)], {"digits": True}, 17
    else:
        assert data is not None  # one of the three, checked above
        names, points, source = table_samples(data, columns)
    start_processes(nproc)
    history = train_diffusion_run(np.asarray(points), run_dir, columns=names,
                                  process=VPSDE(), levels=levels,
                                  options=DiffusionOptions(seed=seed, **options),
                                  source=source, overwrite=overwrite, progress=not quiet)
    _finish(history.status, history.message, Path(run_dir))


def _finish(status: str, message: str, run_dir: Path) -> None:
    from tidal.cli.main import finish_run
    from tidal.report.diffusion import diffusion_summary, write_diffusion_report

    finish_run(status, message, run_dir, report=write_diffusion_report,
               summary=diffusion_summary, resume="tidal diffusion fit", remedy="a lower --lr")


@diffusion.command("sample")
@click.argument("run_dir", type=click.Path(file_okay=False))
@sample_options
@click.option("--sampler", default="heun", show_default=True,
              type=click.Choice(["heun", "probability-flow", "reverse-sde"]))
@click.option("--steps", default=20, show_default=True,
              help="Heun times (2 x steps NFE) or reverse-SDE steps.")
@click.option("--seed", default=0, show_default=True)
def diffusion_sample(run_dir: str, count: int, sampler: str, steps: int, output: str | None,
                     overwrite: bool, seed: int) -> None:
    """Draw samples from the model in RUN_DIR (the NFE goes to stderr)."""
    from tidal.training.diffusion_run import load_diffusion_run

    output = checked_output(output, overwrite)
    run = load_diffusion_run(run_dir)
    values, nfe = run.sample(count, sampler=sampler, steps=steps, seed=seed)
    click.echo(f"{sampler}: {nfe} score evaluations", err=True)
    write_samples(values, run.config["columns"], output)


@diffusion.command("likelihood")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
def diffusion_likelihood(run_dir: str, data: str) -> None:
    """Mean negative log-likelihood of the rows of DATA (the run's columns) by the
    probability-flow ODE: nats per sample, or bits/dim for discrete data."""
    from tidal.training.diffusion_run import load_diffusion_run

    run = load_diffusion_run(run_dir)
    _, points = read_samples(Path(data), ",".join(run.config["columns"]))
    nll, nfe = run.nll(points)
    unit = "nats" if run.levels is None else "bits/dim"
    click.echo(f"NLL {nll:.4f} {unit} over {len(points)} rows ({nfe} NFE)")
