"""GMM denoiser throughput: analytic.GaussianMixture against a naive per-component torch.distributions baseline.

Throughput = points x components x d per second of one batched denoiser call (float64, CPU). The baseline builds
one MultivariateNormal (full covariance, d <= 64) or Independent Normal (diagonal, d = 3072) per component and
noise level, and computes the posterior mean component by component with a linear solve, as a direct
transcription of the formula would. d = 3072 uses diagonal covariances on both sides (a full 3072 x 3072
covariance per component is 75 MB and is not how image-size toy targets are built).

Columns: ours (`denoiser`: cache-sized blocks for K > 1, the eigenbasis fast path for K = 1), the unblocked closed
form in the same module (`_denoiser_closed`, which autograd and extreme arguments still take; it was the only form
before the blocking), and with --compare DIR an older copy of the `analytic` package (e.g. a checkout's), imported
beside this one, so that before and after come from one run.

Two more tables: the single-Gaussian denoiser on the harness's typical calls (B in {1, 64, 1024}, d in {1, 2, 4,
16}; us per call), beside the bare formula mu + ((x - mu) U * ratio) U^T with nothing checked, and `w2_1d` on the
far-modes mixture of tests/test_wasserstein.py (its worst known case: HEAD before the bounded refinement took 66 s)
and random mixtures, with a generous bound printed beside it (a figure, not an assert).

Times are process CPU time (time.process_time: on a shared machine it does not count waiting for a core), best of
the repeats, with --threads torch threads (default 1, as the other benchmarks; with more, CPU time sums the threads);
the compared implementations are timed in alternation, so that a change of the machine's load hits both.

    python benchmarks/bench_gmm_denoiser.py [--repeats 5] [--threads 1] [--compare DIR] [--skip-w2] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from analytic import Gaussian, GaussianMixture

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


def best_times(fns, repeats: int) -> list[float]:
    """Best process time of each function over `repeats` rounds, the functions called in alternation."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def per_call(fn, budget: float = 0.02) -> float:
    """Seconds per call of a fast function: enough calls to fill ~budget s, so the clock's resolution is no issue."""
    fn()
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < budget:
        fn()
        n += 1
    return (time.process_time() - t0) / n


def load_package(path: str, name: str = "analytic_compared"):
    """An `analytic` package from another directory, imported under another name (its relative imports kept)."""
    init = Path(path) / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(Path(path))])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def as_other(pkg, target: GaussianMixture):
    """The same target built by another analytic package."""
    if target.is_diagonal:
        return pkg.GaussianMixture.from_diagonal(target.weights, target.means, target.eigvals)
    if target.K == 1:
        return pkg.Gaussian(target.means[0], target.covariances[0])
    return pkg.GaussianMixture(target.weights, target.means, target.covariances)


def table_throughput(args, other) -> list[dict]:
    rows = []
    head = f"{'d':>5} {'K':>3} {'batch':>5} {'ours (pts*K*d/s)':>17} {'naive (pts*K*d/s)':>18} {'ratio':>6}"
    head += f" {'unblocked/naive':>15}" + (f" {'compared/naive':>14}" if other else "") + f" {'max|diff|':>9}"
    print(head)
    for d in (2, 64, 3072):
        for K in (1, 8, 64):
            target = make_target(d, K)
            B = 1024 if d <= 64 else 128
            x = target.sample(B, sigma=1.0, generator=torch.Generator().manual_seed(0))
            fns = [lambda t=target, x=x: t.denoiser(x, 1.0), lambda t=target, x=x: naive_denoiser(t, x, 1.0),
                   lambda t=target, x=x: t._denoiser_closed(x, 1.0)]
            if other:
                fns.append(_call(as_other(other, target), x, [1.0]))
            times = best_times(fns, args.repeats)
            diff = float((target.denoiser(x, 1.0) - naive_denoiser(target, x, 1.0)).abs().max())
            work = B * K * d
            row = dict(d=d, K=K, batch=B, ours=work / times[0], naive=work / times[1], ratio=times[1] / times[0],
                       unblocked_ratio=times[1] / times[2], diff=diff)
            line = f"{d:>5} {K:>3} {B:>5} {row['ours']:>17.3e} {row['naive']:>18.3e} {row['ratio']:>6.1f}"
            line += f" {row['unblocked_ratio']:>15.2f}"
            if other:
                row["compared_ratio"] = times[1] / times[3]
                line += f" {row['compared_ratio']:>14.2f}"
            rows.append(row)
            print(line + f" {diff:>9.1e}")
    return rows


def _call(target, x, sigmas):
    def run():
        for s in sigmas:
            target.denoiser(x, s)

    return run


def _bare(g, x, sigmas):
    """mu + U diag(l/(l + s^2)) U^T (x - mu) with nothing checked: the floor of a single Gaussian's call."""
    U, lam, mu = g.eigvecs[0], g.eigvals[0], g.mean

    def run():
        for s in sigmas:
            torch.addmm(mu, lam / (lam + s * s) * ((x - mu) @ U), U.T)

    return run


