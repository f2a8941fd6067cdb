"""Training and validation loss against epochs, with the curriculum's stages marked."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np


def plot_losses(history: Sequence[dict[str, Any]]) -> Any:
    """Loss curves on a log scale; a dotted line where the curriculum moves to its next stage,
    labelled with the stage's horizon (the fraction of each trajectory's span fitted)."""
    from matplotlib.figure import Figure

    epochs = np.array([row["epoch"] for row in history])
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.subplots()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = np.array([row[key] for row in history], dtype=float)
        if np.isfinite(values).any():
            ax.plot(epochs, values, label=label)
    ax.set_yscale("log")
    changes = [row for previous, row in itertools.pairwise(history)
               if row["stage"] != previous["stage"]]
    for index, row in enumerate(changes):
        ax.axvline(row["epoch"], color="0.5", ls=":", lw=1,
                   label="curriculum stage change" if index == 0 else None)
    for row in [history[0], *changes] if history else []:
        ax.annotate(_stage_text(row), (row["epoch"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", fontsize=7, va="top",
                    color="0.35")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error (scaled units)")
    ax.legend(fontsize=8, loc="lower left")
    return figure


def _stage_text(row: dict[str, Any]) -> str:
    """"horizon 0.6", or the segments of a multiple-shooting stage."""
    segments = int(row.get("segments", 1) or 1)
    text = f"horizon {float(row['horizon']):g}"
    return f"{text}, {segments} segments" if segments > 1 else text
