"""Energy along trajectories: a Hamiltonian model's learned H, and the true one when known."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_energy(ts: np.ndarray, learned: np.ndarray, true: np.ndarray | None = None) -> Any:
    """H(t) - H(0) for each trajectory (columns of `learned` / `true`, [T, B])."""
    from matplotlib.figure import Figure

    panels = [("learned energy (model units)", learned)]
    if true is not None:
        panels.append(("true energy along the learned flow", true))
    figure = Figure(figsize=(5.2 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, energy) in zip(axes, panels):
        ax.plot(ts, energy - energy[:1])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel("H(t) - H(0)")
    return figure
