"""`tidal diffusion`: score-based generative models from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tidal.cli.main import nproc_option


@click.group()
def diffusion() -> None:
    """Learn a density with a score-based diffusion model (VP SDE): fit, sample, likelihood."""


@diffusion.command("fit")
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option("--toy", default=None, help="A built-in 2-D density instead of DATA: "
              "eight-gaussians, two-moons, rings, checkerboard, pinwheel.")
@click.option("--digits", is_flag=True, help="scikit-learn's 8 x 8 handwritten digits "
              "(1797 images, 17 grey levels; needs scikit-learn: pip install tidal[examples]).")
@click.option("--samples", default=20000, show_default=True, help="Samples drawn from --toy.")
@click.option("--columns", default=None, help="Columns of DATA to model (default: all).")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--steps", default=4000, show_default=True,
              help="Optimizer steps; with --resume, a new total (at least those trained).")
@click.option("--batch-size", default=512, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--depth", default=3, show_default=True)
@click.option("--weighting", default="likelihood", show_default=True,
              type=click.Choice(["likelihood", "standard"]))
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue the diffusion run in -o from its checkpoint.")
@nproc_option
@click.option("--overwrite", is_flag=True,
              help="Replace the run in -o: deletes only the files tidal listed as its own.")
@click.option("--quiet", is_flag=True)
@click.pass_context
def diffusion_fit(ctx: click.Context, data: str | None, toy: str | None, digits: bool,
                  samples: int, columns: str | None, run_dir: str, seed: int, resume: bool,
                  nproc: int, overwrite: bool, quiet: bool, **options: Any) -> None:
    """Fit a score model to the rows of DATA (CSV or Parquet), --toy or --digits; write the
    run and its report (held-out likelihood by the probability-flow ODE, samples).

    --resume continues the run in -o with its own data and settings (only --steps may change:
    a new total); the result equals an uninterrupted run."""
    import numpy as np
    import torch

    from tidal.cli.main import BadInput, refuse_changes_on_resume, start_processes
    from tidal.data.toys import TOYS, sample_toy
    from tidal.diffusion.processes import VPSDE
    from tidal.training.diffusion_run import (
        DiffusionOptions,
        resume_diffusion_run,
        train_diffusion_run,
    )

    if resume:
        refuse_changes_on_resume(ctx, run_dir, frozenset({"run_dir", "resume", "steps",
                                                          "quiet", "nproc"}), "--steps")
        start_processes(nproc)
        given = ctx.get_parameter_source("steps") != click.core.ParameterSource.DEFAULT
        history = resume_diffusion_run(run_dir, steps=options["steps"] if given else None,
                                       progress=not quiet)
        _finish(history.status, history.message, Path(run_dir))
        return

    if sum(x is not None and x is not False for x in (data, toy, digits)) != 1:
        raise BadInput("give one of DATA, --toy NAME or --digits")
    levels = None
    if toy is not None:
        if toy not in TOYS:
            raise BadInput(f"--toy {toy!r} is not known; choose one of {', '.join(TOYS)}")
        points = sample_toy(toy, samples, seed=seed, dtype=torch.float64).numpy()
        names, source = ["x", "y"], {"toy": toy, "samples": samples}
    elif digits:
        try:
            from sklearn.datasets import load_digits  # type: ignore[import-untyped]
        except ImportError:
            raise BadInput("--digits needs scikit-learn: pip install 'tidal[examples]'") from None
        points = load_digits().data
        names, source, levels = [f"p{i}" for i in range(64)], {"digits": True}, 17
    else:
        from tidal.cli.flow import _read_samples

        assert data is not None
        names, points = _read_samples(Path(data), columns)
        source = {"path": str(data)}
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
@click.option("-n", "count", default=1000, show_default=True, help="Number of samples.")
@click.option("--sampler", default="heun", show_default=True,
              type=click.Choice(["heun", "probability-flow", "reverse-sde"]))
@click.option("--steps", default=20, show_default=True,
              help="Heun times (2 x steps NFE) or reverse-SDE steps.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="CSV file (default: print CSV).")
@click.option("--seed", default=0, show_default=True)
def diffusion_sample(run_dir: str, count: int, sampler: str, steps: int, output: str | None,
                     seed: int) -> None:
    """Draw samples from the model in RUN_DIR (the NFE goes to stderr)."""
    import pandas as pd

    from tidal._files import atomic_path
    from tidal.cli.main import output_file
    from tidal.training.diffusion_run import load_diffusion_run

    run = load_diffusion_run(run_dir)
    values, nfe = run.sample(count, sampler=sampler, steps=steps, seed=seed)
    table = pd.DataFrame(values, columns=run.config["columns"])
    click.echo(f"{sampler}: {nfe} score evaluations", err=True)
    if output is None:
        click.echo(table.to_csv(index=False), nl=False)
        return
    with atomic_path(output_file(output)) as tmp:
        table.to_csv(tmp, index=False)
    click.echo(f"wrote {count} samples to {output}")


@diffusion.command("likelihood")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
def diffusion_likelihood(run_dir: str, data: str) -> None:
    """Mean negative log-likelihood of the rows of DATA (the run's columns) by the
    probability-flow ODE: nats per sample, or bits/dim for discrete data."""
    from tidal.cli.flow import _read_samples
    from tidal.training.diffusion_run import load_diffusion_run

    run = load_diffusion_run(run_dir)
    _, points = _read_samples(Path(data), ",".join(run.config["columns"]))
    nll, nfe = run.nll(points)
    unit = "nats" if run.levels is None else "bits/dim"
    click.echo(f"NLL {nll:.4f} {unit} over {len(points)} rows ({nfe} NFE)")
