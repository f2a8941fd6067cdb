r"""`PolynomialODE`: a sparse polynomial vector field whose coefficients are learned.

$$ \frac{dy_i}{dt} = \sum_{k \in A_i} c_{ik} \, \theta_k(y), $$

with theta_k the monomials of the state up to a degree (`monomial_factors`' order and
naming: "1", "x", "y", "x^2", "x y", "y^2", ...) and A_i the active terms of output i. This is
the form a formula found by sparse regression takes when it is fitted again to the data: the
last step of the UDE workflow (train a UDE, explain the learned field by SINDy, refit the
equations; Rackauckas et al. 2020). The terms stay as found; only their coefficients move.

The coefficients are in the data's units whatever units the model is trained in: the field
maps a scaled state back to the data's units, evaluates the polynomial there and scales the
rate back (`Scaling`), so a run standardized for a neural network trains it the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tidal import defaults
from tidal._errors import InvalidArgumentError
from tidal.adjoint.base import Adjoint
from tidal.controllers.base import StepSizeController
from tidal.data import Scaling
from tidal.models.neural_ode import NeuralODE, solve_options
from tidal.solvers.base import StepMethod


def monomial_factors(n_states: int, degree: int) -> list[tuple[int, ...]]:
    """Each monomial up to `degree` as the state indices it multiplies, constant first, in
    PySINDy's order (`tidal.models.symbolic.polynomial_library` uses it): (), (0,), (1,),
    (0, 0), (0, 1), ..."""
    return [combo for d in range(degree + 1)
            for combo in itertools.combinations_with_replacement(range(n_states), d)]


def feature_names(degree: int, names: Sequence[str]) -> tuple[str, ...]:
    """The monomials' names up to `degree` in `monomial_factors`' order, as PySINDy names
    them: "1", "x", "y", "x^2", "x y", "y^2", ..."""
    def name(combo: tuple[int, ...]) -> str:
        return " ".join(f"{names[i]}^{combo.count(i)}" if combo.count(i) > 1 else names[i]
                        for i, _ in itertools.groupby(combo)) or "1"

    return tuple(name(combo) for combo in monomial_factors(len(names), degree))


def format_equation(output: str, terms: Iterable[tuple[str, float]], precision: int = 4
                    ) -> str:
    """"output = c1 term1 + c2 term2 ..." over the nonzero coefficients ("0" if none)."""
    text = ""
    for feature, c in terms:
        if c == 0:
            continue
        term = f"{abs(c):.{precision}g}" + ("" if feature == "1" else f" {feature}")
        sign = ("-" if c < 0 else "") if not text else (" - " if c < 0 else " + ")
        text += sign + term
    return f"{output} = {text or '0'}"


class PolynomialField(nn.Module):
    """The field of a `PolynomialODE`: `coefficients` [D, F] (zero outside `active`) in the
    data's units, applied to scaled states through `scaling`."""

    active: torch.Tensor  # [D, F] bool: the learned terms
    active_index: torch.Tensor  # their flat indices, in the coefficients' order
    term_factors: torch.Tensor  # [P, degree]: each coefficient's monomial, indices into [1, y]
    combine: torch.Tensor  # [P, D]: each coefficient's output, its rate in the model's units
    lift: torch.Tensor  # [D, 1 + D] and lift_offset [1 + D]: scaled y -> [1, y in data units]
    lift_offset: torch.Tensor

    def __init__(self, coefficients: np.ndarray | Sequence[Sequence[float]], degree: int,
                 scaling: Scaling, active: np.ndarray | Sequence[Sequence[bool]] | None = None
                 ) -> None:
        super().__init__()
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise InvalidArgumentError(f"`PolynomialField(degree={degree!r})`: must be an "
                                       "integer >= 1.")
        values = np.asarray(coefficients, dtype=np.float64)
        n_states = len(scaling.state_offset)
        terms = math.comb(n_states + degree, degree)  # counted before they are listed
        if values.shape != (n_states, terms):
            raise InvalidArgumentError(
                f"`PolynomialField(coefficients=...)`: expected shape ({n_states}, {terms}) for "
                f"{n_states} states up to degree {degree}; got {values.shape}.")
        factors = monomial_factors(n_states, degree)
        mask = values != 0 if active is None else np.asarray(active, dtype=bool)
        if mask.shape != values.shape or not np.isfinite(values).all():
            raise InvalidArgumentError("`PolynomialField(active=...)` must have the "
                                       "coefficients' shape, and the coefficients be finite.")
        self.degree, self.scaling = degree, scaling
        # state indices per monomial, padded with index 0 of [1, y] (a factor of one)
        index = np.zeros((len(factors), degree), dtype=np.int64)
        for k, combo in enumerate(factors):
            index[k, :len(combo)] = np.asarray(combo) + 1
        outputs, features = np.nonzero(mask)  # row-major: the coefficients' order
        rate_scale = scaling.time_scale / np.asarray(scaling.state_scale)  # `scale_rates`
        combine = np.zeros((len(outputs), n_states))
        combine[np.arange(len(outputs)), outputs] = rate_scale[outputs]
        lift = np.concatenate([np.zeros((n_states, 1)), np.diag(scaling.state_scale)], 1)
        for name, value in (("active", torch.as_tensor(mask)),
                            ("active_index", torch.as_tensor(np.flatnonzero(mask))),
                            ("term_factors", torch.as_tensor(index[features])),
                            ("combine", torch.as_tensor(combine)), ("lift", torch.as_tensor(lift)),
                            ("lift_offset", torch.tensor([1.0, *scaling.state_offset]))):
            self.register_buffer(name, value, persistent=False)
        self.coefficients = nn.Parameter(torch.as_tensor(values[mask],
                                                         dtype=torch.get_default_dtype()))

    def matrix(self) -> torch.Tensor:
        """The coefficients [D, F], zero outside the active terms."""
        full = self.coefficients.new_zeros(self.active.numel())
        return full.index_copy(0, self.active_index, self.coefficients).view(self.active.shape)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sum_k c_k theta_k(state) e_(output k), with state = offset + scale y in the data's
        units and the rates scaled back (`Scaling.unscale_values` and `scale_rates`, folded
        into the constant `lift` and `combine`: five operations a call)."""
        lift, lift_offset, combine, coefficients = (
            value if value.dtype == y.dtype else value.to(y.dtype)
            for value in (self.lift, self.lift_offset, self.combine, self.coefficients))
        padded = (torch.addmm(lift_offset, y, lift) if y.dim() == 2
                  else y @ lift + lift_offset)  # [..., 1 + D]: [1, the state in data units]
        monomials = padded[..., self.term_factors].prod(-1)  # [..., P], one per coefficient
        return (monomials * coefficients) @ combine


class PolynomialODE(NeuralODE):
    """dy/dt = a sparse polynomial with learned coefficients (see the module docstring).

    Args:
        coefficients: [D, F] initial coefficients in the data's units, F the monomials up to
            `degree` (`monomial_factors`); the nonzero ones are learned, the zeros stay zero
            unless `active` says otherwise.
        degree: the monomials' highest total degree.
        scaling: the units the model works in (as `tidal.fit`'s `scaling`); the coefficients
            keep the data's units.
        state_names: names for the formula (default x0, x1, ...).
        active: [D, F] which terms are learned (default: the nonzero coefficients).
        solver, controller, adjoint, max_steps: as for `NeuralODE`.

    Example:
        >>> lv = PolynomialODE.from_terms(
        ...     {"dx": {"x": 1.5, "x y": -1.0}, "dy": {"x y": 1.0, "y": -3.0}}, ("x", "y"))
        >>> lv.equations()
        ['dx = 1.5 x - 1 x y', 'dy = -3 y + 1 x y']
    """

    vector_field: PolynomialField

    def __init__(self, coefficients: np.ndarray | Sequence[Sequence[float]], degree: int,
                 scaling: Scaling | None = None, *, state_names: Sequence[str] | None = None,
                 active: np.ndarray | Sequence[Sequence[bool]] | None = None,
                 solver: StepMethod | None = None,
                 controller: StepSizeController | None = None, adjoint: Adjoint | None = None,
                 max_steps: int = defaults.MAX_STEPS) -> None:
        n_states = np.asarray(coefficients).shape[0]
        scaling = scaling or Scaling((0.0,) * n_states, (1.0,) * n_states)
        names = tuple(state_names) if state_names is not None else tuple(
            f"x{i}" for i in range(n_states))
        if len(names) != n_states:
            raise InvalidArgumentError(f"`PolynomialODE(state_names=...)`: {len(names)} names "
                                       f"for {n_states} states.")
        super().__init__(PolynomialField(coefficients, degree, scaling, active), solver=solver,
                         controller=controller, adjoint=adjoint, max_steps=max_steps)
        self.state_names = names

    @classmethod
    def from_terms(cls, terms: dict[str, dict[str, float]], state_names: Sequence[str],
                   degree: int = 2, **options: Any) -> PolynomialODE:
        """From {output: {term: coefficient}} as `SymbolicFit.terms()` gives them, outputs in
        the states' order ("d" + name) and terms named as the library names them."""
        features = feature_names(degree, state_names)
        outputs = [f"d{name}" for name in state_names]
        unknown = sorted(set(terms) - set(outputs))
        if unknown:
            raise InvalidArgumentError(
                f"`PolynomialODE.from_terms`: {unknown} are not outputs of the states "
                f"{list(state_names)}; name them {outputs}.")
        values = np.zeros((len(state_names), len(features)))
        for i, name in enumerate(state_names):
            for term, value in terms.get(f"d{name}", {}).items():
                if term not in features:
                    raise InvalidArgumentError(
                        f"`PolynomialODE.from_terms`: {term!r} is not a monomial of degree <= "
                        f"{degree} in {list(state_names)} (terms: {list(features)}).")
                values[i, features.index(term)] = value
        return cls(values, degree, state_names=state_names, **options)

    def without(self, term: int) -> PolynomialODE:
        """This model with its `term`-th learned coefficient (in `coefficients`' order:
        output by output, monomial by monomial) removed, the others at their values."""
        field = self.vector_field
        active = field.active.clone()
        active.view(-1)[torch.nonzero(active.view(-1))[term, 0]] = False
        values = field.matrix().detach().double().cpu().numpy() * active.cpu().numpy()
        return PolynomialODE(values, field.degree, field.scaling, state_names=self.state_names,
                             active=active.cpu().numpy(), solver=self.solver,
                             controller=self.controller, adjoint=self.adjoint,
                             max_steps=self.max_steps).to(field.coefficients.dtype)

    def terms(self) -> dict[str, dict[str, float]]:
        """{output: {term: coefficient}} of the active terms, at the current coefficients."""
        features = feature_names(self.vector_field.degree, self.state_names)
        matrix = self.vector_field.matrix().detach().double().cpu().numpy()
        active = self.vector_field.active.cpu().numpy()
        return {f"d{name}": {feature: float(value) for feature, value, on
                             in zip(features, row, keep) if on}
                for name, row, keep in zip(self.state_names, matrix, active)}

    def equations(self, precision: int = 4) -> list[str]:
        """One readable line per state at the current coefficients, e.g. "dx = 1.5 x - 1 x y"."""
        return [format_equation(out, row.items(), precision)
                for out, row in self.terms().items()]

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model, as plain JSON values (the coefficients'
        current values are the weights; the active terms are structure)."""
        field = self.vector_field
        return {"type": "PolynomialODE", "degree": field.degree,
                "state_names": list(self.state_names),
                "active": field.active.cpu().tolist(),
                "scaling": field.scaling.to_dict(),
                **self._solve_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PolynomialODE:
        """Rebuild a model from `config()` (coefficients at 1 until the weights are loaded)."""
        try:
            active = np.asarray(config["active"], dtype=bool)
            scaling = Scaling.from_dict(config["scaling"])
            degree = int(config["degree"])
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgumentError(f"PolynomialODE config is malformed: {error}.") from None
        return cls(active.astype(np.float64), degree, scaling,
                   state_names=config["state_names"], active=active, **solve_options(config))
