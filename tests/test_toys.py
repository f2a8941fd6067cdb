"""Toy 2-D densities: shapes, seeding, and the exact eight-Gaussians density against
quadrature and an independent formula (scipy's multivariate normal)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import multivariate_normal

from tidal._errors import InvalidArgumentError
from tidal.data.toys import (
    EIGHT_GAUSSIANS_RADIUS,
    EIGHT_GAUSSIANS_STD,
    TOYS,
    eight_gaussians_centers,
    sample_toy,
    toy_log_prob,
)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_samples_have_shape_dtype_and_are_seeded(name: str) -> None:
    a = sample_toy(name, 257, seed=3)
    assert a.shape == (257, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, sample_toy(name, 257, seed=3))
    assert not torch.equal(a, sample_toy(name, 257, seed=4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_toy(name, 10, generator=g1), sample_toy(name, 10, generator=g2))
    assert sample_toy(name, 4, seed=0, dtype=torch.float64).dtype == torch.float64


def test_eight_gaussians_integrates_to_one() -> None:
    """Midpoint rule on [-6, 6]^2 with 600^2 cells (h = 0.02, about σ/18): error < 1e-6."""
    n, half = 600, 6.0
    h = 2 * half / n
    c = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    p = toy_log_prob("eight-gaussians", torch.stack([gx, gy], -1)).exp()
    assert abs(p.sum().item() * h * h - 1.0) < 1e-6


def test_eight_gaussians_matches_scipy_mixture() -> None:
    x = torch.randn(200, 2, dtype=torch.float64) * 3
    angles = [k * math.pi / 4 for k in range(8)]
    ref = sum(multivariate_normal(
        [EIGHT_GAUSSIANS_RADIUS * math.cos(a), EIGHT_GAUSSIANS_RADIUS * math.sin(a)],
        EIGHT_GAUSSIANS_STD**2).pdf(x.numpy()) for a in angles) / 8
    ours = toy_log_prob("eight-gaussians", x).exp().numpy()
    assert ours == pytest.approx(ref, rel=1e-10, abs=1e-300)


def test_eight_gaussians_samples_follow_the_density() -> None:
    """Monte Carlo: the sample mean of -log p estimates the entropy; with 20 000 samples its
    standard error is about 0.007 nats, and we allow 5 of them. Offsets from the nearest
    centre have mean 0 and standard deviation σ per coordinate (standard errors 0.0025 and
    0.0018), and every centre gets about 1/8 of the points."""
    x = sample_toy("eight-gaussians", 20_000, seed=0, dtype=torch.float64)
    nll = -toy_log_prob("eight-gaussians", x)
    entropy = math.log(8) + 1 + math.log(2 * math.pi * EIGHT_GAUSSIANS_STD**2)  # well apart
    assert abs(nll.mean().item() - entropy) < 5 * nll.std().item() / math.sqrt(len(x))
    centers = eight_gaussians_centers()
    nearest = torch.cdist(x, centers).argmin(-1)
    offset = x - centers[nearest]
    assert offset.mean(0).abs().max() < 0.01
    assert (offset.std(0) - EIGHT_GAUSSIANS_STD).abs().max() < 0.01
    assert (torch.bincount(nearest, minlength=8) / len(x) - 1 / 8).abs().max() < 0.015


def test_errors_name_the_argument() -> None:
    with pytest.raises(InvalidArgumentError, match=r"not a known toy.*checkerboard"):
        sample_toy("spirals", 10)
    with pytest.raises(InvalidArgumentError, match="n must be a positive integer"):
        sample_toy("rings", 0)
    with pytest.raises(InvalidArgumentError, match="not both"):
        sample_toy("rings", 3, seed=1, generator=torch.Generator())
    with pytest.raises(InvalidArgumentError, match="no closed-form density"):
        toy_log_prob("two-moons", torch.zeros(3, 2))
