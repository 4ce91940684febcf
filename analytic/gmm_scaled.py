"""The scaled form of a Gaussian mixture's posterior quantities, for extreme but finite arguments.

Above sigma = 1e150, or for |x - mu_k| that far, sigma^2 and z^2 would overflow float64; the scaled form never forms
them: t_k = hypot(sqrt(s_k), sigma), whitened residuals r_k = z_k / t_k, component log-densities relative to the
nearest component (the formulas are in analytic/gmm.py's docstring). A mixin of analytic.gmm.GaussianMixture, which
provides eigvals, means, K, _log_w, _from_eig, _mu_max and _safe_dist.
"""

from __future__ import annotations

import math

import torch

from ._big import BIG
from ._checks import DTYPE

__all__ = ["ScaledForms"]


class ScaledForms:
    """The scaled-form pieces used by GaussianMixture's denoiser, score, eps, log_prob and Jacobian."""

    def _scaled(self, s, z):
        """(sv, t, r, logits, n*, top) of the scaled form: t = hypot(sqrt(s_k), sigma), r = z/t, the component
        log-densities up to the common -d log top - 1/2 n*^2 - d/2 log 2 pi (n* = min_k ||r_k||, top = max t)."""
        if not torch.isfinite(z).all():
            raise ValueError("x: x - mean overflows float64 (|x| must stay below ~1e307)")
        sv = s.reshape(-1, 1, 1) if s.ndim else s
        t = torch.hypot(torch.sqrt(self.eigvals)[None], sv)  # (B, K, d) or (1, K, d)
        r = z / t
        amax = r.abs().amax(-1)  # (B, K): an overflow-free norm
        n = amax * torch.linalg.vector_norm(r / amax.clamp_min(torch.finfo(DTYPE).tiny)[..., None], dim=-1)
        n = torch.where(torch.isfinite(amax), n, math.inf)
        nstar = n.min(-1, keepdim=True).values
        if not torch.isfinite(nstar).all():
            raise ValueError("x: too far from every component (its whitened distance overflows float64)")
        top = t.amax(dim=(-1, -2), keepdim=True)  # log t relative to it: no cancellation against log sigma
        logits = self._log_w[None] - torch.log(t / top).sum(-1) - 0.5 * (n - nstar) * (n + nstar)
        return sv, t, r, logits, nstar[:, 0], top.reshape(-1)

    def _extreme(self, x, s, big: float = BIG) -> bool:
        """Whether (x, sigma) takes the scaled form (the test in GaussianMixture._prep)."""
        smax = float(s.detach()) if s.ndim == 0 else float(s.detach().max())
        lo, hi = torch.aminmax(x.detach())  # max |x| in one pass, without an |x| temporary
        return smax > big or max(-float(lo), float(hi)) + self._mu_max > self._safe_dist

    def _scaled_weights(self, logits):
        return torch.ones_like(logits) if self.K == 1 else torch.softmax(logits, dim=-1)

    def _scaled_means(self, t, r):
        """Component posterior means m_k = mu_k + U_k (s_k/t_k * r_k), (B, K, d)."""
        return self.means[None] + self._from_eig(self.eigvals[None] / t * r)

    def _scaled_eps(self, sv, t, r):
        """sigma c_k = -U_k (sigma/t_k * r_k), (B, K, d)."""
        return -self._from_eig(sv / t * r)
