"""Reference problems and a minimal fixed-step driver for the stiff-method tests.

The driver is deliberately the simplest loop (no error control): it steps over a given grid,
computing one Jacobian per step, and asserts that every step succeeded. The loops of
`tidal.solve` are not used; these tests check the numerics alone.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from tidal.solvers.implicit import ImplicitTableau
from tidal.solvers.implicit_step import implicit_step
from tidal.solvers.jacobian import BatchedJacobian
from tidal.solvers.rosenbrock import RosenbrockTableau
from tidal.solvers.rosenbrock_step import rosenbrock_step


def load_example(name: str) -> ModuleType:
    """The module examples/NAME.py, imported from its file (examples are not a package)."""
    path = Path(__file__).parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def float64_default():
    """Import into a test module to run its tests with float64 as torch's default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def solve_fixed(field, y0: torch.Tensor, grid: torch.Tensor,
                tableau: RosenbrockTableau | ImplicitTableau, jac=None) -> torch.Tensor:
    """y at grid[-1] after one step per grid interval; grid [N + 1] or [N + 1, B]."""
    jacobian = BatchedJacobian(field, jac=jac)
    batch = y0.shape[0]
    grid = grid.to(y0.dtype)
    grid = grid[:, None].expand(-1, batch) if grid.dim() == 1 else grid
    y, f0 = y0, field(grid[0], y0)
    for t0, t1 in itertools.pairwise(grid):
        J, dfdt = jacobian(t0, y)
        if isinstance(tableau, RosenbrockTableau):
            step = rosenbrock_step(field, t0, y, f0, t1 - t0, tableau, J, dfdt)
            f1 = step.f1
        else:
            step = implicit_step(field, t0, y, f0, t1 - t0, tableau, J, jacobian)
            f1 = None
        assert bool(step.ok.all()), f"a step of {tableau.name} failed at t = {t0.tolist()}"
        y = step.y1
        f0 = f1 if f1 is not None else field(t1, y)
    return y


def slopes(steps: list[float], errors: list[float]) -> np.ndarray:
    """Observed orders between successive step sizes."""
    return np.diff(np.log(errors)) / np.diff(np.log(steps))


class LinearStiff:
    """y' = L y + v cos(omega t), L = Q diag(eigenvalues) Q^T + a non-normal upper part;
    exact solution by the matrix exponential of the system augmented with (cos, sin)."""

    def __init__(self, eigenvalues: tuple[float, ...], seed: int = 0, omega: float = 2.0):
        rng = np.random.default_rng(seed)
        dim = len(eigenvalues)
        q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        self.L = q @ np.diag(eigenvalues) @ q.T + 0.3 * np.triu(rng.standard_normal((dim, dim)),
                                                                1)
        self.v = rng.standard_normal(dim)
        self.y0 = rng.standard_normal(dim)
        self.omega = omega
        self.L_t, self.v_t = torch.tensor(self.L), torch.tensor(self.v)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.L_t.T + torch.cos(self.omega * t)[..., None] * self.v_t

    def exact(self, t_end: float) -> np.ndarray:
        dim = len(self.v)
        aug = np.zeros((dim + 2, dim + 2))
        aug[:dim, :dim], aug[:dim, dim] = self.L, self.v
        aug[dim, dim + 1], aug[dim + 1, dim] = -self.omega, self.omega
        start = np.concatenate([self.y0, [1.0, 0.0]])
        return (scipy.linalg.expm(aug * t_end) @ start)[:dim]


