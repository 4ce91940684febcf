"""The classifier-free-guidance oracle (analytic.guidance, analytic.guidance_joint; docs/guidance.md).

Checked against independent computations: mixtures built by hand, autograd and finite differences, the existing
closed-form Gaussian flow, a DOP853 solve of the guided ODE, scipy quadrature of the product density, the existing
exact 1-D W2 against a cloud, and sampling. Exactness claims (w = 0 and w = 1) are asserted with torch.equal.
"""

import math

import numpy as np
import pytest
import torch
from _strategies import random_mixture, random_spd
from scipy.integrate import quad

from analytic import GaussianMixture, reference_flow
from analytic.flows import gaussian_flow_affine
from analytic.guidance import LabelledMixture, TiltedLaw1D, guided_reference_flow
from analytic.guidance_joint import JointGaussianGuidance
from analytic.wasserstein import w2_1d_cloud

F64 = torch.float64
SIGMAS = [0.0, 0.002, 0.3, 2.0, 80.0]


def _labelled(seed=3, d=2):
    return LabelledMixture(random_mixture(seed, d, 4), ["a", "b", "a", 7])


def _mix1d():
    return GaussianMixture([0.3, 0.5, 0.2], [[-2.0], [0.5], [3.0]], [[[0.3]], [[0.8]], [[0.2]]])


def _joint(d=3, seed=0):
    """Commuting covariances in a random orthonormal basis (C_c <= C_u, as for a joint Gaussian)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    vu = rng.uniform(0.4, 2.0, d)
    return JointGaussianGuidance.commuting(rng.standard_normal(d), vu, rng.standard_normal(d),
                                           vu * rng.uniform(0.1, 0.9, d), basis=q)


def _points(law, n, sigma, seed=0):
    return law.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- labelled mixtures
def test_conditional_is_the_mixture_built_by_hand():
    lm = _labelled()
    m = lm.mixture
    w = m.weights[[0, 2]]
    hand = GaussianMixture(w / w.sum(), m.means[[0, 2]], m.covariances[[0, 2]])
    cond = lm.conditional("a")
    torch.testing.assert_close(cond.weights, hand.weights, rtol=1e-15, atol=0)
    assert torch.equal(cond.means, hand.means) and torch.equal(cond.covariances, hand.covariances)
    x = _points(m, 16, 1.0)
    for s in SIGMAS:
        torch.testing.assert_close(lm.denoiser(x, s, "a"), hand.denoiser(x, s), rtol=1e-13, atol=1e-13)
    assert lm.class_probability("a") == pytest.approx(float(w.sum()), rel=1e-15)
    assert lm.classes == ("a", "b", 7) and lm.unconditional is m
    assert torch.equal(lm.conditional(7).means, m.means[[3]])  # one component: the component itself


@pytest.mark.parametrize("sigma", SIGMAS)
def test_w1_and_w0_are_exact(sigma):
    """(1 - w) D_u + w D_c is D_c bit for bit at w = 1 and D_u at w = 0 (IEEE: 0 * a + b = b for finite a)."""
    lm = _labelled()
    x = _points(lm.mixture, 32, max(sigma, 0.1))
    assert torch.equal(lm.guided_denoiser(x, sigma, "b", 1.0), lm.denoiser(x, sigma, "b"))
    assert torch.equal(lm.guided_denoiser(x, sigma, "b", 0.0), lm.denoiser(x, sigma))
    assert torch.equal(lm.guided_jacobian(x, sigma, "a", 1.0), lm.conditional("a").denoiser_jacobian(x, sigma))
    assert torch.equal(lm.guided_jacobian(x, sigma, "a", 0), lm.mixture.denoiser_jacobian(x, sigma))
    assert torch.equal(lm.guided_field("a", 7.5)(x, sigma), lm.guided_denoiser(x, sigma, "a", 7.5))


@pytest.mark.parametrize("g", [1.5, 7.5])
def test_eps_space_guidance_is_denoiser_space_guidance(g):
    """diffusers: eps = eps_u + g (eps_c - eps_u); k-diffusion wrappers: the same on D; Ho & Salimans:
    eps = (1 + w') eps_c - w' eps_u with w' = g - 1. All give D = x - sigma eps = D_w at w = g."""
    lm = _labelled()
    x, s = _points(lm.mixture, 16, 1.5), 1.5
    eps_u, eps_c = (x - lm.denoiser(x, s)) / s, (x - lm.denoiser(x, s, "a")) / s
    target = lm.guided_denoiser(x, s, "a", g)
    torch.testing.assert_close(x - s * (eps_u + g * (eps_c - eps_u)), target, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x - s * ((1 + (g - 1)) * eps_c - (g - 1) * eps_u), target, rtol=1e-12, atol=1e-12)
    du, dc = lm.denoiser(x, s), lm.denoiser(x, s, "a")
    torch.testing.assert_close(du + (dc - du) * g, target, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("w", [0.5, 3.0, 7.5])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 5.0])
