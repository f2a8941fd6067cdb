r"""Two-dimensional toy densities for normalizing flows (after FFJORD's `toy_data.py`).

`TOYS` maps a name to a sampler; `sample_toy(name, n, seed=...)` draws n points [n, 2].
`toy_log_prob(name, x)` is the exact log-density where one is known: for "eight-gaussians",
an equal mixture of 8 isotropic Gaussians with standard deviation `EIGHT_GAUSSIANS_STD` centred
on the circle of radius `EIGHT_GAUSSIANS_RADIUS` at the angles k π/4, k = 0..7:

$$ p(x) = \frac{1}{8} \sum_{k=0}^{7} \mathcal{N}(x;\, r(\cos k\pi/4, \sin k\pi/4),\,
   \sigma^2 I). $$

These are FFJORD's constants (centres at radius 4, noise 0.5, everything divided by 1.414),
so r = 2√2 and σ = 0.5/1.414 ≈ 0.354: modes well apart (gaps of about 6σ between
neighbours), and an entropy of about 2.84 nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tidal._errors import InvalidArgumentError

EIGHT_GAUSSIANS_RADIUS = 4.0 / 1.414
EIGHT_GAUSSIANS_STD = 0.5 / 1.414

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def eight_gaussians_centers(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 8 mixture centres [8, 2]: radius `EIGHT_GAUSSIANS_RADIUS`, angles k π/4."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = EIGHT_GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=-1)
    return centers.to(dtype)


def _eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(8, (n,), generator=g)
    noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return eight_gaussians_centers()[k] + EIGHT_GAUSSIANS_STD * noise


def _two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    """sklearn's `make_moons(noise=0.1)`, scaled by 2 and shifted by (-1, -0.2)."""
    upper = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    theta = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    outer = torch.stack([theta.cos(), theta.sin()], dim=-1)
    inner = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=-1)
    x = torch.where(upper.unsqueeze(-1), outer, inner)
    x = x + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return 2 * x + torch.tensor([-1.0, -0.2], dtype=torch.float64)


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    """Four concentric circles of radii 0.75, 1.5, 2.25, 3 with Gaussian noise 0.08."""
    radius = 0.75 * (1 + torch.randint(4, (n,), generator=g)).to(torch.float64)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = radius.unsqueeze(-1) * torch.stack([theta.cos(), theta.sin()], dim=-1)
    return x + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 dark squares of a 4 x 4 board over [-4, 4]^2."""
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    x2 = (torch.rand(n, generator=g, dtype=torch.float64)
          - 2 * torch.randint(2, (n,), generator=g).to(torch.float64))
    x2 = x2 + torch.floor(x1) % 2
    return 2 * torch.stack([x1, x2], dim=-1)


def _pinwheel(n: int, g: torch.Generator) -> torch.Tensor:
    """Five curved arms: radial std 0.3, tangential std 0.1, twist rate 0.25, scale 2."""
    arm = torch.randint(5, (n,), generator=g)
    features = torch.randn(n, 2, generator=g, dtype=torch.float64)
    features = features * torch.tensor([0.3, 0.1], dtype=torch.float64)
    features[:, 0] += 1
    angle = 2 * math.pi * arm.to(torch.float64) / 5 + 0.25 * features[:, 0].exp()
    c, s = angle.cos(), angle.sin()
    rotated = torch.stack([features[:, 0] * c + features[:, 1] * s,
                           -features[:, 0] * s + features[:, 1] * c], dim=-1)
    return 2 * rotated


TOYS: dict[str, Sampler] = {
    "eight-gaussians": _eight_gaussians,
    "two-moons": _two_moons,
    "rings": _rings,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
}


def sample_toy(name: str, n: int, *, seed: int | None = None,
               generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n points [n, 2] of the toy density `name` (a key of `TOYS`).

    Args:
        name: one of `TOYS`.
        n: number of points (>= 1).
        seed: seeds a fresh generator, so the same seed gives the same points.
        generator: draw from this generator instead (not together with `seed`); with
            neither, from torch's global generator.
        dtype: of the result (the points are drawn in float64).
    """
    sampler = _sampler(name)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"`sample_toy(n={n!r})`: n must be a positive integer.")
    if seed is not None and generator is not None:
        raise InvalidArgumentError(
            "`sample_toy(seed=..., generator=...)`: pass one of them, not both.")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ())))
    return sampler(n, generator).to(dtype)


def toy_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """The exact log-density [...] at points x [..., 2], in x's dtype ("eight-gaussians")."""
    _sampler(name)
    if name != "eight-gaussians":
        raise InvalidArgumentError(
            f"`toy_log_prob({name!r}, ...)`: no closed-form density is known for this toy; "
            f"only 'eight-gaussians' has one. Estimate others by a kernel density on samples.")
    sq = (x.unsqueeze(-2) - eight_gaussians_centers(x.dtype).to(x.device)).square().sum(-1)
    var = EIGHT_GAUSSIANS_STD**2
    log_components = -0.5 * sq / var - math.log(2 * math.pi * var)
    return torch.logsumexp(log_components, dim=-1) - math.log(8)


def _sampler(name: str) -> Sampler:
    if name not in TOYS:
        raise InvalidArgumentError(
            f"`sample_toy(name={name!r})` is not a known toy; choose one of {sorted(TOYS)}.")
    return TOYS[name]
