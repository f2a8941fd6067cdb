"""Symbolic regression of a learned function (a UDE's correction) by sparse regression (SINDy).

`recover(correction, region_samples)` evaluates the function on states from the region that
matters (the data's), builds a library of candidate terms (monomials up to `degree`) and keeps
the few that explain it, by sequentially thresholded least squares (STLSQ): solve least
squares, zero every coefficient below `threshold`, solve again on the terms left, repeat.

With PySINDy installed (`pip install tidal[sindy]`) the regression is PySINDy's `STLSQ` on its
`PolynomialLibrary`; without it, the same algorithm in numpy (below), which gives the same
terms and coefficients on the same library up to round-off (the tests compare them).

Brunton, Proctor & Kutz, "Discovering governing equations from data by sparse identification
of nonlinear dynamical systems", PNAS 113 (2016) 3932.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal.models.polynomial import feature_names, format_equation, monomial_factors
from tidal.models.ude import UDE


@dataclass(frozen=True)
class SymbolicFit:
    """The recovered formula of each output.

    Attributes:
        state_names: the names of the inputs (the library's variables).
        output_names: one name per output of the function.
        features: the library's terms, e.g. ("1", "x", "y", "x^2", "x y", "y^2").
        coefficients: [outputs, features]; zero for terms left out.
        backend: "pysindy" or "numpy".
        degree: the polynomial library's degree.
    """

    state_names: tuple[str, ...]
    output_names: tuple[str, ...]
    features: tuple[str, ...]
    coefficients: np.ndarray
    backend: str
    degree: int

    def terms(self) -> dict[str, dict[str, float]]:
        """{output: {term: coefficient}} for the kept (nonzero) terms."""
        return {out: {feature: float(c) for feature, c in zip(self.features, row) if c != 0}
                for out, row in zip(self.output_names, self.coefficients)}

    def coefficient(self, output: str, term: str) -> float:
        """One coefficient (0 when the term was left out), e.g. `coefficient("dx", "x y")`."""
        if output not in self.output_names or term not in self.features:
            raise InvalidArgumentError(
                f"`SymbolicFit.coefficient({output!r}, {term!r})`: outputs are "
                f"{list(self.output_names)}, terms {list(self.features)}.")
        return float(self.coefficients[self.output_names.index(output),
                                       self.features.index(term)])

    def equations(self, precision: int = 4) -> list[str]:
        """One readable line per output, e.g. "dx = 1.5 x - 1.0002 x y"."""
        return [format_equation(out, zip(self.features, row), precision)
                for out, row in zip(self.output_names, self.coefficients)]

    def predict(self, states: Any) -> np.ndarray:
        """The formula's values [N, outputs] at states [N, D] (array or tensor)."""
        x = _samples(states)
        if x.shape[1] != len(self.state_names):
            raise InvalidArgumentError(
                f"`SymbolicFit.predict(states=...)` has {x.shape[1]} columns; the formula is in "
                f"{len(self.state_names)} states {list(self.state_names)}.")
        theta, _ = polynomial_library(x, self.degree, self.state_names)
        return theta @ self.coefficients.T

    @property
    def formula(self) -> str:
        return "\n".join(self.equations())

    def __str__(self) -> str:
        return self.formula


def polynomial_library(x: np.ndarray, degree: int, names: Sequence[str]
                       ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Monomials of the columns of x [N, D] up to `degree` (`feature_names`' order). Returns
    ([N, F], names)."""
    columns = [np.prod(x[:, list(combo)], axis=1)
               for combo in monomial_factors(x.shape[1], degree)]
    return np.stack(columns, axis=1), feature_names(degree, names)


def stlsq(theta: np.ndarray, target: np.ndarray, threshold: float, alpha: float = 0.05,
          max_iter: int = 20) -> np.ndarray:
    """Sequentially thresholded (ridge) least squares, PySINDy's `STLSQ`: coefficients
    [outputs, features] with every kept |coefficient| >= threshold.

    Each output: ridge regression (penalty alpha |xi|^2) on the active terms; terms with
    |xi| < threshold leave the active set; repeat until it stops changing, then refit the
    active terms by unregularized least squares (PySINDy's `unbias`).
    """
    outputs = []
    for y in target.T:
        active = np.ones(theta.shape[1], dtype=bool)
        xi = np.zeros(theta.shape[1])
        for _ in range(max_iter):
            xi = np.zeros(theta.shape[1])
            if active.any():
                a = theta[:, active]
                xi[active] = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ y)
            keep = np.abs(xi) >= threshold
            if np.array_equal(keep, active):
                break
            active = keep & active
        outputs.append(refit(theta, y, active, threshold))
    return np.stack(outputs)


def refit(theta: np.ndarray, y: np.ndarray, active: np.ndarray, threshold: float
          ) -> np.ndarray:
    """Unregularized least squares on the `active` terms, dropping those whose refitted
    |coefficient| falls below `threshold` until none does (the ridge rounds can keep a term
    that the unbiased fit sets to ~0, e.g. 3e-15 x)."""
    active = active.copy()
    while True:
        xi = np.zeros(theta.shape[1])
        if not active.any():
            return xi
        xi[active] = np.linalg.lstsq(theta[:, active], y, rcond=None)[0]
        keep = active & (np.abs(xi) >= threshold)
        if np.array_equal(keep, active):
            return xi
        active = keep


def recover(correction: Callable[..., Any], region_samples: Any, *,
            library: str = "polynomial", degree: int = 2, threshold: float = 0.1,
            alpha: float = 0.05, state_names: Sequence[str] | None = None,
            output_names: Sequence[str] | None = None, t: float = 0.0,
            backend: str = "auto") -> SymbolicFit:
    """Fit a sparse formula to a learned function over a region of states.

    Args:
        correction: the function to explain, called as `correction(t, y)` on a tensor
            [N, D] (a UDE's `model.correction`, any `tidal.nn.MLP`, or a plain function); or a
            `UDE`, whose correction is used.
        region_samples: states [N, D] (array or tensor) covering the region where the formula
            should hold: the data's states, or a grid over their range. Sparse regression only
            knows the function there.
        library: "polynomial" (monomials up to `degree`, with a constant).
        degree: the highest total degree of the monomials.
        threshold: coefficients smaller than this (in absolute value) are set to zero; pick it
            below the smallest term you expect and above the network's noise.
        alpha: the ridge penalty of each thresholding round (PySINDy's default, 0.05).
        state_names: the variables' names in the formula (default x0, x1, ...).
        output_names: names of the outputs (default "d" + each state name).
        t: the time passed to `correction` (a time-independent correction ignores it).
        backend: "pysindy", "numpy" or "auto" (PySINDy when installed).

    Returns:
        A `SymbolicFit`: `terms()`, `coefficient(output, term)`, `formula`.

    Example:
        >>> fit = recover(lambda t, y: -y[:, :1] * y[:, 1:] * torch.tensor([1.0, -0.5]),
        ...               torch.rand(200, 2) + 0.5, state_names=("x", "y"))
        >>> print(fit.formula)
        dx = -1 x y
        dy = 0.5 x y
    """
    function = correction.correction if isinstance(correction, UDE) else correction
    if function is None or not callable(function):
        raise InvalidArgumentError("`recover(correction=...)` must be callable as f(t, y), or a "
                                   "UDE with a correction network.")
    if library != "polynomial":
        raise InvalidArgumentError(f"`recover(library={library!r})`: only 'polynomial' is "
                                   "available.")
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise InvalidArgumentError(f"`recover(degree={degree!r})`: must be an integer >= 1.")
    if not threshold >= 0:
        raise InvalidArgumentError(f"`recover(threshold={threshold!r})`: must be >= 0.")
    if not alpha >= 0:
        raise InvalidArgumentError(f"`recover(alpha={alpha!r})`: the ridge penalty must be "
                                   f">= 0.")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise InvalidArgumentError(f"`recover(t={t!r})` must be a number (the time passed to "
                                   f"the correction).")
    x = _samples(region_samples)
    names = tuple(state_names) if state_names is not None else tuple(
        f"x{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise InvalidArgumentError(f"`recover(state_names=...)`: {len(names)} names for "
                                   f"{x.shape[1]} state columns.")
    target = _evaluate(function, x, t)
    outputs = tuple(output_names) if output_names is not None else (
        tuple(f"d{n}" for n in names) if target.shape[1] == len(names)
        else tuple(f"f{i}" for i in range(target.shape[1])))
    if len(outputs) != target.shape[1]:
        raise InvalidArgumentError(f"`recover(output_names=...)`: {len(outputs)} names for "
                                   f"{target.shape[1]} outputs.")
    # PySINDy models dx/dt: it needs one output per state
    use_pysindy = _backend(backend) and target.shape[1] == x.shape[1]
    if use_pysindy:
        found, coefficients = _pysindy_fit(x, target, degree, threshold, alpha, names)
        features = tuple(found)
        theta, ours = polynomial_library(x, degree, names)
        if features == ours:  # the same rule as stlsq's for the terms PySINDy kept
            coefficients = np.stack([refit(theta, y, row != 0, threshold)
                                     for y, row in zip(target.T, coefficients)])
    else:
        theta, features = polynomial_library(x, degree, names)
        coefficients = stlsq(theta, target, threshold, alpha)
    return SymbolicFit(names, outputs, features, coefficients,
                       "pysindy" if use_pysindy else "numpy", degree)


THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


def explanations(correction: Callable[..., Any], region_samples: Any, *,
                 tolerance: float = 0.05, degree: int = 2,
                 state_names: Sequence[str] | None = None) -> list[tuple[float, SymbolicFit]]:
    """Every distinct formula along `THRESHOLDS` that explains the correction: its RMSE on
    `region_samples` within `tolerance` times the correction's range, for every output. Each
    set of terms once (at the largest threshold that gives it), sparsest first."""
    x = _samples(region_samples)
    function = correction.correction if isinstance(correction, UDE) else correction
    if function is None:
        raise InvalidArgumentError("`explanations(correction=...)` / `sparsest`: the UDE has "
                                   "no correction network to explain; pass its "
                                   "`vector_field` to explain the whole field.")
    if not callable(function):
        raise InvalidArgumentError("`explanations(correction=...)` / `sparsest`: must be "
                                   "callable as f(t, y), or a UDE with a correction network.")
    target = _evaluate(function, x, 0.0)
    # a constant output has no range: measure against its size (else no formula fits)
    spread = np.maximum(target.max(0) - target.min(0), 1e-9 * np.abs(target).max(0))
    found: dict[bytes, tuple[float, SymbolicFit]] = {}
    for threshold in THRESHOLDS:
        fit = recover(correction, x, degree=degree, threshold=threshold,
                      state_names=state_names)
        rmse = np.sqrt(((fit.predict(x) - target) ** 2).mean(0))
        if (rmse <= tolerance * spread).all():  # a larger threshold replaces the same terms
            found[(fit.coefficients != 0).tobytes()] = (threshold, fit)
    return sorted(found.values(),
                  key=lambda pair: (int((pair[1].coefficients != 0).sum()), -pair[0]))


def sparsest(correction: Callable[..., Any], region_samples: Any, *, tolerance: float = 0.05,
             degree: int = 2, state_names: Sequence[str] | None = None
             ) -> tuple[float, SymbolicFit] | None:
    """The sparsest formula that still explains the correction (`explanations`' first):
    (threshold, formula), or None when no threshold in `THRESHOLDS` gives one."""
    found = explanations(correction, region_samples, tolerance=tolerance, degree=degree,
                         state_names=state_names)
    return found[0] if found else None


def _samples(region_samples: Any) -> np.ndarray:
    if isinstance(region_samples, torch.Tensor):
        region_samples = region_samples.detach().cpu().double().numpy()
    x = np.asarray(region_samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise InvalidArgumentError(
            f"`recover(region_samples=...)` must be finite states of shape [N, D] (N >= 2); got "
            f"shape {x.shape}.")
    return x


def _evaluate(function: Callable[..., Any], x: np.ndarray, t: float) -> np.ndarray:
    """The function's values [N, outputs] at the samples, in float64 when it has parameters."""
    params = list(function.parameters()) if isinstance(function, torch.nn.Module) else []
    dtype = params[0].dtype if params else torch.float64
    device = params[0].device if params else torch.device("cpu")
    y = torch.as_tensor(x, dtype=dtype, device=device)
    with torch.no_grad():
        out = function(torch.tensor(t, dtype=dtype, device=device), y)
    values = np.asarray(out.detach().cpu().double().numpy() if isinstance(out, torch.Tensor)
                        else out, dtype=np.float64)
    if values.ndim == 0 or len(values) != len(x):
        raise InvalidArgumentError(
            f"`recover(correction=...)`: the function returned shape {values.shape} for "
            f"{len(x)} states; it must return one row per state, [N, outputs].")
    values = values.reshape(len(x), -1)
    if not np.isfinite(values).all():
        raise InvalidArgumentError("`recover(...)`: the function returned NaN or infinite "
                                   "values on the region samples.")
    return values


def _backend(backend: str) -> bool:
    """True to use PySINDy."""
    available = importlib.util.find_spec("pysindy") is not None
    if backend == "auto":
        return available
    if backend == "numpy":
        return False
    if backend == "pysindy":
        if not available:
            raise InvalidArgumentError("`recover(backend='pysindy')`: PySINDy is not installed; "
                                       "pip install 'tidal[sindy]', or use backend='numpy'.")
        return True
    raise InvalidArgumentError(f"`recover(backend={backend!r})`: use 'auto', 'pysindy' or "
                               "'numpy'.")


def _pysindy_fit(x: np.ndarray, target: np.ndarray, degree: int, threshold: float,
                 alpha: float, names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    import pysindy as ps

    model = ps.SINDy(feature_library=ps.PolynomialLibrary(degree=degree),
                     optimizer=ps.STLSQ(threshold=threshold, alpha=alpha))
    with warnings.catch_warnings():  # an empty formula is an answer, not a hazard
        warnings.filterwarnings("ignore", message="Sparsity parameter is too big")
        model.fit(x, t=1.0, x_dot=target, feature_names=list(names))
    return list(model.get_feature_names()), np.asarray(model.coefficients(), dtype=np.float64)
