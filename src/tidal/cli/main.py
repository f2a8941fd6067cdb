"""The `tidal` command: parse, call the library, print. Exit codes: 0 success, 2 bad usage or
bad input (one line on stderr, no traceback), 3 training diverged (the run keeps its last good
weights), 130 interrupted (a checkpoint is saved)."""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from tidal._errors import TidalError
from tidal._files import make_folder
from tidal.cli.sequence import SEQUENCE_CHOICES, sequence_options
from tidal.cli.small_data import apply_small_data_options, small_data_options
from tidal.data import SYSTEMS
from tidal.data.stochastic_systems import STOCHASTIC_SYSTEMS as _STOCHASTIC

DEMO_DIR = "runs/demo"
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class BadInput(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"tidal: error: {self.message}", err=True)


class _Group(click.Group):
    """Every error the user can cause, usage errors included, is one line and exit code 2."""

    def make_context(self, *args, **kwargs) -> click.Context:
        with _one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        with _one_line_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as error:
        raise BadInput(f"{error.format_message()} (see --help)") from error
    except (TidalError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as error:
        raise BadInput(str(error).splitlines()[0]) from error


@contextmanager
def _flags_named() -> Iterator[None]:
    """Name the command line's flags where a library message names Python arguments:
    `TrainConfig(epochs=-5)` becomes `--epochs -5`, `time=...` becomes `--time`."""
    try:
        yield
    except TidalError as error:
        raise BadInput(_FLAG_SPELLING.sub(_as_flag, str(error).splitlines()[0])) from error


_FLAG_SPELLING = re.compile(r"`(?:TrainConfig\()?(\w+)=(.*?)\)?`")
_FLAGS = {"time": "--time", "id": "--id", "states": "--states", "epochs": "--epochs",
          "lr": "--lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size",
          "horizons": "--horizons",
          "patience": "--patience", "shooting_segments": "--shooting-segments",
          "shooting_weight": "--shooting-weight", "seed": "--seed",
          "checkpoint_every": "--checkpoint-every"}


def _as_flag(match: re.Match) -> str:
    name, value = match.groups()
    if name not in _FLAGS:
        return match.group(0)
    return f"`{_FLAGS[name]}`" if value in ("...", "[...]") else f"`{_FLAGS[name]} {value}`"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tidal")
@click.option("--threads", default=1, show_default=True, envvar="TIDAL_THREADS",
              type=click.IntRange(min=1),
              help="PyTorch intra-op threads. Neural ODEs on small states run fastest on one; "
              "raise it for wide networks or big batches.")
def main(threads: int) -> None:
    """tidal: learn differential equations from time series.

    \b
    tidal simulate toggle-switch -o data.csv   simulate a built-in system
    tidal fit data.csv --id id -o runs/toggle  learn its dynamics (writes a run directory)
    tidal predict runs/toggle --y0 1,0.2 --t 0:20:0.1 -o forecast.csv
    tidal report runs/toggle                   figures, metrics.json and report.html
    tidal demo                                 all of the above on built-in data

    \b
    Exit codes: 0 success; 2 bad usage or input (one line on stderr); 3 training
    diverged (the run keeps its last good weights); 130 interrupted (a checkpoint
    is saved: continue with --resume).

    \b
    -o creates missing parent folders. A run is written only into a new or empty
    folder, or over an earlier run with --overwrite, which deletes only the files
    tidal listed in the run's tidal-run.json.
    """
    import torch

    torch.set_num_threads(threads)


def _floats(text: str, option: str) -> list[float]:
    fields = text.split(",")
    if fields and not fields[-1].strip():
        fields = fields[:-1]  # a trailing comma is harmless
    if any(not field.strip() for field in fields):
        raise BadInput(f"{option} {text!r}: an empty value between commas; give every number, "
                       "e.g. 1.0,0.2")
    try:
        values = [float(x) for x in fields]
    except ValueError:
        raise BadInput(f"{option} {text!r}: expected comma-separated numbers, "
                       "e.g. 1.0,0.2") from None
    if not all(math.isfinite(x) for x in values):
        raise BadInput(f"{option} {text!r}: every number must be finite (not nan or inf)")
    return values


#: The most output times `tidal predict --t start:stop:step` may ask for.
MAX_TIMES = 1_000_000


def _times(text: str) -> list[float]:
    """'0:20:0.1' (start:stop:step, stop included) or '0,1,2.5': at least two times,
    increasing (a forecast starts at the first)."""
    import numpy as np

    if ":" not in text:
        times = _floats(text, "--t")
        if len(times) < 2 or any(b <= a for a, b in itertools.pairwise(times)):
            raise BadInput(f"--t {text!r}: give at least two times, increasing (the forecast "
                           "starts from --y0 at the first), e.g. 0,1,2.5 or 0:20:0.1")
        return times
    parts = _floats(text.replace(":", ","), "--t")
    if len(parts) != 3 or parts[2] <= 0 or parts[1] <= parts[0]:
        raise BadInput(f"--t {text!r}: expected start:stop:step with stop > start and "
                       "step > 0, e.g. 0:20:0.1")
    count = np.floor((parts[1] - parts[0]) / parts[2] + 1e-9) + 1
    if not count <= MAX_TIMES:
        raise BadInput(f"--t {text!r} gives {count:.3g} times; at most {MAX_TIMES:,}: use a "
                       "larger step or a shorter span")
    if count < 2:
        raise BadInput(f"--t {text!r} gives one time: the step is longer than the span; give "
                       "a smaller step, e.g. 0:20:0.1")
    return list(parts[0] + parts[2] * np.arange(int(count)))


def _obs(text: str) -> int | tuple[int, int]:
    try:
        if ":" in text:
            low, high = (int(x) for x in text.split(":"))
            return (low, high)
        return int(text)
    except ValueError:
        raise BadInput(f"--obs {text!r}: expected a count (30) or a range (20:40)") from None


def output_file(path: str, overwrite: bool) -> str:
    """Check an output file named with -o before any work: an existing file is replaced only
    with --overwrite (tidal never replaces a file unasked); missing parent folders are
    created (a run's folder is created the same way)."""
    if Path(path).exists() and not overwrite:
        raise BadInput(f"-o {path}: the file exists and tidal does not replace a file unasked; "
                       "choose another -o, or add --overwrite to replace it")
    make_folder(Path(path).parent)
    return path


def overwrite_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The `--overwrite` option of commands that write one file named with -o."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace the file named with -o if it exists.")(command)


