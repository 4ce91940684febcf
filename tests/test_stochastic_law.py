"""The probe-column output law of a stochastic sampler (sdm_verify.harness.stochastic_law) against Monte Carlo, and
its refusals; the weak/strong meters on a sampler written here (Euler-Maruyama for the reverse VE SDE, beta(t) = 1/t,
written independently of sdm_verify.solvers)."""

import math

import pytest
import torch

from analytic import Gaussian
from sdm_verify.errors import InputError
from sdm_verify.harness import targets
from sdm_verify.harness.noise import GaussianNoise
from sdm_verify.harness.stochastic import grid, strong, weak_gaussian
from sdm_verify.harness.stochastic_law import StochasticGaussianMeter

F64 = torch.float64


def em(den, x, sigmas, noise, s_noise=1.0):
    """Euler-Maruyama: x' = x - 2 (t - t')/t (x - D) + sqrt(2 t (t - t')) z; x <- D into sigma = 0."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        t, u = s[i], s[i + 1]
        d = den(x, t)
        if u == 0:
            x = d
            continue
        x = x - 2 * (t - u) / t * (x - d) + s_noise * math.sqrt(2 * t * (t - u)) * noise(i, t, u)
    return x


em.weak_order = em.strong_order = 1.0


def test_probe_law_agrees_with_monte_carlo():
    """Mean and covariance of 40000 runs with independent draws lie within 5 standard errors of the probe law."""
    target = targets.get("gauss-4d")
    sigmas = grid(6, 0.05, 10.0)
    meter = StochasticGaussianMeter(target, 10.0, 0.05)
    law = meter.law(em, sigmas)
    assert law.draws == 6 and law.nfe == 6 and law.residual < 1e-12
    n = 40000
    x = target.sample(n, sigma=10.0, generator=torch.Generator().manual_seed(1))
    y = em(target.denoiser, x, sigmas, GaussianNoise(x, seed=2))
    mean, cov = y.mean(0), torch.cov(y.T)
    exact = law.covariance
    se_mean = torch.sqrt(torch.diagonal(exact) / n)
    assert ((mean - law.mean).abs() <= 5 * se_mean).all()
    var = torch.diagonal(exact)
    se_cov = torch.sqrt((var[:, None] * var[None, :] + exact**2) / n)  # Var of a Gaussian sample covariance entry
    assert ((cov - exact).abs() <= 5 * se_cov).all()


def test_probe_law_equals_the_law_pushed_by_hand():
    """One DDPM posterior step y = r x + (1 - r) D(x) + u sqrt(1 - r) z from x ~ p_t, with the Gaussian's affine
    denoiser D(x) = m + C (C + t^2 I)^-1 (x - m): y ~ N(m, P (C + t^2 I) P^T + u^2 (1 - r) I), P = r I + (1 - r) K."""
    m, C = torch.tensor([0.3, -1.0], dtype=F64), torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=F64)
    target, t, u = Gaussian(m, C), 3.0, 0.7

    def ddpm(den, x, sigmas, noise):
        r = u * u / (t * t)
        return r * x + (1 - r) * den(x, t) + u * math.sqrt(1 - r) * noise(0, t, u)

    law = StochasticGaussianMeter(target, t, u).law(ddpm, torch.tensor([t, u], dtype=F64))
    eye, r = torch.eye(2, dtype=F64), u * u / (t * t)
    K = C @ torch.linalg.inv(C + t * t * eye)
    P = r * eye + (1 - r) * K
    cov = P @ (C + t * t * eye) @ P.T + u * u * (1 - r) * eye
    assert torch.allclose(law.mean, m, rtol=0, atol=1e-14)
    assert torch.allclose(law.covariance, cov, rtol=1e-13, atol=1e-14)


@pytest.mark.slow
def test_scaled_noise_is_caught_by_the_exact_law():
    """Noise scaled by 1.05: the W2 to p_sigma_min stops shrinking (a plateau), where the true sampler's halves.
    Slow (8 s): the default run checks the same through validate (tests/test_stochastic_claims.py)."""
    target = targets.get("gauss-4d")
    ns = (64, 128, 256, 512)
    good = weak_gaussian(em, target, ns=ns, to_zero=False)
    bad = weak_gaussian(lambda *a: em(*a, s_noise=1.05), target, ns=ns, to_zero=False)
    assert good.fit.ok and abs(good.fit.order - 1.0) < 0.15
    assert good.errors[-1] < 0.55 * good.errors[-2]
    assert bad.errors[-1] > 0.85 * bad.errors[-2]  # no longer converging: a bias of ~0.08 remains
    assert bad.errors[-1] > 10 * good.errors[-1]


def test_euler_maruyama_weak_order_one_on_the_exact_law():
    m = weak_gaussian(em, targets.get("gauss-4d"), ns=(16, 32, 64, 128))
    assert m.fit.ok and abs(m.order - 1.0) < 0.15
    # the full sampler's last step (into 0) adds a fixed-size error: W2 to p_0 does not fall below it
    assert all(w >= 0.0 for w in m.extra["w2_to_zero"])


def test_euler_maruyama_strong_order_one_with_additive_noise():
    """Against torchsde's SRK on the same Brownian motion; the reference's floor is 100x below the errors fitted."""
    m = strong(em, targets.get("gauss-4d"), ns=(16, 32, 64, 128, 256), paths=64)
    assert m.extra["reference_floor"] < m.errors[-1] / 50
    assert m.fit.ok and abs(m.order - 1.0) < 0.15


def test_a_sampler_not_affine_in_its_noise_is_refused():
    def squared(den, x, sigmas, noise):
        s = sigmas.tolist()
        for i in range(len(s) - 1):
            x = den(x, s[i]) + s[i + 1] * noise(i, s[i], s[i + 1]) ** 2
        return x

    with pytest.raises(InputError, match="not affine"):
        StochasticGaussianMeter(targets.get("gauss-4d"), 10.0, 0.1).law(squared, grid(3, 0.1, 10.0))


def test_draws_that_depend_on_the_data_are_refused():
    def decides(den, x, sigmas, noise):
        s = sigmas.tolist()
        for i in range(len(s) - 1):
            j = i if x.shape[0] == 1 else i + 100  # a different draw once the batch is the probe batch
            x = den(x, s[i]) + s[i + 1] * noise(j, s[i], s[i + 1])
        return x

    target = Gaussian([0.0], [[1.0]])
    with pytest.raises(InputError, match="did not ask"):
        StochasticGaussianMeter(target, 10.0, 0.1).law(decides, grid(3, 0.1, 10.0))


def test_gaussian_meter_needs_a_gaussian():
    with pytest.raises(InputError, match="target"):
        StochasticGaussianMeter(targets.get("gmm-1d"), 10.0, 0.1)


def overlapping(den, x, sigmas, noise):
    """Two draws per step over overlapping intervals [t_mid, t] and [t', t] (k-diffusion's sample_dpmpp_sde pattern):
    correlated under a Brownian source, independent under a seeded one."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        t, u = s[i], s[i + 1]
        mid = (t * u) ** 0.5
        d = den(x, t)
        x = d + (u / t) * (x - d) + 0.5 * u * noise(2 * i, t, mid) + 0.5 * u * noise(2 * i + 1, t, u)
    return x


