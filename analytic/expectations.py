"""Closed-form expectations of test functions under a Gaussian-mixture law: the exact side of a weak-error check.

A stochastic sampler's weak error for a test function f is |mean_i f(x_i) - E_{p_sigma}[f]|; each function below
gives E[f] exactly (float64) for p = sum_k pi_k N(mu_k, S_k) and, with `sigma=s`, for its noisy law p_s (covariances
S_k + s^2 I, the same as passing law.marginal(s)). Feature maps give per-sample values whose means estimate the
exact targets entry by entry, and `standard_error` gives the Monte Carlo floor std/sqrt(n) of such a mean.

Raw moments (per component, then mixed by pi_k; v_k = diag S_k, the coordinate variances; standard Gaussian moments):
    E[x] = sum pi_k mu_k,   E[x x^T] = sum pi_k (S_k + mu_k mu_k^T),
    E[x_i^3] = sum pi_k (m^3 + 3 m v),   E[x_i^4] = sum pi_k (m^4 + 6 m^2 v + 3 v^2)   (m = mu_ki, v = v_ki)
Characteristic function (the Gaussian cf, mixed):
    phi(w) = E[exp(i w.x)] = sum_k pi_k exp(i w.mu_k - w^T S_k w / 2);  features cos(w.x), sin(w.x) -> Re, Im
Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 l^2)) = (2 pi l^2)^{d/2} N(x - y; 0, l^2 I), so the Gaussian
convolution identity int N(x; a, A) N(x; b, B) dx = N(a - b; 0, A + B) gives, with C(S, u) =
(l^2)^{d/2} det(S + l^2 I)^{-1/2} exp(-u^T (S + l^2 I)^{-1} u / 2):
    embedding   E_{x~p} k(x, y)          = sum_k pi_k C(S_k, y - mu_k)
    self term   E_{x,x' iid p} k(x, x')  = sum_{k,l} pi_k pi_l C(S_k + S_l, mu_k - mu_l)
    cross term  E_{x~p, y~q} k(x, y)     = sum_{k,l} p_k q_l C(S^p_k + S^q_l, mu^p_k - mu^q_l)
MMD^2 (Gretton, Borgwardt, Rasch, Schoelkopf & Smola, "A kernel two-sample test", JMLR 13, 2012, Lemma 6), with the
population side exact:
    mmd2(x, p)   = self - (2/n) sum_i embed(x_i) + 1/(n(n-1)) sum_{i != j} k(x_i, x_j)    (unbiased U-statistic)
                   (the V-statistic, unbiased=False, sums over all i, j and divides by n^2; it is >= 0)
    mmd2_laws(p, q) = self(p) + self(q) - 2 cross(p, q)                                  (exact)
C is evaluated in logs (Cholesky factor of S + l^2 I for the determinant and the quadratic form; the eigenvalues for
diagonal mixtures, which never form d x d matrices) and mixed with logsumexp.

Inputs are float64 torch tensors or array-likes; bad input raises ValueError whose message starts with the argument's
name. This module never imports sdm_verify.
"""

from __future__ import annotations

import math
import random

import torch

from ._checks import DTYPE, as_tensor, check_bool, check_float, check_int, check_points, check_sigma
from .gmm import GaussianMixture

__all__ = [
    "raw_moments",
    "moment_features",
    "moment_targets",
    "moment_names",
    "characteristic_function",
    "fixed_frequencies",
    "cf_features",
    "cf_targets",
    "kernel_mean_embedding",
    "kernel_self_term",
    "kernel_cross_term",
    "mmd2",
    "mmd2_laws",
    "standard_error",
]

#: Gram-matrix entries per block in `mmd2` (2^22 float64 = 32 MiB): memory stays bounded at any n
_GRAM_BLOCK = 1 << 22


# ---------------------------------------------------------------- input checks
def _law(law, sigma, name: str = "law") -> GaussianMixture:
    """The law p_sigma: `law` itself at sigma = 0, else law.marginal(sigma)."""
    if not isinstance(law, GaussianMixture):
        raise ValueError(f"{name}: expected an analytic.GaussianMixture, got {type(law).__name__}")
    s = float(check_sigma(sigma, scalar=True))
    return law.marginal(s) if s > 0 else law