class Manufactured:
    """A nonlinear, non-autonomous 2-D problem with a known solution phi:
    f(t, y) = g(y) + phi'(t) - g(phi(t)), g(y) = (-y0 y1 - y0^3 / 3, y0^2 - 2 y1)."""

    @staticmethod
    def phi(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.cos(t) + 0.5 * torch.sin(2 * t),
                            torch.exp(-t) + 0.5 * torch.sin(t)], -1)

    @staticmethod
    def dphi(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([-torch.sin(t) + torch.cos(2 * t),
                            -torch.exp(-t) + 0.5 * torch.cos(t)], -1)

    @staticmethod
    def g(y: torch.Tensor) -> torch.Tensor:
        a, b = y.unbind(-1)
        return torch.stack([-a * b - a ** 3 / 3, a ** 2 - 2 * b], -1)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.g(y) + self.dphi(t) - self.g(self.phi(t))


def parametrized_field(theta: torch.Tensor):
    """A small nonlinear, non-autonomous field with parameters theta [3] (theta_2 = 20 makes
    it stiff), for gradient checks."""
    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = y.unbind(-1)
        return torch.stack([-theta[0] * a + theta[1] * a * b + torch.sin(t),
                            -theta[2] * b * (1 + a ** 2)], -1)

    return field


ROBER_K = (0.04, 3e7, 1e4)


def rober(scale: torch.Tensor):
    """ROBER (Robertson's chemical kinetics) with every rate scaled by `scale` [B]."""
    k1, k2, k3 = (k * scale for k in ROBER_K)

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k1 * y1 + k3 * y2 * y3,
                            k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2,
                            k2 * y2 ** 2], -1)

    def jac(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y.unbind(-1)
        zero = torch.zeros_like(y1)
        return torch.stack([
            torch.stack([-k1 + zero, k3 * y3, k3 * y2], -1),
            torch.stack([k1 + zero, -k3 * y3 - 2 * k2 * y2, -k3 * y2], -1),
            torch.stack([zero, 2 * k2 * y2, zero], -1)], -2)

    return field, jac


def rober_numpy(scale: float):
    k1, k2, k3 = (k * scale for k in ROBER_K)
    return lambda t, y: [-k1 * y[0] + k3 * y[1] * y[2],
                         k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2, k2 * y[1] ** 2]


def van_der_pol(mu: float):
    """x'' - mu (1 - x^2) x' + x = 0 as (x, v); stiff for large mu, period ~ (3 - 2 ln 2) mu."""
    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y.unbind(-1)
        return torch.stack([v, mu * (1 - x ** 2) * v - x], -1)

    return field, lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]


def radau_reference(f_numpy, y0: list[float], t_end: float) -> np.ndarray:
    """scipy's Radau at rtol 1e-12 (atol 1e-14 scaled to the smallest component of interest)."""
    sol = scipy.integrate.solve_ivp(f_numpy, (0.0, t_end), y0, method="Radau", rtol=1e-12,
                                    atol=1e-14)
    assert sol.success
    return sol.y[:, -1]


def rober_error(tableau: RosenbrockTableau | ImplicitTableau) -> np.ndarray:
    """Componentwise relative error of ROBER at t = 40 after 100 log-spaced fixed steps from
    t = 1e-6, against scipy's Radau at rtol 1e-12 (a few-step sanity check, no error control)."""
    reference = radau_reference(rober_numpy(1.0), [1.0, 0.0, 0.0], 40.0)
    field, _ = rober(torch.ones(1))
    y = solve_fixed(field, torch.tensor([[1.0, 0.0, 0.0]]), log_grid(1e-6, 40.0, 100), tableau)
    return np.abs(y[0].numpy() - reference) / np.abs(reference)


def van_der_pol_error(tableau: RosenbrockTableau | ImplicitTableau) -> np.ndarray:
    """The same for Van der Pol, mu = 1000, on its slow manifold to t = 100 (40 log-spaced
    steps from t = 1e-4)."""
    field, field_numpy = van_der_pol(1000.0)
    reference = radau_reference(field_numpy, [2.0, 0.0], 100.0)
    y = solve_fixed(field, torch.tensor([[2.0, 0.0]]), log_grid(1e-4, 100.0, 40), tableau)
    return np.abs(y[0].numpy() - reference) / np.abs(reference)


def log_grid(t_first: float, t_end: float, steps: int) -> torch.Tensor:
    """0, then `steps` log-spaced points from t_first to t_end (for solutions with a fast
    initial transient followed by slow change)."""
    points = np.geomspace(t_first, t_end, steps)
    return torch.tensor(np.concatenate([[0.0], points]))


def uniform_grid(t_end: float, steps: int) -> torch.Tensor:
    return torch.linspace(0.0, t_end, steps + 1, dtype=torch.float64)