def test_guided_jacobian_matches_autograd_and_differences(w, sigma):
    lm = _labelled(seed=5, d=3)
    x = _points(lm.mixture, 3, sigma, seed=1)
    J = lm.guided_jacobian(x, sigma, "a", w)
    for i in range(x.shape[0]):
        auto = torch.autograd.functional.jacobian(lambda v: lm.guided_denoiser(v[None], sigma, "a", w)[0], x[i])
        torch.testing.assert_close(J[i], auto, rtol=1e-10, atol=1e-10)
        h = 1e-5 * max(sigma, 0.1)
        e = torch.eye(3, dtype=F64) * h
        fd = (lm.guided_denoiser(x[i] + e, sigma, "a", w) - lm.guided_denoiser(x[i] - e, sigma, "a", w)).T / (2 * h)
        torch.testing.assert_close(J[i], fd, rtol=1e-6, atol=1e-6 * w)


def test_guided_reference_flow_is_the_conditional_flow_at_w1():
    """At w = 1 (w = 0) the field is D_c (D_u) bit for bit, so DOP853 takes the same steps as reference_flow."""
    lm = _labelled()
    x = _points(lm.mixture, 6, 20.0)
    assert torch.equal(guided_reference_flow(lm, "a", 1.0, x, 20.0, 0.05),
                       reference_flow(lm.conditional("a"), x, 20.0, 0.05))
    assert torch.equal(guided_reference_flow(lm, "a", 0.0, x, 20.0, 0.05), reference_flow(lm.mixture, x, 20.0, 0.05))


# ---------------------------------------------------------------------------------------------- joint Gaussian
@pytest.mark.parametrize("commuting", [True, False])
def test_guided_affine_is_the_guided_denoiser(commuting):
    rng = np.random.default_rng(1)
    jg = _joint() if commuting else JointGaussianGuidance(rng.standard_normal(3), random_spd(rng, 3, 0.5, 2.0),
                                                           rng.standard_normal(3), random_spd(rng, 3, 0.1, 0.4))
    assert jg.commute is commuting
    x = _points(jg.unconditional, 8, 1.0)
    for s in SIGMAS:
        for w in (0.0, 1.0, 3.0, 7.5):
            A, b = jg.guided_affine(s, w)
            torch.testing.assert_close(jg.guided_denoiser(x, s, w), x @ A.T + b, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(jg.guided_jacobian(x[:2], s, w), A.expand(2, 3, 3), rtol=1e-12, atol=1e-12)


#: measured max-abs gap between the closed form and guided_reference_flow (rtol = atol = 1e-12), 80 -> {0.002, 0},
#: w in 0..15, |x| <= 3 at sigma = 0: 0.9e-13 .. 6.5e-13 (docs/guidance.md §4); asserted with 4x headroom
REFERENCE_FLOOR = 2.5e-12


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 3.0, 7.5, 15.0])
def test_joint_exact_flow_matches_the_reference_solve(w):
    jg = _joint()
    x = _points(jg.conditional, 8, 80.0, seed=2)
    for s_to in (0.002, 0.0):
        exact = jg.guided_flow_map(x, w, 80.0, s_to)
        ref = guided_reference_flow(jg, None, w, x, 80.0, s_to)
        assert float((exact - ref).abs().max()) < REFERENCE_FLOOR


