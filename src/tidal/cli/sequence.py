"""`tidal fit --model latent-ode|ode-rnn|cde|gru`: sequence models on a long table of series
(`tidal.training.sequence_run`), forecasting (`--task forecast`), interpolating
(`--task interpolate`) or classifying each series (`--task classify --label COLUMN`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tidal.models.latent_ode import REFINE_CHOICES

#: `--model` values that train a sequence model (tidal.training.sequence_fit.SEQUENCE_MODELS).
SEQUENCE_CHOICES = ("latent-ode", "ode-rnn", "cde", "gru")
#: `tidal fit` options that a sequence model does not read (refused when given).
_NOT_FOR_SEQUENCES = ("horizons", "shooting_segments", "shooting_weight", "depth",
                      "activation", "separable", "known", "params", "dt", "solver", "rtol",
                      "atol", "adjoint", "system", "split_by", "ensemble", "bootstrap",
                      "workers", "prefit", "resume", "rate_scale", "augment", "linear_term",
                      "weight_decay", "auto", "refit", "discover")


def is_sequence_run(run_dir: str) -> bool:
    from tidal.training.run_directory import RunDirectory

    found = RunDirectory.find(Path(run_dir))
    return found is not None and found.kind == "sequence"


def resume_sequence(ctx: click.Context, run_dir: str, kw: dict[str, Any]) -> None:
    """`tidal fit --resume -o RUN` for a sequence run (only --epochs may change)."""
    from tidal.cli.main import _flags_named, refuse_changes_on_resume
    from tidal.training.sequence_run import resume_sequence_run

    refuse_changes_on_resume(ctx, run_dir)
    given = ctx.get_parameter_source("epochs") != click.core.ParameterSource.DEFAULT
    with _flags_named():
        outcome = resume_sequence_run(run_dir, epochs=kw["epochs"] if given else None,
                                      progress=not kw["quiet"])
    finish(outcome["status"], outcome["message"], Path(run_dir))


def sequence_options(function: Any) -> Any:
    """The options only sequence models read, added to `tidal fit`."""
    options = [
        click.option("--task", type=click.Choice(["forecast", "interpolate", "classify"]),
                     default="forecast", show_default=True,
                     help="Sequence models: forecast each series after its --context, "
                          "interpolate 30% of its observations hidden at random, or classify "
                          "each series by --label."),
        click.option("--label", default=None,
                     help="Sequence models, --task classify: the column holding each series' "
                          "class (repeated on its rows)."),
        click.option("--context", type=float, default=0.5, show_default=True,
                     help="Sequence models, --task forecast: the fraction of each series' span "
                          "read before forecasting the rest."),
        click.option("--hidden", type=int, default=32, show_default=True,
                     help="Sequence models: size of the recurrent / CDE state."),
        click.option("--latent", type=int, default=8, show_default=True,
                     help="--model latent-ode: size of the latent state z."),
        click.option("--refine", type=int, default=None,
                     help="--model latent-ode: predict from z0 after N Adam steps toward the "
                          "posterior's mode given the observations read (0: the encoder's "
                          "posterior mean). Default: chosen on the validation series among "
                          f"{', '.join(map(str, REFINE_CHOICES))}."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def refuse_sequence_options(ctx: click.Context, kind: str) -> None:
    """The sequence models' own options given with a model that is not one."""
    from click.core import ParameterSource

    from tidal.cli.main import BadInput

    given = [name for name in ("task", "label", "context", "hidden", "latent", "refine")
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + name for name in given)
        raise BadInput(f"{flags} apply to the sequence models ({', '.join(SEQUENCE_CHOICES)}), "
                       f"not to --model {kind}")


def fit_sequence(ctx: click.Context, data: str | None, run_dir: str, time_column: str,
                 id_column: str | None, states: str | None, val: float, test: float,
                 overwrite: bool, kw: dict[str, Any]) -> None:
    """Train the sequence model `kw["kind"]` on DATA and write the run and its report."""
    from click.core import ParameterSource

    from tidal.cli.main import BadInput, _flags_named
    from tidal.training.sequence_fit import SequenceOptions
    from tidal.training.sequence_run import train_sequence_run

    given = [name for name in _NOT_FOR_SEQUENCES
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BadInput(f"{flags} do(es) not apply to --model {kw['kind']} (a sequence model; "
                       "see the --task, --label, --context, --hidden and --latent options)")
    if data is None:
        raise BadInput("give the DATA file to fit")
    if kw["refine"] is not None and kw["kind"] != "latent-ode":
        raise BadInput(f"--refine applies to --model latent-ode, not to --model {kw['kind']}")
    with _flags_named():
        options = SequenceOptions(
            model=kw["kind"], task=kw["task"], hidden=kw["hidden"], latent=kw["latent"],
            width=kw["width"], context=kw["context"], epochs=kw["epochs"], lr=kw["lr"],
            batch_size=kw["batch_size"] or 32, patience=kw["patience"] or None,
            seed=kw["seed"], checkpoint_every=kw["checkpoint_every"],
            refine=kw["refine"])
        names = None if states is None else [s.strip() for s in states.split(",")]
        outcome = train_sequence_run(data, run_dir, options=options, time=time_column,
                                     id_column=id_column, states=names, label=kw["label"],
                                     split=(val, test), overwrite=overwrite,
                                     progress=not kw["quiet"])
    finish(outcome["status"], outcome["message"], Path(run_dir))


def finish(status: str, message: str, run_dir: Path) -> None:
    from tidal.cli.main import finish_run
    from tidal.report.sequence import sequence_summary, write_sequence_report

    finish_run(status, message, run_dir, report=write_sequence_report,
               summary=sequence_summary, resume="tidal fit", remedy="a lower --lr")


def predict_sequence(run_dir: str, data: str | None, *, given: list[str],
                     output: str | None) -> None:
    """`tidal predict RUN --data FILE` for a sequence run: its model's predictions for the
    series in FILE (`tidal.training.sequence_run.predict_sequences`), as CSV on stdout or in
    `output` (CSV or Parquet, written atomically)."""
    from tidal._files import atomic_path
    from tidal.cli.main import BadInput, _flags_named, notify
    from tidal.training.sequence_run import load_sequence_run, predict_sequences

    if given:
        raise BadInput(f"{', '.join(given)} apply to ODE runs; {run_dir} holds a sequence "
                       "model: give the series to predict with --data FILE")
    if data is None:
        raise BadInput(f"{run_dir} holds a sequence model: give the series to predict with "
                       "--data FILE (the fit's time, id and feature columns)")
    with _flags_named():
        run = load_sequence_run(run_dir)
        notify(run.notice)
        table = predict_sequences(run, data)
    if output is None:
        click.echo(table.to_csv(index=False), nl=False)
        return
    path = Path(output)  # checked by `tidal predict` (output_file)
    with atomic_path(path) as temporary:
        if path.suffix in (".parquet", ".pq"):
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False)
    click.echo(f"wrote {len(table)} rows to {output}")
