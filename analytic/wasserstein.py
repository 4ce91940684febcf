"""Wasserstein-2 distances that measure a sampler's error exactly (theory.md §2-3).

    bures_w2, bures_w2_trace   two Gaussian laws: closed form (stable Procrustes form; textbook trace form)
    w2_1d, w2_1d_laws          1-D: the pushforward of a Gaussian-mixture law against a Gaussian-mixture law
    w2_1d_cloud                1-D: a weighted point cloud against a Gaussian-mixture law, in closed form
    sync_error                 the synchronous-coupling upper bound (E||x_num - x_ref||^2)^{1/2}
    pot_w2                     exact optimal transport between two point clouds (POT), optionally debiased
    sliced_w2, sliced_w2_gmm   sliced W2: a different, smaller metric (SW2 <= W2 / sqrt(d))

Inputs are float64 torch tensors or array-likes; scalars come back as Python floats. Bad input raises ValueError
whose message starts with the argument's name.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import ot
import torch

from ._checks import DTYPE, as_tensor, check_weights
from .gmm import GaussianMixture

__all__ = [
    "bures_w2",
    "bures_w2_trace",
    "w2_1d",
    "w2_1d_laws",
    "w2_1d_cloud",
    "sync_error",
    "pot_w2",
    "sliced_w2",
    "sliced_w2_gmm",
]

_EPS = float(torch.finfo(DTYPE).eps)
_SYM_RTOL = 1e-10  # symmetry and PSD tolerance, relative to the largest entry / eigenvalue (rounding level)


# ---------------------------------------------------------------------------------------------- validation
def _vector(m, name: str) -> torch.Tensor:
    return as_tensor(m, name, ndim=1)


def _psd_eigh(S, name: str, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a symmetric PSD (singular allowed) (d, d) matrix; return eigh of its symmetric part."""
    S = as_tensor(S, name, ndim=2)
    if S.shape != (d, d):
        raise ValueError(f"{name}: expected shape {(d, d)}, got {tuple(S.shape)}")
    scale = max(float(S.abs().max()), np.finfo(np.float64).tiny)
    asym = float((S - S.T).abs().max())
    if asym > _SYM_RTOL * scale:
        raise ValueError(f"{name}: not symmetric (max |S - S^T| = {asym:.3g})")
    w, V = torch.linalg.eigh(0.5 * (S + S.T))
    if float(w.min()) < -_SYM_RTOL * max(float(w.abs().max()), np.finfo(np.float64).tiny):
        raise ValueError(f"{name}: not positive semidefinite (smallest eigenvalue {float(w.min()):.3g})")
    return w.clamp_min(0.0), V


def _weights(w, n: int, name: str) -> torch.Tensor:
    return check_weights(w, n, name)


def _cloud(X, name: str) -> torch.Tensor:
    """A (n, d) point cloud; a 1-D array is read as n points in d = 1."""
    X = as_tensor(X, name)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (n, d), got {tuple(X.shape)}")
    return X


