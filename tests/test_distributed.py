"""Data-parallel training and sharded ensembles on 2 processes (gloo, localhost), against the
same computations in one process: gradients of every adjoint, a whole `fit`, a rank that needs
many more solver steps, a rank killed mid-run and resumed in one process, and an ensemble.

The workers are `distributed_driver.py`, started once with a free port and a timeout: a hang
fails the test instead of blocking CI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_driver as driver
from tidal.distributed import World, solve_ensemble
from tidal.training.distributed import without_option
from tidal.training.fit import fit

#: Seconds the 2-process runs may take (importing torch alone takes seconds under load).
TIMEOUT = 300
DRIVER = Path(__file__).with_name("distributed_driver.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(out: Path) -> list[subprocess.Popen]:
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, str(DRIVER), str(out)],
                             env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]


def _wait(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Each rank's exit code and output; a rank still running after TIMEOUT fails the test
    (a hang)."""
    results = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"a rank did not finish within {TIMEOUT} s (hang)")
        results.append((process.returncode, output))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 2-process run, and meanwhile the one-process fit it is compared with."""
    out = tmp_path_factory.mktemp("distributed")
    processes = _start(out)
    torch.manual_seed(0)
    reference = fit(driver.model(), driver.trajectories(), val=driver.trajectories(3),
                    config=driver.fit_config(), progress=False)
    results = _wait(processes)
    assert all((out / f"result{r}.pt").is_file() for r in (0, 1)), results[0][1][-3000:]
    return {"out": out, "reference": reference, "killed": results,
            "grads": [torch.load(out / f"grads{r}.pt", weights_only=True) for r in (0, 1)],
            "results": [torch.load(out / f"result{r}.pt", weights_only=False) for r in (0, 1)]}


@pytest.mark.slow
@pytest.mark.parametrize("adjoint", driver.ADJOINTS)
def test_gradients_after_all_reduce_equal_one_process(runs: dict, adjoint: str) -> None:
    for segments in (1, 2) if adjoint == "checkpoint" else (1,):
        objective = driver.objective(adjoint, segments)
        everything = tuple(range(len(objective.train)))
        loss = (objective.shooting_loss(everything) if segments > 1 else
                objective.loss(objective.batch(objective.train, 1.0, everything), everything))
        loss.backward()
        model = torch.cat([p.grad.reshape(-1) for p in objective.model.parameters()])
        rows_seen = torch.zeros(len(objective.train), dtype=torch.long)
        for grads in (runs["grads"][r][f"{adjoint}-{segments}"] for r in (0, 1)):
            assert float(grads["loss"]) == pytest.approx(loss.item(), rel=1e-12)
            torch.testing.assert_close(grads["model"], model, rtol=0, atol=1e-10)
            torch.testing.assert_close(
                grads["offsets"], objective.initial_offsets.grad[grads["offset_rows"]],
                rtol=0, atol=1e-10)
            if segments > 1:
                torch.testing.assert_close(
                    grads["segment_offsets"],
                    objective.segment_offsets.grad[grads["segment_rows"]], rtol=0, atol=1e-10)
            rows_seen += grads["offset_rows"]
        assert rows_seen.eq(1).all()  # every trajectory owned by exactly one rank
        assert model.abs().max() > 1e-2 and objective.initial_offsets.grad.abs().max() > 1e-3


@pytest.mark.slow
def test_a_rank_without_trajectories_in_the_batch_adds_zeros(runs: dict) -> None:
    objective = driver.objective("backprop")
    loss = objective.loss(objective.batch(objective.train, 1.0, driver.EVEN), driver.EVEN)
    loss.backward()
    model = torch.cat([p.grad.reshape(-1) for p in objective.model.parameters()])
    for grads in (runs["grads"][r]["even"] for r in (0, 1)):
        assert float(grads["loss"]) == pytest.approx(loss.item(), rel=1e-12)
        torch.testing.assert_close(grads["model"], model, rtol=0, atol=1e-10)
    assert runs["grads"][1]["even"]["offsets"].abs().max() == 0


@pytest.mark.slow
def test_two_rank_fit_equals_one_process_fit(runs: dict) -> None:
    reference, result = runs["reference"], runs["results"][0]
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(result["weights"][name], value, rtol=0, atol=1e-9)
    torch.testing.assert_close(torch.as_tensor(result["initial_states"]),
                               torch.as_tensor(reference.initial_states), rtol=0, atol=1e-9)
    assert len(result["history"]) == driver.EPOCHS
    for ours, theirs in zip(result["history"], reference.history):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-9)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-9)
    first = driver.model().state_dict()
    assert any((first[k] - v).abs().max() > 1e-3 for k, v in result["weights"].items())
    run = runs["out"] / "run"
    assert (run / "checkpoint.pt").is_file() and not list(run.glob(".*tidal-tmp"))


@pytest.mark.slow
def test_rank_with_many_more_solver_steps_does_not_hang(runs: dict) -> None:
    fevals = [runs["results"][r]["uneven_fevals"] for r in (0, 1)]
    assert fevals[1] > 3 * fevals[0]  # rank 1 owns the long trajectories
    assert runs["results"][0]["uneven_status"] == "finished"
    # metrics.csv's num_fevals is the sum over the ranks (one reduction per epoch)
    assert all(runs["results"][r]["uneven_history"] == sum(fevals) for r in (0, 1))


@pytest.mark.slow
def test_killed_rank_then_resume_on_one_process(runs: dict) -> None:
    (code0, output0), (code1, _) = runs["killed"]
    assert code1 == -9 and code0 != 0, output0[-2000:]  # rank 1 killed, rank 0 failed fast
    assert "Connection closed by peer" in output0 or "Connection reset" in output0
    run = runs["out"] / "killed"
    resumed = fit(driver.model(), driver.trajectories(), val=driver.trajectories(3),
                  config=driver.fit_config(), run_dir=run, resume=True, progress=False)
    assert resumed.status == "finished" and len(resumed.history) == driver.EPOCHS
    for name, value in runs["reference"].model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_flow_gradients_after_all_reduce_equal_one_process(runs: dict) -> None:
    """The CNF's likelihood loss (Hutchinson trace, both regularizers) of one global batch,
    computed directly in one process with the probes the step draws for the whole batch."""
    from tidal.models import divergence
    from tidal.training.batches import step_generator

    cnf = driver.flow_cnf()
    batch = driver.flow_samples()[:driver.GLOBAL_BATCH]

    def loss(probe: torch.Tensor) -> torch.Tensor:
        log_prob, reg = cnf(batch, probe)
        return (reg - log_prob).mean()

    generator = step_generator(driver.DRAW_SEED, driver.DRAW_STEP)
    value = loss(divergence.probe(batch, "rademacher", generator))
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        value, list(cnf.parameters()))])
    other = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        loss(divergence.probe(batch, "rademacher")), list(cnf.parameters()))])
    assert (other - gradient).abs().max() > 1e-3  # the probes matter: a rank's must be right
    for grads in (runs["grads"][r]["flow"] for r in (0, 1)):
        assert float(grads["loss"]) == pytest.approx(value.item(), rel=1e-12)
        assert float(grads["reported"].sum()) == pytest.approx(value.item(), rel=1e-12)
        torch.testing.assert_close(grads["model"], gradient, rtol=0, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("method", driver.SCORE_METHODS)
def test_score_gradients_after_all_reduce_equal_one_process(runs: dict, method: str) -> None:
    """Score matching (random times, noise and, for sliced, probes) on one global batch."""
    from tidal.diffusion.processes import VPSDE
    from tidal.diffusion.score_matching import score_matching_loss
    from tidal.training.batches import step_generator

    network = driver.score_model().network
    value = score_matching_loss(
        network, VPSDE(), driver.flow_samples()[:driver.GLOBAL_BATCH], method=method,
        weighting="likelihood", generator=step_generator(driver.DRAW_SEED, driver.DRAW_STEP)
    ).mean()
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        value, list(network.parameters()))])
    for grads in (runs["grads"][r][f"score-{method}"] for r in (0, 1)):
        assert float(grads["loss"]) == pytest.approx(value.item(), rel=1e-12)
        torch.testing.assert_close(grads["model"], gradient, rtol=0, atol=1e-10)
    assert gradient.abs().max() > 1e-2


@pytest.mark.slow
def test_two_rank_flow_and_score_fits_equal_one_process(runs: dict) -> None:
    """6 steps of `fit_flow` and `fit_score` (batches of 5: 3 + 2 points) on 2 ranks against
    one process: the same weights, losses and validation losses; the flow's num_fevals is the
    sum over the ranks (each takes the same fixed steps: twice one process's)."""
    from tidal.diffusion.processes import VPSDE
    from tidal.training.flow import fit_flow
    from tidal.training.score import fit_score

    result = runs["results"][0]
    cnf = driver.flow_cnf(trace="exact")
    flow = fit_flow(cnf, driver.flow_samples(), val_samples=driver.flow_samples(9, seed=1),
                    **driver.FLOW_FIT)
    score = driver.score_model()
    scored = fit_score(score, VPSDE(), driver.flow_samples(),
                       val_samples=driver.flow_samples(9, 1), **driver.SCORE_FIT)
    for reference, weights in ((cnf, "flow_weights"), (score, "score_weights")):
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(result[weights][name], value, rtol=0, atol=1e-9)
    for ours, theirs in zip(result["flow_history"], flow.rows, strict=True):
        for column in ("train_loss", "nll", "regularization", "val_loss"):
            assert ours[column] == pytest.approx(theirs[column], rel=1e-9, nan_ok=True)
        assert ours["num_fevals"] == 2 * theirs["num_fevals"] > 0
    for ours, theirs in zip(result["score_history"], scored.rows, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-9)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-9, nan_ok=True)
    assert any((driver.flow_cnf().state_dict()[k] - v).abs().max() > 1e-3
               for k, v in result["flow_weights"].items())