def test_joint_flow_solves_the_guided_ode():
    """Central differences in sigma_to of the closed form against (x - D_w(x))/sigma (no reference solve)."""
    jg, w = _joint(seed=4), 7.5
    x = _points(jg.conditional, 4, 10.0)
    for s in (0.05, 0.6, 4.0):
        h = 1e-4 * s
        fd = (jg.guided_flow_map(x, w, 10.0, s + h) - jg.guided_flow_map(x, w, 10.0, s - h)) / (2 * h)
        y = jg.guided_flow_map(x, w, 10.0, s)
        torch.testing.assert_close(fd, (y - jg.guided_denoiser(y, s, w)) / s, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_closed_form_reduces_to_the_gaussian_flow(w):
    jg = _joint()
    M, v = jg.guided_flow_affine(w, 50.0, 0.01)
    Mg, vg = gaussian_flow_affine(jg.conditional if w == 1.0 else jg.unconditional, 50.0, 0.01)
    torch.testing.assert_close(M, Mg, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(v, vg, rtol=1e-12, atol=1e-12)


def test_exact_guided_law_matches_pushed_samples():
    """4000 exact draws of N(mu_c, C_c + 80^2 I) through the DOP853 solve: mean and covariance within 5 SE."""
    jg, w, n = _joint(d=2, seed=7), 3.0, 4000
    x = _points(jg.conditional, n, 80.0, seed=11)
    y = guided_reference_flow(jg, None, w, x, 80.0, 0.0, rtol=1e-9, atol=1e-9)
    mean, cov = jg.guided_flow_law(w, 80.0, 0.0, start="conditional")
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert ((y.mean(0) - mean).abs() < 5 * se_mean).all()
    emp = torch.cov(y.T)
    se_cov = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
    assert ((emp - cov).abs() < 5 * se_cov).all()


def test_law_from_infinity_is_the_limit():
    """sigma_max = inf against sigma_max = 1e8 (the mean converges like 1/sigma_max: the tail of J is ~ 1/s^2)."""
    jg = _joint()
    for w in (0.5, 3.0):
        m_inf, c_inf = jg.guided_flow_law(w, math.inf, 0.0)
        for start in ("conditional", "unconditional"):
            m_big, c_big = jg.guided_flow_law(w, 1e8, 0.0, start=start)
            torch.testing.assert_close(m_inf, m_big, rtol=0, atol=1e-7)
            torch.testing.assert_close(c_inf, c_big, rtol=0, atol=1e-7)


@pytest.mark.parametrize("w", [0.5, 2.0, 3.0, 7.5, 15.0])
def test_output_law_from_infinity_in_closed_form_1d(w):
    """1-D, sigma_max = inf, c_c < c_u: with u = (c_c + s^2)/(c_u + s^2) the integral J(inf, 0) becomes an incomplete
    Beta function, so the output law is N(m_u + w (m_c - m_u) phi0 B / (2 sqrt(c_u - c_c)), phi0^2) with
    phi0 = c_u^((1-w)/2) c_c^(w/2), B = int_{c_c/c_u}^1 u^(-1-w/2) (1-u)^(-1/2) du (mpmath; docs/guidance.md §3)."""
    import mpmath

    mx, vx, my, vy, cxy, y = 0.3, 2.0, -1.0, 1.5, 0.9, 0.7
    jg = JointGaussianGuidance.from_joint([mx], [[vx]], [my], [[vy]], [[cxy]], y)
    cu, cc, mc = vx, vx - cxy**2 / vy, mx + cxy / vy * (y - my)
    phi0 = cu ** ((1 - w) / 2) * cc ** (w / 2)
    B = float(mpmath.betainc(-w / 2, 0.5, cc / cu, 1))
    mean, cov = jg.guided_flow_law(w, math.inf, 0.0)
    assert float(mean[0]) == pytest.approx(mx + w * (mc - mx) * phi0 * B / (2 * math.sqrt(cu - cc)), rel=1e-13)
    assert float(cov[0, 0]) == pytest.approx(phi0**2, rel=1e-13)


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 3.0, 7.5])
def test_tilted_gaussian_matches_quadrature_1d(w):
    """x, y jointly Gaussian in 1-D; p(x|y)^w p(x)^(1-w) normalised by scipy quad, against the natural-parameter
    form; the conditional itself against the regression formula written out here."""
    mx, vx, my, vy, cxy, y = 0.3, 2.0, -1.0, 1.5, 0.9, 0.7
    jg = JointGaussianGuidance.from_joint([mx], [[vx]], [my], [[vy]], [[cxy]], y)
    mc, vc = mx + cxy / vy * (y - my), vx - cxy**2 / vy
    assert float(jg.conditional.mean[0]) == pytest.approx(mc, rel=1e-15)
    assert float(jg.conditional.covariance[0, 0]) == pytest.approx(vc, rel=1e-15)

    def f(x):
        return math.exp(-w * (x - mc) ** 2 / (2 * vc) - (1 - w) * (x - mx) ** 2 / (2 * vx))

    pts = sorted({mc, mx})
    parts = [(-np.inf, pts[0]), *zip(pts[:-1], pts[1:], strict=True), (pts[-1], np.inf)]

    def integral(g):
        return sum(quad(g, a, b, epsabs=0, epsrel=1e-13, limit=200)[0] for a, b in parts if a < b)

    Z = integral(f)
    mean = integral(lambda x: x * f(x)) / Z
    var = integral(lambda x: (x - mean) ** 2 * f(x)) / Z
    tm, tc = jg.tilted_law(w)
    assert float(tm[0]) == pytest.approx(mean, rel=1e-11, abs=1e-12)
    assert float(tc[0, 0]) == pytest.approx(var, rel=1e-11)


