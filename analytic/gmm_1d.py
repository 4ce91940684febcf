"""The 1-D laws of a Gaussian mixture at noise level sigma: cdf, sf and their inverses (quantile, isf).

p_sigma = sum_k pi_k N(mu_k, s_k + sigma^2) in 1-D, so P(X <= x) = sum_k pi_k Phi((x - mu_k) / sqrt(s_k + sigma^2))
(docs/theory.md §2); the inverses by bisection to float64 resolution. A mixin of analytic.gmm.GaussianMixture, which
provides d, means, eigvals (the variances in 1-D) and weights.
"""

from __future__ import annotations

import math

import torch

from ._big import BIG as _BIG
from ._checks import DTYPE, as_tensor, check_sigma

__all__ = ["OneDimensionalLaws"]


def _ndtr(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF with full relative accuracy in the lower tail (torch.special.ndtr loses it below -7)."""
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))



class OneDimensionalLaws:
    """cdf, sf, quantile and isf of a 1-D mixture (d = 1), for GaussianMixture."""

    def _require_1d(self, what: str):
        if self.d != 1:
            raise ValueError(f"{what}: only defined for 1-D mixtures (d = {self.d})")

    def _std(self, sigma):
        s = float(check_sigma(sigma, scalar=True))
        if s > _BIG:
            return torch.hypot(torch.sqrt(self.eigvals[:, 0]), torch.tensor(s, dtype=DTYPE))
        return torch.sqrt(self.eigvals[:, 0] + s**2)  # (K,); 1-D: eigenvalue = variance

    def _flat(self, x, name):
        x = as_tensor(x, name)
        if x.ndim > 2 or (x.ndim == 2 and x.shape[1] != 1):
            raise ValueError(f"{name}: expected a float, shape (B,) or (B, 1), got shape {tuple(x.shape)}")
        return x.reshape(-1) if x.ndim == 2 else x

    def cdf(self, x, sigma=0.0) -> torch.Tensor:
        """P(X <= x) under p_sigma (1-D), x of shape (B,) or (B, 1); returns (B,)."""
        self._require_1d("cdf")
        x = self._flat(x, "x")
        zk = (x[..., None] - self.means[:, 0]) / self._std(sigma)
        return (_ndtr(zk) * self.weights).sum(-1)

    def sf(self, x, sigma=0.0) -> torch.Tensor:
        """P(X > x) under p_sigma (1-D), accurate in the upper tail."""
        self._require_1d("sf")
        x = self._flat(x, "x")
        zk = (x[..., None] - self.means[:, 0]) / self._std(sigma)
        return (_ndtr(-zk) * self.weights).sum(-1)

    def _invert(self, fn, p, sigma, increasing: bool, name: str):
        p = self._flat(p, name)
        if ((p <= 0) | (p >= 1)).any():
            raise ValueError(f"{name}: probabilities must lie in (0, 1)")
        sd = self._std(sigma)
        # Bracket: every component's 40-sd window; tails beyond it are below 1e-300 relative.
        lo_v, hi_v = float((self.means[:, 0] - 40 * sd).min()), float((self.means[:, 0] + 40 * sd).max())
        if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            raise ValueError(f"sigma: the quantile bracket mean +- 40 sd overflows float64 (sd {float(sd.max()):.3g})")
        lo, hi = torch.full_like(p, lo_v), torch.full_like(p, hi_v)
        # float64 resolution, relative to |x| and, for answers near 0, to the mixture's own scale
        scale = float(self.means[:, 0].abs().max() + sd.max())
        for _ in range(200):  # bisection
            mid = 0.5 * (lo + hi)
            below = fn(mid, sigma) < p if increasing else fn(mid, sigma) > p
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            if ((hi - lo) <= 4 * torch.finfo(DTYPE).eps * (torch.maximum(lo.abs(), hi.abs()) + scale)).all():
                break
        return 0.5 * (lo + hi)

    def quantile(self, u, sigma=0.0) -> torch.Tensor:
        """Q(u): the x with cdf(x) = u (1-D), u in (0, 1), shape (B,)."""
        self._require_1d("quantile")
        return self._invert(self.cdf, u, sigma, True, "u")

    def isf(self, v, sigma=0.0) -> torch.Tensor:
        """Inverse survival function: the x with sf(x) = v (1-D); use it for upper-tail quantiles."""
        self._require_1d("isf")
        return self._invert(self.sf, v, sigma, False, "v")
