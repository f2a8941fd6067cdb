"""Energy along trajectories: a Hamiltonian model's learned H, and the true one when known."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_energy(ts: np.ndarray, learned: np.ndarray, true: np.ndarray | None = None) -> Any:
    """H(t) - H(0) for each trajectory (columns of `learned` / `true`, [T, B])."""
    from matplotlib.figure import Figure

    panels = 1 if true is None else 2
    figure = Figure(figsize=(5.2 * panels, 3.6), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, (title, energy) in zip(axes, (("learned energy (model units)", learned),
                                          ("true energy along the learned flow", true))):
        ax.plot(ts, energy - energy[:1])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel("H(t) - H(0)")
    return figure
