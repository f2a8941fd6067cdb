"""Score-based diffusion on FFJORD's eight Gaussians: a learned score (denoising score
matching, VP SDE) against the exact density.

Prints the training time, the held-out NLL through the probability-flow ODE next to the true
density's NLL of the same points, and the NLL under the true density of Heun (EDM) samples at
<= 40 NFE, of probability-flow samples and of reverse-SDE samples, beside the entropy.

    .venv/bin/python benchmarks/diffusion_eight_gaussians.py [--steps 3000] [--exact]

`--exact` uses the closed-form score instead (no training): the acceptance check of the
samplers, with many samples.
"""

from __future__ import annotations

import argparse
import time

import torch

from tidal.data.toys import sample_toy
from tidal.diffusion import sampling
from tidal.diffusion.likelihood import log_likelihood
from tidal.diffusion.mixtures import eight_gaussians
from tidal.diffusion.processes import PROCESSES, EDMProcess
from tidal.diffusion.score_matching import ScoreMLP, ScoreModel
from tidal.training.score import fit_score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--exact", action="store_true")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--process", choices=sorted(PROCESSES), default="vp")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--no-samplers", action="store_true")
    parser.add_argument("--weighting", choices=["standard", "likelihood"],
                        default="likelihood")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    process = (EDMProcess(sigma_data=2.0) if args.process == "edm" else
               PROCESSES[args.process]())
    truth = eight_gaussians()
    entropy, error = truth.entropy(2_000_000)
    print(f"entropy of the eight Gaussians (MC, 2e6 samples): {entropy:.4f} ± {error:.4f} nats")
    if args.exact:
        score = eight_gaussians(process)
    else:
        data = sample_toy("eight-gaussians", 20000, seed=0).double()
        val = sample_toy("eight-gaussians", 2000, seed=1).double()
        torch.manual_seed(0)
        model = ScoreModel(ScoreMLP(2, process, width=args.width, depth=3, data_std=2.0).double(),
                           ema_decay=0.995)
        start, cpu = time.perf_counter(), time.process_time()
        history = fit_score(model, process, data, val_samples=val, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr,
                            weighting=args.weighting, progress=False)
        print(f"training: {args.steps} steps, {time.perf_counter() - start:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} s CPU (one thread), final val loss "
              f"{history.val_loss[-1]:.4f}")
        score = model
        test = sample_toy("eight-gaussians", 2000, seed=2).double()
        start = time.perf_counter()
        with torch.no_grad():
            result = log_likelihood(score, process, test)
        true_nll = -truth.log_prob(test).mean().item()
        print(f"held-out NLL (2000 points): PF-ODE {-result.log_prob.mean().item():.4f}, true "
              f"density {true_nll:.4f}, gap {-result.log_prob.mean().item() - true_nll:+.4f} "
              f"nats ({result.nfe} NFE, {time.perf_counter() - start:.1f} s)")
    if args.no_samplers:
        return
    n = args.samples
    print(f"\n| sampler | NFE | NLL under the true density ({n} samples) | minus entropy |")
    print("|---|---:|---:|---:|")
    runs = [("Heun, 18 steps", lambda: sampling.heun(score, process, n, 2, steps=18)),
            ("Heun, 20 steps", lambda: sampling.heun(score, process, n, 2, steps=20)),
            ("Heun, 40 steps", lambda: sampling.heun(score, process, n, 2, steps=40)),
            ("PF-ODE (Tsit5, rtol 1e-5)", lambda: sampling.probability_flow(
                score, process, n, 2)),
            ("reverse SDE (EM, 500 steps)", lambda: sampling.reverse_sde(
                score, process, n, 2, steps=500)),
            ("predictor-corrector (200 + 200 Langevin, snr 0.05)", lambda: sampling.reverse_sde(
                score, process, n, 2, steps=200, corrector_steps=1, snr=0.05))]
    if not args.exact:  # a learned score: the <= 40 NFE sampler and the PF-ODE
        runs = [runs[1], runs[3]]
    for name, run in runs:
        with torch.no_grad():
            out = run()
        nll = -truth.log_prob(out.x)
        se = nll.std().item() / n**0.5
        print(f"| {name} | {out.nfe} | {nll.mean().item():.4f} ± {se:.4f} | "
              f"{nll.mean().item() - entropy:+.4f} |", flush=True)


if __name__ == "__main__":
    main()
