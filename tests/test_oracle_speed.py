"""The oracle's fast paths against independent computations (benchmarks/bench_gmm_denoiser.py has the timings).

- GaussianMixture.denoiser: the one-pass argument check (`_fast_args`), the single-Gaussian eigenbasis path and the
  cache-sized blocks (K > 1) agree with a numpy/scipy transcription of the posterior mean (a linear solve per
  component, scipy's log-density, softmax), within a bound stated from float64 eps and the condition number; with
  the unblocked closed form; and take exactly the path and the value of the fully checked call.
- The 1-D quantile (safeguarded Newton) against scipy's brentq on the mixture cdf, and w2_1d against a
  high-resolution quadrature of int_0^1 (Q_source - Q_target)^2 du with quantiles by numpy bisection.
No time is asserted here.
"""

import math

import numpy as np
import pytest
import torch
from _strategies import F64, random_mixture, random_spd
from scipy import optimize, special, stats

from analytic import Gaussian, GaussianMixture
from analytic.wasserstein import w2_1d, w2_1d_laws

EPS = float(np.finfo(np.float64).eps)
SIGMAS = [0.0, 1e-3, 0.05, 0.7, 3.0, 80.0]


def _reference_denoiser(gm, x, sigma):
    """sum_k w_k (mu_k + C_k (C_k + s^2 I)^-1 (x - mu_k)) in numpy/scipy, and the error bound of the comparison.

    Bound: the solve moves each component mean by ~eps kappa_k |x - mu_k| (kappa_k = cond(C_k + s^2 I)), and a
    logit rounding of eps |logit| moves the weights by that much relative, i.e. D by eps |logit| max_k |m_k - D|;
    64 eps of each (both sides round), plus 64 eps (|x| + |mu|) for the sums themselves."""
    w, mu, cov = gm.weights.numpy(), gm.means.numpy(), gm.covariances.numpy()
    xs = x.numpy()
    d = mu.shape[1]
    logs, means, kappa = [], [], []
    for k in range(len(w)):
        C = cov[k] + sigma**2 * np.eye(d)
        kappa.append(np.linalg.cond(C))
        logs.append(math.log(w[k]) + stats.multivariate_normal(mu[k], C).logpdf(xs).reshape(-1))
        means.append(mu[k] + np.linalg.solve(C, (xs - mu[k]).T).T @ cov[k])
    logs, means = np.stack(logs, 1), np.stack(means, 1)  # (B, K), (B, K, d)
    resp = special.softmax(logs, axis=1)
    ref = np.einsum("bk,bki->bi", resp, means)
    spread = np.abs(means - ref[:, None, :]).max()
    scale = np.abs(xs).max() + np.abs(mu).max()
    tol = 64 * EPS * (max(kappa) * np.abs(xs[:, None, :] - mu[None]).max() + np.abs(logs).max() * spread + scale)
    return torch.as_tensor(ref), tol


def _cases():
    """(name, target): full and diagonal, one and several components, moderate and poor conditioning."""
    rng = np.random.default_rng(11)
    out = [("gaussian-1d", Gaussian([0.4], [[0.3]])),
           ("gaussian-4d", Gaussian(rng.standard_normal(4), random_spd(rng, 4))),
           ("gaussian-16d-ill", Gaussian(rng.standard_normal(16), random_spd(rng, 16, 1e-4, 10.0))),
           ("diagonal-k1", GaussianMixture.from_diagonal([1.0], rng.standard_normal((1, 6)),
                                                         rng.uniform(0.05, 2, (1, 6)))),
           ("diagonal-k5", GaussianMixture.from_diagonal(rng.dirichlet(np.ones(5)), rng.standard_normal((5, 7)),
                                                         rng.uniform(0.05, 2, (5, 7)))),
           ("mixture-2d-k3", random_mixture(3, 2, 3)),
           ("mixture-8d-k4", random_mixture(5, 8, 4)),
           ("mixture-5d-k2-ill", random_mixture(8, 5, 2, lo=1e-4, hi=10.0))]
    return out


@pytest.mark.parametrize("name,gm", _cases(), ids=[n for n, _ in _cases()])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_denoiser_against_independent_posterior_mean(name, gm, sigma):
    x = gm.sample(37, sigma=max(sigma, 0.3), generator=torch.Generator().manual_seed(1))
    ref, tol = _reference_denoiser(gm, x, sigma)
    got = gm.denoiser(x, sigma)
    err = float((got - ref).abs().max())
    assert err <= tol, f"{name}: |D - ref| = {err:.3g} > {tol:.3g}"
    # the unblocked closed form (autograd and extreme arguments take it): the same terms, another order of sums
    assert float((gm._denoiser_closed(x, sigma) - got).abs().max()) <= tol


