"""`compile=True` against the installed torch: before `tidal.compiled.MIN_TORCH` it solves
eagerly with one warning; no compiled solve leaves the process flushing subnormal numbers
(torch 2.4's compiled code did: docs/design.md, "Supported versions")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.torch_version import TorchVersion

import tidal
import tidal.compiled


def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


Y0 = torch.ones(3, dtype=torch.float64)
TS = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
TOL = tidal.PIDController(rtol=1e-9, atol=1e-12)


def _subnormal_survives() -> bool:
    """Whether numpy's float64 arithmetic keeps a subnormal number (1e-310) from becoming 0
    (a comparison with 1e-310 itself would not tell: flushing reads both sides as 0)."""
    return bool((np.array([1e-310]) * 1.0)[0] != 0.0)


def test_a_compiled_solve_leaves_subnormal_numbers_alone() -> None:
    assert _subnormal_survives()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager fallback's warning before torch 2.11
        sol = tidal.solve(decay, Y0, TS, controller=TOL, compile=True)
    torch.testing.assert_close(sol.ys, torch.exp(-TS).view(-1, 1).expand(-1, 3), rtol=1e-8,
                               atol=1e-10)
    assert _subnormal_survives()


def test_an_older_torch_solves_eagerly_with_one_warning(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(tidal.compiled, "_TORCH_VERSION", TorchVersion("2.6.0"))
    with pytest.warns(UserWarning, match=r"compile=True\): not compiled because of torch "
                      r".*needs torch >= 2\.11.*solving eagerly"):
        sol = tidal.solve(decay, Y0, TS, controller=TOL, compile=True)
    eager = tidal.solve(decay, Y0, TS, controller=TOL)
    torch.testing.assert_close(sol.ys, eager.ys, rtol=0, atol=0)
    assert int(sol.stats.num_steps) == int(eager.stats.num_steps)
