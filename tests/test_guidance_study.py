"""The guidance study (sdm_verify.studies.guidance): meters against independent computations, orders under guidance,
w = 0 / 1 reductions, thresholding, input checks, the stability boundary finder."""

from __future__ import annotations

import math

import pytest
import torch

from analytic import Gaussian
from analytic.guidance import LabelledMixture
from analytic.wasserstein import bures_w2
from sdm_verify import solvers
from sdm_verify.errors import InputError
from sdm_verify.harness.meters import GaussianMeter
from sdm_verify.studies.guidance import claim, orders, stability, targets
from sdm_verify.studies.guidance.thresholding import ClipMeter, thresholded

torch.set_num_threads(1)
F64 = torch.float64


def _run(name, field, n):
    sigmas = orders.edm_grid(n)
    solver = solvers.get(name)
    return lambda x: solver(field, x, sigmas)


def test_joint_meter_law_matches_many_float64_samples():
    meter = targets.make_meter("joint-2d", 7.5)
    run = _run("dpmpp_2m", meter.field, 8)
    out = run(meter.probes.clone())
    M = ((out[1:] - out[0]) / meter.probe_scale).T
    mean = M @ meter.mean + (out[0] - M @ meter.mean)
    root = M @ meter.root_from
    cov = root @ root.T
    # the meter's W2 is the Bures distance of this law to the closed-form guided flow law
    ref_cov = meter.root_to @ meter.root_to.T
    assert meter.measure(run)["error"] == pytest.approx(bures_w2(mean, cov, meter.ref_mean, ref_cov), rel=1e-7)
    # the law against the empirical law of n float64 samples from the exact start law
    n = 20000
    g = torch.Generator().manual_seed(1)
    x = meter.mean + torch.randn(n, 2, generator=g, dtype=F64) @ meter.root_from.T
    y = run(x)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((y.mean(0) - mean).abs() <= 5 * se_mean).all()
    emp = torch.cov(y.T)
    se_cov = torch.sqrt((cov**2 + torch.outer(torch.diagonal(cov), torch.diagonal(cov))) / n)
    assert ((emp - cov).abs() <= 5 * se_cov).all()


def test_quadrature_meter_equals_bures_on_a_1d_gaussian():
    """Quad1DMeter (monotone-map identity + quadrature) against the exact Bures W2 of the same affine sampler."""
    quad = ClipMeter(7.5, panels=48)
    exact = targets.JointMeter(targets.joint_1d_clip(), 7.5, "joint-1d")
    for name, n in (("euler", 16), ("heun", 8), ("dpmpp_2m", 32)):
        q = quad.measure(_run(name, quad.field, n))
        e = exact.measure(_run(name, exact.field, n))["error"]
        assert q["exact"] and q["error"] == pytest.approx(e, rel=1e-9)


@pytest.mark.parametrize("name,claimed", [("euler", 1.0), ("heun", 2.0), ("dpmpp_2m", 2.0)])
@pytest.mark.parametrize("target", ["joint-2d", "mix-1d"])
def test_orders_kept_under_guidance(name, claimed, target):
    meter = targets.make_meter(target, 7.5)
    ns = (64, 128, 256, 512, 1024) if target == "mix-1d" else (32, 64, 128, 256)
    curve = orders.measure_curve(name, meter, ns)
    assert curve.fit["ok"], curve.fit
    assert abs(curve.order - claimed) <= 0.25


def test_w1_is_the_conditional_and_w0_the_unconditional_bit_for_bit():
    lm, c = targets.mixture_1d()
    x = lm.conditional(c).sample(16, sigma=80.0, generator=torch.Generator().manual_seed(0))
    for name in ("heun", "dpmpp_2m"):
        assert torch.equal(_run(name, lm.guided_field(c, 1.0), 12)(x.clone()),
                           _run(name, lm.conditional(c).denoiser, 12)(x.clone()))
        assert torch.equal(_run(name, lm.guided_field(c, 0.0), 12)(x.clone()),
                           _run(name, lm.mixture.denoiser, 12)(x.clone()))
    # the joint meter at w = 1 is the theory harness's Gaussian meter on p(x | c)
    jg = targets.joint_2d()
    meter = targets.JointMeter(jg, 1.0)
    cond = Gaussian(jg.conditional.mean, jg.conditional.covariance)
    plain = GaussianMeter(cond, 80.0, 0.002)
    for name in ("euler", "heun"):
        assert meter.measure(_run(name, meter.field, 16))["error"] == pytest.approx(
            plain.measure(_run(name, cond.denoiser, 16)), rel=1e-8)


