"""Observed points against fitted trajectories, and forecasts beyond the data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def plot_fits(observed: Sequence[tuple[np.ndarray, np.ndarray]],
              fitted: Sequence[tuple[np.ndarray, np.ndarray]], *, state_names: Sequence[str],
              titles: Sequence[str], truth: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
              shade_until: float | Sequence[float] | None = None,
              starts: Sequence[tuple[float, np.ndarray]] | None = None, columns: int = 2,
              bands: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Any:
    """One panel per trajectory: observations (points, NaN = missing) and the model (lines).

    Args:
        observed: per trajectory, (times [T_i], values [T_i, D]).
        fitted: per trajectory, (times [M], predictions [M, D]).
        state_names: a legend entry per state.
        titles: a title per panel.
        truth: per trajectory, the true system's (times, values) as dashed lines.
        shade_until: grey out times after this (the forecast region); one per trajectory
            when a sequence.
        starts: per trajectory, (t0, y0 [D]): the initial state the model starts from when it
            is not the first observation (an estimated one), drawn as a cross.
        bands: per trajectory, (low [M, D], high [M, D]) at the fitted times: a shaded 5-95%
            band (an ensemble's members, a latent model's posterior samples).
    """
    figure, axes = panels(len(observed), columns)
    for index, ax in enumerate(axes):
        t_obs, y_obs = observed[index]
        t_fit, y_fit = fitted[index]
        for state, name in enumerate(state_names):
            color = COLORS[state % len(COLORS)]
            ax.plot(t_fit, y_fit[:, state], color=color, lw=1.8, label=f"{name} model")
            if bands is not None:
                low, high = bands[index]
                ax.fill_between(t_fit, low[:, state], high[:, state], color=color, alpha=0.2,
                                lw=0, label=f"{name} 5-95% band")
            ax.plot(t_obs, y_obs[:, state], "o", color=color, ms=3.5, alpha=0.7,
                    label=f"{name} observed")
            if starts is not None:
                t0, y0 = starts[index]
                ax.plot([t0], [y0[state]], "x", color=color, ms=8, mew=2,
                        label=f"{name} learned initial state")
            if truth is not None:
                t_true, y_true = truth[index]
                ax.plot(t_true, y_true[:, state], "--", color="black", lw=0.9, alpha=0.6,
                        label="true system" if state == 0 else None)
        if shade_until is not None:
            start = shade_until if isinstance(shade_until, (int, float)) else shade_until[index]
            ax.axvspan(start, t_fit[-1], color="0.92", zorder=0)
        ax.set_title(titles[index], fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel(", ".join(state_names) if len(state_names) <= 3 else "state")
    axes[0].legend(fontsize=7, ncol=2)
    return figure


def panels(count: int, columns: int) -> tuple[Any, list[Any]]:
    """A figure with a grid of panels, and the first `count` axes (the others hidden)."""
    from matplotlib.figure import Figure

    rows = int(np.ceil(count / columns))
    figure = Figure(figsize=(5.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, list(axes[:count])
