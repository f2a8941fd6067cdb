"""Flow runs go through the shared training loop and run directory: checkpoints, `--resume`
(reference: the uninterrupted run, compared bit for bit), loading an unfinished run, and the
report built by the report layer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tidal.cli.main import main
from tidal.data.toys import sample_toy
from tidal.training.checkpoint import CHECKPOINT, load_checkpoint
from tidal.training.flow import LikelihoodObjective
from tidal.training.flow_run import (
    FlowOptions,
    load_flow_run,
    resume_flow_run,
    train_flow_run,
)

#: Hutchinson's trace: its probes (step i's from the generator of (seed, i)) must be drawn
#: again alike by the resumed run.
TINY = FlowOptions(steps=12, batch_size=32, width=8, depth=1, trace="hutchinson",
                   checkpoint_every=4, train_tol=1e-3, eval_tol=1e-3)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in tidal catches it, so no final checkpoint is written."""


def _samples() -> np.ndarray:
    return sample_toy("two-moons", 120, seed=0, dtype=torch.float64).numpy()


def _rows(history) -> list[tuple]:
    return [tuple(v for k, v in row.items() if k != "seconds") for row in history.rows]


@pytest.mark.parametrize(("stop", "how"), [(6, KeyboardInterrupt), (7, _Killed)])
def test_an_interrupted_or_killed_flow_run_resumes_to_the_uninterrupted_result(
        tmp_path, monkeypatch, stop, how):
    straight = train_flow_run(_samples(), tmp_path / "a", columns=["x", "y"], options=TINY,
                              progress=False)
    original = LikelihoodObjective.train_round

    def interrupt(self, step, *args):
        if step == stop:
            raise how
        return original(self, step, *args)

    monkeypatch.setattr(LikelihoodObjective, "train_round", interrupt)
    run = tmp_path / "b"
    if how is KeyboardInterrupt:
        stopped = train_flow_run(_samples(), run, columns=["x", "y"], options=TINY,
                                 progress=False)
        assert stopped.status == "interrupted"
        assert load_checkpoint(run / CHECKPOINT)["epoch"] == stop
        assert "training was interrupted" in load_flow_run(run).notice
    else:
        with pytest.raises(_Killed):
            train_flow_run(_samples(), run, columns=["x", "y"], options=TINY, progress=False)
        assert load_checkpoint(run / CHECKPOINT)["epoch"] == 4  # the last periodic one
        assert "using its last checkpoint (step 4" in load_flow_run(run).notice
    monkeypatch.setattr(LikelihoodObjective, "train_round", original)
    torch.manual_seed(123)  # the resumed run must not depend on the caller's generator
    resumed = resume_flow_run(run, progress=False)
    assert resumed.status == "finished"
    np.testing.assert_equal(_rows(resumed), _rows(straight))  # NaN (no validation) == NaN
    a, b = load_flow_run(tmp_path / "a"), load_flow_run(run)
    assert b.notice is None
    for name, value in a.cnf.state_dict().items():
        torch.testing.assert_close(b.cnf.state_dict()[name], value, rtol=0, atol=0)


def test_flow_resume_on_the_command_line_refuses_changed_settings(tmp_path):
    run = tmp_path / "flow"
    base = ["flow", "fit", "--toy", "two-moons", "--samples", "120", "--steps", "3",
            "--batch-size", "32", "--width", "8", "--depth", "1", "--quiet", "-o", str(run)]
    assert CliRunner().invoke(main, base).exit_code == 0
    refused = CliRunner().invoke(main, ["flow", "fit", "--resume", "-o", str(run), "--lr",
                                        "0.1"])
    assert refused.exit_code == 2 and "--lr cannot be given" in refused.output
    too_few = CliRunner().invoke(main, ["flow", "fit", "--resume", "-o", str(run), "--steps",
                                        "2", "--quiet"])
    assert too_few.exit_code == 2 and "already trained 3 steps" in too_few.output
    more = CliRunner().invoke(main, ["flow", "fit", "--resume", "-o", str(run), "--steps", "5",
                                     "--quiet"])
    assert more.exit_code == 0, more.output
    config = json.loads((run / "config.json").read_text())
    assert config["fit"]["steps"] == 5 and config["options"]["steps"] == 5