def test_tilted_law_at_w1_is_the_conditional_and_the_gap():
    rng = np.random.default_rng(2)
    for jg in (_joint(), JointGaussianGuidance(rng.standard_normal(3), random_spd(rng, 3, 0.5, 2.0),
                                               rng.standard_normal(3), random_spd(rng, 3, 0.1, 0.4))):
        tm, tc = jg.tilted_law(1.0)
        torch.testing.assert_close(tm, jg.conditional.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(tc, jg.conditional.covariance, rtol=1e-12, atol=1e-12)
        assert jg.cfg_tilted_gap(1.0) < 1e-12  # the conditional flow carries p_80(. | c) to p(. | c)
        assert jg.cfg_tilted_gap(0.0, start="unconditional") < 1e-12
    jg = _joint()
    assert jg.cfg_tilted_gap(3.0) > 1e-2  # CFG does not sample the tilted law


def test_non_commuting_has_only_the_reference_solve():
    rng = np.random.default_rng(3)
    jg = JointGaussianGuidance(rng.standard_normal(2), random_spd(rng, 2, 0.5, 2.0),
                               rng.standard_normal(2), random_spd(rng, 2, 0.1, 0.4))
    assert not jg.commute
    x = _points(jg.conditional, 4, 10.0)
    with pytest.raises(ValueError, match=r"^cov_c: does not commute"):
        jg.guided_flow_map(x, 3.0, 10.0, 0.0)
    with pytest.raises(ValueError, match=r"^cov_c: does not commute"):
        jg.cfg_tilted_gap(3.0)
    exact = jg.guided_flow_map(x, 1.0, 10.0, 0.01)  # w = 1: the conditional Gaussian flow
    assert float((exact - guided_reference_flow(jg, None, 1.0, x, 10.0, 0.01)).abs().max()) < REFERENCE_FLOOR
    assert torch.isfinite(guided_reference_flow(jg, None, 3.0, x, 10.0, 0.0)).all()


# ---------------------------------------------------------------------------------------------- 1-D tilted mixture
def _quad_total(f, lm):
    pts = sorted(float(m) for m in lm.mixture.means[:, 0])
    parts = [(-np.inf, pts[0]), *zip(pts[:-1], pts[1:], strict=True), (pts[-1], np.inf)]
    return sum(quad(f, a, b, epsabs=0, epsrel=1e-12, limit=400)[0] for a, b in parts)


@pytest.mark.parametrize("w", [0.5, 3.0, 7.5, 15.0])
def test_tilted_mixture_integrates_to_one(w):
    lm = LabelledMixture(_mix1d(), [0, 1, 0])
    tl = lm.tilted(0, w)
    total = _quad_total(lambda x: float(tl.pdf(torch.tensor([x], dtype=F64))[0]), lm)
    assert total == pytest.approx(1.0, abs=1e-11)
    mean = _quad_total(lambda x: x * float(tl.pdf(torch.tensor([x], dtype=F64))[0]), lm)
    assert tl.mean == pytest.approx(mean, abs=1e-11)
    u = torch.tensor([1e-9, 0.02, 0.4, 0.5, 0.93], dtype=F64)
    torch.testing.assert_close(tl.cdf(tl.quantile(u)), u, rtol=1e-12, atol=0)
    torch.testing.assert_close(tl.sf(tl.isf(u)), u, rtol=1e-12, atol=0)


def test_tilted_mixture_endpoints_and_a_shared_label():
    m = _mix1d()
    lm = LabelledMixture(m, [0, 1, 0])
    x = torch.linspace(-5.0, 5.0, 41, dtype=F64)
    torch.testing.assert_close(lm.tilted(0, 1.0).cdf(x), lm.conditional(0).cdf(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(lm.tilted(0, 0.0).cdf(x), m.cdf(x), rtol=0, atol=1e-14)
    same = LabelledMixture(m, ["all"] * 3)  # p(x | c) = p(x): the tilted law is p for every w
    torch.testing.assert_close(same.tilted("all", 7.5).sf(x), m.sf(x), rtol=0, atol=1e-14)


def test_tilted_mixture_w2():
    lm = LabelledMixture(_mix1d(), [0, 1, 0])
    cond = lm.conditional(0)
    tl = lm.tilted(0, 1.0)
    y = _points(cond, 1500, 0.0)
    assert tl.w2_1d(y) == pytest.approx(w2_1d_cloud(y, cond), rel=1e-9)  # cloud: against the closed form
    assert tl.w2_1d(lambda u: cond.quantile(u) + 0.1) == pytest.approx(0.1, rel=1e-9)  # a shift by 0.1
    assert tl.w2_1d(cond) < 1e-10
    t3 = TiltedLaw1D(lm, 0, 3.0)
    # itself, through its quantile and isf: floors at ~2e-9 from the gap between the modes, where q ~ 1e-15 and
    # the cdf is flat to rounding over an interval (the quantile is ill-conditioned there)
    assert t3.w2_1d(t3) < 1e-8
    assert t3.w2_1d(t3.quantile) < 1e-6  # a plain callable: F near 1 only to absolute eps (floor ~1.5e-7 here)


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_labels():
    m = _mix1d()
    with pytest.raises(ValueError, match=r"^labels: expected 3 labels \(one per component\), got 2"):
        LabelledMixture(m, [0, 1])
    with pytest.raises(ValueError, match=r"^labels: component 1 has no label"):
        LabelledMixture(m, [0, None, 1])
    with pytest.raises(ValueError, match=r"^labels: component 0's label \[0\] is not hashable"):
        LabelledMixture(m, [[0], 1, 2])
    with pytest.raises(ValueError, match=r"^labels: expected a sequence of 3 labels"):
        LabelledMixture(m, "abc")
    with pytest.raises(ValueError, match=r"^mixture:"):
        LabelledMixture("m", [0, 1, 2])
    lm = LabelledMixture(m, np.array([0, 1, 2]))
    x = torch.zeros(2, 1, dtype=F64)
    for call in (lambda: lm.conditional(7), lambda: lm.guided_denoiser(x, 1.0, 7, 2.0),
                 lambda: lm.guided_field(7, 2.0), lambda: lm.guided_jacobian(x, 1.0, 7, 2.0),
                 lambda: guided_reference_flow(lm, 7, 2.0, x, 1.0, 0.0), lambda: lm.tilted(7, 2.0)):
        with pytest.raises(ValueError, match=r"^c: label 7: not one of the mixture's labels \[0, 1, 2\]"):
            call()
    with pytest.raises(ValueError, match=r"^c: a label is required"):
        lm.guided_denoiser(x, 1.0, None, 2.0)
    zero = LabelledMixture(GaussianMixture([0.5, 0.5, 0.0], m.means, m.covariances), [0, 1, 2])
    with pytest.raises(ValueError, match=r"^c: label 2 has total weight 0"):
        zero.conditional(2)


@pytest.mark.parametrize("w", [math.nan, -1.0, -1e-300, math.inf, True, "2"])
def test_bad_guidance_scale(w):
    lm = LabelledMixture(_mix1d(), [0, 1, 0])
    jg = _joint(d=1)
    x = torch.zeros(2, 1, dtype=F64)
    calls = [lambda: lm.guided_denoiser(x, 1.0, 0, w), lambda: lm.guided_jacobian(x, 1.0, 0, w),
             lambda: lm.guided_field(0, w), lambda: guided_reference_flow(lm, 0, w, x, 1.0, 0.0),
             lambda: lm.tilted(0, w), lambda: jg.guided_denoiser(x, 1.0, w), lambda: jg.guided_flow_map(x, w, 1, 0),
             lambda: jg.tilted_law(w), lambda: jg.cfg_tilted_gap(w), lambda: jg.guided_affine(1.0, w)]
    for call in calls:
        with pytest.raises(ValueError, match=r"^w: "):
            call()


def test_bad_joint_inputs():
    with pytest.raises(ValueError, match=r"^cov_c: not positive definite"):
        JointGaussianGuidance([0.0], [[1.0]], [0.0], [[-1.0]])
    with pytest.raises(ValueError, match=r"^mean_c: expected shape \(2,\)"):
        JointGaussianGuidance([0.0, 0.0], np.eye(2), [0.0], [[1.0]])
    with pytest.raises(ValueError, match=r"^cov_xy: the joint covariance"):
        JointGaussianGuidance.from_joint([0.0], [[1.0]], [0.0], [[1.0]], [[1.5]], 0.0)
    with pytest.raises(ValueError, match=r"^w: the tilted precision"):  # C_c > C_u: w P_c + (1 - w) P_u < 0
        JointGaussianGuidance.commuting([0.0], [1.0], [0.0], [2.0]).tilted_law(3.0)
    jg = _joint(d=1)
    x = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"^c: a JointGaussianGuidance has one condition"):
        guided_reference_flow(jg, 0, 1.0, x, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"^lm: expected a LabelledMixture or a JointGaussianGuidance"):
        guided_reference_flow(_mix1d(), 0, 1.0, x, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"^start: "):
        jg.guided_flow_law(1.0, 10.0, 0.0, start="prior")
    with pytest.raises(ValueError, match=r"^lm: the tilted law is tabulated for 1-D mixtures only"):
        _labelled().tilted("a", 2.0)