def _law_1d(law, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, means, standard deviations), each (K,), of a 1-D Gaussian-mixture law."""
    try:
        w, mu, cov = law.weights, law.means, law.covariances
    except AttributeError:
        raise ValueError(f"{name}: expected a GaussianMixture (weights, means, covariances)") from None
    mu, cov = as_tensor(mu, name), as_tensor(cov, name)
    if mu.ndim != 2 or mu.shape[1] != 1:
        raise ValueError(f"{name}: must be a 1-D law (d = 1), got means of shape {tuple(mu.shape)}")
    return as_tensor(w, name), mu[:, 0], torch.sqrt(cov[:, 0, 0])


# ---------------------------------------------------------------------------------------------- Gaussians
def _sqrt_psd(w: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return (V * w.sqrt()) @ V.T


def _factor(A, name: str, d: int) -> torch.Tensor:
    A = as_tensor(A, name, ndim=2)
    if A.shape[0] != d:
        raise ValueError(f"{name}: expected {d} rows (S = A A^T is {d} x {d}), got shape {tuple(A.shape)}")
    return A


def bures_w2(m1, S1, m2, S2, factors=None) -> float:
    """W2 between N(m1, S1) and N(m2, S2), in the stable Procrustes form (Bhatia, Jain, Lim 2019, Thm. 1):

        W2^2 = ||m1 - m2||^2 + min_{U in O(r)} ||A1 - A2 U||_F^2,    S_i = A_i A_i^T,
        U* = P Q^T  from the SVD  A2^T A1 = P diag(s) Q^T.

    The residual A1 - A2 U* is formed elementwise and the objective is stationary in U, so the error is
    ~ eps ||A|| W2 (relative accuracy down to W2 ~ 1e-7 and below in float64), where the trace form floors at
    sqrt(eps tr S) (see `bures_w2_trace`). Default factors: symmetric PSD square roots from eigh (symmetrized,
    tiny negative eigenvalues clipped). `factors=(A1, A2)` skips forming S1, S2 (e.g. A1 = M C^{1/2} for an affine
    sampler x -> M x + c applied to N(m, C)); then pass S1 = S2 = None. A1 (d, r1) and A2 (d, r2) may have any
    number of columns (the narrower is padded with zeros, which leaves A A^T unchanged). Singular S is allowed.
    """
    m1, m2 = _vector(m1, "m1"), _vector(m2, "m2")
    d = m1.shape[0]
    if m2.shape[0] != d:
        raise ValueError(f"m2: expected shape {(d,)} (as m1), got {tuple(m2.shape)}")
    if factors is None:
        if S1 is None or S2 is None:
            raise ValueError("S1: covariances S1 and S2 are required unless factors=(A1, A2) is given")
        A1, A2 = _sqrt_psd(*_psd_eigh(S1, "S1", d)), _sqrt_psd(*_psd_eigh(S2, "S2", d))
    else:
        if S1 is not None or S2 is not None:
            raise ValueError("factors: give covariances (S1, S2) or factors (A1, A2), not both")
        if not isinstance(factors, (tuple, list)) or len(factors) != 2:
            raise ValueError("factors: expected a pair (A1, A2) with S_i = A_i A_i^T")
        A1, A2 = _factor(factors[0], "factors[0]", d), _factor(factors[1], "factors[1]", d)
        r = max(A1.shape[1], A2.shape[1])
        A1 = torch.nn.functional.pad(A1, (0, r - A1.shape[1]))
        A2 = torch.nn.functional.pad(A2, (0, r - A2.shape[1]))
    P, _, Qh = torch.linalg.svd(A2.T @ A1)
    residual = A1 - A2 @ (P @ Qh)
    return math.sqrt(float(((m1 - m2) ** 2).sum() + (residual**2).sum()))


def bures_w2_trace(m1, S1, m2, S2) -> float:
    """W2 between N(m1, S1) and N(m2, S2) by the textbook trace form (for comparison only):

        W2^2 = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S2^{1/2} S1 S2^{1/2})^{1/2}.

    It subtracts O(tr S) numbers, so it cannot resolve W2^2 below ~ eps tr S: its floor is W2 ~ sqrt(eps tr S)
    (~1e-8 in float64, ~1e-3 in float32; theory.md §2). Use `bures_w2` to measure convergence.
    """
    m1, m2 = _vector(m1, "m1"), _vector(m2, "m2")
    d = m1.shape[0]
    if m2.shape[0] != d:
        raise ValueError(f"m2: expected shape {(d,)} (as m1), got {tuple(m2.shape)}")
    w1, V1 = _psd_eigh(S1, "S1", d)
    w2, V2 = _psd_eigh(S2, "S2", d)
    R2 = _sqrt_psd(w2, V2)
    C = R2 @ ((V1 * w1) @ V1.T) @ R2
    fidelity = torch.linalg.eigvalsh(0.5 * (C + C.T)).clamp_min(0.0).sqrt().sum()
    w2sq = ((m1 - m2) ** 2).sum() + w1.sum() + w2.sum() - 2.0 * fidelity
    return math.sqrt(max(float(w2sq), 0.0))


# ---------------------------------------------------------------------------------------------- exact 1-D W2
def _ndtr(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, relatively accurate in the lower tail (erfc form)."""
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def _phi(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)


