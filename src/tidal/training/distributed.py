"""Data-parallel training: the one trainer on several ranks (`torchrun`), with the same result as
one process on the same global batches.

Each rank computes its *share* of a global batch's loss (the objective cuts the batch by
`World.shard` and divides its sums by the global batch's counts, so the shares add up to the
one-process loss), backpropagates it through any adjoint, and then one `all_reduce` per
optimizer step sums, in a single flat buffer, the model's gradients (zeros where a parameter got
none on this rank) and the loss. Every rank then holds the one-process gradient and loss, takes
the same clipped AdamW step and keeps identical weights. The number of collectives is one per
optimizer step, whatever the number of solver steps, function evaluations or backward replays
on each rank, so ranks whose batches need different numbers of steps cannot hang.

The objective's own parameters (per-trajectory initial-state offsets) are *owned*: row i lives on
the rank that owns trajectory i, whose gradient for it is already complete (no other rank's
share depends on it), so they are never communicated during training; `gather_owned` assembles
the complete tensors (and their AdamW moments) on every rank before a checkpoint or a copy of
the kept weights, so a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist

from tidal._errors import InvalidArgumentError
from tidal.distributed import World

#: The optimizer-state entries that have one row per row of their parameter (AdamW's moments).
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def reduce_step(world: World, loss: torch.Tensor, shared: Sequence[torch.Tensor],
                owned: Iterable[torch.Tensor] = (), reported: torch.Tensor | None = None
                ) -> float:
    """Backpropagate this rank's share `loss` and sum the `shared` parameters' gradients and the
    shares over the ranks; returns the global loss, NaN on every rank when the sum of the loss
    or of a gradient is not finite (a NaN on one rank reaches all of them through the sum). A
    share without a graph (a rank with nothing of this batch) contributes zeros. `reported`
    [k] (this rank's shares of numbers the objective records, e.g. the NLL and the function
    evaluations) travels in the same buffer and is replaced by its sum over the ranks."""
    if loss.requires_grad:
        loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in shared]
    kind = shared[0] if shared else loss
    extra = torch.zeros(0) if reported is None else reported.detach().reshape(-1)
    flat = torch.cat([*(g.reshape(-1) for g in grads),
                      loss.detach().reshape(1).to(kind.device, kind.dtype),
                      extra.to(kind.device, kind.dtype)])
    world.sum(flat)
    if not torch.isfinite(flat).all():
        return math.nan
    offset = 0
    for p in shared:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    for p in owned:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if reported is not None:
        reported.copy_(flat[offset + 1:].view_as(reported))
    return float(flat[offset])


def fail_step(world: World, shared: Sequence[torch.Tensor], reported: int = 0) -> None:
    """This rank's solve failed before its share was ready: join the step's `all_reduce` (of
    `reported` extra numbers) with NaNs, so every rank stops together (a diverged step) instead
    of waiting for this one."""
    numel = sum(p.numel() for p in shared) + 1 + reported
    kind = shared[0] if shared else torch.zeros((), dtype=torch.float64)
    world.sum(torch.full((numel,), math.nan, dtype=kind.dtype, device=kind.device))


def gather_owned(world: World, tensor: torch.Tensor, rows: torch.Tensor,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
    """Make `tensor` (and its AdamW moments in `optimizer`) complete on every rank: row i from
    the rank that owns it (`rows[i]` True on exactly one rank)."""
    if not world.distributed:
        return
    state = optimizer.state.get(tensor, {}) if optimizer is not None else {}
    parts = [tensor.data, *(state[name] for name in MOMENTS if name in state)]
    mask = rows.view(-1, *([1] * (tensor.dim() - 1))).to(tensor.device, tensor.dtype)
    flat = torch.cat([(part * mask).reshape(-1) for part in parts])
    world.sum(flat)
    for i, part in enumerate(parts):
        part.copy_(flat[i * tensor.numel():(i + 1) * tensor.numel()].view_as(part))


def broadcast_parameters(world: World, parameters: Sequence[torch.Tensor]) -> None:
    """Give every rank rank 0's values (models built without a common seed start equal)."""
    if world.distributed and parameters:
        flat = torch.cat([p.detach().reshape(-1) for p in parameters])
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for p in parameters:
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m tidal ARGV` in `nproc` processes on this machine with torchrun
    (`torch.distributed.run --standalone`: a free port, one node); returns its exit code."""
    if os.environ.get("LOCAL_RANK") is not None:
        raise InvalidArgumentError("`--nproc` starts torchrun itself; under torchrun, leave it "
                                   "out (torchrun's --nproc-per-node sets the processes).")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "tidal", *argv]
    return subprocess.run(command, check=False).returncode


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option VALUE` or `option=VALUE`."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept
