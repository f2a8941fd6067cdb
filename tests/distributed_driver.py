"""The worker of the multi-process tests (`test_distributed.py`): run as
`python tests/distributed_driver.py OUT` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set, it joins a gloo process group and writes what it computed under OUT.

In order: for each adjoint, this rank's share of one global batch's gradient after the
all-reduce; the same for a CNF's likelihood and two score-matching losses; a 2-rank `fit`
(fixed steps); a `fit` whose second rank needs many more adaptive solver steps; a sharded
ensemble of SDE solves; a 2-rank `fit_flow` and `fit_score` (fixed steps) and a flow and a
diffusion run directory; then the first `fit` again, in which rank 1 kills itself (SIGKILL) in
epoch 3 (so rank 0 ends with an error).

The builders below are also the single-process references' (the tests import them).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import tidal
from tidal.brownian import BrownianTree
from tidal.data import Trajectories
from tidal.diffusion.processes import VPSDE
from tidal.diffusion.score_matching import ScoreMLP, ScoreModel
from tidal.distributed import World, solve_ensemble
from tidal.models import CNF
from tidal.training import TrainConfig
from tidal.training.batches import step_generator
from tidal.training.diffusion_run import DiffusionOptions, train_diffusion_run
from tidal.training.fit import TrajectoryObjective, fit
from tidal.training.flow import LikelihoodObjective, fit_flow
from tidal.training.flow_run import FlowOptions, train_flow_run
from tidal.training.score import ScoreMatchingObjective, fit_score

ADJOINTS = ("backprop", "checkpoint", "backsolve")
EPOCHS = 6


def trajectories(n: int = 7, spans: tuple[float, float] = (2.0, 2.0)) -> Trajectories:
    """Toggle-switch observations at irregular times; odd trajectories span `spans[1]`."""
    rng = np.random.default_rng(0)
    times, values = [], []
    for i in range(n):
        span = spans[i % 2]
        t = np.sort(np.concatenate([[0.0], rng.uniform(0.05, span, 5)]))
        v = rng.normal(1.0, 0.3, (6, 2))
        v[2, 1] = np.nan  # a missing entry
        times.append(t)
        values.append(v)
    return Trajectories(times, values)


def model(adjoint: str = "checkpoint", adaptive: bool = False) -> tidal.NeuralODE:
    """A small MLP field; fixed RK4 steps (a trajectory's solve does not depend on its batch)
    unless `adaptive` (Tsit5)."""
    torch.manual_seed(1)
    field = tidal.nn.MLP(2, width=8, depth=2).double()
    if adaptive:
        return tidal.NeuralODE(field, solver=tidal.Tsit5(),
                               controller=tidal.PIDController(rtol=1e-6, atol=1e-8),
                               adjoint=tidal.registry.adjoint(adjoint))
    return tidal.NeuralODE(field, solver=tidal.RK4(), controller=tidal.ConstantStepSize(0.05),
                           adjoint=tidal.registry.adjoint(adjoint))


def objective(adjoint: str, segments: int = 1) -> TrajectoryObjective:
    """The objective of the gradient check, with nonzero initial-state offsets."""
    config = TrainConfig(epochs=10, shooting_segments=segments)
    made = TrajectoryObjective(model(adjoint), trajectories(), None, config, torch.float64)
    with torch.no_grad():
        made.initial_offsets.copy_(0.1 * torch.randn(made.initial_offsets.shape,
                                                     generator=torch.Generator().manual_seed(2),
                                                     dtype=torch.float64))
    return made


def fit_config() -> TrainConfig:
    return TrainConfig(epochs=EPOCHS, batch_size=3, lr=1e-2, horizons=(0.5, 1.0),
                       eval_every=1, checkpoint_every=2, patience=None, seed=3)


def ensemble_solve(y0: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """An Ornstein-Uhlenbeck ensemble, one Brownian path per sample seed; [T, b, 2]."""
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    tree = BrownianTree(0.0, 1.0, seeds, 2, tol=1e-3, dtype=torch.float64)
    return tidal.sdeint(lambda t, y: -y, lambda t, y: 0.3 * torch.ones_like(y), y0, ts,
                        dt=0.05, brownian=tree).ys


def ensemble_inputs() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 22, dtype=torch.float64).reshape(11, 2)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    world = World.current()
    grads = {}
    for adjoint in ADJOINTS:
        for segments in (1, 2) if adjoint == "checkpoint" else (1,):
            grads[f"{adjoint}-{segments}"] = share_gradient(adjoint, segments, world)
    grads["even"] = share_gradient("backprop", 1, world, EVEN)  # rank 1 owns none of them
    grads["flow"] = flow_share_gradient(world)
    for method in SCORE_METHODS:
        grads[f"score-{method}"] = score_share_gradient(method, world)
    torch.save(grads, out / f"grads{world.rank}.pt")
    result = fit(model(), trajectories(), val=trajectories(3), config=fit_config(),
                 run_dir=out / "run", progress=False)
    uneven = fit(model(adaptive=True), trajectories(spans=(0.5, 40.0)), config=dataclass_replace(
        fit_config(), epochs=2, horizons=(1.0,)), progress=False)
    flow = flow_cnf(trace="exact")
    flow_history = fit_flow(flow, flow_samples(), val_samples=flow_samples(9, seed=1),
                            **FLOW_FIT)
    score = score_model()
    score_history = fit_score(score, VPSDE(), flow_samples(), val_samples=flow_samples(9, 1),
                              **SCORE_FIT)
    runs = {"flow": train_flow_run(run_samples(), out / "flow-run", columns=["a", "b"],
                                   options=FlowOptions(width=8, depth=1, steps=4,
                                                       batch_size=16, val_fraction=0.2),
                                   progress=False).status,
            "diffusion": train_diffusion_run(run_samples(), out / "diffusion-run",
                                             columns=["a", "b"], process=VPSDE(),
                                             options=DiffusionOptions(width=8, depth=1, steps=4,
                                                                      batch_size=16),
                                             progress=False).status}
    torch.save({"weights": result.model.state_dict(), "initial_states": result.initial_states,
                "history": result.history, "uneven_history": uneven.history[-1]["num_fevals"],
                "uneven_fevals": int(torch.as_tensor(uneven.model.last_stats.num_fevals).max()),
                "uneven_status": uneven.status, "flow_weights": flow.state_dict(),
                "flow_history": flow_history.rows, "score_weights": score.state_dict(),
                "score_history": score_history.rows, "runs": runs,
                "ensemble": solve_ensemble(ensemble_solve, ensemble_inputs(), seed=5,
                                           chunk_size=3)}, out / f"result{world.rank}.pt")
    kill_in_epoch(3, world)
    fit(model(), trajectories(), val=trajectories(3), config=fit_config(),
        run_dir=out / "killed", progress=False)


#: A global batch of which rank 1 (of 2) owns nothing: its parameters get no gradient there.
EVEN = (0, 2, 4, 6)


def share_gradient(adjoint: str, segments: int, world: World,
                   batch: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """This rank's gradients after the step's all-reduce, for the global batch `batch` (default
    all trajectories; offsets: the rows it owns)."""
    from tidal.training.distributed import reduce_step

    made = objective(adjoint, segments)
    parameters = list(made.model.parameters())
    owned = [made.initial_offsets, made.segment_offsets]
    loss = made.share(1.0, segments, batch or tuple(range(len(made.train))))
    value = reduce_step(world, loss, parameters, owned)
    rows = made.owned_rows(world)
    return {"loss": torch.tensor(value, dtype=torch.float64), "model": torch.cat([p.grad.reshape(-1)
                                                              for p in parameters]),
            "offsets": made.initial_offsets.grad[rows["initial_offsets"]],
            "offset_rows": rows["initial_offsets"],
            "segment_offsets": made.segment_offsets.grad[rows["segment_offsets"]],
            "segment_rows": rows["segment_offsets"]}


def flow_samples(n: int = 17, seed: int = 0) -> torch.Tensor:
    """Points of a correlated 2-D Gaussian."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return z @ torch.tensor([[1.0, 0.5], [0.0, 0.7]], dtype=torch.float64)


def run_samples() -> np.ndarray:
    return flow_samples(40, seed=2).numpy()


def flow_cnf(trace: str = "hutchinson") -> CNF:
    """A small CNF with both regularizers, fixed RK4 steps (a point's solve does not depend on
    the rest of its batch)."""
    torch.manual_seed(4)
    return CNF(tidal.nn.MLP(2, width=8, depth=2, time_input=True).double(), trace=trace,
               kinetic=0.1, jacobian=0.1, solver=tidal.RK4(),
               controller=tidal.ConstantStepSize(0.25))


def score_model() -> ScoreModel:
    torch.manual_seed(5)
    return ScoreModel(ScoreMLP(2, VPSDE(), width=8, depth=2).double(), ema_decay=0.9)


#: The global batch of the gradient checks: 7 points (4 on rank 0, 3 on rank 1), step 5 of a
#: run seeded 3.
GLOBAL_BATCH, DRAW_SEED, DRAW_STEP = 7, 3, 5
SCORE_METHODS = ("denoising", "sliced")
FLOW_FIT = {"steps": 6, "batch_size": 5, "lr": 1e-2, "val_every": 3, "checkpoint_every": 3,
            "seed": 3, "progress": False}
SCORE_FIT = {"steps": 6, "batch_size": 5, "lr": 1e-2, "val_every": 3, "checkpoint_every": 3,
             "seed": 3, "progress": False, "method": "sliced"}


def flow_share_gradient(world: World) -> dict[str, torch.Tensor]:
    """This rank's CNF gradient after the step's all-reduce, with the step's reported numbers
    (NLL, regularization: summed over the ranks)."""
    from tidal.training.distributed import reduce_step

    made = LikelihoodObjective(flow_cnf(), flow_samples(), None, GLOBAL_BATCH)
    nll, reg = made.share(flow_samples()[:GLOBAL_BATCH], step_generator(DRAW_SEED, DRAW_STEP))
    parameters = list(made.model.parameters())
    reported = torch.stack([nll, reg]).detach()
    value = reduce_step(world, nll + reg, parameters, (), reported)
    return {"loss": torch.tensor(value, dtype=torch.float64), "reported": reported,
            "model": torch.cat([p.grad.reshape(-1) for p in parameters])}


def score_share_gradient(method: str, world: World) -> dict[str, torch.Tensor]:
    from tidal.training.distributed import reduce_step

    model = score_model()
    made = ScoreMatchingObjective(model, VPSDE(), flow_samples(), None, GLOBAL_BATCH, method,
                                  "hutchinson", "likelihood")
    loss = made.share(flow_samples()[:GLOBAL_BATCH], step_generator(DRAW_SEED, DRAW_STEP))
    parameters = list(model.network.parameters())
    value = reduce_step(world, loss, parameters)
    return {"loss": torch.tensor(value, dtype=torch.float64),
            "model": torch.cat([p.grad.reshape(-1) for p in parameters])}


def dataclass_replace(config: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def kill_in_epoch(epoch: int, world: World) -> None:
    """Rank 1 kills itself (SIGKILL: no cleanup) at the start of `epoch`."""
    if world.rank != 1:
        return
    original = TrajectoryObjective.train_round

    def dying(self, index, step, generator):
        if index == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, index, step, generator)

    TrajectoryObjective.train_round = dying  # type: ignore[method-assign]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