def _gh_nodes(law, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilists' Gauss-Hermite nodes and weights per component of a 1-D mixture: E f = sum_j w_j f(x_j)."""
    pi, mu, sd = _law_1d(law, "source")
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    z = torch.as_tensor(z, dtype=DTYPE)
    wz = torch.as_tensor(wz / math.sqrt(2.0 * math.pi), dtype=DTYPE)
    x = mu[:, None] + sd[:, None] * z[None, :]
    return x.reshape(-1), (pi[:, None] * wz[None, :]).reshape(-1)


def _optimal_map(source, target, x: torch.Tensor) -> torch.Tensor:
    """T(x) = Q_target(F_source(x)), through isf_target(sf_source(x)) above the source median (tail precision)."""
    F, S = source.cdf(x), source.sf(x)
    lower = F <= 0.5
    out = torch.empty_like(x)
    if lower.any():
        out[lower] = target.quantile(F[lower])
    if (~lower).any():
        out[~lower] = target.isf(S[~lower])
    return out


def _midpoint_quantiles(law, n: int) -> torch.Tensor:
    """Q((i + 1/2)/n), i = 0..n-1, sorted; upper half through isf((n - i - 1/2)/n) for tail precision."""
    i = torch.arange(n, dtype=DTYPE)
    lower = (i + 0.5) <= 0.5 * n
    out = torch.empty(n, dtype=DTYPE)
    out[lower] = law.quantile((i[lower] + 0.5) / n)
    out[~lower] = law.isf((n - i[~lower] - 0.5) / n)
    return out


def _call_push(push, x: torch.Tensor) -> torch.Tensor:
    y = as_tensor(push(x[:, None]), "push")
    if y.numel() != x.shape[0] or y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(f"push: must map a (B, 1) tensor to (B, 1), got {tuple(y.shape)} for B = {x.shape[0]}")
    return y.reshape(-1)


def _is_nondecreasing(x: torch.Tensor, y: torch.Tensor) -> bool:
    """y nondecreasing along sorted x, up to rounding (a swap of values within ~64 eps changes W2^2 by ~eps)."""
    ys = y[torch.argsort(x)]
    tol = 64 * _EPS * max(float(ys.abs().max()), np.finfo(np.float64).tiny)
    return bool((torch.diff(ys) >= -tol).all())


_Z_MAX = 12.0  # each source component is integrated over |z| <= 12; its tails beyond hold 2 Phi(-12) = 3.6e-33
_GL_X, _GL_W = (torch.as_tensor(v, dtype=DTYPE) for v in np.polynomial.legendre.leggauss(10))
_PANELS = 24  # initial panels per component (width 1 in z)
_MAX_SPLITS = 4096  # panels split in one round at most (a bound on one push call: 40 nodes per split)
_METHODS = ("auto", "adaptive", "gauss-hermite", "rearrangement")


def _adaptive_sync(push, source, target, rtol: float, atol: float, max_rounds: int):
    """E_source[(push(x) - T(x))^2], or None if push is not nondecreasing on the nodes.

    Per source component, x = mu_k + sd_k z and E_k f = int phi(z) f(x) dz over |z| <= _Z_MAX, by composite
    10-point Gauss-Legendre panels. A panel's error estimate is |(left half + right half) - whole|; it is accepted
    when that is below tol * (its share of the total z-width), tol = max(rtol * estimate, atol), or below the
    rounding level of its integrand (2 |push - T| * 64 eps (|push| + |T|) integrated: a converged solver's
    W2 ~ 1e-8 cannot be resolved to rtol, and its panels must not split forever); otherwise its halves become
    panels. Refinement stops when all error estimates sum to <= tol. One push call per round.
    """
    pi, mu, sd = _law_1d(source, "source")
    K = pi.shape[0]
    xs, ys = [], []

    def integrals(comp, lo, hi):
        """(integral, rounding level) per panel."""
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        z = mid[:, None] + half[:, None] * _GL_X
        x = (mu[comp, None] + sd[comp, None] * z).reshape(-1)
        y = _call_push(push, x)
        xs.append(x)
        ys.append(y)
        T = _optimal_map(source, target, x)
        g = ((y - T) ** 2).reshape(z.shape)
        noise = (2 * (y - T).abs() * 64 * _EPS * (y.abs() + T.abs())).reshape(z.shape)
        w = half[:, None] * _GL_W * _phi(z) * pi[comp, None]
        return (w * g).sum(1), (w * noise).sum(1)

    edges = torch.linspace(-_Z_MAX, _Z_MAX, _PANELS + 1, dtype=DTYPE)
    comp = torch.arange(K).repeat_interleave(_PANELS)
    lo, hi = edges[:-1].repeat(K), edges[1:].repeat(K)
    coarse = None
    total, err_total = 0.0, 0.0
    for _ in range(max_rounds):
        mid = 0.5 * (lo + hi)
        if coarse is None:
            vals, noise = integrals(comp.repeat(3), torch.cat([lo, lo, mid]), torch.cat([hi, mid, hi]))
            (coarse, left, right), noise = vals.chunk(3), noise.chunk(3)[1] + noise.chunk(3)[2]
            if not _is_nondecreasing(torch.cat(xs), torch.cat(ys)):
                return None
        else:
            vals, noise = integrals(comp.repeat(2), torch.cat([lo, mid]), torch.cat([mid, hi]))
            (left, right), noise = vals.chunk(2), noise.chunk(2)[0] + noise.chunk(2)[1]
        fine = left + right
        err = (fine - coarse).abs()
        tol = max(rtol * abs(total + float(fine.sum())), atol)
        ok = (err <= tol * (hi - lo) / (2 * _Z_MAX * K)) | (err <= 2 * noise)
        if err_total + float(err.sum()) <= tol:  # done (also ends refinement around a near-jump of T)
            ok[:] = True
        total, err_total = total + float(fine[ok].sum()), err_total + float(err[ok].sum())
        keep = ~ok
        if not keep.any():
            break
        if int(keep.sum()) > _MAX_SPLITS:
            break
        comp, coarse = comp[keep].repeat(2), torch.cat([left[keep], right[keep]])
        lo, hi = torch.cat([lo[keep], mid[keep]]), torch.cat([mid[keep], hi[keep]])
    if keep.any():
        total, err_total = total + float(fine[keep].sum()), err_total + float(err[keep].sum())
        warnings.warn(
            f"w2_1d: adaptive quadrature stopped unconverged ({max_rounds} rounds or {_MAX_SPLITS} panels) with "
            f"error estimate {err_total:.3g} on W2^2 = {total:.3g}",
            RuntimeWarning,
            stacklevel=3,
        )
    if not _is_nondecreasing(torch.cat(xs), torch.cat(ys)):
        return None
    return total


def w2_1d(
    push: Callable[[torch.Tensor], torch.Tensor],
    source,
    target,
    nodes: int = 96,
    *,
    method: str = "auto",
    rtol: float = 1e-10,
    atol: float = 1e-28,
    max_rounds: int = 30,
    n_quantiles: int = 4096,
) -> float:
    """W2(push # source, target) for 1-D Gaussian-mixture laws source and target (theory.md §3, 1-D).

    push maps a (B, 1) float64 tensor to (B, 1). The optimal map of the source onto the target is
    T = Q_target o F_source, evaluated as isf_target(sf_source(x)) above the source median (tail precision).
    If push is nondecreasing, push # source has quantile function push o Q_source, so
        W2^2 = int_0^1 (push(Q_source(u)) - Q_target(u))^2 du = E_source[(push(x) - T(x))^2].
    method "adaptive": that expectation by adaptive composite Gauss-Legendre per source component (x = mu_k + sd_k z,
        |z| <= 12), error-controlled to max(rtol * W2^2, atol) (so W2 to ~rtol/2 relative, ~1e-14 absolute), or
        to the rounding level of push - T where that is larger (W2 relative ~1e-16 |x| / W2: 3e-8 at W2 = 1e-9).
    method "gauss-hermite": the same expectation with `nodes` probabilists' Gauss-Hermite nodes per component
        (hermegauss, weights / sqrt(2 pi)). Not error-controlled: T has complex singularities near the real axis
        where the target density is low (between modes), and convergence is slow there: 1% error at 96 nodes on
        a two-component example (tests/test_wasserstein.py). Kept for comparison.
    method "rearrangement" (any push, also non-monotone): push at the source's n = n_quantiles midpoint quantiles
        x_i = Q_source((i + 1/2)/n); the sorted equal-mass values y_(i) are the quantile function of push # source at
        u_i = (i + 1/2)/n (monotone rearrangement), and W2^2 ~= (1/n) sum_i (y_(i) - Q_target(u_i))^2 (midpoint
        rule; error O(1/n) in W2^2, mostly from the end cells where quantiles diverge: 1.3/n relative for
        Gaussians, 3e-4 relative in W2 at n = 4096 on a two-component example).
    method "auto" (default): adaptive if push is nondecreasing on every node (up to rounding), else rearrangement.
    Not used: W2 between a weighted quadrature cloud {push(x_j), w_j} and the target. That measures the cloud, not
    push # source: the 96-node Gauss-Hermite cloud of N(0, 1) is itself at W2 = 0.093 from N(0, 1).
    """
    if not callable(push):
        raise ValueError(f"push: must be callable, got {type(push).__name__}")
    if not isinstance(nodes, int) or nodes < 2 or nodes > 150:
        raise ValueError(f"nodes: must be an int in [2, 150] (hermegauss overflows beyond), got {nodes!r}")
    if method not in _METHODS:
        raise ValueError(f"method: must be one of {_METHODS}, got {method!r}")
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(f"rtol: rtol and atol must be >= 0, not both 0 (got {rtol!r}, {atol!r})")
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds: must be a positive int, got {max_rounds!r}")
    if not isinstance(n_quantiles, int) or n_quantiles < 2:
        raise ValueError(f"n_quantiles: must be an int >= 2, got {n_quantiles!r}")
    _law_1d(source, "source")
    _law_1d(target, "target")
    if method == "gauss-hermite":
        x, w = _gh_nodes(source, nodes)
        y = _call_push(push, x)
        return math.sqrt(float((w * (y - _optimal_map(source, target, x)) ** 2).sum()))
    if method in ("auto", "adaptive"):
        w2sq = _adaptive_sync(push, source, target, rtol, atol, max_rounds)
        if w2sq is not None or method == "adaptive":
            if w2sq is None:
                raise ValueError("push: is not nondecreasing on the quadrature nodes; use method='rearrangement'")
            return math.sqrt(w2sq)
    y = torch.sort(_call_push(push, _midpoint_quantiles(source, n_quantiles))).values
    return math.sqrt(float(((y - _midpoint_quantiles(target, n_quantiles)) ** 2).mean()))


def w2_1d_laws(source, target, nodes: int = 96, **kwargs) -> float:
    """W2(source, target) for 1-D Gaussian-mixture laws: `w2_1d` with push = identity (keywords passed on)."""
    return w2_1d(lambda x: x, source, target, nodes, **kwargs)


def _sq_moment_std(alpha: torch.Tensor, beta: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """int_alpha^beta (delta - t)^2 phi(t) dt for the standard normal density phi (alpha, beta may be -inf, inf):
    (delta^2 + 1) P - 2 delta (phi(alpha) - phi(beta)) + alpha phi(alpha) - beta phi(beta),  P = Phi(beta) - Phi(alpha).
    """
    P = torch.where(alpha > 0, _ndtr(-alpha) - _ndtr(-beta), _ndtr(beta) - _ndtr(alpha))
    pa, pb = _phi(alpha), _phi(beta)
    apa = torch.where(torch.isfinite(alpha), alpha * pa, torch.zeros_like(pa))
    bpb = torch.where(torch.isfinite(beta), beta * pb, torch.zeros_like(pb))
    return ((delta**2 + 1.0) * P - 2.0 * delta * (pa - pb) + apa - bpb).clamp_min(0.0)


def w2_1d_cloud(y, law, weights=None) -> float:
    """Exact W2 between the weighted 1-D point cloud sum_i w_i delta_{y_i} and a 1-D Gaussian-mixture law.

    With y sorted and cumulative weights c_i, the cloud's quantile function is y_i on (c_{i-1}, c_i]; in x = Q(u),
        W2^2 = sum_i int_{b_{i-1}}^{b_i} (y_i - x)^2 p(x) dx,    b_i = Q_law(c_i), b_0 = -inf, b_n = inf,
    and each piece is a truncated second moment of each Gaussian component, in closed form (no quadrature; only
    the n - 1 breakpoints need the law's quantile, through isf above 1/2). Absolute error ~ eps * E[x^2].
    """
    y = as_tensor(y, "y")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] < 1:
        raise ValueError(f"y: expected shape (n,) or (n, 1), got {tuple(y.shape)}")
    w = _weights(weights, y.shape[0], "weights")
    pi, mu, sd = _law_1d(law, "law")
    keep = w > 0
    y, w = y[keep], w[keep] / w[keep].sum()
    order = torch.argsort(y)
    y, w = y[order], w[order]
    below = torch.cumsum(w, 0)[:-1]  # c_i, i = 1..n-1
    above = torch.flip(torch.cumsum(torch.flip(w, [0]), 0), [0])[1:]  # 1 - c_i, summed from the top
    b = torch.empty_like(below)
    low = below <= 0.5
    if low.any():
        b[low] = law.quantile(below[low])
    if (~low).any():
        b[~low] = law.isf(above[~low])
    inf = torch.tensor([math.inf], dtype=DTYPE)
    lo, hi = torch.cat([-inf, b]), torch.cat([b, inf])
    alpha = (lo[None, :] - mu[:, None]) / sd[:, None]  # (K, n)
    beta = (hi[None, :] - mu[:, None]) / sd[:, None]
    delta = (y[None, :] - mu[:, None]) / sd[:, None]
    pieces = _sq_moment_std(alpha, beta, delta) * (pi * sd**2)[:, None]
    return math.sqrt(float(pieces.sum()))


# ---------------------------------------------------------------------------------------------- couplings
def sync_error(x_num, x_ref, weights=None) -> float:
    """Synchronous-coupling error (sum_i w_i ||x_num_i - x_ref_i||^2)^{1/2} (uniform weights by default).

    x_num and x_ref are (B, d) (or (B,)) outputs from the same inputs, so this is the L2 cost of one particular
    coupling of the two laws: an upper bound on W2 (theory.md §3 item 1), equal to it in 1-D for monotone maps.
    There is deliberately no mean-of-norms version: mean_i ||x_num_i - x_ref_i|| bounds W1, not W2.
    """
    a, b = as_tensor(x_num, "x_num"), as_tensor(x_ref, "x_ref")
    if a.ndim not in (1, 2) or a.shape[0] < 1:
        raise ValueError(f"x_num: expected shape (B, d) or (B,), got {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"x_ref: expected shape {tuple(a.shape)} (as x_num), got {tuple(b.shape)}")
    diff = (a - b).reshape(a.shape[0], -1)
    w = _weights(weights, a.shape[0], "weights")
    return math.sqrt(float((w * (diff**2).sum(1)).sum()))


def _sqdist(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Squared Euclidean costs from coordinate differences (ot.dist expands ||x||^2 + ||y||^2 - 2 x.y, which
    floors at ~eps ||x||^2 and would hide small errors)."""
    M = np.zeros((X.shape[0], Y.shape[0]))
    for k in range(X.shape[1]):
        M += (X[:, k, None] - Y[None, :, k]) ** 2
    return M


def _emd2(X: torch.Tensor, a: torch.Tensor, Y: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2^2 between two weighted clouds: ot.emd2_1d in 1-D (sorting), else the network simplex ot.emd2."""
    Xn, Yn, an, bn = X.cpu().numpy(), Y.cpu().numpy(), a.cpu().numpy(), b.cpu().numpy()
    if Xn.shape[1] == 1:
        return float(ot.emd2_1d(Xn[:, 0], Yn[:, 0], an, bn, metric="sqeuclidean"))
    n_iter = max(100_000, 50 * Xn.shape[0] * Yn.shape[0])
    cost, log = ot.emd2(an, bn, _sqdist(Xn, Yn), numItermax=n_iter, log=True)
    if log.get("warning") is not None:
        raise RuntimeError(f"ot.emd2 did not reach optimality: {log['warning']}")
    return float(cost)


def pot_w2(X, Y, a=None, b=None, debias=False, X2=None, Y2=None, *, squared=False) -> float:
    """Exact OT W2 between the empirical measures sum_i a_i delta_{X_i} and sum_j b_j delta_{Y_j} (POT).

    Cost: squared Euclidean distances (from coordinate differences), then ot.emd2 (ot.emd2_1d in d = 1).
    Bias: for independent samples of size n, E W2^2(mu_n, mu) ~ n^{-1/2} (d <= 3), n^{-1/2} log n (d = 4),
    n^{-2/d} (d >= 5) (Fournier & Guillin 2015), so W2 between samples floors at ~n^{-1/4} in d <= 3: far above
    discretization errors. debias=True returns the estimate of W2^2
        W2^2(mu_n, nu_n) - 1/2 W2^2(mu_n, mu'_n) - 1/2 W2^2(nu_n, nu'_n)
    with X2 ~ mu and Y2 ~ nu independent second clouds of the same sizes (weights a and b): it reduces the bias but
    does not remove it, and can be negative (then W2 is reported as 0; squared=True returns the signed estimate).
    Paired-clouds pitfall (theory.md §3 item 3): if Y is X moved by a small error (same inputs x_T), the optimal
    matching is the identity once the errors are below the nearest-neighbour spacing, so this returns the
    synchronous cost (`sync_error`), not W2 between the laws.
    """
    X, Y = _cloud(X, "X"), _cloud(Y, "Y")
    if Y.shape[1] != X.shape[1]:
        raise ValueError(f"Y: expected dimension d = {X.shape[1]} (as X), got shape {tuple(Y.shape)}")
    a, b = _weights(a, X.shape[0], "a"), _weights(b, Y.shape[0], "b")
    w2sq = _emd2(X, a, Y, b)
    if debias:
        for name, Z, ref in (("X2", X2, X), ("Y2", Y2, Y)):
            if Z is None:
                raise ValueError(f"{name}: an independent second cloud is required when debias=True")
            if _cloud(Z, name).shape != ref.shape:
                raise ValueError(f"{name}: expected shape {tuple(ref.shape)}, got {tuple(_cloud(Z, name).shape)}")
        w2sq -= 0.5 * (_emd2(X, a, _cloud(X2, "X2"), a) + _emd2(Y, b, _cloud(Y2, "Y2"), b))
    elif X2 is not None or Y2 is not None:
        raise ValueError("X2: second clouds are only used with debias=True")
    return w2sq if squared else math.sqrt(max(w2sq, 0.0))


# ---------------------------------------------------------------------------------------------- sliced W2
def _directions(d: int, n_projections: int, generator, directions) -> torch.Tensor:
    """(P, d) unit vectors: the given rows normalized, or n_projections uniform draws on the sphere."""
    if directions is not None:
        theta = as_tensor(directions, "directions", ndim=2)
        if theta.shape[1] != d or theta.shape[0] < 1:
            raise ValueError(f"directions: expected shape (P, {d}), got {tuple(theta.shape)}")
        norms = theta.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise ValueError("directions: rows must be nonzero")
        return theta / norms
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: must be a positive int, got {n_projections!r}")
    theta = torch.randn(n_projections, d, dtype=DTYPE, generator=generator)
    return theta / theta.norm(dim=1, keepdim=True)


def _w2sq_discrete_1d(x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2^2 between two weighted 1-D clouds: int_0^1 (Q_x(u) - Q_y(u))^2 du over the merged breakpoints."""
    ix, iy = torch.argsort(x), torch.argsort(y)
    x, a, y, b = x[ix], a[ix], y[iy], b[iy]
    ca, cb = torch.cumsum(a, 0), torch.cumsum(b, 0)
    ca[-1] = cb[-1] = 1.0
    c = torch.unique(torch.cat([ca, cb]))  # sorted breakpoints in (0, 1]
    du = torch.diff(c, prepend=c.new_zeros(1))
    mid = c - 0.5 * du
    i = torch.searchsorted(ca, mid).clamp_max(x.shape[0] - 1)
    j = torch.searchsorted(cb, mid).clamp_max(y.shape[0] - 1)
    return float((du * (x[i] - y[j]) ** 2).sum())


def sliced_w2(X, Y, n_projections: int = 256, generator=None, a=None, b=None, *, directions=None) -> float:
    """Sliced W2 between weighted clouds: SW2^2 = E_theta W2^2(theta # mu, theta # nu), theta uniform on the sphere,
    each 1-D W2 exact (sorting); a Monte Carlo average over n_projections directions (or the given `directions`,
    rows normalized; pass the same generator seed or directions to compare runs with common random numbers).

    A different metric from W2: projections are 1-Lipschitz and E (theta . v)^2 = |v|^2 / d, so SW2 <= W2 / sqrt(d).
    Useful to monitor convergence orders; it is not a bound on W2 from above.
    """
    X, Y = _cloud(X, "X"), _cloud(Y, "Y")
    d = X.shape[1]
    if Y.shape[1] != d:
        raise ValueError(f"Y: expected dimension d = {d} (as X), got shape {tuple(Y.shape)}")
    uniform = a is None and b is None and X.shape[0] == Y.shape[0]
    a, b = _weights(a, X.shape[0], "a"), _weights(b, Y.shape[0], "b")
    theta = _directions(d, n_projections, generator, directions)
    PX, PY = X @ theta.T, Y @ theta.T  # (n, P), (m, P)
    if uniform:
        sq = ((torch.sort(PX, 0).values - torch.sort(PY, 0).values) ** 2).mean(0)
        return math.sqrt(float(sq.mean()))
    sq = [_w2sq_discrete_1d(PX[:, p], a, PY[:, p], b) for p in range(theta.shape[0])]
    return math.sqrt(sum(sq) / len(sq))


def sliced_w2_gmm(X, gmm, n_projections: int = 256, generator=None, a=None, *, directions=None) -> float:
    """Sliced W2 between a weighted cloud X (n, d) and a Gaussian-mixture law, the target side exact:
    theta # gmm is the 1-D mixture with weights pi_k, means theta^T mu_k and variances theta^T S_k theta, and each
    projected W2 is `w2_1d_cloud` (closed form). Monte Carlo over directions as in `sliced_w2`.

    A different metric from W2 (SW2 <= W2 / sqrt(d)); the cloud's own sampling error remains (~ n^{-1/2} per slice).
    """
    X = _cloud(X, "X")
    try:
        weights, means, covs = gmm.weights, gmm.means, gmm.covariances
    except AttributeError:
        raise ValueError("gmm: expected a GaussianMixture (weights, means, covariances)") from None
    if means.shape[1] != X.shape[1]:
        raise ValueError(f"gmm: dimension {means.shape[1]} does not match X of shape {tuple(X.shape)}")
    a = _weights(a, X.shape[0], "a")
    theta = _directions(X.shape[1], n_projections, generator, directions)
    pm = means @ theta.T  # (K, P)
    pv = torch.einsum("pi,kij,pj->kp", theta, covs, theta)
    sq = []
    for p in range(theta.shape[0]):
        law = GaussianMixture(weights, pm[:, p, None], pv[:, p, None, None])
        sq.append(w2_1d_cloud(X @ theta[p], law, a) ** 2)
    return math.sqrt(sum(sq) / len(sq))
