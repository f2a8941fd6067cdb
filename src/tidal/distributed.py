"""Several processes, one result: the ranks of `torch.distributed` and ensemble solves sharded
across them.

tidal runs on PyTorch's own distributed engine (gloo on CPUs, NCCL on GPUs), started by
`torchrun`, never a home-made one. `World` is this process's place in it (rank 0 of 1 when
`torch.distributed` is not initialised, so every function here also runs in one plain
process). Work is always cut by *global* indices that do not depend on the number of ranks:
sample (or trajectory) i belongs to rank i mod world size, and a chunk of an ensemble is the
same chunk whatever the world size, so results do not depend on how many processes computed
them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from tidal._errors import InvalidArgumentError
from tidal.brownian import sample_seeds

#: How long a collective waits for the other ranks before it fails (instead of hanging when a
#: rank has died).
TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class World:
    """This process's `rank` among `size` processes (0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether global item `index` (a trajectory, a sample, a chunk) is this rank's."""
        return index % self.size == self.rank

    def shard(self, indices: Sequence[int]) -> tuple[int, ...]:
        """The items of `indices` this rank owns, in their order."""
        return tuple(i for i in indices if self.owns(i))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the ranks (in place; `tensor` itself in one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_from_environment(*, cuda: bool | None = None) -> World:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Without those variables, or with
    one process, nothing happens.

    Args:
        cuda: True: NCCL, each process on the GPU of its local rank (for tensors on CUDA);
            False: gloo, on the CPU (tidal's command line trains on the CPU); None: NCCL when
            CUDA is available with a GPU for every local process, else gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda is None:
            cuda = gpus >= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if cuda and local_rank >= gpus:
            raise InvalidArgumentError(
                f"`init_from_environment(cuda=True)`: the process of local rank {local_rank} "
                f"has no GPU of its own (this machine has {gpus}); start at most {gpus} "
                "processes a machine, or pass cuda=False to train on the CPU with gloo.")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return World.current()


def solve_ensemble(solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   inputs: torch.Tensor, *, seed: int = 0, chunk_size: int = 256,
                   batch_dim: int = 1, everywhere: bool = False) -> torch.Tensor | None:
    """Solve a large ensemble, its chunks shared out over the ranks, and gather the results.

    Args:
        solve: `solve(chunk, seeds)` solves the samples `chunk` [b, ...] (rows of `inputs`:
            initial states, parameters, or both side by side) with per-sample seeds [b]
            (int64, for `tidal.brownian.BrownianTree` or `sdeint(brownian=...)`; ignore them
            for ODEs) and returns a tensor with the b samples along `batch_dim`, e.g.
            `lambda y0, seeds: tidal.solve(f, y0, ts).ys` (time first: `batch_dim=1`).
        inputs: [N, ...] one row per sample.
        seed: the ensemble's seed: sample i's seed is `tidal.brownian.sample_seeds(seed, N)[i]`.
        chunk_size: samples solved together. Chunk k holds samples k*chunk_size ... and goes
            to rank k mod world size; since the chunks do not depend on the number of ranks,
            neither do the results (bit for bit), also for solvers that choose one step size
            for the whole batch.
        batch_dim: the dimension of `solve`'s result that runs over the samples.
        everywhere: return the whole result on every rank (else only on rank 0, None on the
            others).

    Returns:
        The results of all N samples, concatenated along `batch_dim` in the order of `inputs`.
        Without torch.distributed (or with one process) this is a plain loop over the chunks.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or len(inputs) == 0:
        raise InvalidArgumentError(
            f"`solve_ensemble(inputs=...)` must be a tensor [N, ...] with N >= 1 samples; got "
            f"{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)}.")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InvalidArgumentError(
            f"`solve_ensemble(chunk_size={chunk_size!r})` must be a positive integer.")
    world = World.current()
    seeds = sample_seeds(seed, len(inputs))
    chunks = range((len(inputs) + chunk_size - 1) // chunk_size)
    mine = {k: solve(inputs[k * chunk_size:(k + 1) * chunk_size],
                     seeds[k * chunk_size:(k + 1) * chunk_size]).detach().cpu()
            for k in chunks if world.owns(k)}
    if world.distributed:
        parts: list[dict[int, torch.Tensor] | None] = [None] * world.size
        if everywhere:
            dist.all_gather_object(parts, mine)
        else:
            dist.gather_object(mine, parts if world.leader else None, dst=0)
            if not world.leader:
                return None
        mine = {k: v for part in parts if part is not None for k, v in part.items()}
    return torch.cat([mine[k] for k in chunks], dim=batch_dim)