def test_thresholding_identity_and_formula():
    jg = targets.joint_1d_clip()
    field = jg.guided_field(7.5)
    x = torch.linspace(-200, 200, 41, dtype=F64)[:, None]
    assert torch.equal(thresholded(field, 1.0, 1e300)(x, 3.0), field(x, 3.0))

    def fixed(x, sigma):
        return torch.tensor([[0.5, 2.0, -3.0], [0.2, -0.4, 0.1]], dtype=F64)

    out = thresholded(fixed, 1.0, 1.0)(torch.zeros(2, 3, dtype=F64), 1.0)
    assert torch.allclose(out[0], torch.tensor([0.5, 2.0, -3.0], dtype=F64) / 3.0)  # s = 3: clip, divide
    assert torch.equal(out[1], torch.tensor([0.2, -0.4, 0.1], dtype=F64))  # s = max(0.4, 1) = 1: unchanged
    out = thresholded(fixed, 0.5, 1.0)(torch.zeros(2, 3, dtype=F64), 1.0)  # median of (0.5, 2, 3) = 2
    assert torch.allclose(out[0], torch.tensor([0.25, 1.0, -1.0], dtype=F64))


def _boom(x, sigma):
    raise AssertionError("the denoiser must not be called")


@pytest.mark.parametrize("w", [math.nan, -1.0, math.inf, True])
def test_bad_w_refused_before_any_run(w):
    with pytest.raises(InputError, match="w"):
        targets.make_meter("joint-2d", w)


def test_bad_inputs_refused():
    lm, _ = targets.mixture_1d()
    with pytest.raises(InputError, match="c: label 7"):
        targets.checked_label(lm, 7)
    with pytest.raises(InputError, match="target"):
        targets.make_meter("mix-3d", 1.0)
    with pytest.raises(ValueError, match="component 1 has no label"):
        LabelledMixture(lm.mixture, [0, None, 1, 1, 2])
    for kw, name in (({"p": 0.0}, "p"), ({"p": 1.5}, "p"), ({"max_value": -1.0}, "max_value"),
                     ({"p": math.nan}, "p")):
        with pytest.raises(InputError, match=name):
            thresholded(_boom, **kw)


def test_stability_boundary_on_a_synthetic_curve():
    ns = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128]
    errors = [5.0 * n**-2.0 for n in ns]
    for i, n in enumerate(ns):
        if n < 11:
            errors[i] *= 3.0 if n != 4 else 1.1  # pre-asymptotic, with a lucky crossing at N = 4
    assert stability.boundary(ns, errors, (math.log(5.0), 2.0), n_last=128) == 11
    curve = orders.Curve("x", "joint-2d", 7.5, 2.0, ns, errors, ns, [True] * len(ns), ["ok"] * len(ns),
                         [None] * len(ns), 1e-13, "bures_w2")
    curve.fit = orders.fit_curve(ns, errors, 1e-13)
    st = stability.stability(curve)
    assert st["n_star"] == 11 and st["line"][1] == pytest.approx(2.0)
    # a diverged run is recorded, and the fit starts after it
    errors2 = [math.inf, *errors[1:]]
    status = ["diverged"] + ["ok"] * (len(ns) - 1)
    curve2 = orders.Curve("x", "joint-2d", 7.5, 2.0, ns, errors2, ns, [True] * len(ns), status,
                          [3] + [None] * (len(ns) - 1), 1e-13, "bures_w2")
    curve2.fit = orders.fit_curve(ns, errors2, 1e-13)
    st2 = stability.stability(curve2)
    assert (st2["diverged_n"], st2["diverged_step"], st2["n_star"]) == (2, 3, 11)
    assert claim.nfe_to_reach(curve, 5.0 * 23**-2.0) == 23


def test_divergence_is_caught_and_named():
    meter = targets.make_meter("joint-2d", 1.0)

    def wild(x, sigma):
        return x * 1e4

    meter.field = wild
    got = orders.run_once("euler", meter, orders.edm_grid(4))
    assert got["status"] == "diverged" and got["error"] == math.inf and got["step"] is not None
