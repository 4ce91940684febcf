"""COS: the score-optimal schedule of Williams et al. 2024 ("Score-Optimal Diffusion Schedules", NeurIPS 2024), as
the official SDM code re-implements it (aiimaginglab/sdm, optimize_schedules.py with modules/utils.py
compute_score_diffs_once and build_cos_sigmas; the issue asks for that version).

Idea of the paper: a schedule is a path of noise levels, and the cost of moving from one level to the next is
measured by how much the score changes between them; the optimal schedule walks the path at constant cost speed,
i.e. it equidistributes the cumulative cost Lambda(sigma). The re-implementation discretises this as follows:

    probe grid   p_0 = sigma_min < p_1 < ... < p_K = sigma_max (ascending), EDM rho = 7.
    score        s_sigma(x) = (D(x, sigma) - x) / sigma^2.
    local cost   c_k = ( E_{x ~ p_{p_(k+1)}} || p_(k+1) (s_{p_(k+1)}(x) - s_{p_k}(x)) ||^2 )^(1/2),  k = 0..K-1,
                 i.e. both scores at the same point x, drawn from the noisy law at the HIGHER level of the interval.
    cumulative   Lambda(p_0) = 0, Lambda(p_(k+1)) = c_0 + ... + c_k.
    schedule     tau = sigma^(1/rho) (rho = 7) as a monotone PCHIP function of Lambda through the K + 1 probe points;
                 n + 1 values of Lambda uniform on [0, Lambda(p_K)] mapped to sigma = tau^rho, listed descending.

Choices (where the code or the paper leaves one open, or where this version departs from the code):
  * probe_steps K: the SDM code probes on a grid of as many nodes as the output (num_steps). Default here:
    K = max(n, 64), a finer probe (the code's K = n probes the cost at the very nodes it then moves; with K = n the
    result is the code's, up to the point below). Option probe_steps.
  * the code leaves out the node (Lambda = 0, p_0) and lets PCHIP extrapolate below Lambda(p_1) = c_0, then clamps
    the endpoints; here the node is kept, so the grid hits sigma_min at Lambda = 0 by construction (no extrapolation).
  * expectation: the code averages the per-batch root-mean-square over repeats (batch 128, 50 repeats: a mean of
    square roots); here one root of the mean over all samples (samples = 4096 by default), the quantity defined
    above. The noisy points are exact draws x ~ p_p (target.sample), with a fixed seed; common draws across k.
  * the solver is not used: COS depends on the target only (as in the code, where the same schedule is loaded by
    every sampler). It is accepted for the common signature.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from ... import schedules
from .gits import F64, check_common, finish, positive_int, positive_real

__all__ = ["cos", "cos_costs"]


def cos_costs(target, probe: torch.Tensor, samples: int, seed: int) -> np.ndarray:
    """c_k for the ascending probe grid (module docstring): one Monte Carlo estimate per interval."""
    gen = torch.Generator().manual_seed(seed)
    out = np.empty(probe.numel() - 1)
    for k in range(probe.numel() - 1):
        lo, hi = float(probe[k]), float(probe[k + 1])
        x = target.sample(samples, sigma=hi, generator=gen).to(F64)
        s_hi = (target.denoiser(x, hi) - x) / hi**2
        s_lo = (target.denoiser(x, lo) - x) / lo**2
        out[k] = float((hi * (s_hi - s_lo)).pow(2).sum(-1).mean().sqrt())
    return out


def cos(solver, target, n, sigma_min, sigma_max, **options) -> torch.Tensor:
    """COS grid: n + 1 float64 sigmas from sigma_max to sigma_min, uniform in the cumulative score-difference cost.

    options: probe_steps (max(n, 64)), samples (4096), seed (0), rho (7.0, the tau = sigma^(1/rho) interpolation
    variable). Cost: 2 probe_steps denoiser calls on `samples` points."""
    n, sigma_min, sigma_max, _, o = check_common(n, sigma_min, sigma_max, target, solver, options,
                                                 dict(probe_steps=None, samples=4096, seed=0, rho=7.0))
    K = max(n, 64) if o["probe_steps"] is None else positive_int("probe_steps", o["probe_steps"])
    samples, seed = positive_int("samples", o["samples"], 2), positive_int("seed", o["seed"], 0)
    rho = positive_real("rho", o["rho"])
    probe = schedules.edm(K, sigma_min, sigma_max).flip(0)  # ascending
    c = cos_costs(target, probe, samples, seed)
    lam = np.concatenate([[0.0], np.cumsum(c)])
    if not np.all(np.diff(lam) > 0):  # a zero cost interval (score unchanged) cannot be inverted: nudge it
        lam = lam + np.arange(lam.size) * 1e-12 * max(lam[-1], 1e-300)
    tau = probe.numpy() ** (1.0 / rho)
    inverse = PchipInterpolator(lam, tau)
    levels = np.linspace(0.0, lam[-1], n + 1)
    sig = np.asarray(inverse(levels), dtype=np.float64) ** rho
    return finish(sig[::-1].copy(), sigma_min, sigma_max)
