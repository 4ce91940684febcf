"""AYS: Align Your Steps (Sabour, Fidler & Kreis 2024, "Align Your Steps: Optimizing Sampling Schedules in Diffusion
Models", ICML 2024, §3: the KL-divergence upper bound (KLUB) between the true generative SDE and the SDE a solver
integrates, minimised over the schedule).

Objective, in EDM variables (sigma(t) = t, D the denoiser). The generative SDE
    dx = 2 (x - D(x, t)) / t dt + sqrt(2 t) dw   (t decreasing)
is replaced on each interval [t_(i+1), t_i] by its linearisation with the denoiser frozen at the interval's start,
D(x_t, t) -> D(x_(t_i), t_i) (what a first-order stochastic solver integrates). Girsanov's theorem bounds the KL
divergence between the two path laws by half the time integral of |drift difference|^2 / g^2, g^2 = 2 t, which gives
    KLUB(t_0 > ... > t_n) = sum_i  int_{t_(i+1)}^{t_i}  t^-3  E || D(x_t, t) - D(x_(t_i), t_i) ||^2  dt,
the expectation over the true process's joint law of (x_(t_i), x_t): x_0 ~ p_data, x_t = x_0 + t e_1,
x_(t_i) = x_t + sqrt(t_i^2 - t^2) e_2 (forward-process increments, e_1, e_2 standard normal).

Estimate and optimisation (choices; the paper's stochastic-gradient procedure with importance sampling of t is
replaced by a deterministic equivalent of the same objective on the oracle):
  * expectation: common random numbers, `samples` = 1024 draws (x_0 exact from target.sample(sigma=0), e_1, e_2),
    seed 0, reused for every evaluation (so the estimate is a smooth deterministic function of the grid);
  * time integral: Gauss-Legendre with `quad` = 8 nodes per interval in u = log t (t^-3 dt = t^-2 du);
  * procedure: coordinate descent. The KLUB is a sum over intervals, so node k enters only the two intervals next to
    it; each sweep minimises the KLUB over log t_k in (log t_(k+1), log t_(k-1)) for k = 1..n-1 in turn (bounded
    Brent, scipy minimize_scalar, xatol 1e-5), endpoints fixed. Each node move can only lower the estimate.
  * initial schedule: EDM rho = 7; stopping: a sweep that moves no node by more than `tol` = 1e-4 in log t, or
    `sweeps` = 20 sweeps. (The paper optimises a 10-step schedule and subdivides it for more steps; here each n is
    optimised directly.)
  * solver: the first-order KLUB above is used for every solver (the paper's frozen-denoiser linearisation); the
    argument is accepted for the common signature and not used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ... import schedules
from .gits import F64, check_common, finish, positive_int, positive_real

__all__ = ["ays", "klub"]


class _KLUB:
    def __init__(self, target, samples: int, seed: int, quad: int):
        gen = torch.Generator().manual_seed(seed)
        self.target = target
        self.x0 = target.sample(samples, sigma=0.0, generator=gen).to(F64)
        self.e1 = torch.randn(self.x0.shape, generator=gen, dtype=F64)
        self.e2 = torch.randn(self.x0.shape, generator=gen, dtype=F64)
        self.nodes, self.weights = np.polynomial.legendre.leggauss(quad)

    def interval(self, lo: float, hi: float) -> float:
        """int_lo^hi t^-3 E||D(x_t, t) - D(x_hi, hi)||^2 dt (Gauss-Legendre in log t)."""
        a, b = math.log(lo), math.log(hi)
        total = 0.0
        for node, w in zip(self.nodes, self.weights, strict=True):
            t = math.exp(0.5 * (a + b) + 0.5 * (b - a) * node)
            xt = self.x0 + t * self.e1
            xh = xt + math.sqrt(max(hi * hi - t * t, 0.0)) * self.e2
            diff = self.target.denoiser(xt, t) - self.target.denoiser(xh, hi)
            total += w * float(diff.pow(2).sum(-1).mean()) / (t * t)
        return 0.5 * (b - a) * total

    def __call__(self, grid) -> float:
        return sum(self.interval(float(grid[i + 1]), float(grid[i])) for i in range(len(grid) - 1))


def klub(target, sigmas, *, samples: int = 1024, seed: int = 0, quad: int = 8) -> float:
    """The KLUB estimate (module docstring) of a decreasing grid sigmas (all > 0)."""
    return _KLUB(target, samples, seed, quad)(torch.as_tensor(sigmas, dtype=F64).tolist())


def ays(solver, target, n, sigma_min, sigma_max, **options) -> torch.Tensor:
    """AYS grid: n + 1 float64 sigmas, sigma_max -> sigma_min, a coordinate-wise minimiser of the KLUB estimate.

    options: samples (1024), seed (0), quad (8), sweeps (20), tol (1e-4). Cost: per node move ~30 evaluations of two
    intervals, each 2 quad denoiser calls on `samples` points."""
    n, sigma_min, sigma_max, _, o = check_common(n, sigma_min, sigma_max, target, solver, options,
                                                 dict(samples=1024, seed=0, quad=8, sweeps=20, tol=1e-4))
    f = _KLUB(target, positive_int("samples", o["samples"], 2), positive_int("seed", o["seed"], 0),
              positive_int("quad", o["quad"]))
    sweeps, tol = positive_int("sweeps", o["sweeps"]), positive_real("tol", o["tol"])
    logs = schedules.edm(n, sigma_min, sigma_max).log().tolist()
    for _ in range(sweeps):
        moved = 0.0
        for k in range(1, n):
            hi, lo = logs[k - 1], logs[k + 1]

            def local(u, hi=hi, lo=lo):
                s = math.exp(u)
                return f.interval(math.exp(lo), s) + f.interval(s, math.exp(hi))

            res = minimize_scalar(local, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
            u = float(res.x)
            if local(u) < local(logs[k]) and lo < u < hi:
                moved, logs[k] = max(moved, abs(u - logs[k])), u
        if moved < tol:
            break
    return finish(np.exp(np.asarray(logs)), sigma_min, sigma_max)
