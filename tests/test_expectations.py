"""analytic.expectations against independent oracles: scipy quadrature, numpy Monte Carlo, brute-force sums."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from analytic import Gaussian, GaussianMixture
from analytic.expectations import (
    cf_features,
    cf_targets,
    characteristic_function,
    fixed_frequencies,
    kernel_cross_term,
    kernel_mean_embedding,
    kernel_self_term,
    mmd2,
    mmd2_laws,
    moment_features,
    moment_names,
    moment_targets,
    raw_moments,
    standard_error,
)

F64 = torch.float64


def _quad(f, lo, hi):
    """int_lo^hi f to ~1e-12 (smooth Gaussian-tailed integrands on a +-14 sd window: the tails cut off are < 1e-40)."""
    val, err = integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)
    assert err < 1e-11
    return val


def _hermite_double(f, p, q, sigma=0.0, nodes=120):
    """E f(x, y), x ~ p, y ~ q independent 1-D mixtures (weights, means, stds): tensor Gauss-Hermite quadrature per
    pair of components (numpy's probabilists' rule; exact to round-off for the smooth Gaussian integrands here)."""
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    wz = wz / math.sqrt(2 * math.pi)
    total = 0.0
    for pk, mk, sk in zip(*p, strict=True):
        for ql, ml, sl in zip(*q, strict=True):
            x = mk + math.hypot(sk, sigma) * z
            y = ml + math.hypot(sl, sigma) * z
            total += pk * ql * float(wz @ f(x[:, None], y[None, :]) @ wz)
    return total


# 1-D laws as (weights, means, stds) for scipy, and the same law for the module
ONE = ([1.0], [0.7], [1.3])
TWO = ([0.3, 0.7], [-1.5, 2.0], [0.6, 1.1])


def _module_law(spec):
    w, m, s = spec
    return GaussianMixture(w, [[v] for v in m], [[[v * v]] for v in s])


def _scipy_pdf(spec, sigma):
    w, m, s = spec
    comps = [(wk, stats.norm(mk, math.hypot(sk, sigma))) for wk, mk, sk in zip(w, m, s, strict=True)]
    lo = min(mk - 14 * math.hypot(sk, sigma) for mk, sk in zip(m, s, strict=True))
    hi = max(mk + 14 * math.hypot(sk, sigma) for mk, sk in zip(m, s, strict=True))
    return (lambda x: sum(wk * c.pdf(x) for wk, c in comps)), lo, hi


def _gauss_kernel(ell):
    return lambda x, y: np.exp(-((x - y) ** 2) / (2 * ell * ell))


@pytest.mark.parametrize("spec, sigma", [(ONE, 0.0), (ONE, 0.5), (TWO, 0.0), (TWO, 0.4)])
def test_one_dimensional_laws_match_quadrature(spec, sigma):
    law = _module_law(spec)
    pdf, lo, hi = _scipy_pdf(spec, sigma)
    mom = raw_moments(law, sigma=sigma)
    for p in range(1, 5):
        ref = _quad(lambda x, p=p: x**p * pdf(x), lo, hi)
        got = float(mom[p].reshape(-1)[0])
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-12), p
    freqs = torch.tensor([[-2.0], [0.3], [1.0], [4.0]], dtype=F64)
    cf = characteristic_function(law, freqs, sigma=sigma)
    assert cf.dtype == torch.complex128 and cf.shape == (4,)
    for w, c in zip(freqs[:, 0].tolist(), cf.tolist(), strict=True):
        re = _quad(lambda x, w=w: math.cos(w * x) * pdf(x), lo, hi)
        im = _quad(lambda x, w=w: math.sin(w * x) * pdf(x), lo, hi)
        assert c.real == pytest.approx(re, abs=1e-11) and c.imag == pytest.approx(im, abs=1e-11)
    ell = 0.8
    k = _gauss_kernel(ell)
    ys = [-3.0, 0.0, 0.7, 5.0]
    emb = kernel_mean_embedding(law, torch.tensor(ys, dtype=F64)[:, None], ell, sigma=sigma)
    for y, e in zip(ys, emb.tolist(), strict=True):
        assert e == pytest.approx(_quad(lambda x, y=y: k(x, y) * pdf(x), lo, hi), rel=1e-10, abs=1e-13)
    ref_self = _hermite_double(k, spec, spec, sigma)
    assert kernel_self_term(law, ell, sigma=sigma) == pytest.approx(ref_self, rel=1e-10)


def test_cross_term_and_mmd2_laws_match_quadrature():
    ell = 1.1
    k = _gauss_kernel(ell)
    pp, qq, pq = (_hermite_double(k, a, b) for a, b in ((ONE, ONE), (TWO, TWO), (ONE, TWO)))
    p, q = _module_law(ONE), _module_law(TWO)
    assert kernel_cross_term(p, q, ell) == pytest.approx(pq, rel=1e-10)
    assert kernel_cross_term(q, p, ell) == pytest.approx(pq, rel=1e-10)
    assert mmd2_laws(p, q, ell) == pytest.approx(pp + qq - 2 * pq, rel=1e-8, abs=1e-12)
    assert mmd2_laws(p, p, ell) == pytest.approx(0.0, abs=1e-14)


# ---------------------------------------------------------------- a 2-D mixture against numpy Monte Carlo
W2 = np.array([0.35, 0.65])
MU2 = np.array([[-1.0, 0.5], [1.2, -0.3]])
COV2 = np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.8, -0.35], [-0.35, 0.6]]])


def _numpy_sample(n, sigma, seed, w=W2, mu=MU2, cov=COV2):
    """Exact draws with numpy's own generator (independent of GaussianMixture.sample)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, w)
    parts = [rng.multivariate_normal(mu[k], cov[k] + sigma**2 * np.eye(mu.shape[1]), size=c)
             for k, c in enumerate(counts)]
    x = np.concatenate(parts)
    return torch.from_numpy(x[rng.permutation(n)])


