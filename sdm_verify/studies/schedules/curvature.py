"""Where the optimum puts its steps, against where the flow curves (docs/schedules.md §5).

SDM's solver and schedule allocate effort by the flow's relative curvature kappa = ||x''|| / ||x'|| (its proxy is a
backward difference of the drift; docs/sdm.md §3). On an exact target kappa is closed form along the flow
(analytic.calculus: x' = (x - D)/sigma, x'' = -(J_D x' + dD/dsigma)/sigma), and the flow's marginal at sigma is
the exact p_sigma, so

    kappa(sigma) = mean_b ||x''(x_b, sigma)|| / ||x'(x_b, sigma)||,  x_b ~ p_sigma exactly (n draws, fixed seed).

A curvature-based allocation takes steps h ~ 1/kappa in sigma (a step of relative size ~1 in the curvature's own
length scale). `allocation(grid, target)` compares the optimum's steps with that rule: the slope of log h_i against
log kappa(sigma_i*) over the steps (sigma_i* = the geometric midpoint; slope -1 means h ~ 1/kappa) and the rank
correlation of h_i with 1/kappa. The last step into 0, if any, is left out (kappa has no value at 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analytic import calculus


def kappa(target, sigma: float, n: int = 256, seed: int = 0) -> float:
    """The exact mean relative curvature of the flow at sigma (module docstring)."""
    x = target.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(seed))
    v = calculus.velocity(target, x, sigma)
    a = calculus.second_derivative(target, x, sigma)
    return float((a.norm(dim=1) / v.norm(dim=1).clamp_min(1e-300)).mean())


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(v.size)
    r[np.argsort(v, kind="stable")] = np.arange(v.size)
    return r


@dataclass
class Allocation:
    sigma_mid: list
    step: list
    kappa: list
    slope: float | None  # d log h / d log kappa (least squares); -1: h ~ 1/kappa; None with < 2 steps
    rank_corr: float | None  # Spearman correlation of h with 1/kappa (1: same ordering)
    h_kappa: list  # h_i kappa_i: constant under a pure curvature allocation


def allocation(grid, target, n: int = 256) -> Allocation:
    g = np.asarray(grid, dtype=np.float64)
    g = g[:-1] if g[-1] == 0 else g
    mid = np.sqrt(g[:-1] * g[1:])
    h = g[:-1] - g[1:]
    k = np.array([kappa(target, float(s), n) for s in mid])
    lk, lh = np.log(k), np.log(h)
    slope = float(np.polyfit(lk, lh, 1)[0]) if h.size >= 2 else None
    if h.size >= 3:
        a, b = _ranks(h), _ranks(1.0 / k)
        rc = float(np.corrcoef(a, b)[0, 1])
    else:
        rc = None  # (too few steps to rank)
    return Allocation(mid.tolist(), h.tolist(), k.tolist(), slope, rc, (h * k).tolist())
