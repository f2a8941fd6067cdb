"""Fixed-step convergence orders of the stiff methods (issue 12's order acceptance).

Run from the repository root:

    .venv/bin/python benchmarks/bench_stiff_order.py    # ~2 minutes

Two problems with exact solutions (tests/stiff_problems.py): the linear system
y' = L y + v cos(2t) on [0, 1] (eigenvalues -1, -10, -1000, a non-normal part; exact by the
matrix exponential; the A-stable-only methods, which do not damp a stiff component, on
eigenvalues -1, -3, -10) and a nonlinear, non-autonomous 2-D problem with a manufactured
solution on [0, 1]. Each row prints the observed orders log2(e(h) / e(h/2)) between
successive halvings of the step, float64, one Jacobian per step (`solve_fixed`).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from tidal.solvers.implicit import IMPLICIT_TABLEAUS
from tidal.solvers.rosenbrock_methods import ROSENBROCK_TABLEAUS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from stiff_problems import LinearStiff, Manufactured, slopes, solve_fixed, uniform_grid


def _orders(tableau, problem, y0: torch.Tensor, exact: np.ndarray, counts: list[int]) -> str:
    errors = [np.abs(solve_fixed(problem, y0, uniform_grid(1.0, n), tableau)[0].numpy()
                     - exact).max() for n in counts]
    observed = slopes([1.0 / n for n in counts], errors)
    return (" ".join(f"{x:.2f}" for x in observed)
            + f" (n = {counts[0]}..{counts[-1]}, last error {errors[-1]:.1e})")


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    manufactured = Manufactured()
    y0_nonlinear = manufactured.phi(torch.zeros(1))
    exact_nonlinear = manufactured.phi(torch.tensor(1.0)).numpy()
    print("method | order | linear stiff system | nonlinear (manufactured)")
    print("--- | --- | --- | ---")
    for tableau in (*ROSENBROCK_TABLEAUS, *IMPLICIT_TABLEAUS.values()):
        stiff = getattr(tableau, "l_stable", True)
        linear = LinearStiff((-1.0, -10.0, -1000.0) if stiff else (-1.0, -3.0, -10.0))
        high = tableau.order >= 5
        row = [
            tableau.name, str(tableau.order),
            _orders(tableau, linear, torch.tensor(linear.y0)[None], linear.exact(1.0),
                    [8, 16, 32, 64] if high else [8, 16, 32, 64, 128]),
            _orders(tableau, manufactured, y0_nonlinear, exact_nonlinear,
                    [10, 20, 40, 80] if high else [20, 40, 80, 160]),
        ]
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