@pytest.mark.slow
def test_two_rank_flow_and_diffusion_runs_are_written_once(runs: dict) -> None:
    """Rank 0 writes the run (rank 1 creating it too would find it taken), atomically: a
    complete run that loads, with no temporary files."""
    from tidal.training.diffusion_run import load_diffusion_run
    from tidal.training.flow_run import load_flow_run

    assert runs["results"][0]["runs"] == runs["results"][1]["runs"] == {
        "flow": "finished", "diffusion": "finished"}
    for name, load in (("flow-run", load_flow_run), ("diffusion-run", load_diffusion_run)):
        run = runs["out"] / name
        loaded = load(run)
        assert loaded.config["fit"]["status"] == "finished"
        assert not list(run.rglob("*tidal-tmp*"))
        assert {"checkpoint.pt", "model.pt", "metrics.csv", "config.json"} <= {
            p.name for p in run.iterdir()}


@pytest.mark.slow
def test_ensemble_equals_one_process_bit_for_bit(runs: dict) -> None:
    alone = solve_ensemble(driver.ensemble_solve, driver.ensemble_inputs(), seed=5,
                           chunk_size=3)
    assert torch.equal(runs["results"][0]["ensemble"], alone)
    assert runs["results"][1]["ensemble"] is None  # gathered on rank 0 only
    # the samples are the ensemble's own: one Brownian path per sample seed
    assert alone.shape == (5, 11, 2) and alone[-1].std(0).min() > 0.05


