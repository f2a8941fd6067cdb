"""`fit_flow`: maximum-likelihood training of a `CNF` on samples, through the shared training
loop (`trainer.py`: schedule, checkpoints that resume exactly, divergence, progress).

Each step draws a minibatch (reshuffled every epoch, the last partial batch dropped), computes
the loss

    L = -(1/B) sum_b (log p(x_b) - λ_K K_b - λ_J F_b)

(the regularizers are those the `CNF` was built with), and takes one AdamW step; the learning
rate follows a cosine decay to zero by default. Validation NLL is computed without gradients
every `val_every` steps and at the end, and chooses the kept weights.

Under torchrun every rank draws the same global minibatch and Hutchinson probes (from the
generator of (seed, step), `batches.step_generator`), computes the sum over its rows b ≡ rank
(mod world size) divided by the global B, and the step's all-reduce adds the shares: the
one-process loss and gradient (exactly with fixed solver steps; with adaptive ones each rank's
solve picks its own steps, so to the solver's tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.distributed import World
from tidal.models import divergence
from tidal.models.cnf import CNF
from tidal.models.neural_ode import dtype_mismatch
from tidal.training.batches import SampleMinibatches, step_generator
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import LoopSettings, Outcome, Step, finite, train

SCHEDULES = ("cosine", "constant")


@dataclass
class FlowHistory:
    """What `fit_flow` measured.

    Attributes:
        train_nll: minibatch negative log-likelihood per step (nats per sample).
        regularization: minibatch mean of λ_K K + λ_J F per step.
        num_fevals: evaluations of the augmented field in each step's forward solve (under
            torchrun: summed over the ranks, each solving its rows of the batch).
        val_steps, val_nll: the steps at which the validation NLL was computed, and its value.
        wall_time: seconds spent in the loop.
        status, message: how training ended ("finished", "early-stopped", "diverged",
            "interrupted") and why.
        rows: the loop's history (also metrics.csv in a run directory).
    """

    train_nll: list[float] = field(default_factory=list)
    regularization: list[float] = field(default_factory=list)
    num_fevals: list[int] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    status: str = "finished"
    message: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list[dict[str, Any]], status: str = "finished",
           message: str = "") -> FlowHistory:
        validated = [r for r in rows if not math.isnan(r["val_loss"])]
        return cls([r["nll"] for r in rows], [r["regularization"] for r in rows],
                   [int(r["num_fevals"]) for r in rows], [r["step"] for r in validated],
                   [r["val_loss"] for r in validated], rows[-1]["seconds"] if rows else 0.0,
                   status, message, rows)


#: Seeds the Hutchinson probes of the validation NLL: the same probes at every validation.
VALIDATION_SEED = 12345


class LikelihoodObjective:
    """Maximum likelihood of a `CNF`, for the shared loop: one round is one minibatch step.
    Shards under torchrun (module doc); the NLL, regularization and function evaluations of a
    step travel in its all-reduce (`step_reports`)."""

    unit = "step"
    columns: tuple[str, ...] = ("train_loss", "nll", "regularization", "val_loss", "lr",
                                "num_fevals", "seconds")
    steps_per_round = 1
    shards = True
    step_reports = ("nll", "regularization", "num_fevals")

    def __init__(self, cnf: CNF, samples: torch.Tensor, val_samples: torch.Tensor | None,
                 batch_size: int, seed: int = 0) -> None:
        self.model, self.val_samples = cnf, val_samples
        self.batch_size, self.seed = batch_size, seed
        self.batches = SampleMinibatches(samples, batch_size)
        self.world = World.current()

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]

    def owned_rows(self, world: World) -> dict[str, torch.Tensor]:
        return {}  # the batch order (`state`) is the same on every rank

    def share(self, batch: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's shares of the global `batch`'s NLL and regularization: sums over its
        rows divided by the batch size, with the Hutchinson probes the whole batch draws from
        `generator` (zeros without a graph when it has no rows)."""
        probe = (divergence.probe(batch, self.model.noise, generator)
                 if self.model.trace == "hutchinson" else None)
        mine = list(self.world.shard(range(len(batch))))
        if not mine:
            return batch.new_zeros(()), batch.new_zeros(())
        log_prob, reg = self.model(batch[mine], None if probe is None else probe[mine])
        return -log_prob.sum() / len(batch), reg.sum() / len(batch)

    def train_round(self, index: int, step: Step, generator: torch.Generator
                    ) -> dict[str, float]:
        batch = self.batches.batch(index, generator)
        self.model.last_stats = None
        nll, regularization = self.share(batch, step_generator(self.seed, index))
        loss = finite(nll + regularization)
        stats = self.model.last_stats
        reported = torch.tensor([nll.item(), regularization.item(),
                                 0 if stats is None else int(stats.num_fevals)],
                                dtype=torch.float64)
        value = step(loss, reported)
        return {"train_loss": value, "nll": float(reported[0]),
                "regularization": float(reported[1]), "num_fevals": int(reported[2])}

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The NLL of the validation samples (this rank's rows, in chunks of 4 x batch size,
        summed over the ranks), with fixed probes (`VALIDATION_SEED`)."""
        if self.val_samples is None:
            return math.nan
        val = self.val_samples
        probe = (divergence.probe(val, self.model.noise,
                                  torch.Generator().manual_seed(VALIDATION_SEED))
                 if self.model.trace == "hutchinson" else None)
        mine = torch.tensor(self.world.shard(range(len(val))), dtype=torch.long)
        total = val.new_zeros(())
        try:
            for rows in mine.split(4 * self.batch_size) if len(mine) else ():
                total -= self.model.log_prob(val[rows], None if probe is None else probe[rows]
                                             ).sum()
        except SolveFailedError:
            if not self.world.distributed:
                raise
            total = val.new_full((), math.nan)  # every rank's sum becomes NaN
        return float(self.world.sum(total) / len(val))  # NaN (ignored) alike on every rank

    def counts_for_best(self, index: int) -> bool:
        return True

    def label(self, index: int) -> str:
        return "fit_flow"

    def state(self) -> dict[str, torch.Tensor]:
        return self.batches.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.batches.load_state(state)


def fit_flow(cnf: CNF, samples: torch.Tensor, *, val_samples: torch.Tensor | None = None,
             steps: int = 1000, batch_size: int = 512, lr: float = 1e-3,
             weight_decay: float = 0.0, schedule: str = "cosine", val_every: int = 100,
             checkpoint_every: int = 100, seed: int = 0, progress: bool = True,
             callback: Callable[[int, FlowHistory], bool | None] | None = None,
             run_dir: RunDirectory | None = None, resume: bool = False) -> FlowHistory:
    """Fit `cnf` to `samples` [N, d] by maximum likelihood and return the `FlowHistory`.

    Args:
        cnf: the flow; trained in place. It ends with the kept weights: those of the best
            validation NLL when `val_samples` are given, else the last.
        samples: training points [N, d], in the dtype and device of `cnf`'s parameters.
        val_samples: held-out points [M, d] for the validation NLL; None skips it.
        steps: optimizer steps.
        batch_size: points per step (at most N).
        lr, weight_decay: AdamW's.
        schedule: "cosine" (decay to zero over `steps`) or "constant".
        val_every: steps between validation passes (one is always made at the end).
        checkpoint_every: steps between checkpoints (the last good state that divergence
            returns to; written to `run_dir` when given).
        seed: seeds the minibatch order and the Hutchinson probes (step i's from the
            generator of (seed, i)); seed the model's initialization yourself before building
            it.
        progress: show a progress bar with the loss.
        callback: called as `callback(step, history)` after every step; returning True stops.
        run_dir: a `RunDirectory` for checkpoint.pt and metrics.csv.
        resume: continue from `run_dir`'s checkpoint; the result equals an uninterrupted run.

    Divergence (a NaN or infinite loss, or a solve that fails) stops training cleanly: the
    flow goes back to the last checkpointed weights, and `history.status` is "diverged" with
    `history.message` saying where and what to try. Ctrl-C ends with status "interrupted".
    """
    check_fit("fit_flow", cnf, samples, val_samples, batch_size=batch_size, steps=steps,
              schedule=schedule, val_every=val_every, checkpoint_every=checkpoint_every, lr=lr,
              weight_decay=weight_decay, seed=seed)
    if not resume:
        torch.manual_seed(seed)
    settings = LoopSettings(rounds=steps, lr=lr, weight_decay=weight_decay, schedule=schedule,
                            eval_every=val_every, checkpoint_every=checkpoint_every, seed=seed)
    stop = None if callback is None else (
        lambda step, rows: callback(step, FlowHistory.of(rows)))
    outcome: Outcome = train(LikelihoodObjective(cnf, samples, val_samples, batch_size, seed),
                             settings, run_dir=run_dir, resume=resume, progress=progress,
                             stop=stop)
    cnf.load_state_dict(outcome.kept["model"])
    message = outcome.message
    if outcome.status == "diverged":
        message += (f". Try a smaller `lr=` (now {lr}), regularization (`CNF(kinetic=..., "
                    "jacobian=...)`) or a tighter tolerance in the CNF's controller.")
    return FlowHistory.of(outcome.history, outcome.status, message)


@torch.no_grad()
def evaluate_nll(cnf: CNF, samples: torch.Tensor, *, batch_size: int = 2048) -> float:
    """Average negative log-likelihood of `samples` [N, d] under `cnf`, in nats."""
    if not isinstance(samples, torch.Tensor) or len(samples) == 0:
        raise InvalidArgumentError("`evaluate_nll(samples=...)` must be a non-empty tensor "
                                   "[N, d].")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"`evaluate_nll(batch_size={batch_size!r})` must be a "
                                   f"positive integer.")
    total = sum(-cnf.log_prob(chunk).sum().item() for chunk in samples.split(batch_size))
    return total / len(samples)


def check_fit(owner: str, model: torch.nn.Module, samples: Any, val_samples: Any, *,
              batch_size: Any, steps: Any, schedule: Any, val_every: Any,
              checkpoint_every: Any, lr: Any, weight_decay: Any, seed: Any) -> None:
    """The arguments of `fit_flow` and `fit_score` (named as `owner`'s), before training:
    points [N, d] finite and in the model's dtype, counts, schedule and numbers."""
    _check(owner, samples, batch_size, steps, schedule, val_every, checkpoint_every)
    _check_fit(owner, samples, val_samples, lr, weight_decay, seed)
    mismatch = dtype_mismatch(f"`{owner}(samples=...)`", "samples", samples, model)
    if mismatch is not None:
        raise mismatch


def _check(owner: str, samples: torch.Tensor, batch_size: int, steps: int, schedule: str,
           val_every: int, checkpoint_every: int) -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise InvalidArgumentError(
            f"`{owner}(samples=...)` must be a tensor [N, d]; got {shape}.")
    for name, value in (("batch_size", batch_size), ("steps", steps), ("val_every", val_every),
                        ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(
                f"`{owner}({name}={value!r})` must be a positive integer.")
    if batch_size > len(samples):
        raise InvalidArgumentError(
            f"`{owner}(batch_size={batch_size})` is larger than the {len(samples)} samples; "
            f"use a smaller batch or more samples.")
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(
            f"`{owner}(schedule={schedule!r})` is not known; choose one of {list(SCHEDULES)}.")


def _check_fit(owner: str, samples: torch.Tensor, val_samples: Any, lr: Any,
               weight_decay: Any, seed: Any) -> None:
    """fit_flow's data (finite floating points, validation of the same d) and numbers."""
    for name, points in (("samples", samples), ("val_samples", val_samples)):
        if points is None:
            continue
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or \
                points.shape[1] != samples.shape[1] or not points.is_floating_point():
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points)
            raise InvalidArgumentError(
                f"`{owner}({name}=...)` must be a floating-point tensor [N, "
                f"{samples.shape[1]}]; got {shape}.")
        bad = ~torch.isfinite(points)
        if bool(bad.any()):
            raise InvalidArgumentError(
                f"`{owner}({name}=...)` contains NaN or infinite values (first in row "
                f"{int(bad.any(-1).nonzero()[0])}); drop those rows.")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise InvalidArgumentError(f"`{owner}({name}={value!r})` must be a finite number "
                                       f">= 0.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"`{owner}(seed={seed!r})` must be an integer.")