@pytest.fixture(scope="module")
def mc2d():
    sigma = 0.3
    return GaussianMixture(W2, MU2, COV2), sigma, _numpy_sample(200_000, sigma, 1), _numpy_sample(200_000, sigma, 2)


def _within(est, se, exact, z=5.0):
    dev = (est - exact).abs()
    assert (dev <= z * se).all(), f"max |dev|/se = {float((dev / se).max()):.2f}"


def test_mixture_moments_and_cf_match_monte_carlo(mc2d):
    law, sigma, x, _ = mc2d
    feats = moment_features(x)
    assert feats.shape == (x.shape[0], len(moment_names(2)))
    _within(feats.mean(0), standard_error(feats), moment_targets(law, sigma))
    freqs = fixed_frequencies(2, m=8, seed=3, scale=1.5)
    feats = cf_features(x, freqs)
    _within(feats.mean(0), standard_error(feats), cf_targets(law, freqs, sigma))
    cf = characteristic_function(law, freqs, sigma)
    assert torch.equal(torch.cat([cf.real, cf.imag]), cf_targets(law, freqs, sigma))


def test_mixture_kernel_terms_match_monte_carlo(mc2d):
    law, sigma, x, xp = mc2d
    ell = 0.9
    ys = torch.tensor([[0.0, 0.0], [-1.0, 0.5], [2.0, 1.0]], dtype=F64)
    feats = torch.exp(-torch.cdist(x, ys) ** 2 / (2 * ell * ell))  # k(x_i, y_j)
    _within(feats.mean(0), standard_error(feats), kernel_mean_embedding(law, ys, ell, sigma=sigma))
    pair = torch.exp(-((x - xp) ** 2).sum(1) / (2 * ell * ell))  # k(x_i, x'_i), independent pairs
    _within(pair.mean(), standard_error(pair), torch.tensor(kernel_self_term(law, ell, sigma=sigma)))