def test_one_process_world_and_shards() -> None:
    world = World.current()
    assert (world.rank, world.size, world.distributed, world.leader) == (0, 1, False, True)
    assert World(1, 3).shard(range(8)) == (1, 4, 7)
    assert without_option(["fit", "--nproc", "2", "d.csv", "--nproc=3", "-o", "r"],
                          "--nproc") == ["fit", "d.csv", "-o", "r"]


def test_solve_ensemble_checks_its_arguments() -> None:
    from tidal import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="chunk_size"):
        solve_ensemble(driver.ensemble_solve, driver.ensemble_inputs(), chunk_size=0)
    with pytest.raises(InvalidArgumentError, match="inputs"):
        solve_ensemble(driver.ensemble_solve, torch.zeros(0, 2))


def test_nproc_is_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidal import InvalidArgumentError
    from tidal.training.distributed import launch

    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(InvalidArgumentError, match="--nproc-per-node"):
        launch(2, ["fit", "data.csv", "-o", "run"])


def test_a_process_without_a_gpu_of_its_own_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda=True with more local processes than GPUs (here none) says so before joining: on a
    one-GPU machine `--nproc 2` used to die in torch.cuda.set_device with 'invalid device
    ordinal' (the command line now asks for gloo on the CPU, where it trains)."""
    from tidal import InvalidArgumentError
    from tidal.distributed import init_from_environment

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    with pytest.raises(InvalidArgumentError, match=r"has no GPU of its own.*cuda=False"):
        init_from_environment(cuda=True)