def test_the_flow_report_has_the_shared_verdict_and_checks(tmp_path):
    """Reference for the Gaussian baseline: the closed-form NLL of the held-out samples under
    the training samples' mean and covariance (scipy)."""
    from scipy.stats import multivariate_normal

    run = tmp_path / "flow"
    result = CliRunner().invoke(main, ["flow", "fit", "--toy", "eight-gaussians", "--samples",
                                       "200", "--steps", "3", "--batch-size", "64", "--width",
                                       "8", "--depth", "1", "--quiet", "-o", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "class='verdict" in page and "<h2>Checks</h2>" in page
    assert "What was fitted" in page and "density.png" in page
    metrics = json.loads((run / "metrics.json").read_text())
    names = [check["name"] for check in metrics["checks"]]
    assert names == ["held-out NLL minus a fitted Gaussian's",
                     "held-out NLL above the true density's"]
    flow = load_flow_run(run)
    train, val = flow.data("train"), flow.data("val")
    gaussian = multivariate_normal(train.mean(0), np.cov(train, rowvar=False))
    assert metrics["gaussian_val_nll"] == pytest.approx(-gaussian.logpdf(val).mean(), rel=1e-9)
    assert math.isfinite(metrics["gap"]) and "checks:" in result.output


def test_density_runs_refuse_bad_arguments_before_making_the_folder(tmp_path):
    """A column list that does not fit the samples raised pandas' 'Shape of passed values'
    after the folder was made; options or a process of the wrong type AttributeErrors;
    val_fraction=1.5 'fit_score(batch_size=0)' and levels with non-integer data
    'dequantize(x=...)', both after config.json was written."""
    from tidal.diffusion import VPSDE
    from tidal.training.diffusion_run import DiffusionOptions, train_diffusion_run

    x = _samples()
    calls = [
        (lambda: train_flow_run(x, tmp_path / "run", columns=["a"], options=TINY),
         r"columns=\['a'\] must name each of the samples' 2 columns"),
        (lambda: train_flow_run(x, tmp_path / "run", columns=["a", "b"], options={}),
         r"train_flow_run\(options=...\)` must be a FlowOptions"),
        (lambda: train_diffusion_run(x, tmp_path / "run", columns=["a", "b"], process="vp"),
         r"train_diffusion_run\(process=...\)` must be a ForwardProcess"),
        (lambda: train_diffusion_run(x, tmp_path / "run", columns=["a", "b"], process=VPSDE(),
                                     options=DiffusionOptions(val_fraction=1.5)),
         r"val_fraction=1.5 must be a fraction in \(0, 1\)"),
        (lambda: train_diffusion_run(x, tmp_path / "run", columns=["a", "b"], process=VPSDE(),
                                     levels=4), r"levels=4\)`: the samples must be integers")]
    for call, pattern in calls:
        with pytest.raises(ValueError, match=pattern):
            call()
        assert not (tmp_path / "run").exists()


def test_flow_run_log_prob_names_points_that_do_not_fit(tmp_path):
    """Points with another number of columns raised torch's broadcast error; NaN points
    'solve(y0=...)'; a list of points still works."""
    train_flow_run(_samples(), tmp_path / "run", columns=["a", "b"], options=TINY,
                   progress=False)
    run = load_flow_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"FlowRun.log_prob\(x=...\)` must be points \[N, 2\]"):
        run.log_prob(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"FlowRun.log_prob\(x=...\)` contains NaN"):
        run.log_prob(np.full((1, 2), np.nan))
    torch.manual_seed(0)  # the same Hutchinson probe for both
    listed = run.log_prob([[0.0, 0.5]])
    torch.manual_seed(0)
    assert torch.equal(listed, run.log_prob(np.array([[0.0, 0.5]])))