@pytest.mark.parametrize("name,gm", _cases(), ids=[n for n, _ in _cases()])
def test_fast_argument_check_takes_the_checked_path_exactly(name, gm):
    """A float sigma (one aminmax, no tensor built) and a 0-dim tensor sigma (check_points/check_sigma) give the
    same bits, for every noise level and for per-point sigmas equal to it; repeated calls (the cached g and ratio
    of a single Gaussian) too."""
    x = gm.sample(9, sigma=0.5, generator=torch.Generator().manual_seed(2))
    for sigma in SIGMAS:
        fast = gm.denoiser(x, sigma)
        assert torch.equal(fast, gm.denoiser(x, torch.tensor(sigma, dtype=F64)))
        assert torch.equal(fast, gm.denoiser(x, np.float64(sigma)))
        assert torch.equal(fast, gm.denoiser(x, sigma))
        per_point = gm.denoiser(x, torch.full((9,), sigma, dtype=F64))
        assert float((per_point - fast).abs().max()) <= 8 * EPS * (float(x.abs().max()) + float(gm.means.abs().max()))


def test_single_gaussian_fast_path_equals_the_general_mixture_path():
    """K = 1 (no weights, eigenbasis) against the same Gaussian as a two-component mixture of two equal halves
    (softmax weights exactly 1/2 each, the blocked general path): the same law, so the same denoiser."""
    rng = np.random.default_rng(4)
    for d in (1, 2, 4, 16):
        mean, cov = rng.standard_normal(d), random_spd(rng, d)
        g = Gaussian(mean, cov)
        twin = GaussianMixture([0.5, 0.5], np.stack([mean, mean]), np.stack([cov, cov]))
        x = g.sample(64, sigma=1.0, generator=torch.Generator().manual_seed(d))
        for sigma in SIGMAS:
            kappa = float(np.linalg.cond(cov + sigma**2 * np.eye(d)))
            tol = 64 * EPS * kappa * (float(x.abs().max()) + float(np.abs(mean).max()))
            assert float((g.denoiser(x, sigma) - twin.denoiser(x, sigma)).abs().max()) <= tol


def test_extreme_arguments_take_the_scaled_form_as_before():
    """sigma above 1e150 or x that far: the fast argument check hands over to the scaled form (the same value as
    the unblocked path's); sigma = 0 still gives D(x) = x to rounding; bad input still raises the checks' errors."""
    for gm in (Gaussian([0.5, -1.0], [[1.0, 0.2], [0.2, 0.4]]), random_mixture(1, 3, 3)):
        x = gm.sample(5, sigma=1.0, generator=torch.Generator().manual_seed(0))
        for sigma in (1e150, 1.0000001e150, 1e200, 1e300):
            assert torch.equal(gm.denoiser(x, sigma), gm._denoiser_closed(x, sigma))
        far = x * 1e200
        assert torch.equal(gm.denoiser(far, 1.0), gm._denoiser_closed(far, 1.0))
        assert float((gm.denoiser(x, 0.0) - x).abs().max()) <= 64 * EPS * float(x.abs().max() + 1)
        for bad_x, bad_s, msg in [(x.clone().fill_(math.nan), 1.0, "x: contains NaN or inf"),
                                  (x.clone().fill_(math.inf), 1.0, "x: contains NaN or inf"),
                                  (x[:0], 1.0, "x: expected at least one point"),
                                  (x, -1.0, "sigma: must be >= 0"), (x, math.nan, "sigma: must be finite"),
                                  (x, True, "sigma: expected a real number, got bool")]:
            with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
                gm.denoiser(bad_x, bad_s)


# ================================================================== the 1-D quantile and w2_1d
def _np_mixture(gm):
    return gm.weights.numpy(), gm.means[:, 0].numpy(), np.sqrt(gm.covariances[:, 0, 0].numpy())


def _far_modes():
    w = [0.3828397323519851, 0.10214472015789015, 0.07432555525689895, 0.4406899922332258]
    m = [6.99905269584085, 13.910098814707798, -11.857437124957732, -20.389755365613812]
    v = [0.00020847992019168424, 0.0009049134599247915, 0.0002753359206149629, 0.0007373890671725558]
    return GaussianMixture(w, np.asarray(m)[:, None], np.asarray(v)[:, None, None])


@pytest.mark.parametrize("gm", [_far_modes(), random_mixture(21, 1, 3), random_mixture(22, 1, 5, lo=1e-4)],
                         ids=["far-modes", "k3", "k5-narrow"])