@pytest.mark.parametrize("model", ["brownian", "independent"])
def test_noise_models_agree_with_monte_carlo(model):
    """The probe law under each noise model matches 40000 runs driven by the matching source (BrownianNoise /
    GaussianNoise); the two laws differ, so the model matters for samplers with overlapping draws."""
    from sdm_verify.harness.noise import BrownianNoise

    target = Gaussian([0.2, -0.4], [[0.8, 0.3], [0.3, 0.6]])
    sigmas = torch.tensor([4.0, 2.0, 0.8, 0.3], dtype=F64)
    law = StochasticGaussianMeter(target, 4.0, 0.3, noise=model).law(overlapping, sigmas)
    other = StochasticGaussianMeter(target, 4.0, 0.3, noise={"brownian": "independent", "independent": "brownian"}[
        model]).law(overlapping, sigmas)
    n = 40000
    x = target.sample(n, sigma=4.0, generator=torch.Generator().manual_seed(3))
    source = BrownianNoise(x, 4.0, seed=4) if model == "brownian" else GaussianNoise(x, seed=4)
    y = overlapping(target.denoiser, x, sigmas, source)
    cov, exact = torch.cov(y.T), law.covariance
    var = torch.diagonal(exact)
    se_cov = torch.sqrt((var[:, None] * var[None, :] + exact**2) / n)
    assert ((cov - exact).abs() <= 5 * se_cov).all()
    assert ((other.covariance - exact).abs() > 10 * se_cov).any()
