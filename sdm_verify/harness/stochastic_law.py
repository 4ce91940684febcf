"""The exact output law of a stochastic sampler on a Gaussian target, read off with probe columns.

On a Gaussian target the denoiser is affine in x, and every sampler here combines x, D and its noise draws with
coefficients that depend on the grid alone, so its output is affine in (x_T, xi_1, ..., xi_M), the start point and
the M distinct noise draws (docs/stochastic.md §1):

    y = c + A (x_T - m) + sum_m B_m xi_m,   x_T ~ N(m, C_T),  xi_m ~ N(0, I) independent
    =>  y ~ N(c, A C_T A^T + sum_m B_m B_m^T)                          (exact: no sampling error)

One batched run reads (c, A, B_1..B_M) off: column 0 starts at m with all draws zero (c); columns 1..d start at
m + s e_k with zero draws (A e_k = (y_k - c)/s); then one column per (draw m, coordinate k) starts at m with e_k in
draw m and zeros elsewhere (B_m e_k). The draw keys (i, sigma, sigma_next) are discovered by a zero-noise run first
(a sampler must ask for the same keys whatever the values, which every sampler here does). The draws are linear in
independent basis draws under the noise model read off (`draw_basis`): each draw independent (GaussianNoise), or
each the normalised increment of one Brownian motion over its interval (BrownianNoise, k-diffusion's Brownian-tree
samplers; draws over overlapping intervals are then correlated). A last column starts at a
random point with random draws: its output, predicted from the read-off map, gives the affinity residual, so a
sampler that is not affine in its noise (a bug, or a data-dependent decision) is caught instead of mismeasured.

The W2 of this law to the exact p_sigma_to is the Procrustes-Bures distance with factors (A C_T^{1/2} | B_1 .. B_M)
and (C + sigma_to^2 I)^{1/2} (analytic.bures_w2): exact, floor ~1e-13 (ROUNDOFF_FLOOR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analytic import GaussianMixture, bures_w2

from ..errors import InputError
from .meters import F64, ROUNDOFF_FLOOR, _sqrtm
from .noise import ZeroNoise

__all__ = ["OutputLaw", "output_law", "StochasticGaussianMeter"]

#: an affinity residual above this (relative to the output's scale) means the sampler is not affine in (x_T, xi)
AFFINE_RTOL = 1e-9


@dataclass
class OutputLaw:
    """N(mean, factor factor^T): the sampler's exact output law; `draws` the number M of independent basis draws,
    `residual` the relative affinity residual of the check column, `nfe` the denoiser calls of one run (counted)."""

    mean: torch.Tensor
    factor: torch.Tensor
    draws: int
    residual: float
    nfe: int

    @property
    def covariance(self) -> torch.Tensor:
        return self.factor @ self.factor.T


class _ProbeNoise:
    """Draws for the probe batch. Draw k is sum_j W[k, j] xi_j (xi_j independent standard normal vectors, the basis):
    a column that probes (xi_j, coordinate c) gets W[k, j] e_c in every draw k; the check column gets W[k] @ check."""

    def __init__(self, keys, W: torch.Tensor, batch: int, d: int, first: int, check: torch.Tensor):
        self.index = {k: m for m, k in enumerate(keys)}
        self.W, self.batch, self.d, self.first, self.check = W, batch, d, first, check

    def __call__(self, i, sigma, sigma_next):
        key = (int(i), float(sigma), float(sigma_next))
        if key not in self.index:
            raise InputError(f"sampler: asked for a noise draw {key} that its zero-noise run did not ask for; its "
                             "draws depend on the data, so its output law cannot be read off with probes")
        w = self.W[self.index[key]]
        z = torch.zeros(self.batch, self.d, dtype=F64)
        z[self.first:-1] = torch.kron(w[:, None], torch.eye(self.d, dtype=F64))
        z[-1] = w @ self.check
        return z


def draw_basis(keys, noise: str) -> torch.Tensor:
    """W (draws x basis) of the noise model. "independent": every distinct key an independent draw (GaussianNoise),
    W = I. "brownian": every draw the normalised increment of one Brownian motion in sigma over its interval
    (BrownianNoise, and k-diffusion's Brownian-tree noise samplers): the basis is the increments over the cells
    between all interval endpoints, W[k, j] = sqrt(|cell j| / |interval k|) for the cells inside interval k, so
    draws over overlapping intervals are correlated and draws over the same interval are the same draw."""
    n = len(keys)
    if noise == "independent":
        return torch.eye(n, dtype=F64)
    if noise != "brownian":
        raise InputError(f"noise: must be 'independent' or 'brownian' (got {noise!r})")
    spans = [(min(s, t), max(s, t)) for _, s, t in keys]
    if any(lo == hi for lo, hi in spans):
        raise InputError("noise: a draw over an empty interval (sigma == sigma_next) has no Brownian increment")
    points = sorted({p for span in spans for p in span})
    cells = list(zip(points[:-1], points[1:], strict=True))
    W = torch.zeros(n, len(cells), dtype=F64)
    for k, (lo, hi) in enumerate(spans):
        for j, (a, b) in enumerate(cells):
            if lo <= a and b <= hi:
                W[k, j] = ((b - a) / (hi - lo)) ** 0.5
    return W


def output_law(sampler, denoiser, mean: torch.Tensor, root: torch.Tensor, sigmas, seed: int = 0,
               noise: str = "brownian") -> OutputLaw:
    """The exact output law of `sampler` (called sampler(denoiser, x, sigmas, noise)) started from N(mean, root
    root^T), with an affine `denoiser` (a Gaussian target's). Two runs: zero noise (discovers the draws), probes.
    `noise`: the noise model whose law is read off (draw_basis); the two agree when the draws' intervals are
    disjoint, as they are for every registered sampler."""
    from .nfe import count_nfe

    mean, root = mean.to(F64), root.to(F64)
    d = mean.shape[0]
    zero_x = mean[None].clone()
    zero = ZeroNoise(zero_x)
    sampler(denoiser, zero_x, sigmas, zero)
    keys = zero.keys
    W = draw_basis(keys, noise)
    M = W.shape[1]
    scale = float(torch.linalg.matrix_norm(root, ord=2))
    first = 1 + d
    batch = first + M * d + 1
    g = torch.Generator().manual_seed(seed)
    check_start, check_draws = torch.randn(d, generator=g, dtype=F64), torch.randn(M, d, generator=g, dtype=F64)
    x = mean.expand(batch, d).clone()
    x[1:first] += scale * torch.eye(d, dtype=F64)
    x[-1] = mean + root @ check_start
    counted = count_nfe(denoiser)
    y = sampler(counted, x, sigmas, _ProbeNoise(keys, W, batch, d, first, check_draws)).to(F64)
    c = y[0]
    A = (y[1:first] - c).T / scale
    B = (y[first:-1] - c).T  # (d, M d): column m d + k is B_m e_k
    predicted = c + A @ (root @ check_start) + B @ check_draws.reshape(-1)
    size = max(float(y[:-1].abs().max()), 1.0)
    residual = float((y[-1] - predicted).abs().max()) / size
    if residual > AFFINE_RTOL:
        raise InputError(f"sampler: its output is not affine in the start point and the noise draws (relative "
                         f"residual {residual:.3g} > {AFFINE_RTOL:g}); the probe law does not apply")
    return OutputLaw(mean=c, factor=torch.cat([A @ root, B], dim=1), draws=M, residual=residual, nfe=counted.nfe)


class StochasticGaussianMeter:
    """Exact W2 of a stochastic sampler's output law (started from the exact p_sigma_from) to p_sigma_to."""

    metric = "bures_w2"
    floor = ROUNDOFF_FLOOR

    def __init__(self, target: GaussianMixture, sigma_from: float, sigma_to: float, noise: str = "brownian"):
        draw_basis([], noise)  # checks the name
        self.noise = noise
        if target.K != 1:
            raise InputError(f"target: the probe law needs a Gaussian target (K = 1), got K = {target.K}")
        self.target, self.sigma_from, self.sigma_to = target, float(sigma_from), float(sigma_to)
        eye = torch.eye(target.d, dtype=F64)
        self.mean = target.means[0]
        self.root_from = _sqrtm(target.covariances[0] + self.sigma_from**2 * eye)
        self.root_to = _sqrtm(target.covariances[0] + self.sigma_to**2 * eye)

    def law(self, sampler, sigmas, denoiser=None) -> OutputLaw:
        return output_law(sampler, denoiser or self.target.denoiser, self.mean, self.root_from, sigmas,
                          noise=self.noise)

    def w2(self, law: OutputLaw, root_to: torch.Tensor | None = None) -> float:
        return bures_w2(law.mean, None, self.mean, None, factors=(law.factor, self.root_to if root_to is None
                                                                    else root_to))

    def measure(self, sampler, sigmas) -> float:
        return self.w2(self.law(sampler, sigmas))