def test_nproc_checks_the_input_before_starting_processes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tidal.cli.main import main

    result = CliRunner().invoke(main, ["fit", str(tmp_path / "missing.csv"), "-o",
                                       str(tmp_path / "run"), "--nproc", "2"])
    assert result.exit_code == 2 and "missing.csv" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["flow", "denoising", "sliced"])
def test_shares_of_two_ranks_add_up_to_the_one_process_loss_and_gradient(kind: str) -> None:
    """In one process, the shares ranks 0 and 1 of 2 would compute (`World(r, 2)`) add up to
    the loss of the whole global batch computed directly (same draws: the step's generator), and
    so do their gradients."""
    from tidal.diffusion.processes import VPSDE
    from tidal.diffusion.score_matching import score_matching_loss
    from tidal.models import divergence
    from tidal.training.batches import step_generator
    from tidal.training.flow import LikelihoodObjective
    from tidal.training.score import ScoreMatchingObjective

    batch = driver.flow_samples()[:driver.GLOBAL_BATCH]

    def draws() -> torch.Generator:
        return step_generator(driver.DRAW_SEED, driver.DRAW_STEP)

    def objective():
        if kind == "flow":
            return LikelihoodObjective(driver.flow_cnf(), batch, None, driver.GLOBAL_BATCH)
        return ScoreMatchingObjective(driver.score_model(), VPSDE(), batch, None,
                                      driver.GLOBAL_BATCH, kind, "hutchinson", "likelihood")

    def loss_of(made, share: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if kind == "flow":
            parameters = list(made.model.parameters())
            if share:
                loss = sum(made.share(batch, draws()))
            else:
                log_prob, reg = made.model(batch, divergence.probe(batch, "rademacher", draws()))
                loss = (reg - log_prob).mean()
        else:
            parameters = list(made.model.network.parameters())
            loss = made.share(batch, draws()) if share else score_matching_loss(
                made.model.network, VPSDE(), batch, method=kind, weighting="likelihood",
                generator=draws()).mean()
        return loss, [g.reshape(-1) for g in torch.autograd.grad(loss, parameters)]

    whole, gradient = loss_of(objective(), share=False)
    total = torch.zeros((), dtype=torch.float64)
    summed = torch.zeros(torch.cat(gradient).shape, dtype=torch.float64)
    for rank in (0, 1):
        made = objective()
        made.world = World(rank, 2)
        loss, grads = loss_of(made, share=True)
        total, summed = total + loss.detach(), summed + torch.cat(grads)
    assert float(total) == pytest.approx(whole.item(), rel=1e-12)
    torch.testing.assert_close(summed, torch.cat(gradient), rtol=0, atol=1e-12)
