"""Figures drawn from arrays: what each panel plots."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.plots.energy import plot_energy


@pytest.mark.parametrize("with_true", [False, True])
def test_energy_plot_has_a_panel_per_energy_showing_its_drift(with_true):
    ts = np.linspace(0.0, 1.0, 5)
    learned = np.stack([np.cos(ts), 2.0 + ts**2], axis=1)  # [T, B]
    true = np.stack([ts, -ts], axis=1) if with_true else None
    axes = plot_energy(ts, learned, true).axes
    expected = [learned, *([true] if with_true else [])]
    assert len(axes) == len(expected)
    for ax, energy in zip(axes, expected):
        for line, column in zip(ax.get_lines(), energy.T):
            np.testing.assert_allclose(line.get_xdata(), ts)
            np.testing.assert_allclose(line.get_ydata(), column - column[0])
        assert len(ax.get_lines()) == energy.shape[1]
