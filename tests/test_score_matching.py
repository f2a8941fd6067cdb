"""Score matching and entropy production against references: the sliced loss's closed form
for a Gaussian, the exact score minimizing both losses, the EMA's update rule, a short fit
recovering a Gaussian's score, and entropy production rates against hand-derived closed forms
(docs/design.md) and scipy's Lyapunov solver."""

from __future__ import annotations

import math

import pytest
import torch

from tidal._errors import InvalidArgumentError
from tidal.diffusion import entropy
from tidal.diffusion.processes import VPSDE
from tidal.diffusion.score_matching import ScoreMLP, ScoreModel, score_matching_loss
from tidal.training.score import fit_score


def test_sliced_loss_closed_form() -> None:
    """For x ~ N(0, v I) and s = -x/v: E[tr ∇s + |s|^2/2] = -d/v + d/(2v) = -d/(2v) (exact
    trace), and the Hutchinson version has the same mean."""
    v, d, n = 2.0, 3, 4000
    x = math.sqrt(v) * torch.randn(n, d, dtype=torch.float64)
    score = lambda y, t: -y / v  # noqa: E731
    exact = score_matching_loss(score, None, x, method="sliced", trace="exact")
    torch.testing.assert_close(exact.mean().item(), -d / (2 * v), atol=4 * exact.std().item()
                               / math.sqrt(n), rtol=0)
    hutch = score_matching_loss(score, None, x, method="sliced", trace="hutchinson")
    assert abs(hutch.mean().item() + d / (2 * v)) < 4 * hutch.std().item() / math.sqrt(n)


@pytest.mark.parametrize("method", ["denoising", "sliced"])
def test_exact_score_minimizes_the_loss(method: str) -> None:
    """Gaussian data N(0, s0^2 I) under VP: p_t = N(0, (m^2 s0^2 + σ^2) I); scaling the exact
    score by 0.8 or 1.25 raises the loss (same times, noise and probes)."""
    process, s0 = VPSDE(), 0.7
    x0 = s0 * torch.randn(4000, 2, dtype=torch.float64)

    def scaled(factor: float):
        def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = t.to(torch.float64)
            var = process.mean_scale(t) ** 2 * s0**2 + process.std(t) ** 2
            return -factor * x / var.reshape(-1, 1)
        return score

    losses = {f: score_matching_loss(scaled(f), process, x0, method=method,
                                     generator=torch.Generator().manual_seed(4)).mean().item()
              for f in (0.8, 1.0, 1.25)}
    assert losses[1.0] < losses[0.8] and losses[1.0] < losses[1.25]


def test_ema_update_and_call() -> None:
    torch.manual_seed(0)
    model = ScoreModel(ScoreMLP(2, VPSDE(), width=8, depth=1).double(), ema_decay=0.9)
    before = [p.clone() for p in model.ema.parameters()]
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(1.0)
    model.update_ema()
    for old, new, current in zip(before, model.ema.parameters(), model.network.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * current)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(model(x, t), model.ema(x, t))
    assert not any(p.requires_grad for p in model.ema.parameters())
    with pytest.raises(InvalidArgumentError, match="ema_decay"):
        ScoreModel(ScoreMLP(2), ema_decay=1.0)


def test_fit_recovers_a_gaussian_score() -> None:
    """A short denoising fit on N(μ, s0^2 I) data: the learned score at t = 0.3 is within 10%
    (relative RMS) of the exact -(x - m μ)/(m^2 s0^2 + σ^2)."""
    process, s0, mu = VPSDE(), 0.6, torch.tensor([1.0, -0.5], dtype=torch.float64)
    data = mu + s0 * torch.randn(4096, 2, dtype=torch.float64)
    torch.manual_seed(0)
    model = ScoreModel(ScoreMLP(2, process, width=32, depth=2).double(), ema_decay=0.9)
    history = fit_score(model, process, data, val_samples=data[:512], steps=300,
                        batch_size=256, lr=5e-3, val_every=100, progress=False)
    assert history.status == "finished" and len(history.val_loss) == 3
    t = torch.full((2000,), 0.3, dtype=torch.float64)
    m, sigma = process.mean_scale(t[:1]), process.std(t[:1])
    x = m * mu + (m**2 * s0**2 + sigma**2).sqrt() * torch.randn(2000, 2, dtype=torch.float64)
    exact = -(x - m * mu) / (m**2 * s0**2 + sigma**2)
    with torch.no_grad():
        learned = model(x, t)
    assert ((learned - exact).square().mean() / exact.square().mean()).sqrt() < 0.1


def test_fit_arguments() -> None:
    model = ScoreModel(ScoreMLP(2))
    x = torch.randn(10, 2)
    with pytest.raises(InvalidArgumentError, match="method='sliced'"):
        fit_score(model, None, x, method="denoising")
    with pytest.raises(InvalidArgumentError, match="method"):
        fit_score(model, VPSDE(), x, method="ssm")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        fit_score(model, VPSDE(), x, batch_size=11)


