r"""`LatentSDE` (Li et al. 2020): a variational model of irregular, noisy series whose latent
state follows an SDE.

- **Prior**: z_0 ~ N(m_0, diag s_0^2) (learned), dz = h_theta(t, z) dt + g_theta(t, z) dW.
- **Posterior**: z_0 ~ q(z_0 | x) = N(mu, diag sigma^2), dz = f_phi(t, z, c(t)) dt +
  g_theta(t, z) dW, the same diffusion, with a context c(t) from the observations: a
  `GRUDelta` run backwards in time (from each series' own last observation) summarizes the
  observations at and after each row, and c(t) is the summary of the rows strictly after t
  (so the drift steers towards what is observed next).
- **Observations**: x(t) ~ N(D z(t), diag obs_std^2), a linear decoder D and a learned noise
  per feature.
- **Loss**: the negative ELBO. By Girsanov's theorem the KL divergence between the posterior
  and prior path laws (same diffusion) is

$$ \mathrm{KL} = \mathrm{KL}\big(q(z_0)\,\|\,p(z_0)\big) + \mathbb{E}\int_{t_0}^{t_1}
   \tfrac12 \lVert u(t, z) \rVert^2 dt,\qquad u = (f_\phi - h_\theta) / g_\theta, $$

  and the integral is one more state, d(log q/p) = |u|^2/2 dt with zero diffusion, solved with
  z by `tidal.sdeint` (one posterior path per series).

Prediction (`sample`): z_0 from the posterior of the context observations, the posterior drift
while a sample still has context observations ahead of it, the prior drift after its last
one (a forecast), decoded with observation noise: predictive bands are quantiles of these
samples.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.integrate_sde import sdeint
from tidal.models.latent_ode import strictly_increasing
from tidal.models.neural_cde import check_series
from tidal.models.neural_sde import PositiveDiffusion
from tidal.models.recurrent import GRUDelta
from tidal.nn import MLP


class LatentSDE(nn.Module):
    """Posterior and prior latent SDEs with a backward GRU encoder.

    Args:
        input_size: features per observation.
        latent_size: size of z.
        context_size: size of the encoder's context c(t).
        hidden_size: the encoder GRU's hidden size.
        width, depth, activation: the drift and diffusion MLPs.
        dt: the Euler–Maruyama step (required: no default fits every time scale).
        obs_std: the initial observation noise (learned, per feature).

    Series are time first, as the sequence models: times [K] or [K, B] (each column
    non-decreasing: pad a shorter series by repeating its last time, with an empty mask),
    values and a bool mask [K, B, input_size].
    """

    def __init__(self, input_size: int, latent_size: int, *, context_size: int = 16,
                 hidden_size: int = 32, width: int = 64, depth: int = 2,
                 activation: str = "tanh", dt: float,
                 obs_std: float = 0.1) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("latent_size", latent_size),
                            ("context_size", context_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"`LatentSDE({name}={value!r})` must be a positive "
                                           "integer.")
        for name, number in (("dt", dt), ("obs_std", obs_std)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or \
                    not 0 < number < math.inf:
                raise InvalidArgumentError(f"`LatentSDE({name}={number!r})` must be a positive "
                                           "finite number.")
        self.latent_size, self.dt = latent_size, float(dt)
        self.encoder = GRUDelta(input_size, hidden_size, context_size)
        self.initial = nn.Linear(context_size, 2 * latent_size)  # q(z_0 | x)
        self.prior_mean = nn.Parameter(torch.zeros(latent_size))
        self.prior_log_std = nn.Parameter(torch.zeros(latent_size))
        mlp: dict[str, Any] = {"width": width, "depth": depth, "activation": activation}
        self.posterior_drift = MLP(latent_size + context_size, latent_size, **mlp)
        self.prior_drift = MLP(latent_size, **mlp)
        self.diffusion = PositiveDiffusion(MLP(latent_size, **mlp))
        self.decoder = nn.Linear(latent_size, input_size)
        self.log_obs_std = nn.Parameter(torch.full((input_size,), math.log(obs_std)))

    def context(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        """c at every row, [K, B, context]: the backward GRU's summary of rows k..K-1."""
        check_series("LatentSDE", times, values, mask, self.encoder.input_size,
                     self.decoder.weight.dtype)
        updated = self.encoder.run(times.flip(0), values.flip(0), mask.flip(0))[1]
        return self.encoder.readout(updated).flip(0)

    def posterior_initial(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of q(z_0 | x), each [B, latent], from the context at the first row."""
        mean, raw_std = self.initial(context[0]).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw_std) + 1e-4

    def posterior_path(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                       *, seed: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One posterior path per series on `times` (z_0 at times[0]): (z [K, B, latent],
        the path's KL term int |u|^2/2 dt [B], and q(z_0)'s mean and std [B, latent])."""
        context = self.context(times, values, mask)
        mean, std = self.posterior_initial(context)
        z0 = mean + std * torch.randn_like(std)
        lookup = _ContextLookup(times, context)

        def drift(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z = y[:, :-1]
            f = self.posterior_drift(t, torch.cat([z, lookup(t)], dim=-1))
            u = (f - self.prior_drift(t, z)) / self.diffusion(t, z)
            return torch.cat([f, 0.5 * (u * u).sum(-1, keepdim=True)], dim=-1)

        def diffusion(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            g = self.diffusion(t, y[:, :-1])
            return torch.cat([g, torch.zeros_like(g[:, :1])], dim=-1)

        if times.shape[0] == 1:  # one row: no path, no path KL
            return z0.unsqueeze(0), z0.new_zeros(z0.shape[0]), mean, std
        y0 = torch.cat([z0, torch.zeros_like(z0[:, :1])], dim=-1)
        grid = strictly_increasing(times)  # repeated times (padding) moved on
        path = sdeint(drift, diffusion, y0, grid, dt=self.dt, seed=seed).ys
        return path[..., :-1], path[-1, :, -1], mean, std

    def loss(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *,
             kl_weight: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """The negative ELBO per observed entry (the batch's sum over the number of observed
        entries), with one posterior path per series; `kl_weight` < 1 anneals the KL terms
        early in training."""
        z, path_kl, mean, std = self.posterior_path(times, values, mask, seed=seed)
        log_lik = self.log_likelihood(self.decoder(z), values, mask)
        kl_initial = _gaussian_kl(mean, std, self.prior_mean, self.prior_log_std.exp())
        kl = kl_initial.sum() + path_kl.sum()
        return (kl_weight * kl - log_lik) / mask.sum().clamp_min(1)

    def log_likelihood(self, predicted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                       ) -> torch.Tensor:
        """sum over observed entries of log N(value; predicted, obs_std^2)."""
        residual = torch.where(mask, values - predicted, 0.0)
        log_norm = self.log_obs_std + 0.5 * math.log(2 * math.pi)
        return -((0.5 * (residual / self.log_obs_std.exp()) ** 2 + log_norm) * mask).sum()

    @torch.no_grad()
    def sample(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
               target_times: torch.Tensor, n_samples: int, *, seed: int = 0,
               observation_noise: bool = True) -> torch.Tensor:
        """Predictive samples [T, n_samples, B, input_size] at `target_times` ([T] or [T, B],
        starting at times[0]) given the context observations (times, values, mask): posterior
        paths up to each series' last observed context time, prior paths after it, decoded
        (with the learned observation noise unless `observation_noise=False`)."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise InvalidArgumentError(f"`LatentSDE.sample(n_samples={n_samples!r})` must be a "
                                       f"positive integer.")
        check_series("LatentSDE", times, values, mask, self.encoder.input_size,
                     self.decoder.weight.dtype)
        if not isinstance(target_times, torch.Tensor):
            target_times = torch.as_tensor(target_times, dtype=torch.float64)
        batch = values.shape[1]
        if not bool((target_times[0] == times[0]).all()):
            raise InvalidArgumentError(
                "`LatentSDE.sample(target_times=...)` must start at the context's first time "
                f"times[0] (where z_0 lives); got {target_times[0].tolist()} against "
                f"{times[0].tolist()}.")
        generator = torch.Generator().manual_seed(seed)
        context = self.context(times, values, mask)
        mean, std = self.posterior_initial(context)
        noise = torch.randn((n_samples, *mean.shape), generator=generator, dtype=mean.dtype)
        z0 = (mean + std * noise).reshape(n_samples * batch, -1)

        def repeated(x: torch.Tensor) -> torch.Tensor:  # [K, B, ...] -> [K, n B, ...]
            return x.unsqueeze(1).expand(x.shape[0], n_samples, *x.shape[1:]).reshape(
                x.shape[0], n_samples * batch, *x.shape[2:])

        grid = times if times.dim() == 1 else repeated(times)
        seen = mask.any(-1)  # [K, B]
        observed_times = torch.where(seen, times if times.dim() == 2 else
                                     times[:, None].expand(seen.shape), -math.inf)
        last = observed_times.amax(0).repeat(n_samples)  # [n B]: the last context time
        lookup = _ContextLookup(grid, repeated(context))

        def drift(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            posterior = self.posterior_drift(t, torch.cat([z, lookup(t)], dim=-1))
            ahead = (t.to(last.dtype) < last).unsqueeze(-1)
            return torch.where(ahead, posterior, self.prior_drift(t, z))

        targets = target_times if target_times.dim() == 1 else repeated(
            strictly_increasing(target_times))  # padding moved on
        path = sdeint(drift, self.diffusion, z0, targets, dt=self.dt, seed=seed).ys
        decoded = self.decoder(path)
        if observation_noise:
            decoded = decoded + self.log_obs_std.exp() * torch.randn(
                decoded.shape, generator=generator, dtype=decoded.dtype)
        return decoded.reshape(decoded.shape[0], n_samples, batch, -1)


class _ContextLookup:
    """c(t): the context of the first row strictly after t (the last row's beyond the end),
    for t 0-d or [B] (times [K, B]), or 0-d (times [K])."""

    def __init__(self, times: torch.Tensor, context: torch.Tensor) -> None:
        self.context = context
        self.rows = context.shape[0]
        self.times = times if times.dim() == 1 else times.T.contiguous()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        times = self.times.to(t.dtype)
        if times.dim() == 1:
            row = int(torch.searchsorted(times, t.reshape(1), right=True).clamp(
                max=self.rows - 1))
            return self.context[row]
        t = t.reshape(-1, 1).expand(times.shape[0], 1)  # a shared time for every sample
        rows = torch.searchsorted(times, t.contiguous(), right=True).clamp(max=self.rows - 1)
        return self.context[rows[:, 0], torch.arange(self.context.shape[1])]


def _gaussian_kl(mean: torch.Tensor, std: torch.Tensor, prior_mean: torch.Tensor,
                 prior_std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(prior_mean, prior_std^2)) per sample, summed over components."""
    ratio = (std / prior_std) ** 2
    return 0.5 * (ratio + ((mean - prior_mean) / prior_std) ** 2 - 1 - ratio.log()).sum(-1)
