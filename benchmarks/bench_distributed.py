"""Data-parallel training: epoch time on 1 and 2 processes, the bytes all-reduced per optimizer
step, and DDP's hooks against tidal's one explicit all-reduce for each adjoint.

Run from the repository root:

    .venv/bin/python benchmarks/bench_distributed.py               # 64 trajectories, 6 epochs
    .venv/bin/python benchmarks/bench_distributed.py --trajectories 256 --epochs 3
    .venv/bin/python benchmarks/bench_distributed.py --flow     # a CNF instead, 12 steps

Each world size runs in fresh processes (gloo, localhost, one thread each), started by this
script with torchrun's environment variables. The data: the toggle switch, `--trajectories`
trajectories of 20-40 irregular noisy observations; the model: `tidal fit`'s default MLP (64
wide, 2 deep) with Tsit5 at rtol 1e-4 and the checkpoint adjoint; batches of 16 trajectories.
Reported per world size: the median epoch time (epochs after the first), the all-reduce calls
and bytes per optimizer step (counted by wrapping `torch.distributed.all_reduce`). Then, on 2
processes, one global batch's gradient through `torch.nn.parallel.DistributedDataParallel`
(its bucket hooks fire during backward) and through tidal's `reduce_step` (one all-reduce after
backward), for each adjoint: the largest difference and the time per step of each.

`--flow`: `tidal flow fit`'s default CNF (ConcatSquash MLP 64 x 3, exact trace, Dopri5 at 1e-3,
kinetic and Jacobian regularization) on `--samples` eight-Gaussians points, batches of 512,
`--steps` steps: the median step time and the all-reduces per step (gradients, loss and the
step's reported NLL, regularization and evaluations in one buffer).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

#: The bytes of each all_reduce in this process.
TRAFFIC: list[int] = []


def count_traffic() -> None:
    original = dist.all_reduce

    def counted(tensor: torch.Tensor, *args, **kwargs):
        TRAFFIC.append(tensor.numel() * tensor.element_size())
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counted  # type: ignore[assignment]


def setup(trajectories: int):
    from tidal.data import simulate
    from tidal.training import TrainConfig
    from tidal.training.pipeline import ModelOptions

    data = simulate("toggle-switch", trajectories, n_obs=(20, 40), noise=0.05, seed=0)
    model = ModelOptions().build(data.n_states, seed=0)
    return data, model, TrainConfig


def worker(args: argparse.Namespace) -> None:
    from tidal.distributed import World
    from tidal.training.fit import fit

    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        dist.init_process_group("gloo")
        count_traffic()
    world = World.current()
    if args.flow:
        lines = flow_steps(args, world)
        if world.leader:
            Path(args.worker).write_text("\n".join(lines) + "\n")
        if world.distributed:
            dist.destroy_process_group()
        return
    data, model, config_class = setup(args.trajectories)
    config = config_class(epochs=args.epochs, batch_size=16, horizons=(1.0,), patience=None,
                          eval_every=1, checkpoint_every=10**6, seed=0)
    result = fit(model, data, config=config, progress=False)
    seconds = [row["seconds"] for row in result.history]
    steps = args.epochs * -(-len(data) // 16)
    times = [b - a for a, b in zip([0.0, *seconds], seconds)][1:]
    parameters = sum(p.numel() for p in model.parameters())
    step = [b for b in TRAFFIC if b == (parameters + 1) * 8]  # the steps' [grads, loss]
    lines = [f"{world.size} | {statistics.median(times):.2f} | {-(-len(data) // 16)} | "
             f"{len(step) / steps:.2f} | {sum(step) / steps:,.0f} | "
             f"{len(TRAFFIC) - len(step)} ({sum(TRAFFIC) - sum(step):,} B) | {parameters:,}"]
    if world.distributed:
        lines += compare_ddp(data, world)
    if world.leader:
        Path(args.worker).write_text("\n".join(lines) + "\n")
    if world.distributed:
        dist.destroy_process_group()


def compare_ddp(data, world) -> list[str]:
    """For each adjoint: DDP's gradient and reduce_step's on one global batch (the first 16
    trajectories), their largest difference, and the seconds per step of each (after one
    untimed step of each, alternating, `REPEATS` each)."""
    from torch.nn.parallel import DistributedDataParallel

    from tidal.training import TrainConfig
    from tidal.training.distributed import reduce_step
    from tidal.training.fit import TrajectoryObjective
    from tidal.training.pipeline import ModelOptions

    rows = []
    for adjoint in ("backprop", "checkpoint", "backsolve"):
        model = ModelOptions(adjoint=adjoint).build(data.n_states, seed=0).double()
        objective = TrajectoryObjective(model, data.scaled(_scaling(data)), None,
                                        TrainConfig(epochs=1, horizons=(1.0,)), torch.float64)
        everything = tuple(range(16))
        params = list(model.parameters())
        timings = {"explicit": 0.0, "ddp": 0.0}
        grads: dict[str, torch.Tensor] = {}
        ddp = DistributedDataParallel(model)
        for repeat in range(REPEATS[adjoint] + 1):
            for name in timings:
                start = time.perf_counter()
                for p in params:
                    p.grad = None
                if name == "explicit":
                    reduce_step(world, objective.share(1.0, 1, everything), params)
                else:  # DDP averages over ranks: each rank's share times the world size
                    objective.model = ddp  # type: ignore[assignment]
                    (objective.share(1.0, 1, everything) * world.size).backward()
                    objective.model = model
                timings[name] += (time.perf_counter() - start) / REPEATS[adjoint] * (repeat > 0)
                grads[name] = torch.cat([p.grad.reshape(-1) for p in params])
        difference = float((grads["explicit"] - grads["ddp"]).abs().max())
        rows.append(f"{adjoint} | {difference:.1e} | {timings['explicit']:.3f} | "
                    f"{timings['ddp']:.3f}")
    return rows


def flow_steps(args: argparse.Namespace, world) -> list[str]:
    """`fit_flow` with the CLI's CNF: the median step time (steps after the first) and the
    all-reduce traffic per step."""
    from tidal.data.toys import sample_toy
    from tidal.training.flow import fit_flow
    from tidal.training.flow_run import FlowOptions, build_cnf

    options = FlowOptions()
    samples = sample_toy("eight-gaussians", args.samples, seed=0, dtype=torch.float64)
    samples = (samples - samples.mean(0)) / samples.std(0)
    torch.manual_seed(0)
    cnf = build_cnf(2, options, options.train_tol)
    history = fit_flow(cnf, samples, steps=args.steps, batch_size=options.batch_size,
                       lr=options.lr, val_every=args.steps, checkpoint_every=10**6, seed=0,
                       progress=False)
    seconds = [row["seconds"] for row in history.rows]
    times = [b - a for a, b in zip([0.0, *seconds], seconds)][1:]
    parameters = sum(p.numel() for p in cnf.parameters())
    step = [b for b in TRAFFIC if b == (parameters + 1 + 3) * 8]  # [grads, loss, reported]
    return [f"{world.size} | {statistics.median(times):.3f} | {len(step) / args.steps:.2f} | "
            f"{sum(step) / args.steps:,.0f} | {len(TRAFFIC) - len(step)} | "
            f"{history.num_fevals[-1]} | {parameters:,}"]


#: Timed steps per adjoint in the DDP comparison (backsolve's steps are slow).
REPEATS = {"backprop": 4, "checkpoint": 4, "backsolve": 1}


def _scaling(data):
    from tidal.data import Scaling

    return Scaling.fit(data)


def launch(world_size: int, args: argparse.Namespace) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.txt"
        command = [sys.executable, __file__, "--worker", str(out), "--epochs",
                   str(args.epochs), "--trajectories", str(args.trajectories), "--steps",
                   str(args.steps), "--samples", str(args.samples),
                   *(["--flow"] if args.flow else [])]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": "1"}
        processes = [subprocess.Popen(command, env={**env, "RANK": str(rank)})
                     for rank in range(world_size)]
        for process in processes:
            if process.wait() != 0:
                raise SystemExit(f"a worker failed (exit code {process.returncode})")
        return out.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--flow", action="store_true", help="Time a CNF's steps instead.")
    parser.add_argument("--steps", type=int, default=12, help="With --flow: optimizer steps.")
    parser.add_argument("--samples", type=int, default=2048, help="With --flow: points.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    one, two = launch(1, args), launch(2, args)
    if args.flow:
        print(f"CNF (tidal flow fit's defaults), {args.samples} points, batches of 512, "
              f"{args.steps} steps; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        print("processes | step s (median) | all-reduces/step | bytes/step | other "
              "all-reduces in the run | num_fevals of the last step (sum over ranks) | "
              "model parameters")
        print(one + two, end="")
        return
    print(f"{args.trajectories} trajectories, batches of 16, {args.epochs} epochs; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("processes | epoch s (median) | steps/epoch | all-reduces/step | bytes/step | "
          "other all-reduces in the run (offsets gathered) | model parameters")
    print(one.splitlines()[0])
    lines = two.splitlines()
    print(lines[0])
    print("\nadjoint | max |DDP - explicit| | explicit s/step | DDP s/step (2 processes, 16 "
          "trajectories)")
    print("\n".join(lines[1:]))


if __name__ == "__main__":
    main()
