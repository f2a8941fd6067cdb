r"""Control paths for neural CDEs: continuous paths X(s) through observations, and the channels
a path is built from (time, filled values, observational intensity).

Knots sit at s = 0, 1, ..., K-1 (the observation index; the actual time is a channel, so the
CDE sees it). On the interval [i, i+1], with u = s - i, every path is a cubic

$$ X(s) = a_i + b_i u + c_i u^2 + d_i u^3, \qquad X'(s) = b_i + 2 c_i u + 3 d_i u^2, $$

(c = d = 0 for the piecewise-linear paths), stored as coefficient tensors [K-1, B, C]:

- `natural_cubic`: the C^2 interpolating spline with X'' = 0 at both ends. With unit spacing
  the second derivatives M solve M_{i-1} + 4 M_i + M_{i+1} = 6 (x_{i+1} - 2 x_i + x_{i-1}).
  X on [i, i+1] depends on every knot of its sample (not causal).
- `hermite_cubic`: C^1, the cubic Hermite interpolant with backward-difference slopes
  m_i = x_i - x_{i-1} (m_0 = x_1 - x_0), so X on [i, i+1] depends on x_0..x_{i+1} only.
- `linear`: straight lines between knots.
- `rectilinear`: for online use: from one observation to the next, first the time channel
  moves (values held), then the values (time held); 2K - 1 knots, each interval's path is
  known as soon as its observation arrives.

Padding (a sample's trailing rows that repeat its last time with an empty mask, `own_lengths`)
is not part of a sample's path: the cubic paths are built on each sample's own knots and held
constant after its last one, and the observational intensity is scaled by the sample's own
number of rows, so a sample's path does not depend on how long the others in its batch are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tidal._errors import InvalidArgumentError


@dataclass(frozen=True)
class ControlPath:
    """X(s) for s in [0, K - 1], piecewise cubic; coefficients a, b, c, d are [K-1, B, C]."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor

    @property
    def num_knots(self) -> int:
        return self.a.shape[0] + 1

    def _locate(self, s: torch.Tensor | float) -> tuple[int, torch.Tensor]:
        s = torch.as_tensor(s, dtype=self.a.dtype)
        index = int(torch.clamp(torch.floor(s), 0, self.num_knots - 2))
        return index, s - index

    def evaluate(self, s: torch.Tensor | float) -> torch.Tensor:
        """X(s), [B, C], at one (0-d) s."""
        i, u = self._locate(s)
        return self.a[i] + u * (self.b[i] + u * (self.c[i] + u * self.d[i]))

    def derivative(self, s: torch.Tensor | float) -> torch.Tensor:
        """dX/ds, [B, C], at one (0-d) s (the right-hand interval at a knot)."""
        i, u = self._locate(s)
        return self.b[i] + u * (2 * self.c[i] + 3 * u * self.d[i])

    def increments(self) -> torch.Tensor:
        """X(i + 1) - X(i) for every interval, [K-1, B, C]."""
        return self.b + self.c + self.d


def _knots(values: torch.Tensor, name: str) -> torch.Tensor:
    if values.dim() != 3 or values.shape[0] < 2:
        raise InvalidArgumentError(
            f"`{name}(values)`: expected [K, B, C] with K >= 2 knots (time first); got shape "
            f"{tuple(values.shape)}.")
    if not torch.isfinite(values).all():
        raise InvalidArgumentError(
            f"`{name}(values)` holds NaN or inf; fill missing values first "
            "(`observation_channels` fills forward and adds observation counts).")
    return values


def linear(values: torch.Tensor) -> ControlPath:
    """Straight lines between the knots `values` [K, B, C]."""
    x = _knots(values, "linear")
    zero = torch.zeros_like(x[1:])
    return ControlPath(x[:-1], x[1:] - x[:-1], zero, zero)


def rectilinear(values: torch.Tensor, time_channel: int = 0) -> ControlPath:
    """The rectilinear path through `values` [K, B, C]: 2K - 1 knots, time moves first."""
    x = _knots(values, "rectilinear")
    time_moved = x[:-1].clone()
    time_moved[..., time_channel] = x[1:, ..., time_channel]
    knots = torch.stack([x[:-1], time_moved], dim=1).flatten(0, 1)
    return linear(torch.cat([knots, x[-1:]]))


def hermite_cubic(values: torch.Tensor, lengths: torch.Tensor | None = None) -> ControlPath:
    """The C^1 cubic Hermite path through `values` [K, B, C], backward-difference slopes;
    `lengths` [B]: each sample's own number of knots (default K), the path constant after its
    last."""
    x = _knots(values, "hermite_cubic")
    diff = x[1:] - x[:-1]
    slopes = torch.cat([diff[:1], diff])  # m_i = x_i - x_{i-1}, m_0 = x_1 - x_0
    m0, m1 = slopes[:-1], slopes[1:]
    return _held(ControlPath(x[:-1], m0, 3 * diff - 2 * m0 - m1, m0 + m1 - 2 * diff), x,
                 lengths)


