"""GMM denoiser throughput: analytic.GaussianMixture against a naive per-component torch.distributions baseline.

Throughput = points x components x d per second of one batched denoiser call (float64, CPU). The baseline builds
one MultivariateNormal (full covariance, d <= 64) or Independent Normal (diagonal, d = 3072) per component and
noise level, and computes the posterior mean component by component with a linear solve, as a direct
transcription of the formula would. d = 3072 uses diagonal covariances on both sides (a full 3072 x 3072
covariance per component is 75 MB and is not how image-size toy targets are built).

Times are process CPU time (time.process_time: on a shared machine it does not count waiting for a core), best of
the repeats, with --threads torch threads (default 1, as the other benchmarks; with more, CPU time sums the threads).

    python benchmarks/bench_gmm_denoiser.py [--repeats 5] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from analytic import GaussianMixture

F64 = torch.float64


def make_target(d: int, K: int, seed: int = 0) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K))
    mu = rng.standard_normal((K, d))
    if d > 64:
        return GaussianMixture.from_diagonal(w, mu, rng.uniform(0.05, 1.0, (K, d)))
    covs = []
    for _ in range(K):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        covs.append((q * rng.uniform(0.05, 1.0, d)) @ q.T)
    return GaussianMixture(w, mu, np.stack(covs))


def naive_denoiser(target: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    logs, means = [], []
    for k in range(target.K):
        mu = target.means[k]
        if target.is_diagonal:
            var = target.eigvals[k] + sigma**2
            dist = Independent(Normal(mu, var.sqrt()), 1)
            m = mu + target.eigvals[k] / var * (x - mu)
        else:
            C = target.covariances[k] + sigma**2 * torch.eye(target.d, dtype=F64)
            dist = MultivariateNormal(mu, covariance_matrix=C)
            m = mu + torch.linalg.solve(C, (x - mu).T).T @ target.covariances[k]
        logs.append(math.log(float(target.weights[k])) + dist.log_prob(x))
        means.append(m)
    w = torch.softmax(torch.stack(logs, -1), -1)
    return torch.einsum("bk,kbi->bi", w, torch.stack(means))


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    head = f"{'d':>5} {'K':>3} {'batch':>5} {'ours (pts*K*d/s)':>17} {'naive (pts*K*d/s)':>18}"
    print(head + f" {'ratio':>6} {'max|diff|':>9}")
    for d in (2, 64, 3072):
        for K in (1, 8, 64):
            target = make_target(d, K)
            B = 1024 if d <= 64 else 128
            x = target.sample(B, sigma=1.0, generator=torch.Generator().manual_seed(0))
            t_ours = best_time(lambda t=target, x=x: t.denoiser(x, 1.0), args.repeats)
            t_naive = best_time(lambda t=target, x=x: naive_denoiser(t, x, 1.0), max(1, args.repeats // 2))
            diff = float((target.denoiser(x, 1.0) - naive_denoiser(target, x, 1.0)).abs().max())
            work = B * K * d
            row = dict(d=d, K=K, batch=B, ours=work / t_ours, naive=work / t_naive, ratio=t_naive / t_ours, diff=diff)
            rows.append(row)
            print(f"{d:>5} {K:>3} {B:>5} {row['ours']:>17.3e} {row['naive']:>18.3e} {row['ratio']:>6.1f} {diff:>9.1e}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
