"""`Ensemble`: K models of the same kind trained from different seeds (and optionally
bootstrap resamples), predicting their mean, with predictive quantile bands.

The spread of the members is the uncertainty that comes from the fit (the model and its
training); observations add their own noise, which the ensemble carries as
`observation_noise` (one standard deviation per state, in the data's units, estimated from the
data by `tidal.data.noise.noise_level`). The predictive distribution of an observation at time
t is the mixture (1/K) sum_k N(y_k(t), sigma^2), with the members' spread about their mean
widened for their number or calibrated on held-out data: `predictive_quantiles` gives its
quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import scipy.special
import torch
from torch import nn

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.models.neural_ode import NeuralODE

#: The most members an ensemble may have (also the bound config.json is checked against).
MAX_MEMBERS = 256


class _MeanField(nn.Module):
    """The members' mean vector field, for plots and checks of the field (the ensemble's
    trajectories are the mean of the members' trajectories, not the flow of this field).
    Holds no parameters of its own."""

    def __init__(self, members: Sequence[NeuralODE]) -> None:
        super().__init__()
        self._members = tuple(members)  # a tuple: the ensemble registers the members

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.vector_field(t, y) for m in self._members]).mean(0)


class Ensemble(NeuralODE):
    """K members; `model(y0, ts)` is the mean of their trajectories [T, *y0.shape].

    Args:
        members: models of the same configuration (e.g. from `model_from_config`).
        seeds: the seed each member was trained with (recorded in `config()`).
        bootstrap: whether each member was trained on a bootstrap resample of the
            trajectories (recorded).
        observation_noise: the observations' noise sd per state, in the data's units (used
            by `tidal.training.ensemble.predictive_quantiles`); None: not known.
        band_calibration: how the predictive band was calibrated on held-out data
            (`tidal.training.band_calibration`): {"scale": the factor on the mixture's spread,
            "points": how many observations chose it, "data": which}; None: not calibrated.
    """

    def __init__(self, members: Sequence[NeuralODE], *, seeds: Sequence[int] | None = None,
                 bootstrap: bool = False, observation_noise: Sequence[float] | None = None,
                 band_calibration: dict[str, Any] | None = None) -> None:
        members = list(members)
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise InvalidArgumentError(f"`Ensemble(members=...)` needs 1 to {MAX_MEMBERS} "
                                       f"models; got {len(members)}.")
        _check_members(members)
        first = members[0]
        super().__init__(_MeanField(members), solver=first.solver,
                         controller=first.controller, adjoint=first.adjoint,
                         max_steps=first.max_steps)
        self.members = nn.ModuleList(members)
        self.seeds = list(range(len(members))) if seeds is None else [int(s) for s in seeds]
        self.bootstrap = bool(bootstrap)
        self.observation_noise = (None if observation_noise is None
                                  else [float(s) for s in observation_noise])
        self.band_calibration = None if band_calibration is None else dict(band_calibration)

    def forward(self, y0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return self.member_predictions(y0, ts).mean(0)

    def member_predictions(self, y0: torch.Tensor, ts: torch.Tensor, *,
                           unsolved_as_nan: bool = False) -> torch.Tensor:
        """Every member's trajectories, [K, T, *y0.shape]. A member whose solve fails (it
        blows up within `ts`) raises `SolveFailedError`, or with `unsolved_as_nan` gives NaN
        for the whole call (the report's bands and warnings then say so)."""
        if not unsolved_as_nan:
            return torch.stack([member(y0, ts) for member in self.members])
        predictions = []
        for member in self.members:
            try:
                predictions.append(member(y0, ts))
            except SolveFailedError:
                predictions.append(torch.full((len(ts), *y0.shape), math.nan,
                                              dtype=y0.dtype, device=y0.device))
        return torch.stack(predictions)

    def solve(self, y0: torch.Tensor, ts: torch.Tensor, **options: Any) -> Any:
        raise InvalidArgumentError("An `Ensemble` has no single solve (its prediction is the "
                                   "members' mean); solve `ensemble.members[k]`.")

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"type": "Ensemble", "members": len(self.members),
                                  "member": cast(NeuralODE, self.members[0]).config(),
                                  "seeds": self.seeds, "bootstrap": self.bootstrap}
        if self.observation_noise is not None:
            config["observation_noise"] = self.observation_noise
        if self.band_calibration is not None:
            config["band_calibration"] = self.band_calibration
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Ensemble:
        from tidal.models.registry import model_from_config

        if config["member"].get("type") == "Ensemble":
            raise InvalidArgumentError("Model config: an ensemble's member cannot be an "
                                       "ensemble.")
        members = [model_from_config(config["member"]) for _ in range(config["members"])]
        return cls(members, seeds=config.get("seeds"), bootstrap=config.get("bootstrap", False),
                   observation_noise=config.get("observation_noise"),
                   band_calibration=config.get("band_calibration"))


