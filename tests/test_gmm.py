"""The mixture targets against independent mathematics: autograd, scipy densities, Tweedie, sampling moments."""

import math

import numpy as np
import pytest
import torch
from _strategies import F64, mixtures, random_mixture, sigmas
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analytic import Gaussian, GaussianMixture


def _points(gm, sigma, n=6, seed=0):
    return gm.sample(n, sigma=max(sigma, 0.3), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None)
@given(gm=mixtures(), sigma=sigmas)
def test_log_prob_matches_scipy(gm, sigma):
    x = _points(gm, sigma)
    ref = np.log(sum(
        float(w) * stats.multivariate_normal(m.numpy(), (c + sigma**2 * torch.eye(gm.d, dtype=F64)).numpy()).pdf(
            x.numpy()).reshape(-1)
        for w, m, c in zip(gm.weights, gm.means, gm.covariances, strict=True)
    ))
    # scipy's pdf is accurate to ~1e-14 relative at these moderate densities
    np.testing.assert_allclose(gm.log_prob(x, sigma).numpy(), ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(gm=mixtures(), sigma=sigmas)
def test_score_is_grad_log_prob_and_denoiser_is_tweedie(gm, sigma):
    x = _points(gm, sigma).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, sigma).sum(), x)
    x = x.detach()
    scale = 1.0 + grad.abs().max().item()
    # autograd and the closed form differ only by round-off: ~1e-15 relative to the score's size
    torch.testing.assert_close(gm.score(x, sigma), grad, rtol=1e-10, atol=1e-11 * scale)
    # Tweedie: D = x + sigma^2 grad log p_sigma (Efron 2011), with the gradient from autograd
    tweedie = x + sigma**2 * grad
    torch.testing.assert_close(gm.denoiser(x, sigma), tweedie, rtol=1e-10, atol=1e-10 * (1 + sigma**2 * scale))
    if sigma > 0:
        torch.testing.assert_close(gm.eps(x, sigma), -sigma * grad, rtol=1e-10, atol=1e-10 * sigma * scale)


@settings(max_examples=20, deadline=None)
@given(gm=mixtures(d=st.integers(1, 5)), sigma=sigmas)
def test_jacobian_matches_autograd(gm, sigma):
    x = _points(gm, sigma, n=3)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda y: gm.denoiser(y[None], sigma)[0], xi) for xi in x])
    torch.testing.assert_close(gm.denoiser_jacobian(x, sigma), jac, rtol=1e-8, atol=1e-9)
    # second Tweedie identity: Cov[x0|x] = sigma^2 dD/dx is symmetric positive semidefinite
    cov = gm.posterior_covariance(x, sigma)
    torch.testing.assert_close(cov, cov.transpose(-1, -2), rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(cov).min() > -1e-12


def test_sigma_zero_limits():
    gm = random_mixture(1, d=3, K=3)
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(gm.denoiser(x, 0.0), x, rtol=0, atol=1e-14)
    eye = torch.eye(3, dtype=F64).expand(4, 3, 3)
    torch.testing.assert_close(gm.denoiser_jacobian(x, 0.0), eye, rtol=0, atol=1e-13)
    # continuity at sigma -> 0: D(x, s) - x = s^2 score = O(s^2)
    assert (gm.denoiser(x, 1e-6) - x).abs().max() < 1e-9


def test_per_sample_sigma_matches_scalar_calls():
    gm = random_mixture(2, d=2, K=2)
    x = torch.randn(3, 2, dtype=F64)
    s = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    rows = torch.cat([gm.denoiser(x[i : i + 1], float(s[i])) for i in range(3)])
    torch.testing.assert_close(gm.denoiser(x, s), rows, rtol=0, atol=1e-15)
    jr = torch.cat([gm.denoiser_jacobian(x[i : i + 1], float(s[i])) for i in range(3)])
    torch.testing.assert_close(gm.denoiser_jacobian(x, s), jr, rtol=0, atol=1e-15)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_sampling_moments(sigma):
    gm = random_mixture(3, d=3, K=3)
    n = 200_000
    xs = gm.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(0))
    mean, cov = gm.moments()
    cov = cov + sigma**2 * torch.eye(3, dtype=F64)
    se = torch.sqrt(torch.diagonal(cov) / n)
    # 5 standard errors: a false alarm has probability < 1e-5 per coordinate
    assert ((xs.mean(0) - mean).abs() < 5 * se).all()
    emp = torch.cov(xs.T)
    se_cov = torch.sqrt((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None] + cov**2) / n)
    assert ((emp - cov).abs() < 6 * se_cov).all()  # Var of a sample covariance ~ (s_ii s_jj + s_ij^2)/n (Gaussian)


def test_moments_closed_form_for_two_points():
    gm = GaussianMixture([0.25, 0.75], [[-1.0], [3.0]], [[[0.5]], [[0.5]]])
    m, c = gm.moments()
    assert m.item() == pytest.approx(0.25 * -1 + 0.75 * 3)
    assert c.item() == pytest.approx(0.5 + 0.25 * 0.75 * 4.0**2)  # within + between (Bernoulli) variance