@main.command(help="Simulate noisy, irregular observations of a built-in SYSTEM.\n\n"
              f"SYSTEM is one of: {', '.join(SYSTEMS)}; or a stochastic one (its own noise): "
              f"{', '.join(_STOCHASTIC)}.")
@click.argument("system")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV or Parquet file to write.")
@click.option("--trajectories", default=32, show_default=True, help="Number of trajectories.")
@click.option("--obs", default="20:40", show_default=True,
              help="Observations per trajectory: a count or a range low:high.")
@click.option("--t-end", type=float, default=None, help="End time (default: the system's).")
@click.option("--noise", default=0.05, show_default=True,
              help="Noise sd as a fraction of each state's range.")
@click.option("--irregular/--regular", default=True, show_default=True,
              help="Random observation times, or an even grid.")
@click.option("--missing", default=0.0, show_default=True,
              help="Fraction of entries left unobserved.")
@click.option("--seed", default=0, show_default=True)
@click.option("--noise-process", default=0.0, show_default=True,
              help="Process noise sigma: simulate dy = f dt + sigma dW (state units per "
                   "sqrt(time)) instead of the ODE; 0 for none.")
@overwrite_file_option
def simulate(system: str, output: str, trajectories: int, obs: str, t_end: float | None,
             noise: float, irregular: bool, missing: float, seed: int,
             noise_process: float, overwrite: bool) -> None:
    from tidal.data import simulate as simulate_system
    from tidal.data import write_table
    from tidal.data.stochastic_systems import STOCHASTIC_SYSTEMS, observe_sde

    if system in STOCHASTIC_SYSTEMS:
        if noise_process:
            raise BadInput(f"{system} is a stochastic system: leave out --noise-process (its "
                           f"noise is its own: {STOCHASTIC_SYSTEMS[system].description})")
        start = STOCHASTIC_SYSTEMS[system].default_t_span[0]
        output = output_file(output, overwrite)
        data = observe_sde(system, trajectories, n_obs=_obs(obs), noise=noise,
                           irregular=irregular,
                           t_span=None if t_end is None else (start, t_end), missing=missing,
                           seed=seed)
    else:
        if system not in SYSTEMS:
            raise BadInput(f"unknown system {system!r}; choose one of "
                           f"{', '.join([*SYSTEMS, *STOCHASTIC_SYSTEMS])}")
        if not 0 <= noise_process < math.inf:
            raise BadInput(f"--noise-process {noise_process}: must be a finite number >= 0 "
                           "(the process noise sigma; 0 for none)")
        t_span = None if t_end is None else (SYSTEMS[system].default_t_span[0], t_end)
        output = output_file(output, overwrite)
        data = simulate_system(system, trajectories, t_span=t_span, n_obs=_obs(obs),
                               noise=noise, irregular=irregular, missing=missing, seed=seed,
                               noise_process=noise_process)
    write_table(data, output)
    click.echo(f"wrote {len(data)} trajectories of {system} to {output}")