def test_quantile_against_brentq(gm):
    """quantile(u) and isf(u) against brentq on scipy's cdf/sf at a few levels, deep tails included. Tolerance: the
    quantile's conditioning, 8 eps (|Q| + scale) + 8 eps u / p(Q) (a rounding of eps u in F moves x by that)."""
    w, m, s = _np_mixture(gm)
    cdf = lambda x: float(np.sum(w * special.ndtr((x - m) / s)))
    sf = lambda x: float(np.sum(w * special.ndtr((m - x) / s)))
    pdf = lambda x: float(np.sum(w * stats.norm.pdf((x - m) / s) / s))
    lo, hi, scale = float((m - 40 * s).min()), float((m + 40 * s).max()), float((np.abs(m) + s).max())
    levels = np.array([1e-300, 1e-30, 1e-8, 0.01, 0.2, 0.5])
    for upper, f in ((False, cdf), (True, sf)):
        got = (gm.isf if upper else gm.quantile)(torch.as_tensor(levels)).numpy()
        for u, q in zip(levels, got, strict=True):
            ref = optimize.brentq(lambda x, u=u, f=f: f(x) - u, lo, hi, xtol=1e-300, rtol=4 * EPS, maxiter=2000)
            tol = 8 * EPS * (abs(ref) + scale) + 8 * EPS * u / max(pdf(ref), 1e-300)
            assert abs(q - ref) <= tol, (upper, u, q, ref, tol)


def _bisect_quantile(w, m, s, u):
    """Q(u) for the levels u by vectorised bisection in numpy (lower tail through the cdf, upper through sf)."""
    lo = np.full(u.shape, (m - 40 * s).min())
    hi = np.full(u.shape, (m + 40 * s).max())
    upper = u > 0.5
    p = np.where(upper, 1.0 - u, u)
    for _ in range(110):  # a bracket of 80 sd / 2^110: below float64 resolution
        mid = 0.5 * (lo + hi)
        z = (mid[:, None] - m) / s
        F = np.where(upper, (w * special.ndtr(-z)).sum(1), (w * special.ndtr(z)).sum(1))
        right = np.where(upper, F > p, F < p)  # the root lies above mid
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
    return 0.5 * (lo + hi)


def _w2_by_quantiles(source, target, panels=200, order=20):
    """W2^2 = int_0^1 (Q_s(u) - Q_t(u))^2 du with u = Phi(t), |t| <= 12, Gauss-Legendre panels in t: a uniform
    mesh, plus panels graded geometrically (widths 2^-1 .. 2^-40) on both sides of each t where a quantile crosses
    a gap between modes (u = F(midpoint of two neighbouring means)), where Q is steep."""
    x, wx = np.polynomial.legendre.leggauss(order)
    breaks = []
    for law in (source, target):
        w, m, s = _np_mixture(law)
        ms = np.sort(m)
        for mid in 0.5 * (ms[1:] + ms[:-1]):
            breaks.append(float(special.ndtri(np.sum(w * special.ndtr((mid - m) / s)))))
    grade = 2.0 ** -np.arange(1, 41)
    edges = [np.linspace(-12, 12, panels + 1)] + [np.clip(b + np.concatenate([grade, -grade, [0.0]]), -12, 12)
                                                   for b in breaks if abs(b) < 12]
    edges = np.unique(np.concatenate(edges))
    half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    t = (mid[:, None] + half[:, None] * x).reshape(-1)
    wt = (half[:, None] * wx).reshape(-1) * stats.norm.pdf(t)
    u = special.ndtr(t)
    qs, qt = _bisect_quantile(*_np_mixture(source), u), _bisect_quantile(*_np_mixture(target), u)
    return float(np.sum(wt * (qs - qt) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w2_1d_against_high_resolution_quantile_quadrature(seed):
    """w2_1d_laws (x-space adaptive quadrature through T = Q_t o F_s) against W2 computed in u-space with bisection
    quantiles (rtol 1e-10 on W2^2, so 1e-9 on W2 with room); and a monotone push: push # source has quantile
    push(Q_s), so W2^2 is the same u-integral with Q_s replaced by push(Q_s)."""
    rng = np.random.default_rng(100 + seed)
    source = random_mixture(int(rng.integers(1 << 30)), 1, 3)
    target = random_mixture(int(rng.integers(1 << 30)), 1, 2)
    ref = math.sqrt(_w2_by_quantiles(source, target))
    assert abs(w2_1d_laws(source, target) - ref) <= 1e-9 * ref
    a, c = 1.3, -0.2
    shifted = GaussianMixture(source.weights, a * source.means + c, a * a * source.covariances)
    ref = math.sqrt(_w2_by_quantiles(shifted, target))
    assert abs(w2_1d(lambda x: a * x + c, source, target) - ref) <= 1e-9 * ref