def test_1d_cdf_quantile_against_scipy_and_tails():
    gm = GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [[[0.2]], [[0.6]]])
    for sigma in (0.0, 0.4, 5.0):
        sd = np.sqrt(np.array([0.2, 0.6]) + sigma**2)
        xs = np.linspace(-12, 12, 41)
        cdf = 0.3 * stats.norm.cdf(xs, -2.0, sd[0]) + 0.7 * stats.norm.cdf(xs, 1.5, sd[1])
        sf = 0.3 * stats.norm.sf(xs, -2.0, sd[0]) + 0.7 * stats.norm.sf(xs, 1.5, sd[1])
        np.testing.assert_allclose(gm.cdf(torch.tensor(xs), sigma).numpy(), cdf, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(gm.sf(torch.tensor(xs), sigma).numpy(), sf, rtol=1e-12, atol=1e-300)
        p = torch.tensor([1e-30, 1e-8, 0.1, 0.5, 0.9], dtype=F64)
        # inverse to ~1e-13 relative in probability, tails included
        np.testing.assert_allclose(gm.cdf(gm.quantile(p, sigma), sigma).numpy(), p.numpy(), rtol=1e-12)
        np.testing.assert_allclose(gm.sf(gm.isf(p, sigma), sigma).numpy(), p.numpy(), rtol=1e-12)


def test_gaussian_is_a_one_component_mixture():
    g = Gaussian([1.0, -1.0], [[2.0, 0.3], [0.3, 1.0]])
    assert g.K == 1 and g.d == 2
    torch.testing.assert_close(g.mean, torch.tensor([1.0, -1.0], dtype=F64))
    x = torch.randn(5, 2, dtype=F64)
    # closed form: D = mu + S (S + s^2 I)^{-1} (x - mu)
    S = g.covariance
    D = g.mean + (x - g.mean) @ torch.linalg.solve(S + 4.0 * torch.eye(2, dtype=F64), S).T
    torch.testing.assert_close(g.denoiser(x, 2.0), D, rtol=1e-12, atol=1e-13)
    assert isinstance(g.marginal(1.0), Gaussian)


BAD = [
    (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covariances=[[[1.0]], [[1.0]]]), "weights"),
    (dict(weights=[1.2, -0.2], means=[[0.0], [1.0]], covariances=[[[1.0]], [[1.0]]]), "weights"),
    (dict(weights=[1.0], means=[[0.0], [1.0]], covariances=[[[1.0]], [[1.0]]]), "weights"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[1.0, 2.0], [2.0, 1.0]]]), "covariances"),  # indefinite
    (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[1.0, 0.5], [0.0, 1.0]]]), "covariances"),  # asymmetric
    (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[0.0, 0.0], [0.0, 1.0]]]), "covariances"),  # singular
    (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[1.0]]]), "covariances"),  # shape
    (dict(weights=[1.0], means=[[math.nan]], covariances=[[[1.0]]]), "means"),
    (dict(weights=[1.0], means=[0.0], covariances=[[[1.0]]]), "means"),
]


@pytest.mark.parametrize("kwargs,name", BAD)
def test_constructor_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        GaussianMixture(**kwargs)


def test_methods_reject_bad_input():
    gm = random_mixture(0, d=2, K=2)
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="^sigma:"):
        gm.denoiser(x, -1.0)
    with pytest.raises(ValueError, match="^sigma:"):
        gm.score(x, float("nan"))
    with pytest.raises(ValueError, match="^x:"):
        gm.denoiser(torch.zeros(3, 3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="^x:"):
        gm.denoiser(torch.full((3, 2), math.inf, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="^n:"):
        gm.sample(0)
    with pytest.raises(ValueError, match="^cdf:"):
        gm.cdf(torch.zeros(3))
    with pytest.raises(ValueError, match="^covariance:"):
        Gaussian([0.0], [[-1.0]])
    with pytest.raises(ValueError, match="^u:"):
        GaussianMixture([1.0], [[0.0]], [[[1.0]]]).quantile(torch.tensor([0.0, 0.5]))


def test_diagonal_mixture_equals_full_form():
    rng = __import__("numpy").random.default_rng(4)
    w, mu, var = rng.dirichlet([1, 1, 1]), rng.standard_normal((3, 5)), rng.uniform(0.1, 2.0, (3, 5))
    diag = GaussianMixture.from_diagonal(w, mu, var)
    full = GaussianMixture(w, mu, __import__("numpy").stack([__import__("numpy").diag(v) for v in var]))
    x = full.sample(7, sigma=0.5, generator=torch.Generator().manual_seed(0))
    for s in (0.0, 0.3, 20.0):
        for name in ("denoiser", "score", "log_prob", "denoiser_jacobian"):
            torch.testing.assert_close(getattr(diag, name)(x, s), getattr(full, name)(x, s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(diag.marginal(2.0).covariances, full.marginal(2.0).covariances)
    with pytest.raises(ValueError, match="^variances:"):
        GaussianMixture.from_diagonal(w, mu, -var)
