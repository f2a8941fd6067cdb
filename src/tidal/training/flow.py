"""`fit_flow`: maximum-likelihood training of a `CNF` on samples, through the shared training
loop (`trainer.py`: schedule, checkpoints that resume exactly, divergence, progress).

Each step draws a minibatch (reshuffled every epoch, the last partial batch dropped), computes
the loss

    L = -(1/B) sum_b (log p(x_b) - λ_K K_b - λ_J F_b)

(the regularizers are those the `CNF` was built with), and takes one AdamW step; the learning
rate follows a cosine decay to zero by default. Validation NLL is computed without gradients
every `val_every` steps and at the end, and chooses the kept weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal.models.cnf import CNF
from tidal.training.batches import SampleMinibatches
from tidal.training.run_directory import RunDirectory
from tidal.training.trainer import LoopSettings, Outcome, finite, train

SCHEDULES = ("cosine", "constant")


@dataclass
class FlowHistory:
    """What `fit_flow` measured.

    Attributes:
        train_nll: minibatch negative log-likelihood per step (nats per sample).
        regularization: minibatch mean of λ_K K + λ_J F per step.
        num_fevals: evaluations of the augmented field in each step's forward solve.
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


class LikelihoodObjective:
    """Maximum likelihood of a `CNF`, for the shared loop: one round is one minibatch step."""

    unit = "step"
    columns: tuple[str, ...] = ("train_loss", "nll", "regularization", "val_loss", "lr",
                                "num_fevals", "seconds")
    steps_per_round = 1

    def __init__(self, cnf: CNF, samples: torch.Tensor, val_samples: torch.Tensor | None,
                 batch_size: int) -> None:
        self.model, self.val_samples = cnf, val_samples
        self.batch_size = batch_size
        self.batches = SampleMinibatches(samples, batch_size)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]

    def train_round(self, index: int, step: Callable[[torch.Tensor], float],
                    generator: torch.Generator) -> dict[str, float]:
        batch = self.batches.batch(index, generator)
        log_prob, reg = self.model(batch)
        nll, regularization = -log_prob.mean(), reg.mean()
        loss = finite(nll + regularization)
        step(loss)
        stats = self.model.last_stats
        return {"train_loss": loss.item(), "nll": nll.item(),
                "regularization": regularization.item(),
                "num_fevals": 0 if stats is None else int(stats.num_fevals)}

    def validation_loss(self) -> float:
        if self.val_samples is None:
            return math.nan
        return evaluate_nll(self.model, self.val_samples, batch_size=4 * self.batch_size)

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
        seed: seeds the minibatch order and torch's global generator (Hutchinson probes);
            seed the model's initialization yourself before building it.
        progress: show a progress bar with the loss.
        callback: called as `callback(step, history)` after every step; returning True stops.
        run_dir: a `RunDirectory` for checkpoint.pt and metrics.csv.
        resume: continue from `run_dir`'s checkpoint; the result equals an uninterrupted run.

    Divergence (a NaN or infinite loss, or a solve that fails) stops training cleanly: the
    flow goes back to the last checkpointed weights, and `history.status` is "diverged" with
    `history.message` saying where and what to try. Ctrl-C ends with status "interrupted".
    """
    _check(samples, batch_size, steps, schedule, val_every, checkpoint_every)
    if not resume:
        torch.manual_seed(seed)
    settings = LoopSettings(rounds=steps, lr=lr, weight_decay=weight_decay, schedule=schedule,
                            eval_every=val_every, checkpoint_every=checkpoint_every, seed=seed)
    stop = None if callback is None else (
        lambda step, rows: callback(step, FlowHistory.of(rows)))
    outcome: Outcome = train(LikelihoodObjective(cnf, samples, val_samples, batch_size),
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
    total = sum(-cnf.log_prob(chunk).sum().item() for chunk in samples.split(batch_size))
    return total / len(samples)


def _check(samples: torch.Tensor, batch_size: int, steps: int, schedule: str,
           val_every: int, checkpoint_every: int) -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise InvalidArgumentError(
            f"`fit_flow(samples=...)` must be a tensor [N, d]; got {shape}.")
    for name, value in (("batch_size", batch_size), ("steps", steps), ("val_every", val_every),
                        ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(
                f"`fit_flow({name}={value!r})` must be a positive integer.")
    if batch_size > len(samples):
        raise InvalidArgumentError(
            f"`fit_flow(batch_size={batch_size})` is larger than the {len(samples)} samples; "
            f"use a smaller batch or more samples.")
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(
            f"`fit_flow(schedule={schedule!r})` is not known; choose one of {list(SCHEDULES)}.")
