"""Predictive bands (quantiles of sampled paths) against observations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidal.plots.trajectories import COLORS, panels


def plot_bands(observed: Sequence[tuple[np.ndarray, np.ndarray]],
               bands: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], *,
               state_names: Sequence[str], titles: Sequence[str], level: str = "90%",
               columns: int = 2) -> Any:
    """One panel per trajectory: the band between two quantiles (shaded), the median (line)
    and the observations (points, NaN = missing).

    Args:
        observed: per trajectory, (times [T_i], values [T_i, D]).
        bands: per trajectory, (times [M], low [M, D], median [M, D], high [M, D]).
        state_names: a legend entry per state.
        titles: a title per panel.
        level: the band's probability, for the legend.
    """
    figure, axes = panels(len(observed), columns)
    for index, ax in enumerate(axes):
        t_obs, y_obs = observed[index]
        t_band, low, median, high = bands[index]
        for state, name in enumerate(state_names):
            color = COLORS[state % len(COLORS)]
            ax.fill_between(t_band, low[:, state], high[:, state], color=color, alpha=0.2,
                            lw=0, label=f"{name} {level} band")
            ax.plot(t_band, median[:, state], color=color, lw=1.5, label=f"{name} median")
            ax.plot(t_obs, y_obs[:, state], "o", color=color, ms=3.5,
                    label=f"{name} held out")
        ax.set_title(titles[index], fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel(", ".join(state_names) if len(state_names) <= 3 else "state")
    axes[0].legend(fontsize=7, ncol=2)
    return figure
