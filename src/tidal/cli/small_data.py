"""`tidal fit`'s options for small data sets (issue 19) that change the model, `--augment`,
`--linear-term` and `--auto`, kept here so the command's own module stays short."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click


def small_data_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --augment, --linear-term, --auto, --refit/--no-refit and --discover to a command;
    `apply_small_data_options` reads them."""
    function = click.option(
        "--discover", is_flag=True,
        help="After the fit, explain the learned field by sparse polynomials (SINDy), fit each "
             "to the data again and keep the sparsest that validates within twice the best "
             "(the network's included); the report shows what was found "
             "(tidal.training.discovery).")(function)
    function = click.option(
        "--linear-term/--no-linear-term", default=None,
        help="A neural ODE's field as A y + b + network, A and b started at the "
             "least-squares fit of smoothing-spline rates and exempt from --weight-decay "
             "[default: on for 2 to 11 training series].")(function)
    function = click.option(
        "--refit/--no-refit", default=None,
        help="Held out in time: fine-tune the model chosen on the validation observations on "
             "them too (tidal.training.refit) [default: for one training series].")(function)
    function = click.option(
        "--auto", type=click.IntRange(min=0), default=0, show_default=True,
        help="Choose width, depth, activation, weight decay and learning rate among this many "
             "candidates on the validation data (each trained for a quarter of the epochs), "
             "then train the best; recorded in config.json (0: off).")(function)
    return click.option(
        "--augment", type=click.IntRange(min=0, max=64), default=0, show_default=True,
        help="Extra unobserved states for a neural ODE (starting at 0), for series whose "
             "observed states alone cannot carry the dynamics, e.g. 1 for a single variable "
             "that oscillates.")(function)


def apply_small_data_options(model: Any, kw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The `ModelOptions` `model` with --augment applied, and `train_run`'s keywords for
    --auto, --refit and --discover (all removed from `kw`)."""
    augment = kw.pop("augment", 0)
    model = dataclasses.replace(model, augment=augment, linear_term=kw.pop("linear_term", None))
    return model, {"auto": kw.pop("auto", 0), "refit": kw.pop("refit", None),
                   "discover": kw.pop("discover", False)}
