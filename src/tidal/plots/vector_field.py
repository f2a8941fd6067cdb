"""The learned vector field as a stream plot, beside the true one when it is known."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Field = Callable[[np.ndarray], np.ndarray]  # points [N, 2] -> derivatives [N, 2]


def plot_vector_fields(fields: Sequence[tuple[str, Field]], *, bounds: Sequence[tuple[float,
                       float]], axis_names: Sequence[str], points: np.ndarray | None = None,
                       resolution: int = 40) -> Any:
    """Stream plots of 2-D vector fields side by side, on the same box.

    Args:
        fields: (title, field) pairs; a field maps points [N, 2] to derivatives [N, 2].
        bounds: ((x_lo, x_hi), (y_lo, y_hi)).
        axis_names: labels of the two axes.
        points: observations [N, 2] drawn on every panel.
        resolution: grid points per axis.
    """
    from matplotlib.figure import Figure

    (x_lo, x_hi), (y_lo, y_hi) = bounds
    xs, ys = np.linspace(x_lo, x_hi, resolution), np.linspace(y_lo, y_hi, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    figure = Figure(figsize=(5.0 * len(fields), 4.6), layout="constrained")
    axes = figure.subplots(1, len(fields), squeeze=False)[0]
    for ax, (title, field) in zip(axes, fields):
        derivative = field(grid)
        u = derivative[:, 0].reshape(grid_x.shape)
        v = derivative[:, 1].reshape(grid_x.shape)
        speed = np.hypot(u, v)
        ax.streamplot(xs, ys, u, v, color=speed, cmap="viridis", density=1.2, linewidth=0.9)
        if points is not None:
            ax.plot(points[:, 0], points[:, 1], ".", color="#d62728", ms=2, alpha=0.35)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_title(title)
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
    return figure
