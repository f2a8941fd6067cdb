r"""Counter-based Gaussian numbers: a normal value is a pure function of (sample seed, key,
channel), so it can be recomputed in any order, on any device, in any batch layout.

A Brownian tree needs the same normal for the same tree node every time it is asked, without
storing it. A stateful generator (`torch.Generator`) cannot do that per sample, so each value
is produced by hashing integers instead:

    word = mix32(mix32(K_lo + S_lo + c gamma) ^ (K_hi + S_hi))

where K is the 64-bit key of a tree node and role (`node_keys`), S the 64-bit key of the
sample (`sample_keys`), c the channel, gamma the 32-bit golden-ratio constant and mix32 an
invertible 32-bit integer hash (Wellons' "lowbias32" constants). Two words give a pair of
normals by the Box–Muller transform. The 64-bit keys come from the
SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014), applied to few values only.

Everything is integer arithmetic on torch tensors (int64 and int32 multiplication wrap modulo
2^64 and 2^32 on CPU and CUDA alike), so the words are bit-identical on every device; the
transcendental functions of the Box–Muller step agree to the last bits or so.
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF
_GAMMA32 = 0x9E3779B9 - (1 << 32)  # golden-ratio constant as a signed int32
_SEED_SALT = 0x5EED5EED5EED5EED


def _signed64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


_M1 = _signed64(0xBF58476D1CE4E5B9)
_M2 = _signed64(0x94D049BB133111EB)
_GAMMA64 = _signed64(0x9E3779B97F4A7C15)


def _shr(x: torch.Tensor, bits: int, width: int) -> torch.Tensor:
    """Logical right shift of a signed integer tensor (torch's `>>` keeps the sign)."""
    return (x >> bits) & ((1 << (width - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on an int64 tensor: a bijection of 64-bit words."""
    x = (x ^ _shr(x, 30, 64)) * _M1
    x = (x ^ _shr(x, 27, 64)) * _M2
    return x ^ _shr(x, 31, 64)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """An invertible 32-bit hash on an int32 tensor."""
    x = (x ^ _shr(x, 16, 32)) * 0x7FEB352D
    x = (x ^ _shr(x, 15, 32)) * (0x846CA68B - (1 << 32))
    return x ^ _shr(x, 16, 32)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) 32-bit halves of an int64 tensor, as int32."""
    return (x & _MASK32).to(torch.int32), _shr(x, 32, 64).to(torch.int32)


def sample_seeds(seed: int, batch: int, offset: int = 0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Per-sample seeds [batch] (int64) for samples `offset .. offset + batch - 1` of the ensemble
    named by `seed`. A shard of a large ensemble asks for its own range:
    `sample_seeds(s, 64, offset=128)` equals `sample_seeds(s, 256)[128:192]`."""
    index = torch.arange(offset, offset + batch, dtype=torch.int64, device=device)
    return splitmix64(splitmix64(torch.tensor(_signed64(seed), device=device)) + index * _GAMMA64)


def sample_keys(seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 64-bit key of each sample seed (so that nearby seeds give unrelated streams), as
    its (low, high) int32 halves [B]."""
    return _halves(splitmix64(seeds.to(torch.int64) ^ _signed64(_SEED_SALT)))


def node_keys(ids: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """The 64-bit key of each (tree node id, role) pair; `ids` and `roles` broadcast (int64).
    Node ids are heap numbers (the root is 1, the children of i are 2i and 2i + 1); roles
    (< 8) tell the normals of one node apart."""
    return splitmix64(ids * 8 + roles)


def gaussians(keys: torch.Tensor, samples: tuple[torch.Tensor, torch.Tensor],
              channels: int, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal values [B, *keys.shape[1:], channels].

    Args:
        keys: int64 node keys (from `node_keys`), shape [B or 1, ...].
        samples: the samples' keys (from `sample_keys`), two int32 tensors [B].
        channels: values per key (the Brownian motion's dimension).
        dtype: float32 or float64: the Box–Muller transform runs in this dtype (float64
            transcendental functions cost several times more on CPU); both start from the
            same uniforms, so the two agree to float32 rounding.

    The value at [b, ..., c] depends only on (keys[b, ...], the key of sample b, c), not on
    `channels`: channels 2p and 2p + 1 are the cosine and sine halves of one Box–Muller pair.
    """
    pairs = (channels + 1) // 2
    key_lo, key_hi = _halves(keys.unsqueeze(-1))
    seed_lo, seed_hi = (x.view(-1, *([1] * keys.dim())) for x in samples)
    counter = torch.arange(2 * pairs, dtype=torch.int32, device=keys.device) * _GAMMA32
    words = _mix32(_mix32(key_lo + seed_lo + counter) ^ (key_hi + seed_hi))
    # word + 2^31 is uniform on {0, .., 2^32 - 1}; the half offset keeps u away from 0 and 1.
    u = ((words.to(torch.float64) + (2.0**31 + 0.5)) * 2.0**-32).to(dtype)
    radius = torch.sqrt(-2.0 * torch.log(u[..., 0::2]))
    angle = (2.0 * math.pi) * u[..., 1::2]
    normals = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
    return normals.flatten(-2)[..., :channels]
