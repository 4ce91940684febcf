"""The oracle's exact calculus of the PF-ODE (analytic.calculus, analytic.flows.exact_flow) against independent
checks: Gaussian closed forms, central differences of the exact flow and of the denoiser in float64, and automatic
differentiation through the closed-form denoiser (which never forms the Tweedie Jacobian the oracle uses)."""

import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwad
from _strategies import F64, random_mixture, random_spd

from analytic import Gaussian, exact_flow, gaussian_flow_map, reference_flow
from analytic.calculus import denoiser_dsigma, expansion_rate, second_derivative, velocity
from sdm_verify.harness import targets

pytestmark = pytest.mark.theory

C2 = 0.25
ISO = Gaussian([0.3, -0.2, 0.1], C2 * np.eye(3))
SIGMAS = (0.05, 0.7, 2.0, 30.0)


def _gaussian(seed: int, d: int = 4) -> Gaussian:
    rng = np.random.default_rng(seed)
    return Gaussian(rng.standard_normal(d), random_spd(rng, d, lo=1e-2, hi=2.0))


def _closed(g: Gaussian, s: float):
    """(S, (S + s^2 I)^{-1}) of a Gaussian N(m, S), numpy float64."""
    S = g.covariances[0].numpy()
    return S, np.linalg.inv(S + s * s * np.eye(g.d))


# ------------------------------------------------------------------------------------------------ x'
@pytest.mark.parametrize("s", SIGMAS)
def test_velocity_is_the_noise_prediction_and_the_derivative_of_the_exact_flow(s):
    """x' = (x - D)/sigma equals -sigma * score (the closed form's other route, to rounding), and the central
    difference (Phi(s + d) - Phi(s - d))/(2 d) of the closed-form flow with d = 1e-4 s: truncation d^2 |x'''|/6
    ~ 1e-9 relative, rounding ~ eps |x| / d ~ 1e-12 |x|/s: 1e-6 relative leaves a wide margin."""
    g = _gaussian(1)
    x = g.sample(8, sigma=s, generator=torch.Generator().manual_seed(0))
    v = velocity(g, x, s)
    torch.testing.assert_close(v, g.eps(x, s), rtol=1e-10, atol=1e-12)
    dlt = 1e-4 * s
    fd = (gaussian_flow_map(g, x, s, s + dlt) - gaussian_flow_map(g, x, s, s - dlt)) / (2 * dlt)
    assert float((fd - v).norm() / v.norm()) < 1e-6


# ------------------------------------------------------------------------------------------- dD/dsigma
@pytest.mark.parametrize("s", SIGMAS)
def test_denoiser_dsigma_closed_form_on_a_gaussian(s):
    """D = m + S (S + s^2 I)^{-1} (x - m), so dD/dsigma = -2 s S (S + s^2 I)^{-2} (x - m) (numpy, float64)."""
    g = _gaussian(2)
    x = g.sample(8, sigma=s, generator=torch.Generator().manual_seed(1))
    S, R = _closed(g, s)
    exact = -2 * s * (x.numpy() - g.means[0].numpy()) @ (S @ R @ R).T
    got = denoiser_dsigma(g, x, s).numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())  # a few matrix roundings


@pytest.mark.parametrize("s", SIGMAS)
def test_denoiser_dsigma_matches_a_central_difference_on_a_mixture(s):
    """(D(x, s + h) - D(x, s - h))/(2 h), h = 1e-4 s, on a random 3-component mixture in d = 5: truncation
    h^2 |D'''|/6 ~ 1e-8 of the scale of D' (D varies on the scale of s), rounding ~ eps |D| / h ~ 1e-12 |D|/s."""
    g = random_mixture(7, 5, 3)
    x = g.sample(16, sigma=s, generator=torch.Generator().manual_seed(2))
    h = 1e-4 * s
    fd = (g.denoiser(x, s + h) - g.denoiser(x, s - h)) / (2 * h)
    got = denoiser_dsigma(g, x, s)
    scale = float(got.abs().max()) + 1e-12 * float(g.denoiser(x, s).abs().max()) / s
    assert float((fd - got).abs().max()) <= 1e-6 * scale


