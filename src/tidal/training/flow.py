"""`fit_flow`: maximum-likelihood training of a `CNF` on samples, in one small visible loop.

Each step draws a minibatch (reshuffled every epoch), computes the loss

    L = -(1/B) sum_b (log p(x_b) - λ_K K_b - λ_J F_b)

(the regularizers are those the `CNF` was built with), and takes one AdamW step; the learning
rate follows a cosine decay to zero by default. Validation NLL is computed without gradients
every `val_every` steps and at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from tidal._errors import InvalidArgumentError, SolveFailedError
from tidal.models.cnf import CNF

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
    """

    train_nll: list[float] = field(default_factory=list)
    regularization: list[float] = field(default_factory=list)
    num_fevals: list[int] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    status: str = "finished"
    message: str = ""


def fit_flow(cnf: CNF, samples: torch.Tensor, *, val_samples: torch.Tensor | None = None,
             steps: int = 1000, batch_size: int = 512, lr: float = 1e-3,
             weight_decay: float = 0.0, schedule: str = "cosine", val_every: int = 100,
             seed: int = 0, progress: bool = True,
             callback: Callable[[int, FlowHistory], bool | None] | None = None) -> FlowHistory:
    """Fit `cnf` to `samples` [N, d] by maximum likelihood and return the `FlowHistory`.

    Args:
        cnf: the flow; trained in place.
        samples: training points [N, d], in the dtype and device of `cnf`'s parameters.
        val_samples: held-out points [M, d] for the validation NLL; None skips it.
        steps: optimizer steps.
        batch_size: points per step (at most N).
        lr, weight_decay: AdamW's.
        schedule: "cosine" (decay to zero over `steps`) or "constant".
        val_every: steps between validation passes (one is always made at the end).
        seed: seeds the minibatch order and torch's global generator (Hutchinson probes);
            seed the model's initialization yourself before building it.
        progress: show a progress bar with the loss and the NFE.
        callback: called as `callback(step, history)` after every step; returning True stops.

    Divergence (a NaN or infinite loss, or a solve that fails) stops training cleanly: the
    flow goes back to the last weights that gave a finite loss (kept every 10 steps), and
    `history.status` is "diverged" with `history.message` saying where and what to try.
    """
    _check(samples, batch_size, steps, schedule, val_every)
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(cnf.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
        if schedule == "cosine" else (lambda k: 1.0))
    history, start = FlowHistory(), time.perf_counter()
    batches = _minibatches(samples, batch_size, order)
    bar = tqdm(range(steps), disable=not progress, desc="fit_flow")
    last_good = copy.deepcopy(cnf.state_dict())
    for step in bar:
        try:
            log_prob, reg = cnf(next(batches))
            nll = -log_prob.mean()
            loss = nll + reg.mean()
            failure = None if torch.isfinite(loss) else f"the loss became {loss.item()}"
        except SolveFailedError as error:
            failure = str(error).splitlines()[0]
        if failure is not None:
            cnf.load_state_dict(last_good)
            history.status = "diverged"
            history.message = (
                f"`fit_flow` stopped at step {step}: {failure}; kept the last good weights. "
                f"Try a smaller `lr=` (now {lr}), regularization (`CNF(kinetic=..., "
                f"jacobian=...)`) or a tighter tolerance in the CNF's controller.")
            break
        if step % 10 == 0:
            last_good = copy.deepcopy(cnf.state_dict())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.train_nll.append(nll.item())
        history.regularization.append(reg.mean().item())
        history.num_fevals.append(int(cnf.last_stats.num_fevals))
        if val_samples is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
            history.val_steps.append(step + 1)
            history.val_nll.append(evaluate_nll(cnf, val_samples, batch_size=4 * batch_size))
        bar.set_postfix(nll=f"{nll.item():.3f}", nfe=history.num_fevals[-1])
        if callback is not None and callback(step, history):
            break
    history.wall_time = time.perf_counter() - start
    return history


@torch.no_grad()
def evaluate_nll(cnf: CNF, samples: torch.Tensor, *, batch_size: int = 2048) -> float:
    """Average negative log-likelihood of `samples` [N, d] under `cnf`, in nats."""
    total = sum(-cnf.log_prob(chunk).sum().item() for chunk in samples.split(batch_size))
    return total / len(samples)


def _minibatches(samples: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless minibatches: a new permutation every epoch, the last partial batch dropped."""
    while True:
        perm = torch.randperm(len(samples), generator=generator).to(samples.device)
        for i in range(0, len(samples) - batch_size + 1, batch_size):
            yield samples[perm[i:i + batch_size]]


def _check(samples: torch.Tensor, batch_size: int, steps: int, schedule: str,
           val_every: int) -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise InvalidArgumentError(
            f"`fit_flow(samples=...)` must be a tensor [N, d]; got {shape}.")
    for name, value in (("batch_size", batch_size), ("steps", steps), ("val_every", val_every)):
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