def _active_ou_rate(k: float, a: float, tau: float, d_x: float, d_f: float) -> float:
    return a**2 * d_f * tau / (d_x * (1 + k * tau))


def _coupled_ou_rate(k: float, c: float, t1: float, t2: float) -> float:
    return c**2 * (t1 - t2) ** 2 / (2 * k * t1 * t2)


@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0, 1.0, 1.0), (2.0, 0.7, 0.5, 0.3, 2.0),
                                    (1.0, 0.0, 1.0, 1.0, 1.0)])
def test_active_ou_closed_form(params: tuple[float, ...]) -> None:
    k, a, tau, d_x, d_f = params
    exact = entropy.linear_entropy_production(*entropy.active_ou(k, a, tau, d_x, d_f))
    assert exact.rate == pytest.approx(_active_ou_rate(*params), rel=1e-10, abs=1e-14)
    assert exact.per_coordinate.sum().item() == pytest.approx(exact.rate)


@pytest.mark.parametrize("params", [(1.0, 0.5, 1.0, 2.0), (2.0, -1.5, 0.3, 1.7),
                                    (1.0, 0.5, 1.5, 1.5)])
def test_coupled_ou_closed_form(params: tuple[float, ...]) -> None:
    exact = entropy.linear_entropy_production(*entropy.coupled_ou(*params))
    assert exact.rate == pytest.approx(_coupled_ou_rate(*params), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("system", ["active-ou", "coupled-ou"])
def test_estimator_with_exact_score(system: str) -> None:
    """On stationary samples the estimate with the exact score matches the closed form within
    Monte-Carlo error; the per-coordinate split too."""
    a, d = entropy.LINEAR_SYSTEMS[system]()
    exact = entropy.linear_entropy_production(a, d)
    x = torch.randn(20000, 2, dtype=torch.float64) @ torch.linalg.cholesky(exact.covariance).T
    c_inv = torch.linalg.inv(exact.covariance)
    estimate = entropy.entropy_production(lambda y: -y @ c_inv, lambda y: -y @ a.T, d, x)
    assert abs(estimate.rate - exact.rate) < 4 * estimate.standard_error
    torch.testing.assert_close(estimate.per_coordinate, exact.per_coordinate,
                               atol=6 * estimate.standard_error, rtol=0)



def test_fit_score_refuses_bad_samples_and_options_before_training():
    """NaN samples trained on silently (or diverged); float64 samples for a float32 network,
    samples or validation points of another d raised torch's matmul errors; schedule='x' was
    taken as cosine silently; steps=0 'trained for 0 steps'; lr=-1 torch's ValueError."""
    torch.manual_seed(0)
    model = ScoreModel(ScoreMLP(2, VPSDE(), width=8, depth=1))
    x = torch.randn(32, 2)
    bad = x.clone()
    bad[1, 1] = math.nan
    cases = [({"samples": bad}, r"fit_score\(samples=...\)` contains NaN .* row 1"),
             ({"samples": x.double()}, r"fit_score\(samples=...\)` is torch.float64 but"),
             ({"samples": torch.randn(32, 3)}, r"has 3 columns but .* dim=2"),
             ({"val_samples": torch.randn(8, 3)}, r"fit_score\(val_samples=...\)` must be"),
             ({"schedule": "x"}, r"fit_score\(schedule='x'\)"),
             ({"steps": 0}, r"fit_score\(steps=0\)"), ({"lr": -1.0}, r"fit_score\(lr=-1.0\)")]
    for change, pattern in cases:
        arguments = {"samples": x, "steps": 2, "batch_size": 8, "progress": False, **change}
        with pytest.raises(InvalidArgumentError, match=pattern):
            fit_score(model, VPSDE(), **arguments)

def test_equilibrium_has_no_production() -> None:
    for a, d in (entropy.active_ou(activity=0.0), entropy.coupled_ou(t1=1.5, t2=1.5)):
        exact = entropy.linear_entropy_production(a, d)
        assert abs(exact.rate) < 1e-12
    with pytest.raises(InvalidArgumentError, match="positive definite"):
        entropy.diffusion_matrix(torch.tensor([1.0, 0.0]), 2)


def test_simulated_snapshots_are_stationary() -> None:
    """`simulate_linear`'s snapshots have the Lyapunov covariance (within sampling error) and
    give the exact rate with the exact score."""
    a, d = entropy.active_ou()
    exact = entropy.linear_entropy_production(a, d)
    x = entropy.simulate_linear(a, d, 20000, snapshots=10, seed=1)
    torch.testing.assert_close(torch.cov(x.T), exact.covariance, atol=0.06, rtol=0)
    c_inv = torch.linalg.inv(exact.covariance)
    estimate = entropy.entropy_production(lambda y: -y @ c_inv, lambda y: -y @ a.T, d, x)
    assert abs(estimate.rate - exact.rate) < 4 * estimate.standard_error


def test_cli_score_entropy(tmp_path) -> None:
    """`tidal score entropy` on DATA with a known linear drift prints the per-coordinate and
    total rates beside the linear theory; bad input is one line and exit code 2."""
    from click.testing import CliRunner

    from tidal.cli.main import main

    a, d = entropy.coupled_ou()
    exact = entropy.linear_entropy_production(a, d)
    x = torch.randn(2000, 2, dtype=torch.float64) @ torch.linalg.cholesky(exact.covariance).T
    path = tmp_path / "snapshots.csv"
    path.write_text("x1,x2\n" + "\n".join(f"{u},{v}" for u, v in x.tolist()) + "\n")
    result = CliRunner().invoke(main, ["score", "entropy", str(path), "--drift-matrix",
                                       "1,-0.5;-0.5,1", "--diffusion", "1,2", "--steps", "5",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("total") and f"{exact.rate:.5f}" in lines[-1]
    assert [line.split()[0] for line in lines[2:4]] == ["x1", "x2"]
    for args, message in (([str(path), "--diffusion", "1"], "--drift-matrix"),
                          (["--system", "coupled-ou", "--param", "speed=1"], "--param"),
                          (["--system", "active-ou", "--param", "activity=nan"],
                           "--param 'activity=nan': the number must be finite"),
                          ([str(path), "--drift-matrix", "1,0;0", "--diffusion", "1"],
                           "rows of different lengths")):
        bad = CliRunner().invoke(main, ["score", "entropy", *args])
        assert bad.exit_code == 2 and message in bad.output


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    """Through the shared trainer: a fit interrupted (Ctrl-C) at step 12 and resumed from its
    run directory ends with the weights (network and EMA) of an uninterrupted fit."""
    from tidal.training.run_directory import RunDirectory
    from tidal.training.score import ScoreMatchingObjective

    process = VPSDE()
    data = 0.5 * torch.randn(256, 2, dtype=torch.float64)

    def fit(run_dir=None, resume=False):
        torch.manual_seed(0)
        model = ScoreModel(ScoreMLP(2, process, width=8, depth=1).double(), ema_decay=0.9)
        history = fit_score(model, process, data, val_samples=data[:64], steps=30,
                            batch_size=64, val_every=10, checkpoint_every=5, progress=False,
                            run_dir=run_dir, resume=resume)
        return model, history

    reference, _ = fit()
    original = ScoreMatchingObjective.train_round

    def interrupt(self, index, *args):
        if index == 12:
            raise KeyboardInterrupt
        return original(self, index, *args)

    run = RunDirectory.create(tmp_path / "run", "diffusion", command="test")
    monkeypatch.setattr(ScoreMatchingObjective, "train_round", interrupt)
    assert fit(run)[1].status == "interrupted"
    monkeypatch.setattr(ScoreMatchingObjective, "train_round", original)
    resumed, history = fit(run, resume=True)
    assert history.status == "finished"
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_entropy_cli_diffusion_one_number_is_d_times_identity(tmp_path) -> None:
    """`--diffusion 1` (one number, as --help documents) means D = I, the same as `1,1`;
    a non-positive number is refused as not positive definite, not as a wrong shape."""
    from click.testing import CliRunner

    from tidal.cli.main import main

    x = torch.randn(400, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "snapshots.csv"
    path.write_text("a,b\n" + "\n".join(f"{u},{v}" for u, v in x.tolist()) + "\n")
    args = ["score", "entropy", str(path), "--drift-matrix", "1,0;0,1", "--steps", "3",
            "--quiet", "--diffusion"]
    one = CliRunner().invoke(main, [*args, "1"])
    both = CliRunner().invoke(main, [*args, "1,1"])
    assert one.exit_code == 0, one.output
    assert one.output.splitlines()[1:] == both.output.splitlines()[1:]
    negative = CliRunner().invoke(main, [*args, "-1"])
    assert negative.exit_code == 2 and "positive definite" in negative.output


def test_entropy_cli_refuses_a_system_without_a_stationary_density_and_odd_sample_counts():
    """--param stiffness=-1 makes the active OU process grow (A has the eigenvalue -1): no
    stationary density to sample, said in the command line's terms (it was an error about
    `sdeint(ts=...)` times); --samples that the snapshots of each path cannot fill likewise
    (it named `simulate_linear(n=1, snapshots=10)`)."""
    from click.testing import CliRunner

    from tidal.cli.main import main

    for extra, message in ((["--system", "active-ou", "--param", "stiffness=-1"],
                            "the smallest real part here is -1"),
                           (["--system", "coupled-ou", "--samples", "15"],
                            "--samples 15: give a positive multiple of 10")):
        result = CliRunner().invoke(main, ["score", "entropy", *extra, "--steps", "2",
                                           "--quiet"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "sdeint" not in result.output and "simulate_linear" not in result.output
    with pytest.raises(InvalidArgumentError, match="positive real part"):
        entropy.simulate_linear(torch.tensor([[0.0]], dtype=torch.float64),
                                torch.tensor(1.0, dtype=torch.float64), 10)
    with pytest.raises(InvalidArgumentError, match="positive multiple of snapshots"):
        entropy.simulate_linear(torch.tensor([[1.0]], dtype=torch.float64),
                                torch.tensor(1.0, dtype=torch.float64), 0)
