"""Plots of 2-D densities and samples: `plot_density` (a heat map of exp(log p) on a grid) and
`plot_samples` (a scatter, optionally over reference points). Both return a matplotlib
`Figure` made without pyplot (safe under any backend, Agg included) and never call `show()`;
matplotlib is imported inside them. Save with `fig.savefig("density.png")`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError

Bounds = tuple[float, float, float, float]


def density_grid(log_prob_fn: Callable[[torch.Tensor], torch.Tensor], bounds: Bounds, *,
                 resolution: int = 100, batch_size: int = 4096,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """log p on a `resolution` x `resolution` grid of cell centres over
    bounds = (xmin, xmax, ymin, ymax): returns (points [R*R, 2], log p [R, R]) with rows
    along y, without gradients."""
    xmin, xmax, ymin, ymax = _check_bounds(bounds)
    xs = _centres(xmin, xmax, resolution, dtype)
    ys = _centres(ymin, ymax, resolution, dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    with torch.no_grad():
        values = torch.cat([log_prob_fn(chunk).reshape(-1).to(dtype)
                            for chunk in points.split(batch_size)])
    return points, values.reshape(resolution, resolution)


def plot_density(log_prob_fn: Callable[[torch.Tensor], torch.Tensor], bounds: Bounds, *,
                 resolution: int = 100, title: str | None = None, ax: Any = None,
                 cmap: str = "viridis", dtype: torch.dtype = torch.float32) -> Any:
    """Heat map of exp(log_prob_fn(x)) over bounds = (xmin, xmax, ymin, ymax).

    `log_prob_fn` takes points [N, 2] and returns log-densities [N] (e.g. `cnf.log_prob` or
    `functools.partial(toy_log_prob, "eight-gaussians")`). Draws into `ax` when given, else a
    new figure; returns the Figure.
    """
    _, log_p = density_grid(log_prob_fn, bounds, resolution=resolution, dtype=dtype)
    fig, ax = _axes(ax)
    ax.imshow(log_p.exp().cpu().numpy(), origin="lower", extent=bounds, cmap=cmap,
              aspect="equal", interpolation="nearest")
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    if title is not None:
        ax.set_title(title)
    return fig


def plot_samples(samples: Any, reference: Any = None, *, bounds: Bounds | None = None,
                 labels: Sequence[str] = ("samples", "reference"), title: str | None = None,
                 ax: Any = None, size: float = 2.0) -> Any:
    """Scatter of `samples` [N, 2] (tensor or array), over `reference` points [M, 2] in grey
    when given; returns the Figure."""
    fig, ax = _axes(ax)
    if reference is not None:
        ref = _points(reference, "reference")
        ax.scatter(ref[:, 0], ref[:, 1], s=size, c="0.7", label=labels[1], rasterized=True)
    pts = _points(samples, "samples")
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c="C0", label=labels[0], rasterized=True)
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    if bounds is not None:
        _check_bounds(bounds)
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return fig


def _axes(ax: Any) -> tuple[Any, Any]:
    """(figure, axes): `ax`'s own, or a new Figure outside pyplot (no global state, no
    backend needed, nothing to close)."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), layout="constrained")
    return fig, fig.subplots()


def _points(points: Any, name: str) -> Any:
    array = (points.detach().cpu().numpy() if isinstance(points, torch.Tensor)
             else np.asarray(points))
    if array.ndim != 2 or array.shape[1] != 2:
        raise InvalidArgumentError(
            f"`plot_samples({name}=...)` must have shape [N, 2]; got {array.shape}.")
    return array


def _centres(low: float, high: float, n: int, dtype: torch.dtype) -> torch.Tensor:
    step = (high - low) / n
    return low + step * (torch.arange(n, dtype=torch.float64) + 0.5).to(dtype)


def _check_bounds(bounds: Bounds) -> Bounds:
    if len(bounds) != 4 or not (bounds[0] < bounds[1] and bounds[2] < bounds[3]):
        raise InvalidArgumentError(
            f"`bounds={bounds!r}` must be (xmin, xmax, ymin, ymax) with xmin < xmax and "
            f"ymin < ymax.")
    xmin, xmax, ymin, ymax = (float(b) for b in bounds)
    return xmin, xmax, ymin, ymax
