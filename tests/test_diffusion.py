"""Score-based diffusion against references: the forward processes' coefficients against the
variance ODE and a Monte-Carlo simulation through `tidal.sdeint`, the diffused mixture's score
against autograd of its density, the probability-flow likelihood against the exact density,
and the samplers' output against the exact density's entropy (exact score, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tidal
from tidal._errors import InvalidArgumentError
from tidal.data.toys import toy_log_prob
from tidal.diffusion import sampling
from tidal.diffusion.likelihood import bits_per_dim, dequantize, log_likelihood
from tidal.diffusion.mixtures import DiffusedMixture, eight_gaussians
from tidal.diffusion.processes import (
    VESDE,
    VPSDE,
    EDMProcess,
    ForwardProcess,
    SubVPSDE,
    process_from_config,
)

PROCESSES = [VPSDE(), SubVPSDE(), VESDE(sigma_max=10.0), EDMProcess(sigma_max=20.0)]
IDS = [p.name for p in PROCESSES]
#: -E log p of the eight Gaussians by Monte Carlo with 2e6 samples (`DiffusedMixture.entropy`;
#: the separated-modes approximation log 8 + log(2πe s^2) = 2.8380 bounds it from above)
ENTROPY = 2.8325


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_coefficients_solve_the_moment_equations(process: ForwardProcess) -> None:
    """m' = f m and (σ^2)' = 2 f σ^2 + g^2 (the mean and variance ODEs of the linear SDE), by
    central differences; `time_of` inverts σ/m."""
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64) * process.T
    h = 1e-6 * process.T
    m, s2 = process.mean_scale, lambda u: process.std(u).square()
    f, g = process.drift_coefficient(t), process.diffusion(t)
    dm = (m(t + h) - m(t - h)) / (2 * h)
    ds2 = (s2(t + h) - s2(t - h)) / (2 * h)
    torch.testing.assert_close(dm, f * m(t), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ds2, 2 * f * s2(t) + g.square(), rtol=1e-6, atol=1e-9)
    ratio = process.std(t) / process.mean_scale(t)
    torch.testing.assert_close(process.time_of(ratio), t, rtol=1e-9, atol=1e-12)
    grid = process.sampling_times(5)
    assert grid[0] == process.T and grid[-1] == process.t_min and (grid.diff() < 0).all()


@pytest.mark.parametrize("process", [VPSDE(), SubVPSDE(), VESDE(sigma_max=5.0)],
                         ids=["vp", "subvp", "ve"])
def test_gaussian_data_marginal_matches_simulation(process: ForwardProcess) -> None:
    """Gaussian data N(μ, s^2 I) pushed through the SDE by `tidal.sdeint` (Euler-Maruyama)
    has mean m μ and variance m^2 s^2 + σ^2 (VE: minus σ(0)^2, the data's own noise)."""
    n, mu, s, t1 = 4000, torch.tensor([1.5, -2.0], dtype=torch.float64), 0.5, 0.6
    x0 = mu + s * torch.randn(n, 2, dtype=torch.float64)
    sol = tidal.sdeint(lambda t, x: process.drift(x, t),
                       lambda t, x: process.diffusion(t) * torch.ones_like(x), x0,
                       torch.tensor([0.0, t1], dtype=torch.float64), dt=t1 / 200, seed=3)
    t = torch.tensor(t1, dtype=torch.float64)
    zero = torch.tensor(0.0, dtype=torch.float64)
    m = process.mean_scale(t)
    var = m**2 * s**2 + process.std(t) ** 2 - process.std(zero) ** 2
    xt = sol.ys[-1]
    assert torch.allclose(xt.mean(0), m * mu, atol=4 * (var / n).sqrt().item())
    assert torch.allclose(xt.var(0), var.expand(2), rtol=0.08)


def test_prior_and_config() -> None:
    process = VESDE(sigma_max=3.0)
    z = process.prior_sample(5, 3, generator=torch.Generator().manual_seed(0))
    reference = torch.distributions.Normal(0.0, 3.0).log_prob(z).sum(-1)
    torch.testing.assert_close(process.prior_log_prob(z), reference)
    for p in PROCESSES:
        rebuilt = process_from_config(p.config())
        assert type(rebuilt) is type(p) and rebuilt.config() == p.config()
    with pytest.raises(InvalidArgumentError, match="beta_max"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(InvalidArgumentError, match="sigma_max"):
        EDMProcess(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(InvalidArgumentError, match="Unknown forward process"):
        process_from_config({"name": "nope"})


def test_mixture_density_and_score() -> None:
    """At t = 0 the density is the toy's own (independent code); the closed-form score at any
    t equals autograd of log p_t."""
    x = torch.randn(16, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(eight_gaussians().log_prob(x), toy_log_prob("eight-gaussians", x))
    mix = eight_gaussians(VPSDE())
    t = torch.rand(16, dtype=torch.float64)
    x.requires_grad_(True)
    grad = torch.autograd.grad(mix.log_prob(x, t).sum(), x)[0]
    torch.testing.assert_close(mix.score(x, t), grad)
    with pytest.raises(InvalidArgumentError, match="weights"):
        DiffusedMixture(torch.zeros(2, 2), 1.0, weights=torch.tensor([0.5, 0.6]))


def test_entropy_estimate() -> None:
    entropy, error = eight_gaussians().entropy(200_000)
    assert error < 0.003
    assert abs(entropy - ENTROPY) < 4 * error
    separated = math.log(8) + math.log(2 * math.pi * math.e * eight_gaussians().std**2)
    assert entropy < separated


@pytest.mark.parametrize("process", [
    PROCESSES[0], PROCESSES[2],
    *(pytest.param(p, marks=pytest.mark.slow, id=p.name) for p in PROCESSES[1::2])],
    ids=lambda p: p.name)
def test_probability_flow_likelihood_is_exact(process: ForwardProcess) -> None:
    """With the exact score and the exact p_T the PF-ODE log-likelihood equals log p_{t_min}
    within 1e-3 nats per point (tight tolerance; the divergence by exact trace)."""
    mix = eight_gaussians(process)
    x = eight_gaussians().sample(12, generator=torch.Generator().manual_seed(1))
    result = log_likelihood(mix, process, x,
                            prior_log_prob=lambda z: mix.log_prob(z, process.T),
                            controller=tidal.PIDController(rtol=1e-8, atol=1e-9))
    truth = mix.log_prob(x, process.t_min)
    assert (result.log_prob - truth).abs().max() < 1e-3
    assert result.nfe > 0
    if process.name != "ve":  # VE's p_{t_min} carries σ_min = 0.01 of noise
        assert (truth - eight_gaussians().log_prob(x)).abs().max() < 5e-4


def test_hutchinson_likelihood_is_unbiased() -> None:
    process = VPSDE()
    mix = eight_gaussians(process)
    x = eight_gaussians().sample(256, generator=torch.Generator().manual_seed(2))
    result = log_likelihood(mix, process, x, trace="hutchinson", seed=5)
    error = result.log_prob - mix.log_prob(x, process.t_min)
    assert error.abs().mean() > 1e-3  # a random estimate, not the exact trace
    assert abs(error.mean().item()) < 4 * error.std().item() / math.sqrt(len(x))


def _nll_gap(x: torch.Tensor) -> tuple[float, float]:
    nll = -eight_gaussians().log_prob(x)
    return nll.mean().item() - ENTROPY, nll.std().item() / math.sqrt(len(x))


@pytest.mark.parametrize("sampler", ["probability_flow", "heun"])
def test_deterministic_samplers(sampler: str) -> None:
    """PF-ODE and Heun samples have NLL under the true density near its entropy (n = 4000:
    tolerance 0.02 + 3 standard errors), and the samplers report their NFE."""
    process = VPSDE()
    kwargs = {"steps": 40} if sampler == "heun" else {}
    out = getattr(sampling, sampler)(eight_gaussians(process), process, 4000, 2, seed=1,
                                     **kwargs)
    gap, error = _nll_gap(out.x)
    assert abs(gap) < 0.02 + 3 * error
    # Heun: EDM's count, 2 steps - 1 (Karras et al. 2022, Algorithm 1)
    assert out.nfe == (2 * 40 - 1 if sampler == "heun" else out.nfe) and out.nfe > 20


@pytest.mark.parametrize("corrector_steps", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_reverse_sde_samples(corrector_steps: int) -> None:
    process = VPSDE()
    out = sampling.reverse_sde(eight_gaussians(process), process, 2000, 2, steps=200,
                               corrector_steps=corrector_steps, snr=0.05, seed=2)
    gap, error = _nll_gap(out.x)
    assert abs(gap) < 0.02 + 3 * error
    # each sdeint call evaluates the drift once more than its steps (200 steps in one call,
    # or one call per step with the corrector); the denoiser adds one
    expected = 201 + 1 if corrector_steps == 0 else 200 * (2 + corrector_steps) + 1
    assert out.nfe == expected


def test_sampler_arguments() -> None:
    process = VPSDE()
    with pytest.raises(InvalidArgumentError, match="grid"):
        sampling.reverse_sde(eight_gaussians(process), process, 2, 2, grid="cosine")
    with pytest.raises(InvalidArgumentError, match="steps"):
        sampling.heun(eight_gaussians(process), process, 2, 2, steps=1)


def test_bits_per_dim_of_uniform_data() -> None:
    """Uniform dequantized data under the uniform density on [0, 1)^d: log p = 0, so bits/dim
    is log2(levels); scaling y to [-1, 1) adds -log2(2) per dimension to log p."""
    x = torch.randint(0, 17, (100, 64)).double()
    y = dequantize(x, 17, generator=torch.Generator().manual_seed(0))
    assert ((y >= 0) & (y < 1)).all()
    assert bits_per_dim(torch.zeros(100), 64, levels=17) == pytest.approx(math.log2(17))
    log_p_scaled = torch.full((100,), -64 * math.log(2.0))  # uniform on [-1, 1)^64
    assert bits_per_dim(log_p_scaled, 64, levels=17, scale=2.0) == pytest.approx(math.log2(17))
    with pytest.raises(InvalidArgumentError, match="integers"):
        dequantize(x + 0.5, 17)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_likelihood_weighting_times(process: ForwardProcess) -> None:
    """The "likelihood" times have density ∝ g^2/σ^2 = d/dt log(σ^2/m^2) (checked by central
    differences), i.e. log(σ/m) uniform between its ends: mean and variance of a uniform."""
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64) * process.T
    h = 1e-6 * process.T
    log_ratio = lambda u: 2 * (process.std(u) / process.mean_scale(u)).log()  # noqa: E731
    derivative = (log_ratio(t + h) - log_ratio(t - h)) / (2 * h)
    torch.testing.assert_close(derivative, (process.diffusion(t) / process.std(t)).square(),
                               rtol=1e-5, atol=0)
    times = process.sample_times(20000, generator=torch.Generator().manual_seed(0),
                                 weighting="likelihood")
    assert times.min() >= process.t_min and times.max() <= process.T
    r = (process.std(times) / process.mean_scale(times)).log()
    ends = torch.tensor([process.t_min, process.T], dtype=torch.float64)
    low, high = (process.std(ends) / process.mean_scale(ends)).log().tolist()
    assert abs(r.mean().item() - (low + high) / 2) < 0.02 * (high - low)
    assert abs(r.var().item() / (high - low) ** 2 - 1 / 12) < 0.005
    with pytest.raises(InvalidArgumentError, match="weighting"):
        process.sample_times(3, weighting="elbo")


@pytest.mark.slow
def test_cli_diffusion_fit_sample_likelihood(tmp_path) -> None:
    """`tidal diffusion fit --toy` writes a run with its report; `sample` and `likelihood`
    read it; a wrong combination of inputs is one line and exit code 2."""
    import json

    from click.testing import CliRunner

    from tidal.cli.main import main

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["diffusion", "fit", "--toy", "eight-gaussians",
                                       "--samples", "300", "--steps", "3", "--width", "16",
                                       "--quiet", "-o", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    # EDM's Heun sampler, 20 steps: 2 x 20 - 1 score evaluations (Karras et al. 2022)
    assert metrics["num_fevals_sample"] == 39 and metrics["val_samples"] == 30
    assert {"val_nll", "true_val_nll", "gap", "checks"} <= set(metrics)
    assert (run / "report.html").is_file() and (run / "samples.png").is_file()
    assert (run / "density.png").is_file()  # 2-D data: the learned density
    sample = CliRunner().invoke(main, ["diffusion", "sample", str(run), "-n", "5"])
    assert sample.exit_code == 0
    assert "heun: 39 score evaluations" in sample.output
    assert sample.output.splitlines()[-6] == "x,y"
    likelihood = CliRunner().invoke(main, ["diffusion", "likelihood", str(run),
                                           str(run / "data" / "val.csv")])
    assert likelihood.exit_code == 0 and f"{metrics['val_nll']:.4f} nats" in likelihood.output
    (run / "report.html").unlink()  # `tidal report` writes it again (it refused diffusion runs)
    again = CliRunner().invoke(main, ["report", str(run)])
    assert again.exit_code == 0 and (run / "report.html").is_file(), again.output
    assert json.loads((run / "metrics.json").read_text())["val_nll"] == metrics["val_nll"]
    bad = CliRunner().invoke(main, ["diffusion", "fit", "x.csv", "--toy", "rings", "-o",
                                    str(tmp_path / "other")])
    assert bad.exit_code == 2 and "one of DATA" in bad.output


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in tidal catches it, so no final checkpoint is written."""


def test_a_killed_diffusion_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Kill a run in step 7 (checkpoints every 4), resume it (API and `fit --resume`): it runs
    steps 4-9 only and its weights equal an uninterrupted run's to round-off (bit for bit with
    torch 2.13 here; torch 2.4, and 2.11 on another machine's CPU, leave one weight of 24 one
    unit in the last place apart, 3e-15 relative: kernels that differ with the tensors'
    history); --resume refuses changed settings."""
    from click.testing import CliRunner

    from tidal.cli.main import main
    from tidal.data.toys import sample_toy
    from tidal.training.checkpoint import CHECKPOINT, load_checkpoint
    from tidal.training.diffusion_run import (
        DiffusionOptions,
        load_diffusion_run,
        resume_diffusion_run,
        train_diffusion_run,
    )
    from tidal.training.score import ScoreMatchingObjective

    points = sample_toy("eight-gaussians", 200, seed=0, dtype=torch.float64).numpy()
    tiny = DiffusionOptions(steps=10, batch_size=32, width=8, depth=1, checkpoint_every=4)

    def fit(path):
        return train_diffusion_run(points, path, columns=["x", "y"], process=VPSDE(),
                                   options=tiny, progress=False)

    straight = fit(tmp_path / "a")
    assert straight.status == "finished"
    original = ScoreMatchingObjective.train_round

    def killed_at_7(self, step, *args):
        if step == 7:
            raise _Killed
        return original(self, step, *args)

    for run in (tmp_path / "b", tmp_path / "c"):
        monkeypatch.setattr(ScoreMatchingObjective, "train_round", killed_at_7)
        with pytest.raises(_Killed):
            fit(run)
        assert load_checkpoint(run / CHECKPOINT)["epoch"] == 4  # the last periodic one
        monkeypatch.setattr(ScoreMatchingObjective, "train_round", original)
    steps_run = []

    def counted(self, step, *args):
        steps_run.append(step)
        return original(self, step, *args)

    monkeypatch.setattr(ScoreMatchingObjective, "train_round", counted)
    torch.manual_seed(123)  # the resumed run must not depend on the caller's generator
    resumed = resume_diffusion_run(tmp_path / "b", progress=False)
    monkeypatch.setattr(ScoreMatchingObjective, "train_round", original)
    assert resumed.status == "finished" and "started over" not in resumed.message
    assert steps_run == list(range(4, 10))  # from the checkpoint, not from the start
    changed = CliRunner().invoke(main, ["diffusion", "fit", "--resume", "--lr", "0.1", "-o",
                                        str(tmp_path / "c")])
    assert changed.exit_code == 2 and "--lr" in changed.output
    cli = CliRunner().invoke(main, ["diffusion", "fit", "--resume", "--quiet", "-o",
                                    str(tmp_path / "c")])
    assert cli.exit_code == 0, cli.output
    expected = load_diffusion_run(tmp_path / "a").model.state_dict()
    for run in ("b", "c"):
        weights = load_diffusion_run(tmp_path / run).model.state_dict()
        for name, value in expected.items():
            torch.testing.assert_close(weights[name], value, rtol=1e-13, atol=0)


def test_too_few_or_non_finite_samples_are_refused_before_a_run_is_created(tmp_path) -> None:
    from tidal.training.diffusion_run import train_diffusion_run

    for points, count in ((np.zeros((5, 2)), 0), (np.full((30, 2), np.nan), 60)):
        with pytest.raises(InvalidArgumentError,
                           match=rf"`diffusion fit` needs at least 20 finite samples.*"
                                 rf"\({count} non-finite values\)"):
            train_diffusion_run(points, tmp_path / "run", columns=["x", "y"], process=VPSDE())
        assert not (tmp_path / "run").exists()


def test_a_start_time_past_the_end_and_bad_grid_numbers_are_refused() -> None:
    """VPSDE(t_min=1.0) was accepted and every sampler then failed naming sdeint/solve's
    'duplicate times'; rho=0 raised ZeroDivisionError; batch_size=0 torch's split error."""
    for build in (lambda: VPSDE(t_min=1.0), lambda: SubVPSDE(t_min=2.0),
                  lambda: VESDE(t_min=1.5)):
        with pytest.raises(InvalidArgumentError, match=r"t_min=.*must be below"):
            build()
    with pytest.raises(InvalidArgumentError, match=r"rho=0"):
        VPSDE().sampling_times(5, rho=0)
    mixture = DiffusedMixture(torch.zeros(1, 2, dtype=torch.float64), 1.0, VPSDE())
    with pytest.raises(InvalidArgumentError, match=r"log_likelihood\(batch_size=0\)"):
        log_likelihood(mixture, VPSDE(), torch.zeros(3, 2, dtype=torch.float64), batch_size=0)
    from tidal.diffusion.entropy import entropy_production

    with pytest.raises(InvalidArgumentError, match=r"entropy_production\(batch_size=0\)"):
        entropy_production(lambda x: -x, lambda x: -x, 1.0, torch.zeros(3, 2), batch_size=0)