def table_gaussian(args, other) -> list[dict]:
    """us per call of a single Gaussian's denoiser on the harness's typical calls."""
    rows = []
    print(f"\n{'d':>3} {'B':>5} {'ours (us)':>10} {'bare formula':>12}" + (f" {'compared':>9} {'speed-up':>8}"
                                                                           if other else ""))
    rng = np.random.default_rng(1)
    for d in (1, 2, 4, 16):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        g = Gaussian(rng.standard_normal(d), (q * rng.uniform(0.05, 1.0, d)) @ q.T)
        for B in (1, 64, 1024):
            x = g.sample(B, sigma=0.7, generator=torch.Generator().manual_seed(0))
            sig = [0.7 * 1.01**i for i in range(50)]  # a solver run's noise levels, each visited once
            fns = [_call(g, x, sig), _bare(g, x, sig)] + ([_call(as_other(other, g), x, sig)] if other else [])
            best = [math.inf] * len(fns)
            for _ in range(args.repeats):
                for i, fn in enumerate(fns):
                    best[i] = min(best[i], per_call(fn) / len(sig) * 1e6)
            row = dict(d=d, B=B, ours_us=best[0], bare_us=best[1])
            line = f"{d:>3} {B:>5} {best[0]:>10.1f} {best[1]:>12.1f}"
            if other:
                row["compared_us"] = best[2]
                line += f" {best[2]:>9.1f} {best[2] / best[0]:>7.2f}x"
            rows.append(row)
            print(line)
    return rows


#: the far-modes mixture of tests/test_wasserstein.py (target = law of a X + c)
_FAR = ([0.3828397323519851, 0.10214472015789015, 0.07432555525689895, 0.4406899922332258],
        [6.99905269584085, 13.910098814707798, -11.857437124957732, -20.389755365613812],
        [0.00020847992019168424, 0.0009049134599247915, 0.0002753359206149629, 0.0007373890671725558])
_FAR_A, _FAR_C = 2.085687684028229, 1.67635447853529
W2_BOUND = 10.0  # s of CPU per w2_1d call: a generous figure to read, never asserted


def w2_cases(pkg):
    mix = lambda w, m, v: pkg.GaussianMixture(w, np.asarray(m, float)[:, None], np.asarray(v, float)[:, None, None])
    src = mix(*_FAR)
    tgt = mix(_FAR[0], _FAR_A * np.asarray(_FAR[1]) + _FAR_C, _FAR_A**2 * np.asarray(_FAR[2]))
    yield "far modes, exact map", (lambda x: _FAR_A * x + _FAR_C), src, tgt
    yield "far modes, + 1e-3 tanh", (lambda x: _FAR_A * x + _FAR_C + 1e-3 * torch.tanh(x - 7.0)), src, tgt
    rng = np.random.default_rng(7)
    for i in range(3):  # narrow, far-apart random modes (the kind hypothesis found slow locally)
        K = 4
        w, m, v = rng.dirichlet(np.ones(K)), rng.standard_normal(K) * 15, np.exp(rng.uniform(-9, -5, K))
        yield f"random narrow modes {i}", (lambda x: x), mix(w, m, v).marginal(0.05), mix(w, m, v)


def table_w2(args, other) -> list[dict]:
    rows = []
    print(f"\n{'w2_1d case':<24} {'W2':>10} {'CPU s':>7}" + (f" {'compared W2':>11} {'CPU s':>7}" if other else "")
          + f"  within {W2_BOUND:g} s")
    pkgs = [sys.modules["analytic"]] + ([other] if other else [])
    cases = [list(w2_cases(p)) for p in pkgs]
    for j, (name, *_) in enumerate(cases[0]):
        out = []
        for case in cases:
            _, push, src, tgt = case[j]
            mod = sys.modules[type(src).__module__.rsplit(".", 1)[0]]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.process_time()
                val = mod.w2_1d(push, src, tgt)
                out.append((val, time.process_time() - t0, len(caught)))
        row = dict(case=name, w2=out[0][0], cpu_s=out[0][1], warnings=out[0][2])
        line = f"{name:<24} {out[0][0]:>10.3e} {out[0][1]:>7.2f}"
        if other:
            row.update(compared_w2=out[1][0], compared_cpu_s=out[1][1], compared_warnings=out[1][2])
            line += f" {out[1][0]:>11.3e} {out[1][1]:>7.2f}"
        rows.append(row)
        print(line + ("  yes" if all(t <= W2_BOUND for _, t, _ in out) else "  NO")
              + ("  (unconverged warning)" if any(n for *_, n in out) else ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", default=None, help="directory of another `analytic` package, timed beside this one")
    ap.add_argument("--skip-w2", action="store_true", help="leave out the w2_1d table")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    other = load_package(args.compare) if args.compare else None
    result = dict(throughput=table_throughput(args, other), gaussian=table_gaussian(args, other))
    if not args.skip_w2:
        result["w2_1d"] = table_w2(args, other)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