# ------------------------------------------------------------------------------------------------ x''
def test_second_derivative_closed_form_on_an_isotropic_gaussian():
    """docs/sdm.md §6 (a): x'' = c^2 (x - mu)/(c^2 + sigma^2)^2, kappa* = |x''|/|x'| = c^2/(sigma (c^2 + sigma^2))."""
    x = ISO.sample(8, sigma=2.0, generator=torch.Generator().manual_seed(0))
    for s in SIGMAS:
        y = x - ISO.mean
        torch.testing.assert_close(second_derivative(ISO, x, s), C2 * y / (C2 + s * s) ** 2, rtol=1e-12,
                                   atol=1e-15)  # closed form, a few roundings
        kappa = second_derivative(ISO, x, s).norm(dim=1) / velocity(ISO, x, s).norm(dim=1)
        torch.testing.assert_close(kappa, torch.full((8,), C2 / (s * (C2 + s * s)), dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("target", ["gmm-1d", "gmm-8d", "gauss-4d"])
def test_second_derivative_matches_a_central_difference_of_the_exact_flow(target):
    """(Phi(s + d) - 2 x + Phi(s - d))/d^2 = x'' + O(d^2): with d = 1e-3 s the truncation is ~1e-6 relative and the
    DOP853 reference (rtol 1e-12) contributes ~1e-12 |x| / d^2 ~ 1e-6 |x|/s^2 absolute."""
    g = targets.get(target)
    x = g.sample(6, sigma=1.0, generator=torch.Generator().manual_seed(3))
    for s in (0.3, 1.0, 4.0):
        dlt = 1e-3 * s
        if g.K == 1:
            up, dn = gaussian_flow_map(g, x, s, s + dlt), gaussian_flow_map(g, x, s, s - dlt)
        else:
            up, dn = (reference_flow(g, x, s, s + dlt, rtol=1e-13, atol=1e-14),
                      reference_flow(g, x, s, s - dlt, rtol=1e-13, atol=1e-14))
        fd = (up - 2 * x + dn) / dlt**2
        xdd = second_derivative(g, x, s)
        assert float((fd - xdd).norm() / xdd.norm()) < 1e-4  # O(d^2) + reference noise, see docstring


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_second_derivative_matches_forward_mode_autodiff_of_the_velocity(seed):
    """x'' = d/dsigma v(x(sigma), sigma) = (dv/dx) x' + dv/dsigma: one forward-mode JVP of the velocity in the
    direction (x', 1), through the denoiser's closed form (no Tweedie Jacobian): equal to rounding (1e-10)."""
    g = random_mixture(seed, 4, 3)
    for s in (0.1, 0.8, 5.0):
        x = g.sample(12, sigma=s, generator=torch.Generator().manual_seed(seed))
        xd = velocity(g, x, s)
        s0 = torch.tensor(s, dtype=F64)
        with fwad.dual_level():
            out = velocity(g, fwad.make_dual(x, xd), fwad.make_dual(s0, torch.ones_like(s0)))
            jvp = fwad.unpack_dual(out).tangent.clone()
        torch.testing.assert_close(second_derivative(g, x, s), jvp, rtol=1e-10, atol=1e-12 * float(jvp.abs().max()))


# ---------------------------------------------------------------------------------------- expansion rate
@pytest.mark.parametrize("s", SIGMAS)
def test_expansion_rate_closed_form_on_a_gaussian(s):
    """J_D = S (S + s^2 I)^{-1} everywhere, symmetric with eigenvalues l/(l + s^2): the rate is max_j of those."""
    g = _gaussian(3)
    x = g.sample(5, sigma=s, generator=torch.Generator().manual_seed(4))
    lam = g.eigvals[0]
    assert expansion_rate(g, x, s) == pytest.approx(float((lam / (lam + s * s)).max()), rel=1e-12)


def test_expansion_rate_matches_the_autograd_jacobian_on_a_mixture():
    """max_b lambda_max(sym dD/dx) with dD/dx by reverse-mode autograd through the denoiser, one point at a time,
    and the eigenvalues by numpy: equal to rounding."""
    g = random_mixture(11, 3, 4, spread=1.5)
    for s in (0.2, 1.0, 3.0):
        x = g.sample(10, sigma=s, generator=torch.Generator().manual_seed(5))
        lam = -math.inf
        for xb in x:
            J = torch.autograd.functional.jacobian(lambda y, s=s: g.denoiser(y[None], s)[0], xb).numpy()
            lam = max(lam, float(np.linalg.eigvalsh(0.5 * (J + J.T))[-1]))
        assert expansion_rate(g, x, s) == pytest.approx(lam, rel=1e-10, abs=1e-13)


# ------------------------------------------------------------------------------------------------ flow
def test_exact_flow_is_the_closed_form_for_a_gaussian_and_the_reference_otherwise():
    g, m = _gaussian(4), random_mixture(5, 2, 2)
    xg = g.sample(4, sigma=3.0, generator=torch.Generator().manual_seed(6))
    xm = m.sample(4, sigma=3.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(exact_flow(g, xg, 3.0, 0.5), gaussian_flow_map(g, xg, 3.0, 0.5))
    assert torch.equal(exact_flow(m, xm, 3.0, 0.5), reference_flow(m, xm, 3.0, 0.5))
    same = exact_flow(m, xm, 2.0, 2.0)
    assert torch.equal(same, xm) and same is not xm