def test_moment_features_by_hand():
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.5]], dtype=F64)
    want = [[2, 3, 4, 6, 9, 8, 27, 16, 81], [-1, 0.5, 1, -0.5, 0.25, -1, 0.125, 1, 0.0625]]
    assert moment_features(x).tolist() == want
    assert moment_names(2) == ["x0", "x1", "x0*x0", "x0*x1", "x1*x1", "x0^3", "x1^3", "x0^4", "x1^4"]
    w = torch.tensor([[1.0, -2.0]], dtype=F64)
    got = cf_features(x, w)
    assert got[:, 0].tolist() == pytest.approx([math.cos(-4.0), math.cos(-2.0)], abs=1e-15)
    assert got[:, 1].tolist() == pytest.approx([math.sin(-4.0), math.sin(-2.0)], abs=1e-15)


# ---------------------------------------------------------------- marginal and representation consistency
def _all_outputs(law, sigma):
    freqs = fixed_frequencies(law.d, m=5, seed=1)
    y = torch.linspace(-2, 2, 3 * law.d, dtype=F64).reshape(3, law.d)
    x = torch.linspace(-1, 1.5, 6 * law.d, dtype=F64).reshape(6, law.d)
    return [
        moment_targets(law, sigma), cf_targets(law, freqs, sigma), kernel_mean_embedding(law, y, 0.7, sigma),
        torch.tensor([kernel_self_term(law, 0.7, sigma), mmd2(x, law, 0.7, sigma), mmd2(x, law, 0.7, sigma, False)]),
    ]


MIXES = {
    "full": GaussianMixture(W2, MU2, COV2),
    "diag": GaussianMixture.from_diagonal([0.2, 0.5, 0.3], [[0, 1, 2], [1, -1, 0], [3, 0, 1]],
                                          [[0.5, 1, 2], [0.1, 0.4, 0.9], [1, 1, 1]]),
    "gauss": Gaussian([0.5, -0.5], [[1.0, 0.3], [0.3, 0.5]]),
}


