r"""`LatentODE` (Rubanova et al. 2019): a variational autoencoder whose decoder is an ODE.

- **Encoder**: an `ODERNN` run backwards in time over the observations, from each series'
  own last observation (not the grid's end, which the batch sets); its last hidden state (at
  the first time t_0) gives q(z_0 | x) = N(mu, diag sigma^2).
- **Decoder**: z_0 = mu + sigma * eps (reparameterized), dz/dt = f_theta(z) solved from t_0 to
  the target times, and x_hat(t) = g(z(t)).
- **Loss**: the negative ELBO per series,

$$ -\mathrm{ELBO} = -\sum_{\text{observed }(k, j)} \log \mathcal{N}(x_{kj};\, \hat x_{kj},
   \sigma_{obs}^2) + \mathrm{KL}\big(q(z_0 \mid x)\,\|\,\mathcal{N}(0, I)\big), $$

  the Gaussian likelihood summed over the observed entries only (the mask), with a fixed
  observation noise sigma_obs, and the KL term in closed form.

Interpolation: encode the observed points of a window, decode at every time of the window.
Extrapolation: encode the first part, decode over the whole span. Targets start at the
encoder's first time t_0 (z_0 lives there); a shared target grid [T] is one solve, a per-sample
grid [T, B] (strictly increasing per sample) is one per-sample solve. A shared grid's t_0 is
the origin of every series on it; series that begin at different times go on per-sample
grids, each from its own.

Prediction can refine the encoder's guess (`refine=N`): N Adam steps on z_0 from the posterior
mean toward the mode of the posterior the model itself defines,

$$ \hat z_0 = \arg\max_{z_0}\; \log p(x \mid z_0) + \log \mathcal{N}(z_0;\, 0, I), $$

the decoder fitted to the observations it is given (semi-amortized inference, Kim et al.
2018). One encoder serves every series and leaves a gap (its mean fits the points it read no
better than the hidden ones); the refinement closes it series by series.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from tidal._errors import InvalidArgumentError
from tidal.models.neural_cde import check_series, check_tensors
from tidal.models.recurrent import ODERNN
from tidal.models.solve_config import SolveConfig
from tidal.nn import MLP

#: Adam's step size on z_0 in `LatentODE.posterior_mode` (z_0's prior scale is 1).
MODE_LR = 0.02
#: The numbers of steps toward the posterior's mode that `tidal fit` chooses among on the
#: validation series (`tidal.training.sequence_fit.choose_refinement`; docs/benchmarks.md,
#: "Latent ODE: the posterior's mode").
REFINE_CHOICES = (0, 25, 50, 100, 200, 400)

#: Shift of the posterior's pre-softplus std: an untrained encoder gives sigma = softplus(-4)
#: = 0.018, not softplus(0) = 0.69. With codes that noisy (the prior's own scale) the decoder
#: cannot tell series apart and settles on their mean, the posterior never leaves the prior;
#: nearly deterministic codes at first let it learn, and the KL term then widens sigma.
INITIAL_STD_SHIFT = -4.0


class LatentODE(nn.Module):
    """Latent ODE with an ODE-RNN encoder.

    Args:
        input_size: features per observation.
        latent_size: size of z.
        hidden_size: size of the encoder's hidden state.
        width: width of the MLPs (encoder field, decoder field).
        obs_std: the observation noise of the likelihood (default 0.01, as in the paper's
            periodic-signal experiments).
        vector_field: the decoder's field f(t, z); default `MLP(latent_size, width=width)`
            (for periodic series `tidal.nn.RotationMLP` learns much faster).
        solve options: solver, controller, adjoint, max_steps for both encoder and decoder.
        decoder_options: solve options of the decoder alone, replacing those above for it
            (e.g. one fixed step per encoder interval, but a fine fixed step for the decoder,
            which integrates across the whole span in one solve).
    """

    def __init__(self, input_size: int, latent_size: int, hidden_size: int, *,
                 width: int = 64, obs_std: float = 0.01, vector_field: nn.Module | None = None,
                 decoder_options: dict[str, Any] | None = None, **solve_options: Any) -> None:
        super().__init__()
        if not obs_std > 0:
            raise InvalidArgumentError(f"`LatentODE(obs_std={obs_std!r})` must be positive.")
        SolveConfig.of("LatentODE", solve_options)  # named as the user called it
        self.encoder = ODERNN(input_size, hidden_size, 2 * latent_size, width=width,
                              **solve_options)
        self.vector_field = (MLP(latent_size, width=width, final_scale=1.0)
                             if vector_field is None else vector_field)
        self.decoder = nn.Linear(latent_size, input_size)
        self.latent_size, self.obs_std = latent_size, obs_std
        self.solve_config = SolveConfig.of("LatentODE", solve_options if decoder_options is None
                                         else decoder_options)

    @property
    def nfe(self) -> int:
        """Calls of f in the last decode (the encoder has its own `encoder.nfe`)."""
        return self.solve_config.num_fevals

    def posterior(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of q(z_0 | x), each [B, latent], z_0 at times[0]."""
        check_series("LatentODE", times, values, mask, self.encoder.input_size,
                     self.decoder.weight.dtype)
        hidden = self.encoder.encode(times.flip(0), values.flip(0), mask.flip(0))
        mean, raw_std = self.encoder.readout(hidden).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw_std + INITIAL_STD_SHIFT) + 1e-4

    def decode(self, z0: torch.Tensor, target_times: torch.Tensor) -> torch.Tensor:
        """x_hat at target_times ([T] or [T, B], starting where z0 lives; per-sample times
        may be padded with a repeated last time), [T, B, input]."""
        self.solve_config.num_fevals = 0
        if isinstance(target_times, torch.Tensor) and target_times.dim() == 2:
            target_times = strictly_increasing(target_times)  # padding moved on
        return self.decoder(self.solve_config.solve(self.vector_field, z0, target_times).ys)

    def refinements(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *,
                    lr: float = MODE_LR) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(z_0, the encoder's sigma), each [B, latent], after 0, 1, 2, ... Adam steps from
        the posterior mean toward the mode of p(z_0 | x), without end; times [T] or [T, B]
        (padded with a repeated last time), values and mask [T, B, input]. The objective is
        the negative log posterior, -log p(x | z_0) - log N(z_0; 0, I), summed over the
        series; each series' z_0 moves on its own terms (Adam is per coordinate). The model's
        parameters are left as they are and get no gradient."""
        mean, std = self.posterior(times, values, mask)
        std = std.detach()
        z0 = mean.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z0], lr=lr)
        while True:
            yield z0.detach().clone(), std
            with torch.enable_grad():
                predicted = self.decode(z0, times)  # (decode moves padding on)
                residual = torch.where(mask, values - predicted, 0.0) / self.obs_std
                loss = 0.5 * (residual.square().sum() + z0.square().sum())
                (z0.grad,) = torch.autograd.grad(loss, z0)
            optimizer.step()

    def posterior_mode(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                       *, steps: int, lr: float = MODE_LR) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_0, sigma) after `steps` of `refinements` (0: the posterior mean)."""
        return next(itertools.islice(self.refinements(times, values, mask, lr=lr), steps, None))

    @torch.no_grad()
    def choose_refinement(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                          target_times: torch.Tensor, target_values: torch.Tensor,
                          target_mask: torch.Tensor, choices: Sequence[int] = REFINE_CHOICES
                          ) -> tuple[int, dict[int, float]]:
        """The number of `refinements` steps, among `choices` (increasing), after which the
        decoding at `target_times` best predicts `target_values` where `target_mask` (held-out
        observations: MSE), and the MSE after each choice tried. The steps stop at the first
        choice that does worse than an earlier one (past it the fit to the observations read
        overfits them); fewer steps win ties."""
        scores: dict[int, float] = {}
        for step, (z0, _) in enumerate(self.refinements(times, values, mask)):
            if step in choices:
                error = torch.where(target_mask, self.decode(z0, target_times) - target_values,
                                    0.0)
                scores[step] = float(error.square().sum() / target_mask.sum().clamp(min=1))
                if scores[step] > min(scores.values()) or step == choices[-1]:
                    break
        return min(scores, key=lambda step: scores[step]), scores

    def forward(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                target_times: torch.Tensor, *, sample: bool = False, refine: int = 0
                ) -> torch.Tensor:
        """The reconstruction at `target_times` from the observations, [T, B, input]:
        decoded from the posterior mean, or with `refine=N` from z_0 after N steps toward the
        posterior's mode (`posterior_mode`); `sample=True` adds the encoder's sigma times a
        normal draw to that z_0."""
        _check_targets(times, target_times)
        if refine:
            center, std = self.posterior_mode(times, values, mask, steps=refine)
        else:
            center, std = self.posterior(times, values, mask)
        z0 = center + std * torch.randn_like(std) if sample else center
        return self.decode(z0, target_times)

    def loss(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
             target_times: torch.Tensor, target_values: torch.Tensor,
             target_mask: torch.Tensor, *, kl_weight: float = 1.0) -> torch.Tensor:
        """The negative ELBO (one posterior sample), averaged over the batch; `kl_weight` < 1
        anneals the KL term early in training."""
        _check_targets(times, target_times)
        mean, std = self.posterior(times, values, mask)
        z0 = mean + std * torch.randn_like(std)
        predicted = self.decode(z0, target_times)
        return negative_elbo(predicted, target_values, target_mask, mean, std, self.obs_std,
                             kl_weight)


def negative_elbo(predicted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                  mean: torch.Tensor, std: torch.Tensor, obs_std: float,
                  kl_weight: float = 1.0) -> torch.Tensor:
    """-(masked Gaussian log-likelihood - kl_weight KL(N(mean, std^2) || N(0, I))), the mean
    over the batch; predicted, values, mask [T, B, D]; mean, std [B, L]."""
    residual = torch.where(mask, values - predicted, 0.0)
    log_norm = math.log(obs_std) + 0.5 * math.log(2 * math.pi)
    log_lik = -(0.5 * (residual / obs_std) ** 2 + log_norm * mask).sum(dim=(0, 2))
    kl = 0.5 * (mean ** 2 + std ** 2 - 1 - 2 * std.log()).sum(-1)
    return (kl_weight * kl - log_lik).mean()


def strictly_increasing(times: torch.Tensor) -> torch.Tensor:
    """Per-sample times [K, B] with padding (a repeated last time) moved just past the end,
    by 1e-6 of the longest span per padded row: the decoder's grid must increase."""
    span = float((times[-1] - times[0]).max().clamp_min(1e-12))
    repeated = torch.cat([torch.zeros_like(times[:1]), (times[1:] <= times[:-1]).double()])
    return times + repeated.cumsum(0) * 1e-6 * span


def _check_targets(times: torch.Tensor, target_times: torch.Tensor) -> None:
    check_tensors("LatentODE", times=times)
    if not bool((target_times[0] == times[0]).all()):
        raise InvalidArgumentError(
            "`LatentODE(target_times)` must start at the encoder's first time times[0] "
            f"(where z_0 lives); got {target_times[0].tolist()} against {times[0].tolist()}.")