def _train_options(function):
    options = [
        click.option("--epochs", default=300, show_default=True,
                     help="Passes over the data; with --resume, a new total (the schedule "
                          "and curriculum stretch to it)."),
        click.option("--checkpoint-every", default=25, show_default=True,
                     help="Epochs between checkpoints."),
        click.option("--lr", default=1e-2, show_default=True, help="Peak learning rate."),
        click.option("--weight-decay", default=0.0, show_default=True,
                     type=click.FloatRange(min=0.0),
                     help="AdamW's decoupled weight decay (not on --linear-term's A and b)."),
        click.option("--batch-size", type=int, default=None,
                     help="Trajectories per step (default: all)."),
        click.option("--horizons", default="0.3,0.6,1.0", show_default=True,
                     help="Curriculum: fractions of the span fitted in successive stages."),
        click.option("--patience", type=int, default=100, show_default=True,
                     help="Early stopping patience in epochs (0: never)."),
        click.option("--shooting-segments", default=1, show_default=True,
                     help="Multiple shooting: a first stage fits this many segments of each "
                          "trajectory, each from its own estimated start (1: off; with "
                          "fewer than 12 training series and the default --horizons, "
                          "4, or 6 then whole series for one)."),
        click.option("--shooting-weight", default=1.0, show_default=True,
                     help="Weight of the gaps between consecutive segments."),
        click.option("--width", default=64, show_default=True),
        click.option("--depth", default=2, show_default=True),
        click.option("--activation", default="tanh", show_default=True),
        click.option("--rate-scale", default="auto", show_default=True,
                     type=click.Choice(["auto", "species", "off"]),
                     help="Neural ODE: multiply the network's output for each state by its "
                          "rate in the training data (range / time to move half of it; Kim "
                          "et al.'s per-species output scaling for stiff data). auto: when "
                          "the states' time scales are 100x or more apart (e.g. rober)."),
        click.option("--model", "kind", default="neural-ode", show_default=True,
                     type=click.Choice(["neural-ode", "hamiltonian", "ude", "sde",
                                        "latent-sde", *SEQUENCE_CHOICES]),
                     help="hamiltonian: a learned energy H(q, p), state = (q, p) halves; "
                          "ude: --known terms plus a network; sde: neural drift and "
                          "diffusion (transition likelihood); latent-sde: a latent SDE "
                          "(ELBO); both report predictive bands; latent-ode, ode-rnn, cde, "
                          "gru: sequence models (--task)."),
        click.option("--separable", is_flag=True,
                     help="Hamiltonian H = T(p) + V(q) (explicit symplectic solvers apply)."),
        click.option("--known", default=None,
                     help="UDE known terms by name, e.g. lotka-volterra-linear."),
        click.option("--param", "params", multiple=True,
                     help="UDE physical parameter's initial value, name=value (repeatable)."),
        click.option("--dt", default=0.05, show_default=True,
                     help="Step of fixed-step solvers (leapfrog, yoshida4, ...)."),
        click.option("--solver", default="auto", show_default=True,
                     help="auto: tsit5; for stiff data (where --rate-scale auto turns "
                          "on) tidal.Auto, tsit5 switching to rodas5p where the field is "
                          "stiff; for --model hamiltonian leapfrog (separable) or "
                          "implicit_midpoint."),
        click.option("--rtol", default=1e-4, show_default=True),
        click.option("--atol", default=1e-6, show_default=True),
        click.option("--adjoint", default="checkpoint", show_default=True,
                     type=click.Choice(["checkpoint", "backprop", "backsolve"])),
        click.option("--seed", default=0, show_default=True),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _configs(kw: dict):
    from tidal.training import ModelOptions, TrainConfig

    params = []
    for item in kw["params"]:
        name, _, value = item.partition("=")
        numbers = _floats(value, f"--param {item}") if value else []
        if len(numbers) != 1:
            raise BadInput(f"--param {item!r}: expected name=value, e.g. alpha=1.5")
        params.append((name.strip(), numbers[0]))
    model = ModelOptions(kind=kw["kind"], width=kw["width"], depth=kw["depth"],
                         activation=kw["activation"], solver=kw["solver"], rtol=kw["rtol"],
                         atol=kw["atol"], adjoint=kw["adjoint"], separable=kw["separable"],
                         dt=kw["dt"], known=kw["known"], params=tuple(params),
                         rate_scale=kw["rate_scale"])
    config = TrainConfig(epochs=kw["epochs"], lr=kw["lr"], weight_decay=kw["weight_decay"],
                         batch_size=kw["batch_size"],
                         horizons=tuple(_floats(kw["horizons"], "--horizons")),
                         patience=kw["patience"] or None, seed=kw["seed"],
                         shooting_segments=kw["shooting_segments"],
                         shooting_weight=kw["shooting_weight"],
                         checkpoint_every=kw["checkpoint_every"])
    return model, config


def _finish(result, run_dir: Path) -> None:
    from tidal.models import Ensemble
    from tidal.report import read_summary, write_report
    from tidal.report.sde import sde_summary, write_sde_report
    from tidal.training.sde_run import SDEResult

    sde = isinstance(result, SDEResult)
    ensemble = isinstance(getattr(result, "model", None), Ensemble)
    finish_run(result.status, result.message, run_dir,
               report=write_sde_report if sde else write_report,
               summary=sde_summary if sde else read_summary, resume="tidal fit",
               remedy="a lower --lr or a tighter --rtol", resumable=not ensemble)


def finish_run(status: str, message: str, run_dir: Path, *,
               report: Callable[[Path], Any], summary: Callable[[Path], str], resume: str,
               remedy: str, resumable: bool = True) -> None:
    """Every fit command's ending: the status, the report and its summary, then exit 130 (with
    the `resume` command to continue) when interrupted, 3 (with the `remedy`) when training
    diverged. Under torchrun only rank 0 reports; the others exit with the same code."""
    from tidal.distributed import World

    if not World.current().leader:
        sys.exit({"interrupted": EXIT_INTERRUPTED, "diverged": EXIT_DIVERGED}.get(status, 0))
    click.echo(f"{status}: {message}")
    page = report(run_dir)
    click.echo(summary(run_dir))
    click.echo(f"report: {page}")
    if status == "interrupted":
        if resumable:
            click.echo(f"checkpoint saved; continue with: {resume} --resume -o {run_dir}",
                       err=True)
        else:  # an ensemble keeps no checkpoints (`tidal fit --resume` refuses it)
            click.echo(f"an ensemble keeps no checkpoints and cannot be resumed; {run_dir} "
                       f"keeps the members as trained so far: fit it again with {resume} "
                       "--overwrite", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if status == "diverged":
        click.echo(f"tidal: training diverged; {run_dir} keeps the last good weights. Try "
                   f"{remedy}, then fit again with --overwrite.", err=True)
        sys.exit(EXIT_DIVERGED)


def nproc_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The `--nproc N` option of the fit commands (`start_processes`)."""
    return click.option(
        "--nproc", type=click.IntRange(min=1), default=1, show_default=True,
        help="Train data-parallel in this many processes on this machine (starts torchrun; "
             "the result equals one process's up to the solver's tolerance).")(command)


def start_processes(nproc: int) -> None:
    """With `--nproc N` > 1 (call it once the input is checked): run this command again in N
    processes (torchrun) and exit with its code; else join the process group torchrun set up,
    if any."""
    from tidal.distributed import init_from_environment
    from tidal.training.distributed import launch, without_option

    if nproc > 1:
        sys.exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))
    init_from_environment(cuda=False)  # the command line trains on the CPU


#: What `fit --resume` may change: everything else comes from the run's config.json.
_RESUME_OPTIONS = {"run_dir", "resume", "epochs", "quiet", "nproc"}


def refuse_changes_on_resume(ctx: click.Context, run_dir: str,
                            allowed: frozenset[str] = frozenset(_RESUME_OPTIONS),
                            total: str = "--epochs") -> None:
    """Refuse every parameter given on the command line with --resume except `allowed`
    (`total` is the flag that may set a new total)."""
    from click.core import ParameterSource

    given = [param for param in ctx.command.params if param.name not in allowed
             and param.name is not None
             and ctx.get_parameter_source(param.name) in (ParameterSource.COMMANDLINE,
                                                          ParameterSource.ENVIRONMENT)]
    if given:
        names = ", ".join(param.opts[-1] if param.opts[-1].startswith("-") else
                          param.name.upper() for param in given)
        raise BadInput(f"--resume continues {run_dir} with its own data and the settings in "
                       f"its config.json, so {names} cannot be given (only {total} may "
                       "change); to change them, start a new run with --overwrite")


@main.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory to write.")
@click.option("--time", "time_column", default="t", show_default=True, help="Time column.")
@click.option("--id", "id_column", default=None, help="Trajectory id column (if any).")
@click.option("--states", default=None, help="State columns, comma-separated (default: all "
              "other columns).")
@click.option("--system", default=None, help="Built-in system the data came from, to compare "
              "the learned dynamics with the true ones in the report.")
@click.option("--val", default=0.125, show_default=True, help="Fraction held out to validate.")
@click.option("--test", default=0.125, show_default=True, help="Fraction held out to test.")
@click.option("--split-by", default="auto", show_default=True,
              type=click.Choice(["auto", "trajectory", "time"]),
              help="Hold out whole trajectories, or the last part of each series in time "
                   "(auto: in time below 12 trajectories).")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train this many models from different seeds; predict and the report give "
                   "their mean and 5-95% bands (1: one model).")
@click.option("--bootstrap/--no-bootstrap", default=None,
              help="With --ensemble: train each member on a resample of the trajectories, so "
                   "that their spread carries the uncertainty of a fit to few series (default: "
                   "when held out in time, where the band is then that spread, widened for the "
                   "number of members, and the noise).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ensemble: members trained at once, in separate processes.")
@click.option("--prefit", is_flag=True,
              help="Pre-train the vector field on derivatives estimated by smoothing splines "
                   "(collocation) before fitting trajectories.")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its checkpoint.")
@nproc_option
@click.option("--overwrite", is_flag=True,
              help="Replace the run in -o: deletes only the files tidal listed as its own in "
                   "tidal-run.json (never other files, never the folder, never DATA).")
@_train_options
@sequence_options
@small_data_options
@click.pass_context
def fit(ctx: click.Context, data: str | None, run_dir: str, time_column: str,
        id_column: str | None, states: str | None, system: str | None, val: float,
        test: float, split_by: str, ensemble: int, bootstrap: bool | None, workers: int,
        prefit: bool, resume: bool, nproc: int, overwrite: bool, **kw) -> None:
    """Learn the dynamics of the trajectories in DATA (CSV or Parquet, long format: a time
    column, an optional id column, one column per state; blank = not observed).

    -o must be a new or empty folder, or an earlier run with --overwrite or --resume.
    --resume continues a run with its own data and settings (only --epochs may change: a new
    total); a run killed before its first checkpoint starts over."""
    from tidal.cli.sequence import (
        fit_sequence,
        is_sequence_run,
        refuse_sequence_options,
        resume_sequence,
    )
    from tidal.data import read_table
    from tidal.training import resume_run, train_run
    from tidal.training.ensemble import EnsembleOptions

    if kw["kind"] in SEQUENCE_CHOICES:
        if nproc > 1:
            raise BadInput(f"--nproc applies to neural-ode, hamiltonian and ude fits, not to "
                           f"--model {kw['kind']}; leave it out")
        fit_sequence(ctx, data, run_dir, time_column, id_column, states, val, test, overwrite,
                     kw)
        return
    refuse_sequence_options(ctx, kw["kind"])
    if resume and is_sequence_run(run_dir):
        resume_sequence(ctx, run_dir, kw)
        return
    if resume:
        from tidal.cli.sde import resume_fit

        refuse_changes_on_resume(ctx, run_dir)
        start_processes(nproc)
        given = ctx.get_parameter_source("epochs") != click.core.ParameterSource.DEFAULT
        result = resume_fit(run_dir, epochs=kw["epochs"] if given else None,
                            progress=not kw["quiet"], fallback=resume_run)
        _finish(result, Path(run_dir))
        return
    if data is None:
        raise BadInput("give the DATA file to fit (or --resume to continue a run)")
    with _flags_named():
        model, config = _configs(kw)
        model, small = apply_small_data_options(model, kw)
        if ensemble == 1 and (bootstrap or workers > 1):
            raise BadInput("--bootstrap and --workers apply to an ensemble: add --ensemble K "
                           "(K >= 2)")
        members = EnsembleOptions(ensemble, bootstrap, workers) if ensemble > 1 else None
        names = None if states is None else [s.strip() for s in states.split(",")]
        trajectories = read_table(data, time=time_column, id=id_column, states=names)
    start_processes(nproc)
    source = {"path": str(data), **({"system": system} if system else {})}
    if kw["kind"] in ("sde", "latent-sde"):
        from tidal.cli.sde import fit_sde

        result = fit_sde(ctx, trajectories, run_dir, kw, config, split=(val, test),
                         split_by=split_by, source=source, overwrite=overwrite)
        _finish(result, Path(run_dir))
        return
    result = train_run(trajectories, run_dir, model=model, config=config, split=(val, test),
                       source=source, overwrite=overwrite, progress=not kw["quiet"],
                       split_by=split_by, ensemble=members, prefit=prefit, **small)
    _finish(result, Path(run_dir))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--y0", default=None, help="Initial state, comma-separated (user units).")
@click.option("--t", "times", default=None, help="Times: start:stop:step or a list 0,1,2.")
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Sequence runs (fit --model latent-ode|ode-rnn|cde|gru): a table of new "
                   "series with the fit's time, id and feature columns.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="CSV or Parquet file (default: print CSV).")
@overwrite_file_option
def predict(run_dir: str, y0: str | None, times: str | None, data: str | None,
            output: str | None, overwrite: bool) -> None:
    """Forecast from an initial state (--y0, --t) with the model in RUN_DIR. For an ensemble
    (fit --ensemble K): the members' mean and, as columns NAME_q05 and NAME_q95, the 90%
    predictive band of an observation (members' spread and observation noise). For a
    sequence run: predict every row of the series in --data (forecast, interpolate), or
    classify each series."""
    import numpy as np

    from tidal.cli.sequence import is_sequence_run, predict_sequence

    if output is not None:
        output = output_file(output, overwrite)
    if is_sequence_run(run_dir):
        predict_sequence(run_dir, data, given=[name for name, value in (("--y0", y0),
                                                                         ("--t", times))
                                               if value is not None], output=output)
        return
    if data is not None:
        raise BadInput("--data applies to sequence runs (fit --model latent-ode, ode-rnn, cde "
                       "or gru); for this run give --y0 and --t")
    if y0 is None or times is None:
        raise BadInput("give the initial state --y0 and the times --t to forecast")

    from tidal._errors import SolveFailedError
    from tidal.data import Trajectories, write_table
    from tidal.models import Ensemble
    from tidal.training import load_run
    from tidal.training.ensemble import predictive_quantiles

    run = load_run(run_dir)
    notify(run.notice)
    state = _floats(y0, "--y0")
    ts = _times(times)
    if len(state) != len(run.state_names):
        raise BadInput(f"--y0 has {len(state)} values; the model has {len(run.state_names)} "
                       f"states ({', '.join(run.state_names)})")
    try:
        values = run.predict(np.array(state), np.array(ts))
    except SolveFailedError as error:  # its own advice names `solve`'s options, not ours
        raise BadInput(f"the model in {run_dir} cannot be solved from --y0 {y0} over --t "
                       f"{times} ({error.status.name} {error.where}): a learned model can "
                       "blow up or stiffen outside its data; try a shorter --t span or a --y0 "
                       "within the data") from None
    names = run.state_names
    if isinstance(run.model, Ensemble):  # the members' mean, and the 5-95% predictive band
        low, high = predictive_quantiles(run, np.array(state), np.array(ts), (0.05, 0.95))
        values = np.concatenate([values, low, high], axis=1)
        names = [*names, *(f"{n}_q05" for n in names), *(f"{n}_q95" for n in names)]
    table = Trajectories([np.array(ts)], [values], ids=["forecast"], state_names=names)
    if output is None:
        click.echo("t," + ",".join(names))
        for t, row in zip(ts, values):
            click.echo(",".join(repr(float(x)) for x in (t, *row)))
        return
    write_table(table, output)
    click.echo(f"wrote {len(ts)} rows to {output}")


def notify(notice: str | None) -> None:
    """Say on stderr when a run's weights are not those of a finished training."""
    if notice is not None:
        click.echo(f"tidal: note: {notice}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Write figures, metrics.json and report.html into RUN_DIR (any run tidal wrote: fit,
    flow, SDE, sequence or diffusion)."""
    from tidal.report import read_summary, write_report
    from tidal.report.flow import flow_summary, write_flow_report
    from tidal.training import RunDirectory, load_run
    from tidal.training.flow_run import load_flow_run

    found = RunDirectory.find(Path(run_dir))
    if found is not None and found.kind == "sde":
        from tidal.report.sde import sde_summary, write_sde_report
        from tidal.training.sde_run import load_sde_run

        notify(load_sde_run(run_dir).notice)
        report = write_sde_report(run_dir)
        click.echo(sde_summary(run_dir))
    elif found is not None and found.kind == "sequence":
        from tidal.report.sequence import sequence_summary, write_sequence_report
        from tidal.training.sequence_run import load_sequence_run

        notify(load_sequence_run(run_dir).notice)
        report = write_sequence_report(run_dir)
        click.echo(sequence_summary(run_dir))
    elif found is not None and found.kind == "flow":
        notify(load_flow_run(run_dir).notice)
        report = write_flow_report(run_dir)
        click.echo(flow_summary(run_dir))
    elif found is not None and found.kind == "diffusion":
        from tidal.report.diffusion import diffusion_summary, write_diffusion_report

        report = write_diffusion_report(run_dir)
        click.echo(diffusion_summary(run_dir))
    else:
        notify(load_run(run_dir).notice)
        report = write_report(run_dir)
        click.echo(read_summary(run_dir))
    click.echo(f"report: {report}")


@main.command()
@click.option("-o", "--output", "run_dir", default=DEMO_DIR, show_default=True,
              type=click.Path(file_okay=False))
@click.option("--epochs", default=None, type=int, help="Override the demo's epochs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(run_dir: str, epochs: int | None, quiet: bool) -> None:
    """Simulate the genetic toggle switch (32 noisy, irregular trajectories), fit it, test on
    held-out trajectories and write the report (about a minute on 2 CPU cores). Replaces an
    earlier demo in -o; any other non-empty folder is refused."""
    from tidal.training import run_demo

    with _flags_named():
        result = run_demo(run_dir, epochs=epochs, progress=not quiet)
    _finish(result, Path(run_dir))


def _register_subgroups() -> None:
    from tidal.cli.diffusion import diffusion
    from tidal.cli.flow import flow
    from tidal.cli.score import score

    main.add_command(flow)
    main.add_command(diffusion)
    main.add_command(score)


_register_subgroups()
