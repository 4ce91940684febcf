"""Exact W2 in one dimension, through quantile functions (docs/theory.md §7 (b)).

For laws mu, nu on the line with quantile functions Q_mu, Q_nu,
    W2^2(mu, nu) = int_0^1 (Q_mu(u) - Q_nu(u))^2 du
(the monotone coupling is optimal; Villani 2003, Thm. 2.18). Here the target is a 1-D Gaussian mixture, whose
cdf, sf, quantile and isf are exact (analytic.gmm), and the other side is either
    w2_1d, w2_1d_laws   the pushforward push # source of a 1-D Gaussian mixture (a sampler's output law), or the
                        mixture itself: E_source[(push(x) - T(x))^2], T = Q_target o F_source, by error-controlled
                        quadrature when push is monotone, else by monotone rearrangement of midpoint quantiles;
    w2_1d_cloud         a weighted point cloud: the integral splits at the cloud's cumulative weights into truncated
                        second moments of each Gaussian component, in closed form.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from .._checks import DTYPE, as_tensor, check_float, check_weights

__all__ = ["w2_1d", "w2_1d_laws", "w2_1d_cloud"]

_EPS = float(torch.finfo(DTYPE).eps)


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


def _optimal_map(source, target, x: torch.Tensor, conditioning: bool = False):
    """T(x) = Q_target(F_source(x)), through isf_target(sf_source(x)) above the source median (tail precision).

    With conditioning=True returns (T, dT), dT a bound on T's rounding error (not counting eps |T|): F = min(cdf,
    sf) of the source is known to dF = _COND eps (F + p_source(x) (|x| + s)), s the source's scale (a relative
    rounding of F, an absolute one of x), which moves T by dF / p_target(T) to first order. Where that is large
    (the target density tiny, e.g. between modes: T is flat to rounding over a whole interval there, and the
    first order misses it by up to 400x), dT is the distance to the quantiles of F - dF and F + dF instead.
    """
    F, S = source.cdf(x), source.sf(x)
    lower = F <= 0.5
    G = torch.where(lower, F, S)
    out = _inverse(target, G, lower)
    if not conditioning:
        return out
    dF = _COND * _EPS * (G + _pdf(source, x) * (x.abs() + _scale(source)))
    dT = dF / _pdf(target, out)
    ill = ~(dT <= _ILL * _EPS * (out.abs() + _scale(target)))  # also where the target density underflows
    if ill.any():
        G, low, Ti, dFi = G[ill], lower[ill], out[ill], dF[ill]
        up, down = _inverse(target, G + dFi, low), _inverse(target, (G - dFi).clamp(min=_TINY), low)
        dT[ill] = torch.maximum((up - Ti).abs(), (down - Ti).abs())
    return out, dT


def _inverse(law, G: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """law.quantile(G) where lower, law.isf(G) elsewhere."""
    out = torch.empty_like(G)
    if lower.any():
        out[lower] = law.quantile(G[lower])
    if (~lower).any():
        out[~lower] = law.isf(G[~lower])
    return out


def _pdf(law, x: torch.Tensor) -> torch.Tensor:
    """The density of a 1-D mixture law at x (B,)."""
    pi, mu, sd = _law_1d(law, "law")
    return (pi * _phi((x[:, None] - mu) / sd) / sd).sum(-1)


def _scale(law) -> float:
    _, mu, sd = _law_1d(law, "law")
    return float((mu.abs() + sd).max())


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
_COND = 16  # rounding of the source's cdf/sf, in eps (F + p |x|) (_optimal_map)
_ILL = 1024  # T's first-order rounding above this many eps (|T| + scale): bound it by two more quantiles
_TINY = float(torch.finfo(DTYPE).tiny)
_METHODS = ("auto", "adaptive", "gauss-hermite", "rearrangement")


def _adaptive_sync(push, source, target, rtol: float, atol: float, max_rounds: int):
    """E_source[(push(x) - T(x))^2], or None if push is not nondecreasing on the nodes.

    Per source component, x = mu_k + sd_k z and E_k f = int phi(z) f(x) dz over |z| <= _Z_MAX, by composite
    10-point Gauss-Legendre panels. A panel's error estimate is |(left half + right half) - whole|; it is accepted
    when that is below tol * (its share of the total z-width), tol = max(rtol * estimate, atol), or below the
    rounding level of its integrand (2 |push - T| (64 eps (|push| + |T|) + dT) integrated, dT the quantile's
    conditioning (_optimal_map): a converged solver's W2 ~ 1e-8 cannot be resolved to rtol, nor T between far
    modes where the target's cdf is flat to rounding, and such panels must not split forever); otherwise its
    halves become panels. Refinement stops when all error estimates sum to <= tol. One push call per round.
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
        T, dT = _optimal_map(source, target, x, conditioning=True)
        g = ((y - T) ** 2).reshape(z.shape)
        noise = 2 * (y - T).abs() * (64 * _EPS * (y.abs() + T.abs()) + dT)
        noise = torch.nan_to_num(noise, nan=math.inf).reshape(z.shape)  # an unresolved T counts as noise
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
    """W2(push # source, target) for 1-D Gaussian-mixture laws source and target (docs/theory.md §7 (b)).

    push maps a (B, 1) float64 tensor to (B, 1). The optimal map of the source onto the target is
    T = Q_target o F_source, evaluated as isf_target(sf_source(x)) above the source median (tail precision).
    If push is nondecreasing, push # source has quantile function push o Q_source, so
        W2^2 = int_0^1 (push(Q_source(u)) - Q_target(u))^2 du = E_source[(push(x) - T(x))^2].
    method "adaptive": that expectation by adaptive composite Gauss-Legendre per source component (x = mu_k + sd_k z,
        |z| <= 12), error-controlled to max(rtol * W2^2, atol) (so W2 to ~rtol/2 relative, ~1e-14 absolute), or
        to the rounding level of push - T where that is larger (W2 relative ~1e-16 |x| / W2: 3e-8 at W2 = 1e-9).
        Between far-apart narrow modes T itself is only known to its conditioning (the target's cdf is flat to
        rounding over the gap): that adds a floor f^2 to W2^2 (f = 1.8e-7 on the four-mode example of
        tests/test_wasserstein.py), and refinement stops there instead of running all max_rounds.
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
    rtol, atol = check_float(rtol, "rtol", nonneg=True), check_float(atol, "atol", nonneg=True)
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
    unknown = sorted(set(kwargs) - {"method", "rtol", "atol", "max_rounds", "n_quantiles"})
    if unknown:
        raise ValueError(f"{unknown[0]}: not a keyword of w2_1d_laws (method, rtol, atol, max_rounds, n_quantiles)")
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
    w = check_weights(weights, y.shape[0], "weights")
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

