"""The 1-D laws of a Gaussian mixture at noise level sigma: cdf, sf and their inverses (quantile, isf).

p_sigma = sum_k pi_k N(mu_k, s_k + sigma^2) in 1-D, so P(X <= x) = sum_k pi_k Phi((x - mu_k) / sqrt(s_k + sigma^2))
(docs/theory.md §2); the inverses by safeguarded Newton steps to float64 resolution. A mixin of
analytic.gmm.GaussianMixture, which provides d, means, eigvals (the variances in 1-D) and weights.
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


#: quantile anchors per component: mu_k + j sd_k, j = -40..40 (brackets and starts for the Newton steps)
_Z_ANCHORS = torch.arange(-40.0, 41.0, dtype=DTYPE)
_NEWTON_STEPS = 12  # safeguarded Newton steps per point (typically 3-5 are needed); bisection after them
_MAX_STEPS = 200  # Newton + bisection: a bracket of the whole window reaches 4 eps (|x| + scale) in < 70


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

    def _invert(self, p, sigma, upper: bool, name: str):
        """The x with cdf(x) = p (sf(x) = p when upper), to float64 resolution, vectorised over p.

        Bracket and start: cdf (or sf) at every component's anchors mu_k + j sd_k, j = -40..40 (the same 40-sd
        window as before; tails beyond it are below 1e-300 relative), a sorted search puts each p between two
        neighbouring anchors (inside any component's window at most one sd of the narrowest one there apart), and
        the start interpolates log F between them. Then safeguarded Newton steps on log F(x) - log p (F = cdf or
        sf, derivative +-pdf/F: quadratic convergence also deep in the tails, where F changes by orders of
        magnitude per sd),
        each evaluation shrinking the bracket; a step that leaves the bracket, or any step after _NEWTON_STEPS,
        is a bisection. Stops at a Newton step below 2 eps (|x| + scale), or at a bracket of width
        4 eps (|x| + scale) (the resolution of the former 200-step bisection), or where F(x) = p exactly.
        Where the mixture's density is tiny, F is flat to rounding over an interval of width ~eps F / pdf (the
        quantile's conditioning); any point in it is an answer, as it was for the bisection.
        """
        p = self._flat(p, name)
        if ((p <= 0) | (p >= 1)).any():
            raise ValueError(f"{name}: probabilities must lie in (0, 1)")
        sd = self._std(sigma)
        mu, w = self.means[:, 0], self.weights
        lo_v, hi_v = float((mu - 40 * sd).min()), float((mu + 40 * sd).max())
        if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            raise ValueError(f"sigma: the quantile bracket mean +- 40 sd overflows float64 (sd {float(sd.max()):.3g})")
        # float64 resolution, relative to |x| and, for answers near 0, to the mixture's own scale
        scale = float(mu.abs().max() + sd.max())
        eps = torch.finfo(DTYPE).eps
        sign = -1.0 if upper else 1.0  # F(x) = sum_k w_k Phi(sign z_k): increasing in x for the cdf

        def tail(x):
            return (_ndtr(sign * (x[:, None] - mu) / sd) * w).sum(-1)

        # anchors: sorted, with F made monotone in x's direction against rounding (cummax of sign * F)
        grid = torch.sort((mu[:, None] + sd[:, None] * _Z_ANCHORS).reshape(-1)).values
        Fg = tail(grid)
        key = torch.cummax(sign * Fg, 0).values
        i = torch.searchsorted(key, (sign * p).contiguous(), side="left").clamp(1, grid.shape[0] - 1)
        lo, hi = grid[i - 1], grid[i]  # sign * F(lo) < sign * p <= sign * F(hi)
        flo, fhi = Fg[i - 1], Fg[i]
        frac = (torch.log(p) - torch.log(flo)) / (torch.log(fhi) - torch.log(flo))
        frac = torch.where(torch.isfinite(frac), frac.clamp(0.0, 1.0), torch.full_like(frac, 0.5))
        x = lo + frac * (hi - lo)
        # p at or beyond the window's ends (bracket of one anchor): the end itself, as the bisection gave
        edge = ((i == 1) & ~(sign * flo < sign * p)) | ((i == grid.shape[0] - 1) & ~(sign * fhi >= sign * p))
        x = torch.where(edge & (i == 1), lo, torch.where(edge, hi, x))
        norm = (w / (sd * math.sqrt(2.0 * math.pi)))
        active = torch.nonzero(~edge).reshape(-1)
        for step in range(_MAX_STEPS):
            if active.numel() == 0:
                break
            xa, pa, la, ha = x[active], p[active], lo[active], hi[active]
            z = (xa[:, None] - mu) / sd
            F = (_ndtr(sign * z) * w).sum(-1)
            left = sign * F < sign * pa  # the root is to the right of xa
            la, ha = torch.where(left, xa, la), torch.where(left, ha, xa)
            lo[active], hi[active] = la, ha
            # Newton on log F - log p: dx = -log(F / p) * F / (sign * pdf), log(F/p) as log1p((F - p)/p)
            pdf = (torch.exp(-0.5 * z**2) * norm).sum(-1)
            dx = -torch.log1p((F - pa) / pa) * F / (sign * pdf)
            xn = xa + dx
            res = 2 * eps * (xa.abs() + scale)
            # converged: a step below the resolution (kept even where it rounds onto the bracket's end)
            conv = (dx.abs() <= res) & (step < _NEWTON_STEPS)
            newton = torch.isfinite(xn) & (xn > la) & (xn < ha) & (step < _NEWTON_STEPS)
            xn = torch.where(conv, torch.minimum(torch.maximum(xn, la), ha),
                             torch.where(newton, xn, 0.5 * (la + ha)))
            done = (F == pa) | conv | ((ha - la) <= 2 * res)
            x[active] = torch.where(F == pa, xa, xn)
            active = active[~done]
        return x

    def quantile(self, u, sigma=0.0) -> torch.Tensor:
        """Q(u): the x with cdf(x) = u (1-D), u in (0, 1), shape (B,)."""
        self._require_1d("quantile")
        return self._invert(u, sigma, False, "u")

    def isf(self, v, sigma=0.0) -> torch.Tensor:
        """Inverse survival function: the x with sf(x) = v (1-D); use it for upper-tail quantiles."""
        self._require_1d("isf")
        return self._invert(v, sigma, True, "v")