def _samples(x, name: str = "x", d: int | None = None, min_n: int = 1) -> torch.Tensor:
    """(n, d) finite float64 points with n >= min_n (d checked when given)."""
    t = as_tensor(x, name, ndim=2)
    if d is not None and t.shape[1] != d:
        raise ValueError(f"{name}: expected shape (n, {d}), got {tuple(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one coordinate, got shape {tuple(t.shape)}")
    if t.shape[0] < min_n:
        raise ValueError(f"{name}: expected at least {min_n} points, got shape {tuple(t.shape)}")
    return t


def _freqs(freqs, d: int | None = None) -> torch.Tensor:
    return _samples(freqs, "freqs", d)


def _ell(ell) -> float:
    v = check_float(ell, "ell", positive=True)
    if not math.isfinite(v * v) or v * v == 0:
        raise ValueError(f"ell: ell^2 must be a positive finite float64 (got ell = {v:.3g})")
    return v


def _variances(law: GaussianMixture) -> torch.Tensor:
    """(K, d) coordinate variances diag S_k."""
    return law.eigvals if law.is_diagonal else torch.diagonal(law.covariances, dim1=-2, dim2=-1)


# ---------------------------------------------------------------- raw moments
def raw_moments(law, sigma=0.0) -> dict[int, torch.Tensor]:
    """{1: E[x] (d,), 2: E[x x^T] (d, d), 3: E[x_i^3] (d,), 4: E[x_i^4] (d,)} under p_sigma, exact."""
    p = _law(law, sigma)
    w, m, v = p.weights, p.means, _variances(p)
    second = torch.einsum("k,kij->ij", w, p.covariances) + torch.einsum("k,ki,kj->ij", w, m, m)
    return {
        1: w @ m,
        2: second,
        3: w @ (m**3 + 3 * m * v),
        4: w @ (m**4 + 6 * m**2 * v + 3 * v**2),
    }


def moment_features(x) -> torch.Tensor:
    """Per-sample features (n, F), F = d + d(d+1)/2 + 2d: [x, x_i x_j (i <= j, row-major), x^3, x^4].

    Their column means estimate `moment_targets` entry by entry."""
    x = _samples(x)
    i, j = torch.triu_indices(x.shape[1], x.shape[1])
    return torch.cat([x, x[:, i] * x[:, j], x**3, x**4], dim=1)


def moment_targets(law, sigma=0.0) -> torch.Tensor:
    """The exact values (F,) of `moment_features`' means under p_sigma (the same order)."""
    mom = raw_moments(law, sigma)
    d = mom[1].shape[0]
    i, j = torch.triu_indices(d, d)
    return torch.cat([mom[1], mom[2][i, j], mom[3], mom[4]])


def moment_names(d: int) -> list[str]:
    """Labels of the F features of `moment_features` in dimension d (x0, x0*x1, x0^3, ...)."""
    d = check_int(d, "d")
    i, j = torch.triu_indices(d, d).tolist()
    return ([f"x{a}" for a in range(d)] + [f"x{a}*x{b}" for a, b in zip(i, j, strict=True)]
            + [f"x{a}^3" for a in range(d)] + [f"x{a}^4" for a in range(d)])


