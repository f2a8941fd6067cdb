"""Training and validation loss against epochs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def plot_losses(history: Sequence[dict[str, Any]]) -> Any:
    """Loss curves on a log scale, with the curriculum's stages marked."""
    from matplotlib.figure import Figure

    epochs = np.array([row["epoch"] for row in history])
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.subplots()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = np.array([row[key] for row in history], dtype=float)
        if np.isfinite(values).any():
            ax.plot(epochs, values, label=label)
    stages = [row["stage"] for row in history]
    for previous, row in zip(stages, history[1:]):
        if row["stage"] != previous:
            ax.axvline(row["epoch"], color="0.6", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error (scaled units)")
    ax.legend()
    return figure
