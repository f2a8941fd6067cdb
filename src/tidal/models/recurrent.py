r"""Recurrent models of irregular observations: `ODERNN` (Rubanova et al. 2019) and the
`GRUDelta` baseline.

Both read a series one observation index i at a time, in two moves:

1. **advance** the hidden state from t_{i-1} to t_i. `ODERNN` solves dh/dt = f_theta(t, h)
   over the interval; `GRUDelta` applies a GRU cell whose only input is the elapsed time
   Delta_i = t_i - t_{i-1} (the classical "RNN with time deltas" baseline). No time elapsed
   (Delta = 0, e.g. padding) leaves h exactly as it is.
2. **update** with what was observed: h <- GRUCell([x_i * m_i, m_i], h), with the per-feature
   mask m_i, for the samples that observed at least one feature at t_i (others keep h).

The readout of the advanced state (before the update) is the model's prediction of x_i from
the observations before t_i, so `model(times, values, mask)` predicts every row, observed or
not, and an extrapolation is a run over rows whose mask is empty.

Per-sample grids: `times` is [K] (one grid) or [K, B] (each sample its own, non-decreasing;
padding repeats the last time with an empty mask). The ODE between t_{i-1} and t_i is solved in
s in [0, 1] as dh/ds = Delta_b f(t_{i-1} + s Delta_b, h), so one shared-grid solve advances
every sample over its own interval (also backwards in time, Delta < 0, for the latent ODE's
encoder).

Where a run starts: forwards, every sample at the grid's first time (its origin: the elapsed
time to a sample's first observation is part of what the state knows). Backwards (times
decreasing), each sample at its own last observation: its state stays h0, not advanced,
through the rows after it, since a shared grid ends where the latest series of the batch
ends. A series' encoding then does not depend on the series batched with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidal.models.neural_cde import check_series, check_tensors
from tidal.models.solve_config import SolveConfig
from tidal.nn import MLP


class ObservationRNN(nn.Module):
    """The loop shared by `ODERNN` and `GRUDelta`; subclasses define `advance`."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None
                 ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.update_cell = nn.GRUCell(2 * input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size or input_size)

    def advance(self, h: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """h at t1 from h at t0 (t0, t1: 0-d or [B] float64)."""
        raise NotImplementedError

    def run(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
            h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(advanced, updated): the hidden states at every row before and after its
        observation, each [K, B, hidden]. `times` may decrease (a run backwards in time, in
        which each sample starts at its own last observation) but must be monotone."""
        check_tensors(type(self).__name__, times=times, values=values, mask=mask)
        # backwards if any sample's times decrease (a one-time sample's column is constant)
        reverse = times.shape[0] > 1 and bool((times[-1] < times[0]).any())
        ordered = times.flip(0) if reverse else times
        check_series(type(self).__name__, ordered, values, mask, self.input_size,
                     self.update_cell.weight_ih.dtype)
        h = values.new_zeros(values.shape[1], self.hidden_size) if h0 is None else h0
        # Backwards, a sample's state stays h0 until its own last observation: the grid's end
        # is where the batch's latest series ends.
        started = mask.new_full((values.shape[1], 1), not reverse)
        advanced, updated = [], []
        for i in range(times.shape[0]):
            if i > 0:
                h = torch.where(started, self.advance(h, times[i - 1], times[i]), h)
            advanced.append(h)
            seen = mask[i].any(-1, keepdim=True)
            inputs = torch.cat([torch.where(mask[i], values[i], 0.0), mask[i].to(values.dtype)],
                               dim=-1)
            h = torch.where(seen, self.update_cell(inputs, h), h)
            started = started | seen
            updated.append(h)
        return torch.stack(advanced), torch.stack(updated)

    def encode(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
        """The hidden state after the last row, [B, hidden] (for classification)."""
        return self.run(times, values, mask)[1][-1]

    def forward(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        """The prediction of every row from the rows before it, [K, B, output_size]."""
        return self.readout(self.run(times, values, mask)[0])


class ODERNN(ObservationRNN):
    """ODE-RNN: the hidden state follows dh/dt = f(t, h) between observations.

    Args:
        input_size, hidden_size: features per observation, size of h.
        output_size: size of the readout (default input_size).
        vector_field: f(t, h); default `MLP(hidden_size, width=width)` (autonomous, tanh).
        width: width of the default field.
        solve options: solver, controller, adjoint, max_steps (see `SolveConfig`).

    `nfe` counts calls of f in the last run (all intervals together).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None, *,
                 vector_field: nn.Module | None = None, width: int = 64,
                 **solve_options: Any) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.vector_field = (MLP(hidden_size, width=width, final_scale=1.0)
                             if vector_field is None else vector_field)
        self.solve_config = SolveConfig.of(type(self).__name__, solve_options)

    @property
    def nfe(self) -> int:
        return self.solve_config.num_fevals

    def run(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
            h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.solve_config.num_fevals = 0
        return super().run(times, values, mask, h0)

    def advance(self, h: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        delta = t1 - t0
        if not bool((delta != 0).any()):
            return h
        delta_h = delta.to(h.dtype).unsqueeze(-1) if delta.dim() else delta.to(h.dtype)

        def interval(s: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            t = t0.to(h.dtype) + s * delta.to(h.dtype)
            return delta_h * self.vector_field(t, state)

        return self.solve_config.advance(interval, h)


class GRUDelta(ObservationRNN):
    """The GRU baseline: between observations, h <- GRUCell([Delta t], h).

    Args: as `ObservationRNN` (input_size, hidden_size, output_size).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None
                 ) -> None:
        super().__init__(input_size, hidden_size, output_size)
        self.advance_cell = nn.GRUCell(1, hidden_size)

    def advance(self, h: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        delta = (t1 - t0).to(h.dtype).expand(h.shape[0]).unsqueeze(-1)
        return torch.where(delta != 0, self.advance_cell(delta, h), h)
