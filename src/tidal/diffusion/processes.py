r"""Forward (noising) processes of score-based generative models as objects.

Every process here is a linear SDE with a scalar drift coefficient,

$$ dx = f(t)\, x\, dt + g(t)\, dW, \qquad t \in [t_{min}, T], $$

so the marginal given the data point is Gaussian, x_t | x_0 ~ N(m(t) x_0, σ(t)^2 I), with
m(t) = exp(∫_0^t f) and σ(t)^2 = ∫_0^t g(s)^2 m(t)^2/m(s)^2 ds. A process gives f, g, m, σ
in closed form, the prior (its Gaussian approximation of p_T) and how training draws times.

- `VPSDE` (variance preserving, DDPM in continuous time): β(t) = β_min + t (β_max - β_min),
  f = -β/2, g = √β, m = exp(-B/2), σ^2 = 1 - exp(-B) with B(t) = ∫_0^t β; prior N(0, I).
- `SubVPSDE`: the same f, g^2 = β (1 - exp(-2B)), σ^2 = (1 - exp(-B))^2; prior N(0, I).
- `VESDE` (variance exploding, SMLD): σ(t) = σ_min (σ_max/σ_min)^t, f = 0,
  g^2 = dσ^2/dt = 2 σ^2 log(σ_max/σ_min); prior N(0, σ_max^2 I).
- `EDMProcess` (Karras et al. 2022): time is the noise level, σ(t) = t, f = 0,
  g = √(2t); t from σ_min = 0.002 to T = σ_max = 80, prior N(0, σ_max^2 I); training draws
  log σ ~ N(P_mean, P_std^2).

(For VE the marginal is N(x_0, (σ(t)^2 - σ(0)^2) I) in the strict SDE sense; like Song et al.
we use σ(t) itself, i.e. data already carrying noise σ_min, which is negligible at σ_min = 0.01.)

References:
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole. Score-based generative modeling through
    stochastic differential equations. ICLR 2021.
    Karras, Aittala, Aila, Laine. Elucidating the design space of diffusion-based generative
    models. NeurIPS 2022.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch

from tidal._errors import InvalidArgumentError

WEIGHTINGS = ("standard", "likelihood")


class ForwardProcess(ABC):
    """dx = f(t) x dt + g(t) dW on [t_min, T] with Gaussian marginals N(m(t) x_0, σ(t)^2 I).

    Subclasses give `mean_scale` m(t), `std` σ(t), `drift_coefficient` f(t) and
    `diffusion` g(t); times are tensors (any shape) and results have their shape.
    """

    #: the process's name in configs and on the command line
    name: str = ""
    t_min: float
    T: float

    @abstractmethod
    def mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        """m(t): E[x_t | x_0] = m(t) x_0."""

    @abstractmethod
    def std(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t): the standard deviation of x_t given x_0 (per coordinate)."""

    @abstractmethod
    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        """f(t) = d log m / dt: the drift is f(t) x."""

    @abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), the noise amplitude."""

    @abstractmethod
    def prior_std(self) -> float:
        """The standard deviation of the prior N(0, prior_std^2 I) standing in for p_T."""

    @abstractmethod
    def time_of(self, ratio: torch.Tensor) -> torch.Tensor:
        """The time t at which the noise-to-signal ratio σ(t)/m(t) equals `ratio`."""

    def sampling_times(self, steps: int, rho: float = 7.0) -> torch.Tensor:
        """EDM's grid [steps] from T down to t_min: the noise-to-signal ratios
        r_i = (r_max^{1/ρ} + i/(steps-1) (r_min^{1/ρ} - r_max^{1/ρ}))^ρ mapped to times."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise InvalidArgumentError(f"`steps={steps!r}`: a time grid needs at least 2 times.")
        _positive("sampling_times", rho=rho)
        ends = torch.tensor([self.T, self.t_min], dtype=torch.float64)
        high, low = (self.std(ends) / self.mean_scale(ends)) ** (1 / rho)
        i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
        times = self.time_of((high + i * (low - high)) ** rho)
        times[0], times[-1] = self.T, self.t_min  # exact ends despite rounding
        return times

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments with the name: `process_from_config` rebuilds it."""
        return {"name": self.name, **self._arguments()}

    @abstractmethod
    def _arguments(self) -> dict[str, Any]: ...

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(t) x for x [B, d] and t [B] (or 0-d)."""
        return _column(self.drift_coefficient(t), x) * x

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m(t) x_0 [B, d], σ(t) [B, 1]): the mean and std of x_t given x_0."""
        return _column(self.mean_scale(t), x0) * x0, _column(self.std(t), x0)

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = m(t) x_0 + σ(t) ε for standard normal `noise` ε like x0."""
        mean, std = self.marginal(x0, t)
        return mean + std * noise

    def prior_sample(self, n: int, dim: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """n samples [n, dim] of the prior N(0, prior_std^2 I)."""
        z = torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
        return self.prior_std() * z

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) [B] for z [B, d]."""
        s, d = self.prior_std(), z.shape[-1]
        return -0.5 * (z / s).square().sum(-1) - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def sample_times(self, n: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                     weighting: str = "standard") -> torch.Tensor:
        """Training times [n].

        "standard": uniform on [t_min, T] (Song et al.; EDM overrides with log-normal noise).
        "likelihood": density ∝ g(t)^2/σ(t)^2, which makes the σ^2-weighted denoising loss
        the likelihood-weighted one (Song et al. 2021b, whose bound on the KL divergence is
        ½ ∫ g^2 E||s - ∇ log p_t||^2 dt). Since d/dt log(σ^2/m^2) = g^2/σ^2 for every process
        here, this is log(σ/m) uniform between its values at t_min and T.
        """
        if weighting not in WEIGHTINGS:
            raise InvalidArgumentError(
                f"`weighting={weighting!r}` is not known; choose one of {list(WEIGHTINGS)}.")
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if weighting == "likelihood":
            ends = torch.tensor([self.t_min, self.T], dtype=torch.float64)
            low, high = (self.std(ends) / self.mean_scale(ends)).log()
            t = self.time_of((low + u * (high - low)).exp()).clamp(self.t_min, self.T)
        else:
            t = self._standard_times(u)
        return t.to(dtype=dtype, device=device)

    def _standard_times(self, u: torch.Tensor) -> torch.Tensor:
        """Standard training times from uniform numbers u [n]."""
        return self.t_min + (self.T - self.t_min) * u


class VPSDE(ForwardProcess):
    r"""Variance preserving: dx = -β(t)/2 x dt + √β(t) dW, β linear from β_min to β_max.

    Args:
        beta_min, beta_max: β(0) and β(1) (defaults 0.1 and 20, Song et al.).
        t_min: the smallest time sampled and integrated to (1e-5 for likelihoods; the score
            of data with σ(t_min) ≈ 3e-3 noise).
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5
                 ) -> None:
        _positive(type(self).__name__, beta_min=beta_min, beta_max=beta_max, t_min=t_min)
        if beta_max < beta_min:
            raise InvalidArgumentError(
                f"`{type(self).__name__}(beta_min={beta_min}, beta_max={beta_max})`: beta_max "
                f"must be >= beta_min.")
        _before_the_end(type(self).__name__, t_min)
        self.beta_min, self.beta_max, self.t_min, self.T = beta_min, beta_max, t_min, 1.0

    def _arguments(self) -> dict[str, Any]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = ∫_0^t β."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t.square()

    def mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * self.integrated_beta(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return (-torch.expm1(-self.integrated_beta(t))).sqrt()

    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def time_of(self, ratio: torch.Tensor) -> torch.Tensor:
        # σ/m = sqrt(exp(B) - 1)
        return self._time_of_integrated(torch.log1p(ratio.square()))

    def _time_of_integrated(self, b: torch.Tensor) -> torch.Tensor:
        """The t with B(t) = b: the positive root of (β_max - β_min)/2 t^2 + β_min t - b."""
        half = 0.5 * (self.beta_max - self.beta_min)
        if half == 0:
            return b / self.beta_min
        return 2 * b / (self.beta_min + (self.beta_min**2 + 4 * half * b).sqrt())

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta(t).sqrt()

    def prior_std(self) -> float:
        return 1.0


class SubVPSDE(VPSDE):
    r"""Sub-variance preserving: VP's drift with g^2 = β (1 - exp(-2B)); its σ^2 =
    (1 - exp(-B))^2 stays below VP's at every t (Song et al. 2021, eq. 29)."""

    name = "subvp"

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self.integrated_beta(t))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return (self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))).sqrt()

    def time_of(self, ratio: torch.Tensor) -> torch.Tensor:
        # σ/m = exp(B/2) - exp(-B/2) = 2 sinh(B/2)
        return self._time_of_integrated(2 * torch.asinh(ratio / 2))


