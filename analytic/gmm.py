"""Gaussian-mixture targets with closed-form noisy laws, scores, denoisers and denoiser Jacobians.

Canonical (EDM) variables: x = x0 + sigma n, x0 ~ p0 = sum_k pi_k N(mu_k, S_k), n ~ N(0, I), so
p_sigma = sum_k pi_k N(mu_k, S_k + sigma^2 I). With S_k = U_k diag(s_k) U_k^T (one eigendecomposition, reused at
every sigma), z_k = U_k^T (x - mu_k) and g_k = s_k + sigma^2 (docs/theory.md §2):

    log N_k(x)  = -1/2 sum_j log(2 pi g_kj) - 1/2 sum_j z_kj^2 / g_kj,     w_k = softmax_k(log pi_k + log N_k)
    score       = grad log p_sigma(x) = sum_k w_k c_k,                      c_k = -U_k (z_k / g_k)
    denoiser    = E[x0 | x] = sum_k w_k m_k,  m_k = mu_k + U_k (s_k/g_k * z_k)          (= x + sigma^2 score, Tweedie)
    Jacobian    = dD/dx = Cov[x0 | x]/sigma^2
                = sum_k w_k U_k diag(s_k/g_k) U_k^T + sigma^2 sum_k w_k (c_k - score)(c_k - score)^T
The last form (using m_k - D = sigma^2 (c_k - score)) is finite at sigma = 0, where D(x) = x and dD/dx = I for
non-degenerate covariances. eps = (x - D)/sigma is computed as -sigma * score, which is exact at small sigma where
the difference x - D would cancel.

Extreme arguments (sigma > 1e150, or |x - mu_k| beyond 1e150 sqrt(l_min / d)): sigma^2 and z^2 would overflow, so
these calls take a scaled form, with t_k = sqrt(s_k + sigma^2) = hypot(sqrt(s_k), sigma) and whitened residuals
r_k = z_k / t_k, never forming sigma^2 or z^2:
    log N_k     = -sum_j log t_kj - 1/2 ||r_k||^2 - d/2 log 2 pi,  the weights from the differences
                  ||r_k||^2 - min_k ||r_k||^2 = (n_k - n*)(n_k + n*) (n_k = ||r_k||, an overflow-free norm)
    denoiser    = sum_k w_k (mu_k + U_k (s_k/t_k * r_k))           (a convex combination of the component means)
    score       = -sum_k w_k U_k (r_k / t_k),    eps = sum_k w_k U_k (sigma/t_k * r_k)
All other calls take the closed forms above unchanged. A result that float64 cannot represent (log p_sigma(x) below
-1e308, a score beyond 1e308) is refused with a ValueError naming x.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._big import BIG as _BIG
from ._checks import DTYPE, as_tensor, check_generator, check_int, check_points, check_sigma, check_spd, check_weights
from .gmm_1d import OneDimensionalLaws
from .gmm_scaled import ScaledForms

__all__ = ["GaussianMixture", "Gaussian"]

#: the Jacobian's between-component term sigma^2 (c_k - score)^2 underflows where (c_k - score) ~ 1/sigma^2, i.e.
#: above sigma ~ 1e77: denoiser_jacobian and posterior_covariance take the scaled form above this sigma
_BIG_JAC = 1e70
#: at most this many numbers drawn by one `sample` call (n * d; 16 GiB of float64)
_MAX_DRAWS = 2**31
#: (component, row, coordinate) entries per block of the denoiser: 64k float64 = 512 KiB, so that its temporaries
#: stay in a core's cache (unblocked, 0.4-0.7x the torch.distributions baseline at d = 3072, K = 8 and 64)
_BLOCK = 1 << 16


class GaussianMixture(OneDimensionalLaws, ScaledForms):
    """p0 = sum_k weights[k] N(means[k], covariances[k]) in R^d, with exact p_sigma quantities."""

    def __init__(self, weights, means, covariances):
        w = as_tensor(weights, "weights", ndim=1)
        mu = as_tensor(means, "means", ndim=2)
        cov = as_tensor(covariances, "covariances", ndim=3)
        K, d = mu.shape
        if K < 1 or d < 1:
            raise ValueError(f"means: need at least one component in at least one dimension, got shape {(K, d)}")
        w = check_weights(w, K, "weights")
        if cov.shape != (K, d, d):
            raise ValueError(f"covariances: expected shape {(K, d, d)}, got {tuple(cov.shape)}")
        check_spd(cov, "covariances")
        self.weights = w / w.sum()
        self.means = mu
        self._cov = 0.5 * cov + 0.5 * cov.transpose(-1, -2)  # (halves: no overflow near the float64 limit)
        self.eigvals, self.eigvecs = torch.linalg.eigh(self._cov)  # (K, d), (K, d, d); columns = vectors
        self._log_w = torch.log(self.weights)
        self._set_ranges()

    def _set_ranges(self):
        """Bounds that select the closed forms' safe regime (module docstring): |mu| and sqrt(l_min / d)."""
        self._mu_max = float(self.means.abs().max())
        self._safe_dist = _BIG * math.sqrt(float(self.eigvals.min()) / self.d)
        self._gauss_cache = {}  # sigma -> (g, ratio) of a single Gaussian (_denoiser_gaussian)

    @classmethod
    def from_diagonal(cls, weights, means, variances) -> GaussianMixture:
        """A mixture with diagonal covariances diag(variances[k]); never forms a d x d matrix (fast at large d)."""
        w = as_tensor(weights, "weights", ndim=1)
        mu = as_tensor(means, "means", ndim=2)
        var = as_tensor(variances, "variances", ndim=2)
        if var.shape != mu.shape:
            raise ValueError(f"variances: expected shape {tuple(mu.shape)}, got {tuple(var.shape)}")
        if (var <= 0).any():
            raise ValueError(f"variances: must be positive, got min {var.min().item():.3g}")
        one = torch.ones(1, 1, 1, dtype=DTYPE)
        obj = GaussianMixture.__new__(GaussianMixture)
        GaussianMixture.__init__(obj, w, mu[:, :1], one.expand(mu.shape[0], 1, 1))  # validates weights
        obj.means, obj.eigvals, obj.eigvecs, obj._cov = mu, var.clone(), None, None
        obj._set_ranges()
        return obj

    @property
    def covariances(self) -> torch.Tensor:
        """(K, d, d) covariance matrices (formed on demand for a diagonal mixture)."""
        return self._cov if self._cov is not None else torch.diag_embed(self.eigvals)

    @property
    def is_diagonal(self) -> bool:
        return self.eigvecs is None

    def _to_eig(self, v):
        """U_k^T v_k for v of shape (B, K, d) (batched matmul: einsum's overhead dominated small calls)."""
        return v if self.eigvecs is None else torch.bmm(v.transpose(0, 1), self.eigvecs).transpose(0, 1)

    def _from_eig(self, v):
        """U_k v_k for v of shape (B, K, d)."""
        return v if self.eigvecs is None else torch.bmm(v.transpose(0, 1), self.eigvecs.transpose(1, 2)).transpose(0, 1)

    @staticmethod
    def _mix(w, v):
        """sum_k w[b, k] v[b, k, :] for w (B, K), v (B, K, d)."""
        return torch.bmm(w.unsqueeze(1), v).squeeze(1)

    def _weights_of(self, z, g):
        """Posterior component weights (B, K); identically 1 for a single Gaussian (no log-density needed)."""
        if self.K == 1:
            return torch.ones(z.shape[0], 1, dtype=z.dtype)
        return torch.softmax(self._log_components(z, g), dim=-1)

    # ------------------------------------------------------------------ shape helpers
    @property
    def K(self) -> int:
        return self.means.shape[0]

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.K}, d={self.d})"

    def _prep(self, x, sigma, big: float = _BIG):
        """(x, s, z, g); g is None for extreme arguments, which take the scaled form (`_scaled`)."""
        x = check_points(x, self.d)
        s = check_sigma(sigma, batch=x.shape[0])
        smax = float(s.detach()) if s.ndim == 0 else float(s.detach().max())
        diff = x[:, None, :] - self.means[None]  # (B, K, d)
        z = self._to_eig(diff)  # U_k^T (x - mu_k)
        if smax > big or float(x.detach().abs().max()) + self._mu_max > self._safe_dist:
            return x, s, z, None
        var = (s**2).reshape(-1, 1, 1) if s.ndim else (s**2)
        g = self.eigvals[None] + var  # (B, K, d) or (1, K, d)
        return x, s, z, g

    def _fast_args(self, x, sigma):
        """(x, float sigma) for the common call (CPU float64 (B, d) x without autograd, a real sigma, not extreme),
        checked by one aminmax (NaN/inf propagate), else None: the full checks decide (same errors, same path)."""
        if not (type(x) is torch.Tensor and x.dtype == DTYPE and x.ndim == 2 and x.shape[1] == self.d
                and x.shape[0] > 0 and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())):
            return None
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):  # (numpy bools are not Real)
            return None
        s, (lo, hi) = float(sigma), map(float, torch.aminmax(x.detach()))
        ok = 0.0 <= s <= _BIG and math.isfinite(lo) and math.isfinite(hi)
        return (x, s) if ok and max(-lo, hi) + self._mu_max <= self._safe_dist else None

    def _denoiser_gaussian(self, x, s):
        """K = 1: D = mu + U diag(l/(l + s^2)) U^T (x - mu), in the eigenbasis: one product in, a diagonal scale,
        one product out (no weights, no (B, K, d) temporaries). s: a float or a () or (B,) tensor."""
        lam, mu = self.eigvals[0], self.means[0]
        scalar = isinstance(s, float) or s.ndim == 0
        var = s * s if isinstance(s, float) else (s**2 if scalar else (s**2)[:, None])
        if isinstance(s, float):  # (g, ratio) cached per noise level: the same operations, the same values
            if s not in self._gauss_cache:
                if len(self._gauss_cache) >= 1024:  # (a solver run visits each grid level; meters rerun it)
                    self._gauss_cache.clear()
                self._gauss_cache[s] = (lam + var, lam / (lam + var))
            g, ratio = self._gauss_cache[s]
        else:  # a tensor sigma (a forward-mode dual keeps its tangent)
            g, ratio = lam + var, lam / (lam + var)
        if self.eigvecs is None and scalar:  # sigma^2/g mu + s/g x (a float var / g rounds as var * (1/g))
            return torch.addcmul(torch.as_tensor(var, dtype=DTYPE) / g * mu, ratio, x)
        if self.eigvecs is None:
            return torch.addcmul(mu, ratio, x - mu)
        U = self.eigvecs[0]
        return torch.addmm(mu, ratio * ((x - mu) @ U), U.T)

    def _denoiser_blocked(self, x, s):
        """The closed-form denoiser over blocks of about _BLOCK (row, component, coordinate) entries (K > 1).

        The same terms as the unblocked form (logits from z_k = U_k^T (x - mu_k), m_k = mu_k + U_k (s_k/g_k z_k)),
        summed as D = sum_k w_k mu_k + sum_k U_k (w_k s_k/g_k z_k): the (B, K, d) temporaries (25-200 MB at
        d = 3072) stay in cache, and the last sum over k and U_k is one (rows, K d) x (K d, d) product.
        s: a float (one noise level) or a () or (B,) tensor."""
        B, K, d = x.shape[0], self.K, self.d
        scalar = isinstance(s, float) or s.ndim == 0
        var = s * s if isinstance(s, float) else s**2
        rows = max(1, _BLOCK // (K * d))
        full = self.eigvecs is not None
        stacked = self.eigvecs.transpose(1, 2).reshape(K * d, d) if full else None  # rows (k, i): column i of U_k
        if scalar:
            g_all = self.eigvals + var  # (K, d)
            ratio_all = self.eigvals / g_all
            head_all = self._log_w - 0.5 * torch.log(g_all).sum(-1)  # (K,)
        out = torch.empty(B, d, dtype=x.dtype)
        for r0 in range(0, B, rows):
            xb = x[r0 : r0 + rows]
            n = xb.shape[0]
            diff = xb[None] - self.means[:, None, :]  # (K, n, d)
            z = torch.bmm(diff, self.eigvecs) if full else diff  # U_k^T (x - mu_k)
            if scalar:
                g, ratio, head = g_all[:, None, :], ratio_all[:, None, :], head_all[:, None]
            else:
                g = self.eigvals[:, None, :] + var[r0 : r0 + rows, None]  # (K, n, d)
                ratio = self.eigvals[:, None, :] / g
                head = self._log_w[:, None] - 0.5 * torch.log(g).sum(-1)  # (K, n)
            logits = head - 0.5 * (z**2 / g).sum(-1) - 0.5 * d * math.log(2 * math.pi)  # (K, n)
            w = torch.softmax(logits.T, dim=-1)  # (n, K)
            v = (ratio * z).mul_(w.T[:, :, None])  # w_k s_k/g_k z_k, (K, n, d)
            shrunk = v.transpose(0, 1).reshape(n, K * d) @ stacked if full else v.sum(0)
            out[r0 : r0 + rows] = torch.addmm(shrunk, w, self.means)
        return out

    @staticmethod
    def _outer_mean(w, v):
        """sum_k w[b, k] v[b, k] v[b, k]^T, as products of sqrt(w) v (a zero weight never meets an overflow)."""
        u = torch.sqrt(w)[..., None] * v
        return torch.einsum("bki,bkj->bij", u, u)

    def _within(self, w, ratio):
        """sum_k w_k U_k diag(ratio_k) U_k^T, (B, d, d)."""
        if self.eigvecs is None:
            return torch.diag_embed(torch.einsum("bk,bkj->bj", w, ratio))
        return torch.einsum("bk,kij,bkj,klj->bil", w, self.eigvecs, ratio, self.eigvecs)

    def _log_components(self, z, g):
        d = self.d
        return (
            self._log_w[None]
            - 0.5 * torch.log(g).sum(-1)
            - 0.5 * (z**2 / g).sum(-1)
            - 0.5 * d * math.log(2 * math.pi)
        )

    # ------------------------------------------------------------------ closed forms
    def log_prob(self, x, sigma=0.0) -> torch.Tensor:
        """log p_sigma(x), shape (B,)."""
        _, s, z, g = self._prep(x, sigma)
        if g is None:
            _, _, _, logits, nstar, top = self._scaled(s, z)
            out = torch.logsumexp(logits, dim=-1) - self.d * torch.log(top) - 0.5 * nstar**2
            out = out - 0.5 * self.d * math.log(2 * math.pi)
            if not torch.isfinite(out).all():
                raise ValueError("x: log p_sigma(x) is below the float64 range (-1.8e308) at this x")
            return out
        return torch.logsumexp(self._log_components(z, g), dim=-1)

    def responsibilities(self, x, sigma=0.0) -> torch.Tensor:
        """Posterior component probabilities w_k(x), shape (B, K)."""
        _, s, z, g = self._prep(x, sigma)
        if g is None:
            return torch.softmax(self._scaled(s, z)[3], dim=-1)
        return torch.softmax(self._log_components(z, g), dim=-1)

    def score(self, x, sigma=0.0) -> torch.Tensor:
        """grad_x log p_sigma(x), shape (B, d)."""
        _, s, z, g = self._prep(x, sigma)
        if g is None:
            _, t, r, logits, _, _ = self._scaled(s, z)
            c = -self._from_eig(r / t)
            if not torch.isfinite(c).all():
                raise ValueError("x: the score overflows float64 at this (x, sigma)")
            return self._mix(self._scaled_weights(logits), c)
        w = self._weights_of(z, g)
        return self._mix(w, -self._from_eig(z / g))

    def denoiser(self, x, sigma) -> torch.Tensor:
        """D(x, sigma) = E[x0 | x0 + sigma n = x], shape (B, d)."""
        fast = self._fast_args(x, sigma)
        if fast is None:
            xs = check_points(x, self.d)
            s = check_sigma(sigma, batch=xs.shape[0])
            if not (torch.is_grad_enabled() and (xs.requires_grad or s.requires_grad)) and not self._extreme(xs, s):
                fast = xs, s
        if fast is not None:
            return self._denoiser_gaussian(*fast) if self.K == 1 else self._denoiser_blocked(*fast)
        return self._denoiser_closed(x, sigma)

    def _denoiser_closed(self, x, sigma) -> torch.Tensor:
        """The unblocked closed form (autograd through x or sigma) and the scaled form (extreme arguments)."""
        _, s, z, g = self._prep(x, sigma)
        if g is None:
            _, t, r, logits, _, _ = self._scaled(s, z)
            return self._mix(self._scaled_weights(logits), self._scaled_means(t, r))
        w = self._weights_of(z, g)
        shrunk = self._from_eig(self.eigvals[None] / g * z)
        return self._mix(w, (self.means[None] + shrunk).expand(z.shape[0], -1, -1))

    def eps(self, x, sigma) -> torch.Tensor:
        """Noise prediction (x - D)/sigma = -sigma * score, shape (B, d)."""
        _, s, z, g = self._prep(x, sigma)
        if g is None:
            sv, t, r, logits, _, _ = self._scaled(s, z)
            return self._mix(self._scaled_weights(logits), -self._scaled_eps(sv, t, r))
        w = self._weights_of(z, g)
        s = s.reshape(-1, 1) if s.ndim else s
        return -s * self._mix(w, -self._from_eig(z / g))

    def _jacobian(self, s, z, g):
        w = self._weights_of(z, g)
        c = -self._from_eig(z / g)  # component scores (B, K, d)
        ratio = self.eigvals[None] / g  # (B, K, d)
        within = self._within(w, ratio)
        dev = c - self._mix(w, c)[:, None, :]
        var = (s**2).reshape(-1, 1, 1) if s.ndim else s**2
        between = torch.einsum("bk,bki,bkj->bij", w, dev, dev)
        return within + var * between

    def denoiser_jacobian(self, x, sigma) -> torch.Tensor:
        """dD/dx = Cov[x0 | x]/sigma^2 (second-order Tweedie), shape (B, d, d)."""
        _, s, z, g = self._prep(x, sigma, _BIG_JAC)
        if g is None:  # sum_k w_k U_k diag(s_k/t_k^2) U_k^T + cov_w(sigma c_k)
            sv, t, r, logits, _, _ = self._scaled(s, z)
            w = self._scaled_weights(logits)
            e = self._scaled_eps(sv, t, r)
            return self._within(w, self.eigvals[None] / t / t) + self._outer_mean(w, e - self._mix(w, e)[:, None, :])
        return self._jacobian(s, z, g)

    def posterior_covariance(self, x, sigma) -> torch.Tensor:
        """Cov[x0 | x] = sigma^2 dD/dx, shape (B, d, d)."""
        _, s, z, g = self._prep(x, sigma, _BIG_JAC)
        if g is None:  # sum_k w_k U_k diag(s_k sigma^2/t_k^2) U_k^T + cov_w(m_k)
            sv, t, r, logits, _, _ = self._scaled(s, z)
            w = self._scaled_weights(logits)
            m = self._scaled_means(t, r)
            within = self._within(w, self.eigvals[None] * (sv / t) ** 2)
            return within + self._outer_mean(w, m - self._mix(w, m)[:, None, :])
        var = (s**2).reshape(-1, 1, 1) if s.ndim else s**2
        return var * self._jacobian(s, z, g)

    def marginal(self, sigma) -> GaussianMixture:
        """The law of x0 + sigma n: the same mixture with covariances S_k + sigma^2 I."""
        s = float(check_sigma(sigma, scalar=True))
        if not math.isfinite(s * s + float(self.eigvals.max())):
            raise ValueError(f"sigma: the marginal's covariances S + sigma^2 I overflow float64 (got sigma = {s:.3g};"
                             f" supported: sigma^2 + max eigenvalue below 1.8e308)")
        if self.is_diagonal:
            return GaussianMixture.from_diagonal(self.weights, self.means, self.eigvals + s**2)
        eye = torch.eye(self.d, dtype=DTYPE)
        return type(self)._from_parts(self.weights, self.means, self.covariances + s**2 * eye)

    @classmethod
    def _from_parts(cls, weights, means, covariances):
        return GaussianMixture(weights, means, covariances)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x0], Cov[x0]) with Cov = sum_k pi_k (S_k + (mu_k - m)(mu_k - m)^T), shapes (d,), (d, d)."""
        m = self.weights @ self.means
        dev = self.means - m
        cov = torch.einsum("k,kij->ij", self.weights, self.covariances)  # forms d x d: moments are for small d
        return m, cov + torch.einsum("k,ki,kj->ij", self.weights, dev, dev)

    def sample(self, n: int, sigma=0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact draws of x0 + sigma n_noise, shape (n, d)."""
        n = check_int(n, "n", high=max(1, _MAX_DRAWS // self.d))
        s = float(check_sigma(sigma, scalar=True))
        check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        xi = torch.randn(n, self.d, dtype=DTYPE, generator=generator)
        if s > _BIG:
            scale = torch.hypot(torch.sqrt(self.eigvals[k]), torch.tensor(s, dtype=DTYPE))
        else:
            scale = torch.sqrt(self.eigvals[k] + s**2)  # (n, d)
        if self.eigvecs is None:
            out = self.means[k] + scale * xi
        else:
            out = self.means[k] + torch.einsum("nij,nj->ni", self.eigvecs[k], scale * xi)
        if s > _BIG and not torch.isfinite(out).all():
            raise ValueError(f"sigma: draws at sigma = {s:.3g} overflow float64")
        return out

class Gaussian(GaussianMixture):
    """A single Gaussian N(mean, covariance): a GaussianMixture with K = 1."""

    def __init__(self, mean, covariance):
        mean = as_tensor(mean, "mean", ndim=1)
        covariance = as_tensor(covariance, "covariance", ndim=2)
        if covariance.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"covariance: expected shape {(mean.shape[0], mean.shape[0])}, got {tuple(covariance.shape)}"
            )
        try:
            super().__init__(torch.ones(1, dtype=DTYPE), mean[None], covariance[None])
        except ValueError as exc:
            raise ValueError(str(exc).replace("covariances:", "covariance:", 1)) from None

    @classmethod
    def _from_parts(cls, weights, means, covariances):
        return Gaussian(means[0], covariances[0])

    @property
    def mean(self) -> torch.Tensor:
        return self.means[0]

    @property
    def covariance(self) -> torch.Tensor:
        return self.covariances[0]
