"""Validation shared by controllers for the known-discontinuity options."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tidal._errors import InvalidArgumentError

#: times as a controller takes them (kept as a sorted tuple of floats after construction)
Times = Sequence[float] | torch.Tensor


def as_time_tuple(name: str, owner: str, values: Times | None) -> tuple[float, ...]:
    """Times as a sorted tuple of finite floats (float64); None gives ()."""
    if values is None:
        return ()
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).cpu().double().tolist()
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"`{owner}({name}=...)` must be one flat list (or 1-d "
                                   f"tensor) of times; got {values!r}.") from None
    if any(not math.isfinite(v) for v in out):
        raise InvalidArgumentError(f"`{owner}({name}=...)` must hold finite times; got {out}.")
    return tuple(sorted(set(out)))