class VESDE(ForwardProcess):
    r"""Variance exploding: dx = √(dσ^2/dt) dW with σ(t) = σ_min (σ_max/σ_min)^t on [t_min, 1].

    Args:
        sigma_min, sigma_max: the noise levels at t = 0 and t = 1 (defaults 0.01 and 50;
            take σ_max about the largest distance between data points).
        t_min: the smallest time.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5
                 ) -> None:
        _positive(type(self).__name__, sigma_min=sigma_min, sigma_max=sigma_max, t_min=t_min)
        if sigma_max <= sigma_min:
            raise InvalidArgumentError(
                f"`VESDE(sigma_min={sigma_min}, sigma_max={sigma_max})`: sigma_max must be "
                f"larger than sigma_min.")
        _before_the_end("VESDE", t_min)
        self.sigma_min, self.sigma_max, self.t_min, self.T = sigma_min, sigma_max, t_min, 1.0

    def _arguments(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}

    def mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.std(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def time_of(self, ratio: torch.Tensor) -> torch.Tensor:
        return (ratio / self.sigma_min).log() / math.log(self.sigma_max / self.sigma_min)

    def prior_std(self) -> float:
        return self.sigma_max


class EDMProcess(ForwardProcess):
    r"""EDM (Karras et al. 2022): x_σ = x_0 + σ n, time is the noise level σ, dx = √(2σ) dW.

    Args:
        sigma_min, sigma_max: the range of noise levels (0.002 and 80 in the paper; take
            σ_max well above the data's spread).
        p_mean, p_std: training draws log σ ~ N(p_mean, p_std^2), clipped to the range.
        sigma_data: the data's standard deviation (EDM's preconditioning constant; kept for
            the sampler's and network's use).
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, p_mean: float = -1.2,
                 p_std: float = 1.2, sigma_data: float = 0.5) -> None:
        _positive("EDMProcess", sigma_min=sigma_min, sigma_max=sigma_max, p_std=p_std,
                  sigma_data=sigma_data)
        if sigma_max <= sigma_min:
            raise InvalidArgumentError(
                f"`EDMProcess(sigma_min={sigma_min}, sigma_max={sigma_max})`: sigma_max must "
                f"be larger than sigma_min.")
        self.t_min, self.T = sigma_min, sigma_max
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def _arguments(self) -> dict[str, Any]:
        return {"sigma_min": self.t_min, "sigma_max": self.T, "p_mean": self.p_mean,
                "p_std": self.p_std, "sigma_data": self.sigma_data}

    def mean_scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def drift_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return (2 * t).sqrt()

    def time_of(self, ratio: torch.Tensor) -> torch.Tensor:
        return ratio.clone()

    def prior_std(self) -> float:
        return self.T

    def _standard_times(self, u: torch.Tensor) -> torch.Tensor:
        normal = math.sqrt(2) * torch.erfinv(2 * u.clamp(1e-12, 1 - 1e-12) - 1)
        return (self.p_mean + self.p_std * normal).exp().clamp(self.t_min, self.T)


PROCESSES: dict[str, type[ForwardProcess]] = {
    cls.name: cls for cls in (VPSDE, SubVPSDE, VESDE, EDMProcess)}


def process_from_config(config: dict[str, Any]) -> ForwardProcess:
    """Rebuild a process from `process.config()`."""
    arguments = dict(config)
    name = arguments.pop("name", None)
    if name not in PROCESSES:
        raise InvalidArgumentError(
            f"Unknown forward process {name!r}; choose one of {sorted(PROCESSES)}.")
    return PROCESSES[name](**arguments)


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample coefficients [B] (or 0-d) as a column [B, 1] in `like`'s dtype."""
    values = values.to(like.dtype)
    return values.reshape(-1, 1) if values.dim() else values


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0):
            raise InvalidArgumentError(f"`{owner}({name}={value!r})` must be a finite number > 0.")


def _before_the_end(owner: str, t_min: float) -> None:
    if not t_min < 1:
        raise InvalidArgumentError(
            f"`{owner}(t_min={t_min!r})` must be below the process's end time T = 1 (the "
            f"smallest time sampled and integrated to; default 1e-5).")

