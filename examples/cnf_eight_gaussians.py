"""Acceptance run: a continuous normalizing flow learns FFJORD's eight Gaussians.

Trains the same CNF twice, with the RNODE regularizers (kinetic energy and Jacobian
Frobenius norm) and without, then prints for each the held-out NLL against the true density's
(computed exactly), the gap, the function evaluations per solve and the wall time.

    .venv/bin/python examples/cnf_eight_gaussians.py                # both runs
    .venv/bin/python examples/cnf_eight_gaussians.py --only regularized --plot cnf.png
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import tidal
from tidal.data.toys import sample_toy, toy_log_prob
from tidal.models import CNF
from tidal.nn import ConcatSquashMLP
from tidal.training.flow import evaluate_nll, fit_flow

RUNS = {"regularized": 0.05, "unregularized": 0.0}  # weight of both regularizers


def build(weight: float, args: argparse.Namespace) -> CNF:
    torch.manual_seed(args.seed)
    field = ConcatSquashMLP(2, width=args.width, depth=args.depth, activation="tanh")
    return CNF(field, trace="exact", kinetic=weight, jacobian=weight, solver=tidal.Dopri5(),
               controller=tidal.PIDController(rtol=args.train_tol, atol=args.train_tol),
               adjoint=tidal.BackpropAdjoint())


def run(name: str, weight: float, train: torch.Tensor, val: torch.Tensor, true_nll: float,
        args: argparse.Namespace) -> CNF:
    cnf = build(weight, args)
    start = time.perf_counter()
    history = fit_flow(cnf, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, progress=args.progress)
    train_time = time.perf_counter() - start
    cnf.controller = tidal.PIDController(rtol=1e-5, atol=1e-5)  # evaluate accurately
    nll = evaluate_nll(cnf, val, batch_size=len(val))
    eval_nfe = cnf.last_stats.num_fevals
    last = history.num_fevals[-100:]
    print(f"{name:>13}: held-out NLL {nll:.4f}  true NLL {true_nll:.4f}  gap {nll - true_nll:+.4f}"
          f"  | NFE per training solve: last 100 steps {sum(last) / len(last):.1f}, "
          f"whole run {sum(history.num_fevals) / len(history.num_fevals):.1f}; "
          f"evaluation solve (rtol=atol=1e-5) {eval_nfe}  | wall {train_time:.0f} s training, "
          f"{time.perf_counter() - start - train_time:.0f} s evaluation", flush=True)
    return cnf


def plot(cnf: CNF, path: str) -> None:
    from matplotlib.figure import Figure

    from tidal.plots.density import plot_density, plot_samples

    bounds = (-4.5, 4.5, -4.5, 4.5)
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    plot_density(functools.partial(toy_log_prob, "eight-gaussians"), bounds, ax=axes[0],
                 title="true density")
    plot_density(cnf.log_prob, bounds, ax=axes[1], resolution=80, title="CNF density")
    with torch.no_grad():
        samples = cnf.sample(2000, generator=torch.Generator().manual_seed(0))
    plot_samples(samples, bounds=bounds, ax=axes[2], title="CNF samples")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), help="train one of the two models")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--train-tol", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the tensors are small, and two threads on a "
                        "busy 2-core machine spin against each other)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write a PNG of the (first) model's density here")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train = sample_toy("eight-gaussians", 50_000, seed=1)
    val = sample_toy("eight-gaussians", 5_000, seed=2)
    true_nll = -toy_log_prob("eight-gaussians", val.double()).mean().item()
    names = [args.only] if args.only else list(RUNS)
    models = [run(name, RUNS[name], train, val, true_nll, args) for name in names]
    if args.plot:
        plot(models[0], args.plot)


if __name__ == "__main__":
    main()
