"""Python numbers as cached 0-d tensors, for operations on the per-step hot path.

`x * 0.9` wraps 0.9 into a new tensor (and casts it to x's dtype) on every call, which costs
as much as the multiplication itself on a small state; `x * constant(0.9, x)` does not. The
result is the same to the bit: the number is cast to x's dtype either way.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=256)
def _cached(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def constant(value: float, like: torch.Tensor) -> torch.Tensor:
    """`value` as a 0-d tensor of like's dtype and device (made once per dtype and device)."""
    return _cached(value, like.dtype, like.device)