def natural_cubic(values: torch.Tensor, lengths: torch.Tensor | None = None) -> ControlPath:
    """The natural cubic spline through `values` [K, B, C] (knots at unit spacing);
    `lengths` [B]: each sample's own number of knots (default K), its spline through those
    alone and constant after the last."""
    x = _knots(values, "natural_cubic")
    k = x.shape[0]
    own = torch.full((x.shape[1],), k, device=x.device) if lengths is None else lengths
    second = torch.zeros_like(x)
    for n in sorted(set(own.tolist())):
        if n > 2:  # the samples with n knots: M_0 = M_{n-1} = 0
            system = (4 * torch.eye(n - 2, dtype=x.dtype, device=x.device)
                      + torch.diag(x.new_ones(n - 3), 1) + torch.diag(x.new_ones(n - 3), -1))
            group = x[:n, own == n]
            rhs = 6 * (group[2:] - 2 * group[1:-1] + group[:-2])
            second[1:n - 1, own == n] = torch.linalg.solve(
                system, rhs.reshape(n - 2, -1)).reshape(rhs.shape)
    m0, m1 = second[:-1], second[1:]
    return _held(ControlPath(x[:-1], x[1:] - x[:-1] - (2 * m0 + m1) / 6, m0 / 2,
                             (m1 - m0) / 6), x, lengths)


def _held(path: ControlPath, x: torch.Tensor, lengths: torch.Tensor | None) -> ControlPath:
    """`path` through the knots `x`, constant at each sample's last own knot from there on."""
    if lengths is None:
        return path
    intervals = torch.arange(path.a.shape[0], device=x.device)[:, None]
    after = (intervals >= lengths - 1).unsqueeze(-1)  # [K-1, B, 1]
    last = x.gather(0, (lengths - 1).view(1, -1, 1).expand(1, *x.shape[1:]))
    zero = torch.zeros_like(path.b)
    return ControlPath(torch.where(after, last, path.a), torch.where(after, zero, path.b),
                       torch.where(after, zero, path.c), torch.where(after, zero, path.d))


def own_lengths(times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: each sample's number of rows before its padding (the trailing rows that repeat
    its last time with an empty mask); times [K] or [K, B], mask [K, B, C]."""
    if times.dim() == 1:
        times = times.unsqueeze(1).expand(mask.shape[:2])
    moved = torch.cat([torch.ones_like(times[:1], dtype=torch.bool), times[1:] != times[:-1]])
    own = moved | mask.any(-1)
    rows = torch.arange(times.shape[0], device=times.device)[:, None]
    return torch.where(own, rows, 0).amax(0) + 1


#: The smooth paths, solved once over all knots (each sample's own, `lengths`).
CUBIC_PATHS = {"natural_cubic": natural_cubic, "hermite_cubic": hermite_cubic}
PATHS = {**CUBIC_PATHS, "linear": linear, "rectilinear": rectilinear}


def fill_forward(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each missing entry of `values` [K, B, C] (mask False) replaced by the last observed
    one before it; entries before a channel's first observation take that first observation,
    and a channel never observed in a sample is 0."""
    k = values.shape[0]
    index = torch.arange(k, device=values.device).reshape(k, 1, 1).expand(values.shape)
    last = torch.where(mask, index, -1).cummax(dim=0).values
    first = torch.where(mask, index, k).min(dim=0, keepdim=True).values
    source = torch.where(last >= 0, last, first).clamp(max=k - 1)
    filled = torch.gather(torch.where(mask, values, 0.0), 0, source)
    return torch.where(mask.any(dim=0, keepdim=True), filled, torch.zeros_like(filled))


def observation_channels(times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                         ) -> torch.Tensor:
    """The channels a CDE path goes through, [K, B, 1 + 2C]: time, the values filled
    forward, and per channel the number of observations so far divided by the sample's own
    number of rows (`own_lengths`; the observational intensity, which tells the CDE where
    values were seen and where they were only carried forward; divided so that its increments
    stay small, by a number the rest of the batch does not change).

    `times` is [K] or [K, B] (per-sample, non-decreasing: padding repeats the last time);
    `values` [K, B, C]; `mask` [K, B, C], True where observed (values elsewhere are ignored).
    """
    if times.dim() == 1:
        times = times.unsqueeze(1).expand(values.shape[:2])
    rows = own_lengths(times, mask).to(values.dtype)
    counts = mask.to(values.dtype).cumsum(dim=0) / rows[:, None]
    return torch.cat([times.to(values.dtype).unsqueeze(-1), fill_forward(values, mask),
                      counts], dim=-1)