# ---------------------------------------------------------------- characteristic function
def _cf_parts(law, freqs, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    p = _law(law, sigma)
    w = _freqs(freqs, p.d)
    phase = w @ p.means.T  # (m, K)
    if p.is_diagonal:
        quad = (w**2) @ p.eigvals.T
    else:
        quad = torch.einsum("mi,kij,mj->mk", w, p.covariances, w)
    amp = p.weights * torch.exp(-0.5 * quad)  # (m, K)
    return (amp * torch.cos(phase)).sum(-1), (amp * torch.sin(phase)).sum(-1)


def characteristic_function(law, freqs, sigma=0.0) -> torch.Tensor:
    """phi(w) = E[exp(i w.x)] under p_sigma for the rows w of freqs (m, d); complex128, shape (m,)."""
    re, im = _cf_parts(law, freqs, sigma)
    return torch.complex(re, im)


def cf_targets(law, freqs, sigma=0.0) -> torch.Tensor:
    """[Re phi(w_1..m), Im phi(w_1..m)], shape (2m,): the exact means of `cf_features`."""
    return torch.cat(_cf_parts(law, freqs, sigma))


def cf_features(x, freqs) -> torch.Tensor:
    """Per-sample features (n, 2m): [cos(w_1..m . x), sin(w_1..m . x)], whose means estimate `cf_targets`."""
    x = _samples(x)
    w = _freqs(freqs, x.shape[1])
    phase = x @ w.T
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def fixed_frequencies(d: int, m: int = 8, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """A deterministic set of m frequency vectors in R^d, shape (m, d).

    w_j = scale * g_j / sqrt(d) with g_j ~ N(0, I_d) (random Fourier directions, |w_j| ~ scale in every dimension).
    The normals come from Box-Muller on Python's random.Random(seed).random(), a stream Python keeps identical across
    versions, so the set is the same on every platform and every torch/numpy version. Pick scale ~ 1 / (the law's
    length scale): the phases w.x are then O(1), where the cf depends on the law's shape and is not ~1 or ~0."""
    d = check_int(d, "d")
    m = check_int(m, "m")
    seed = check_int(seed, "seed", low=0)
    scale = check_float(scale, "scale", positive=True)
    rng = random.Random(seed)
    vals = []
    for _ in range(m * d):
        u1, u2 = 1.0 - rng.random(), rng.random()  # u1 in (0, 1]: the log is finite
        vals.append(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
    return torch.tensor(vals, dtype=DTYPE).reshape(m, d) * (scale / math.sqrt(d))


# ---------------------------------------------------------------- Gaussian-kernel terms
def _log_c(diff: torch.Tensor, cov: torch.Tensor, ell: float, name: str) -> torch.Tensor:
    """log C(S_p, u) for diff u (P, n, d) and cov S_p (P, d) variances (diagonal) or (P, d, d); shape (P, n)."""
    ell2 = ell * ell
    if cov.ndim == 2:
        a = cov[:, None, :] + ell2  # (P, 1, d)
        quad = ((diff / torch.sqrt(a)) ** 2).sum(-1)
        half_logdet = 0.5 * torch.log(a / ell2).sum(-1)  # log det((S + l^2 I) / l^2)^{1/2}, (P, 1)
    else:
        eye = torch.eye(cov.shape[-1], dtype=DTYPE)
        L, info = torch.linalg.cholesky_ex(cov + ell2 * eye)
        if (info != 0).any():
            raise ValueError(f"{name}: S + ell^2 I is not numerically positive definite (ell = {ell:.3g})")
        z = torch.linalg.solve_triangular(L, diff.transpose(1, 2), upper=False)  # (P, d, n)
        quad = (z**2).sum(1)
        half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1) / ell).sum(-1, keepdim=True)
    return -half_logdet - 0.5 * quad


def kernel_mean_embedding(law, y, ell, sigma=0.0) -> torch.Tensor:
    """E_{x ~ p_sigma} k(x, y) for the rows of y (n, d), k(x, y) = exp(-|x - y|^2 / (2 ell^2)); shape (n,)."""
    p = _law(law, sigma)
    y = check_points(y, p.d, "y")
    ell = _ell(ell)
    cov = p.eigvals if p.is_diagonal else p.covariances
    diff = y[None] - p.means[:, None, :]  # (K, n, d)
    logs = torch.log(p.weights)[:, None] + _log_c(diff, cov, ell, "law")
    return torch.exp(torch.logsumexp(logs, dim=0))


def _cross(p: GaussianMixture, q: GaussianMixture, ell: float) -> float:
    """E_{x ~ p, y ~ q} k(x, y) in closed form (both laws already at their noise level)."""
    if p.d != q.d:
        raise ValueError(f"q: expected a law in dimension {p.d} (that of p), got dimension {q.d}")
    diff = (p.means[:, None, :] - q.means[None, :, :]).reshape(-1, 1, p.d)  # (Kp Kq, 1, d)
    if p.is_diagonal and q.is_diagonal:
        cov = (p.eigvals[:, None, :] + q.eigvals[None, :, :]).reshape(-1, p.d)
    else:
        cov = (p.covariances[:, None] + q.covariances[None, :]).reshape(-1, p.d, p.d)
    logw = (torch.log(p.weights)[:, None] + torch.log(q.weights)[None, :]).reshape(-1)
    return float(torch.exp(torch.logsumexp(logw + _log_c(diff, cov, ell, "law")[:, 0], dim=0)))


def kernel_self_term(law, ell, sigma=0.0) -> float:
    """E_{x, x' iid p_sigma} k(x, x'), in (0, 1]."""
    p = _law(law, sigma)
    return _cross(p, p, _ell(ell))


def kernel_cross_term(p, q, ell, sigma=0.0) -> float:
    """E_{x ~ p_sigma, y ~ q_sigma} k(x, y) for independent x, y."""
    p, q = _law(p, sigma, "p"), _law(q, sigma, "q")
    return _cross(p, q, _ell(ell))


def mmd2_laws(p, q, ell, sigma=0.0) -> float:
    """The exact squared MMD between p_sigma and q_sigma: self(p) + self(q) - 2 cross(p, q) (>= 0 up to round-off)."""
    p, q = _law(p, sigma, "p"), _law(q, sigma, "q")
    ell = _ell(ell)
    return _cross(p, p, ell) + _cross(q, q, ell) - 2.0 * _cross(p, q, ell)


def _gram_sum(x: torch.Tensor, ell: float) -> float:
    """sum_{i, j} k(x_i, x_j) over all ordered pairs (diagonal included), in row blocks of bounded memory."""
    n = x.shape[0]
    rows = max(1, _GRAM_BLOCK // n)
    total = 0.0
    for r0 in range(0, n, rows):
        dist = torch.cdist(x[r0 : r0 + rows], x, compute_mode="donot_use_mm_for_euclid_dist")  # exact 0 on i = j
        total += float(torch.exp(-0.5 * (dist / ell) ** 2).sum())
    return total


def mmd2(x, law, ell, sigma=0.0, unbiased: bool = True) -> float:
    """Squared MMD between the sample x (n, d) and the exact law p_sigma (Gaussian kernel of bandwidth ell).

    unbiased=True: the U-statistic (n >= 2), whose expectation over x iid ~ q is exactly mmd2_laws(q, p_sigma) (so
    0 when q = p_sigma; single values may be negative). unbiased=False: the V-statistic (squared RKHS distance of the
    empirical embedding to p_sigma's), >= 0, biased upward by (1 - E k(x, x')) / n."""
    p = _law(law, sigma)
    unbiased = check_bool(unbiased, "unbiased")
    x = _samples(x, "x", p.d, min_n=2 if unbiased else 1)
    ell = _ell(ell)
    n = x.shape[0]
    self_term = _cross(p, p, ell)
    embed = float(kernel_mean_embedding(p, x, ell).mean())
    total = _gram_sum(x, ell)
    within = (total - n) / (n * (n - 1)) if unbiased else total / (n * n)  # k(x_i, x_i) = 1 exactly
    return self_term - 2.0 * embed + within


# ---------------------------------------------------------------- Monte Carlo floor
def standard_error(features) -> torch.Tensor:
    """The Monte Carlo standard error std / sqrt(n) (ddof = 1) of the column means of features (n,) or (n, F)."""
    f = as_tensor(features, "features")
    if f.ndim not in (1, 2):
        raise ValueError(f"features: expected shape (n,) or (n, F), got {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"features: expected at least 2 samples for a standard error, got shape {tuple(f.shape)}")
    return f.std(dim=0, correction=1) / math.sqrt(f.shape[0])