@pytest.mark.parametrize("name", sorted(MIXES))
@pytest.mark.parametrize("s", [0.05, 0.8, 4.0])
def test_sigma_keyword_equals_marginal(name, s):
    law = MIXES[name]
    for a, b in zip(_all_outputs(law, s), _all_outputs(law.marginal(s), 0.0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_diagonal_path_equals_full_path():
    diag = MIXES["diag"]
    full = GaussianMixture(diag.weights, diag.means, torch.diag_embed(diag.eigvals))
    for s in (0.0, 0.6):
        for a, b in zip(_all_outputs(diag, s), _all_outputs(full, s), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert mmd2_laws(diag, full, 0.5) == pytest.approx(0.0, abs=1e-14)


# ---------------------------------------------------------------- MMD statistics
def test_mmd2_gram_part_matches_brute_force():
    law = MIXES["full"]
    x = _numpy_sample(7, 0.0, 5)
    ell = 0.6
    xs = x.numpy()
    gram = np.array([[math.exp(-np.sum((a - b) ** 2) / (2 * ell * ell)) for b in xs] for a in xs])
    off = (gram.sum() - np.trace(gram)) / (7 * 6)
    base = kernel_self_term(law, ell) - 2 * float(kernel_mean_embedding(law, x, ell).mean())
    assert mmd2(x, law, ell) == pytest.approx(base + off, rel=1e-12, abs=1e-14)
    assert mmd2(x, law, ell, unbiased=False) == pytest.approx(base + gram.sum() / 49, rel=1e-12, abs=1e-14)


def _replicates(n, reps, w, mu, cov, law, ell, seed0=100):
    u = [mmd2(_numpy_sample(n, 0.0, seed0 + r, w, mu, cov), law, ell) for r in range(reps)]
    v = [mmd2(_numpy_sample(n, 0.0, seed0 + r, w, mu, cov), law, ell, unbiased=False) for r in range(reps)]
    return torch.tensor(u, dtype=F64), torch.tensor(v, dtype=F64)


def test_mmd2_of_the_law_itself_is_zero_on_average():
    law, ell = MIXES["full"], 0.8
    u, v = _replicates(400, 40, W2, MU2, COV2, law, ell)
    _within(u.mean(), standard_error(u), torch.tensor(0.0, dtype=F64))
    assert (v > 0).all()
    # the V-statistic's bias (1 - E k(x, x')) / n is visible at this n: its mean sits above the U-statistic's
    bias = (1 - kernel_self_term(law, ell)) / 400
    _within((v - u).mean(), standard_error(v - u), torch.tensor(bias, dtype=F64))


def test_mmd2_of_a_shifted_law_matches_the_exact_mmd():
    law, ell = MIXES["full"], 0.8
    shift = np.array([0.6, -0.4])
    shifted = GaussianMixture(W2, MU2 + shift, COV2)
    exact = mmd2_laws(shifted, law, ell)
    u, _ = _replicates(400, 30, W2, MU2 + shift, COV2, law, ell, seed0=300)
    se = standard_error(u)
    assert exact > 20 * float(se) and (u > 0).all()
    _within(u.mean(), se, torch.tensor(exact, dtype=F64))


def test_standard_error_matches_numpy():
    f = _numpy_sample(50, 0.0, 9)
    np.testing.assert_allclose(standard_error(f).numpy(), f.numpy().std(0, ddof=1) / math.sqrt(50), rtol=1e-13)
    assert standard_error(f[:, 0]).shape == ()


def test_fixed_frequencies_are_deterministic_and_scaled():
    a = fixed_frequencies(3, m=6, seed=4, scale=2.0)
    assert a.shape == (6, 3) and a.dtype == F64
    assert torch.equal(a, fixed_frequencies(3, m=6, seed=4, scale=2.0))
    torch.testing.assert_close(a, 2.0 * fixed_frequencies(3, m=6, seed=4), rtol=1e-15, atol=0)
    assert not torch.equal(a, fixed_frequencies(3, m=6, seed=5, scale=2.0))
    big = fixed_frequencies(4, m=4000, seed=0)  # rows ~ N(0, I/d): per-coordinate variance 1/4
    assert float(big.var()) == pytest.approx(0.25, rel=0.05) and abs(float(big.mean())) < 0.02


# ---------------------------------------------------------------- bad inputs
LAW = MIXES["full"]
X = torch.zeros(4, 2, dtype=F64)
BAD = [
    (lambda: raw_moments("law"), "law"),
    (lambda: raw_moments(LAW, sigma=-1.0), "sigma"),
    (lambda: moment_targets(LAW, sigma=float("nan")), "sigma"),
    (lambda: moment_features(torch.zeros(3)), "x"),
    (lambda: characteristic_function(LAW, torch.zeros(3, 3)), "freqs"),
    (lambda: characteristic_function(LAW, [[0.0, float("inf")]]), "freqs"),
    (lambda: cf_features(torch.zeros(3, 3), torch.zeros(2, 2)), "freqs"),
    (lambda: fixed_frequencies(0), "d"),
    (lambda: fixed_frequencies(2, m=0), "m"),
    (lambda: fixed_frequencies(2, scale=0.0), "scale"),
    (lambda: kernel_mean_embedding(LAW, torch.zeros(2, 3), 1.0), "y"),
    (lambda: kernel_mean_embedding(LAW, X, 0.0), "ell"),
    (lambda: kernel_self_term(LAW, float("inf")), "ell"),
    (lambda: kernel_self_term(None, 1.0), "law"),
    (lambda: mmd2(torch.zeros(4, 3), LAW, 1.0), "x"),
    (lambda: mmd2(torch.full((4, 2), float("nan")), LAW, 1.0), "x"),
    (lambda: mmd2(torch.zeros(1, 2), LAW, 1.0), "x"),
    (lambda: mmd2(X, LAW, -1.0), "ell"),
    (lambda: mmd2(X, LAW, 1.0, unbiased=1), "unbiased"),
    (lambda: mmd2_laws(LAW, _module_law(ONE), 1.0), "q"),
    (lambda: mmd2_laws(LAW, "q", 1.0), "q"),
    (lambda: standard_error(torch.zeros(1, 3)), "features"),
    (lambda: standard_error(torch.zeros(2, 2, 2)), "features"),
]


@pytest.mark.parametrize("call, name", BAD)
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()


def test_v_statistic_accepts_one_point():
    assert mmd2(torch.zeros(1, 2), LAW, 1.0, unbiased=False) > 0
