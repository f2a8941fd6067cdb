"""`tidal score`: what a learned score tells about stationary stochastic dynamics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

SYSTEM_NAMES = ("active-ou", "coupled-ou")


@click.group()
def score() -> None:
    """Learn the score of a stationary density from samples and use it (entropy production)."""


@score.command("entropy")
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option("--system", type=click.Choice(SYSTEM_NAMES), default=None,
              help="Simulate a built-in linear system instead of reading DATA.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter of --system (active-ou: stiffness, activity, tau, d_x, d_f; "
                   "coupled-ou: stiffness, coupling, t1, t2). Repeatable.")
@click.option("--drift-matrix", default=None,
              help="For DATA: A of the drift b(x) = -A x, rows separated by ';' "
                   "(e.g. '1,-1;0,1').")
@click.option("--diffusion", default=None,
              help="For DATA: D of the noise sqrt(2D) dW: one number, one per column "
                   "(diagonal) or rows separated by ';'.")
@click.option("--columns", default=None, help="Columns of DATA (default: all).")
@click.option("--samples", default=100_000, show_default=True,
              help="Snapshots simulated for --system.")
@click.option("--steps", default=600, show_default=True, help="Score-matching steps.")
@click.option("--seed", default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score_entropy(data: str | None, system: str | None, params: tuple[str, ...],
                  drift_matrix: str | None, diffusion: str | None, columns: str | None,
                  samples: int, steps: int, seed: int, quiet: bool) -> None:
    """Entropy production rate E[v^T D^-1 v], v = b - D s, of dx = b dt + sqrt(2D) dW from a
    score s learned on stationary samples: DATA (rows = snapshots, with --drift-matrix and
    --diffusion) or a simulated --system. Prints the rate per coordinate and in total, next
    to the linear theory's exact value."""
    import torch

    from tidal._errors import InvalidArgumentError
    from tidal.cli.main import BadInput
    from tidal.diffusion import entropy
    from tidal.training.score import learned_entropy_production

    if (data is None) == (system is None):
        raise BadInput("give either DATA (with --drift-matrix and --diffusion) or --system")
    if system is not None:
        if drift_matrix or diffusion:
            raise BadInput("--drift-matrix and --diffusion are for DATA; use --param with "
                           "--system")
        build = entropy.LINEAR_SYSTEMS[system]
        try:
            a, d = build(**_params(params))
        except TypeError:
            raise BadInput(f"--param: unknown parameter for {system} (see --help)") from None
        if samples < 1 or samples % entropy.SNAPSHOTS:
            raise BadInput(f"--samples {samples}: give a positive multiple of "
                           f"{entropy.SNAPSHOTS} (each simulated path gives "
                           f"{entropy.SNAPSHOTS} snapshots)")
        try:
            x = entropy.simulate_linear(a, d, samples, seed=seed)
        except InvalidArgumentError as error:
            raise BadInput(f"--system {system} {' '.join(params)}: {error}") from None
        names = ["x", "f"] if system == "active-ou" else ["x1", "x2"]
    else:
        from tidal.cli.density import read_samples

        assert data is not None  # one of DATA and --system, checked above
        if drift_matrix is None or diffusion is None:
            raise BadInput("DATA needs --drift-matrix and --diffusion (the known dynamics)")
        names, values = read_samples(Path(data), columns)
        x = torch.tensor(values, dtype=torch.float64)
        a = _matrix(drift_matrix, "--drift-matrix")
        if a.shape != (x.shape[1], x.shape[1]):
            raise BadInput(f"--drift-matrix is {tuple(a.shape)}; DATA has {x.shape[1]} "
                           f"columns, so A must be {x.shape[1]} x {x.shape[1]}")
        rows = _matrix(diffusion, "--diffusion")
        # one number: D = d I; one row: the diagonal; several rows: the matrix
        d = entropy.diffusion_matrix(rows.reshape(()) if rows.numel() == 1
                                     else rows.reshape(-1) if rows.shape[0] == 1 else rows,
                                     x.shape[1])
    result = learned_entropy_production(x, lambda y: -y @ a.T, d, steps=steps,
                                                seed=seed, progress=not quiet)
    exact = entropy.linear_entropy_production(a, d)
    est = result.estimate
    click.echo(f"{len(x)} samples, score learned in {result.seconds:.0f} s "
               f"(sliced score matching, {steps} steps); rates on the held-out 10%")
    click.echo(f"{'coordinate':<12}{'learned':>12}{'linear theory':>16}")
    for name, u, v in zip(names, est.per_coordinate.tolist(), exact.per_coordinate.tolist()):
        click.echo(f"{name:<12}{u:>12.5f}{v:>16.5f}")
    click.echo(f"{'total':<12}{est.rate:>12.5f}{exact.rate:>16.5f}   "
               f"(± {est.standard_error:.5f} s.e.)")


def _params(pairs: tuple[str, ...]) -> dict[str, float]:
    from tidal.cli.main import BadInput

    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise BadInput(f"--param {pair!r}: expected NAME=NUMBER, e.g. activity=0.5") from None
        if not math.isfinite(number):
            raise BadInput(f"--param {pair!r}: the number must be finite (not nan or inf)")
        out[name.strip()] = number
    return out


def _matrix(text: str, option: str) -> torch.Tensor:
    import torch

    from tidal.cli.main import BadInput, _floats

    rows = [_floats(row, option) for row in text.split(";")]
    if len({len(row) for row in rows}) != 1:
        raise BadInput(f"{option} {text!r}: rows of different lengths")
    return torch.tensor(rows, dtype=torch.float64)
