"""The learned vector field as a stream plot, beside the true one when it is known."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Field = Callable[[np.ndarray], np.ndarray]  # points [N, 2] -> derivatives [N, 2]
Spread = Callable[[np.ndarray], np.ndarray]  # points [N, 2] -> a spread of derivatives [N]


def plot_vector_fields(fields: Sequence[tuple[str, Field]], *, bounds: Sequence[tuple[float,
                       float]], axis_names: Sequence[str], points: np.ndarray | None = None,
                       resolution: int = 40, spread: tuple[str, Spread] | None = None) -> Any:
    """Stream plots of 2-D vector fields side by side, on the same box, coloured by speed on
    one shared colour scale (the colour bar).

    Args:
        fields: (title, field) pairs; a field maps points [N, 2] to derivatives [N, 2].
        bounds: ((x_lo, x_hi), (y_lo, y_hi)).
        axis_names: labels of the two axes.
        points: observations [N, 2] drawn on every panel.
        resolution: grid points per axis.
        spread: (title, spread) drawn as one more panel, a colour map of a scalar per point
            (an ensemble's disagreement: the spread of its members' vectors) on its own
            colour scale, with the observations.
    """
    from matplotlib.figure import Figure

    (x_lo, x_hi), (y_lo, y_hi) = bounds
    xs, ys = np.linspace(x_lo, x_hi, resolution), np.linspace(y_lo, y_hi, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    from matplotlib.colors import Normalize

    panels = len(fields) + (spread is not None)
    figure = Figure(figsize=(5.0 * panels + 1.0 + (spread is not None), 4.6),
                    layout="constrained")
    all_axes = figure.subplots(1, panels, squeeze=False)[0]
    axes = all_axes[:len(fields)]
    derivatives = [field(grid) for _, field in fields]
    speeds = [np.hypot(d[:, 0], d[:, 1]) for d in derivatives]
    finite = np.concatenate(speeds)
    finite = finite[np.isfinite(finite)]
    norm = Normalize(0.0, float(finite.max()) if finite.size else 1.0)
    for ax, (title, _), derivative, speed in zip(axes, fields, derivatives, speeds):
        u = derivative[:, 0].reshape(grid_x.shape)
        v = derivative[:, 1].reshape(grid_x.shape)
        lines = ax.streamplot(xs, ys, u, v, color=speed.reshape(grid_x.shape), cmap="viridis",
                              norm=norm, density=1.2, linewidth=0.9).lines
        if points is not None:
            ax.plot(points[:, 0], points[:, 1], ".", color="#d62728", ms=2, alpha=0.35,
                    label="observations")
            ax.legend(loc="upper right", fontsize=7, markerscale=4)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        _label(ax, title, axis_names)
    figure.colorbar(lines, ax=list(axes), label="speed |dy/dt| (data units per unit time)")
    if spread is not None:
        ax = all_axes[-1]
        title, values = spread
        mesh = ax.pcolormesh(xs, ys, values(grid).reshape(grid_x.shape), cmap="magma",
                             shading="auto")
        if points is not None:
            ax.plot(points[:, 0], points[:, 1], ".", color="#4fc3f7", ms=2, alpha=0.6,
                    label="observations")
            ax.legend(loc="upper right", fontsize=7, markerscale=4)
        _label(ax, title, axis_names)
        figure.colorbar(mesh, ax=ax, label="members' spread of dy/dt (same units)")
    return figure


def _label(ax: Any, title: str, axis_names: Sequence[str]) -> None:
    ax.set_title(title)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
