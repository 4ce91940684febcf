"""Flow maps: the Gaussian closed form solves the ODE and transports the marginals; the DOP853 reference agrees with
it to its stated floor, and with the monotone rearrangement Q_to(F_from(x)) for 1-D mixtures."""

import pytest
import torch
from _strategies import F64, random_mixture, random_spd
from hypothesis import given, settings
from hypothesis import strategies as st

from analytic import Gaussian, GaussianMixture, gaussian_flow_map, reference_flow
from analytic.flows import gaussian_flow_affine


def _gaussian(seed, d):
    import numpy as np

    rng = np.random.default_rng(seed)
    return Gaussian(rng.standard_normal(d), random_spd(rng, d, 1e-3, 2.0))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8), s_to=st.sampled_from([0.0, 0.002, 0.5, 3.0]))
def test_gaussian_flow_solves_the_ode(seed, d, s_to):
    g = _gaussian(seed, d)
    x = g.sample(4, sigma=10.0, generator=torch.Generator().manual_seed(seed))
    s_from, s = 10.0, max(s_to, 0.01)
    h = 1e-4 * s
    fd = (gaussian_flow_map(g, x, s_from, s + h) - gaussian_flow_map(g, x, s_from, s - h)) / (2 * h)
    y = gaussian_flow_map(g, x, s_from, s)
    # dx/dsigma = (x - D)/sigma; central-difference truncation ~ h^2 |x'''| is < 1e-6 here
    torch.testing.assert_close(fd, (y - g.denoiser(y, s)) / s, rtol=1e-6, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8))
def test_gaussian_flow_pushes_marginal_to_marginal(seed, d):
    g = _gaussian(seed, d)
    M, c = gaussian_flow_affine(g, 20.0, 0.05)
    eye = torch.eye(d, dtype=F64)
    # pushforward of N(mu, S + 400 I) under x -> Mx + c is N(M mu + c, M (S + 400 I) M^T): must equal p_0.05
    torch.testing.assert_close(M @ g.mean + c, g.mean, rtol=0, atol=1e-12)
    pushed = M @ (g.covariance + 400 * eye) @ M.T
    torch.testing.assert_close(pushed, g.covariance + 0.0025 * eye, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", [1, 3, 8])
@pytest.mark.parametrize("s_to", [0.002, 0.0])
def test_reference_flow_floor_against_closed_form(d, s_to):
    g = _gaussian(d, d)
    x = g.sample(32, sigma=80.0, generator=torch.Generator().manual_seed(d))
    err = (reference_flow(g, x, 80.0, s_to) - gaussian_flow_map(g, x, 80.0, s_to)).abs().max().item()
    assert err < 1e-10, err  # the documented floor (measured ~3e-13 at rtol = atol = 1e-12)


def test_reference_flow_1d_mixture_is_the_monotone_rearrangement():
    """In 1-D the PF-ODE map from sigma_a to sigma_b is Q_b(F_a(x)), computed from closed-form CDFs only."""
    gm = GaussianMixture([0.3, 0.7], [[-2.0], [1.0]], [[[0.05]], [[0.3]]])
    x = gm.sample(40, sigma=20.0, generator=torch.Generator().manual_seed(0))
    ref = reference_flow(gm, x, 20.0, 0.01)[:, 0]
    u = gm.cdf(x[:, 0], 20.0)
    lower = u <= 0.5
    upper_tail = gm.sf(x[:, 0], 20.0).clamp(1e-300, 0.5)
    rearr = torch.where(lower, gm.quantile(u.clamp(1e-300, 0.5), 0.01), gm.isf(upper_tail, 0.01))
    # both are accurate to ~1e-12; the inverse-CDF is well conditioned away from the gap between modes
    torch.testing.assert_close(ref, rearr, rtol=0, atol=1e-9)


def test_reference_flow_mixture_self_convergence():
    gm = random_mixture(5, d=4, K=3)
    x = gm.sample(16, sigma=80.0, generator=torch.Generator().manual_seed(1))
    fine = reference_flow(gm, x, 80.0, 0.002, rtol=1e-13, atol=1e-13)
    coarse = reference_flow(gm, x, 80.0, 0.002, rtol=1e-9, atol=1e-9)
    assert (fine - coarse).abs().max() < 1e-7  # tolerance-proportional: 1e-9 requested, global error amplified < 100x


def test_flow_validation():
    g = _gaussian(0, 2)
    gm = random_mixture(0, d=2, K=2)
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="^gaussian:"):
        gaussian_flow_map(gm, x, 1.0, 0.5)
    with pytest.raises(ValueError, match="^sigma_from:"):
        gaussian_flow_map(g, x, -1.0, 0.5)
    with pytest.raises(ValueError, match="^x:"):
        reference_flow(gm, torch.zeros(3, 5, dtype=F64), 1.0, 0.5)
    with pytest.raises(ValueError, match="^target:"):
        reference_flow("not a target", x, 1.0, 0.5)