def _check_members(members: list[Any]) -> None:
    """Members are NeuralODEs (not ensembles) of one state size, where their networks say."""
    sizes = set()
    for k, member in enumerate(members):
        if not isinstance(member, NeuralODE) or isinstance(member, Ensemble):
            raise InvalidArgumentError(
                f"`Ensemble(members=...)`: member {k} is a {type(member).__name__}; members "
                f"must be NeuralODE models (not ensembles), e.g. NeuralODE(tidal.nn.MLP(d)).")
        size = member.state_size()
        if size is not None:
            sizes.add(size)
    if len(sizes) > 1:
        raise InvalidArgumentError(
            f"`Ensemble(members=...)`: the members' vector fields take states of different "
            f"sizes {sorted(sizes)}; an ensemble's members model the same states.")


def mixture_quantiles(centres: np.ndarray, sd: np.ndarray, quantiles: Sequence[float]
                      ) -> np.ndarray:
    """Quantiles of the equal-weight mixture of N(centres[k], sd^2) over the first axis.

    centres [K, ...]; sd broadcasts against centres[0] (0 gives the members' empirical
    quantiles, `np.quantile`'s linear rule). Returns [len(quantiles), ...]. Found by
    bisection of the mixture's CDF (60 halvings of a bracket of the centres +- 10 sd: to
    1e-18 of the bracket)."""
    quantiles = check_quantiles("mixture_quantiles", quantiles)
    sd = np.broadcast_to(np.asarray(sd, dtype=float), centres.shape[1:])
    if not np.any(sd > 0):
        return np.quantile(centres, quantiles, axis=0)
    safe = np.where(sd > 0, sd, 1.0)
    out = []
    for q in quantiles:
        low = centres.min(0) - 10 * safe
        high = centres.max(0) + 10 * safe
        for _ in range(60):
            middle = 0.5 * (low + high)
            cdf = scipy.special.ndtr((middle - centres) / safe).mean(0)
            below = cdf < q
            low, high = np.where(below, middle, low), np.where(below, high, middle)
        mixed = 0.5 * (low + high)
        out.append(np.where(sd > 0, mixed, np.quantile(centres, q, axis=0)))
    return np.stack(out)


def check_quantiles(owner: str, quantiles: Any) -> list[float]:
    """The quantile levels as floats, each strictly between 0 and 1 (a normal mixture's 0 and
    1 quantiles are infinite), else an error naming `owner(quantiles=...)`."""
    try:
        levels = [float(q) for q in quantiles]
    except (TypeError, ValueError):
        levels = []
    if not levels or not all(0 < q < 1 for q in levels):
        raise InvalidArgumentError(
            f"`{owner}(quantiles={quantiles!r})` must be a list of levels strictly between 0 "
            f"and 1, e.g. (0.05, 0.5, 0.95) (fractions, not percentages).")
    return levels

