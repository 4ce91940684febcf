"""Noise processes against sympy: sigma(t), s(t), their derivatives and inverses, written here from the papers."""

import math

import pytest
import sympy as sp
import torch
from _strategies import F64

from analytic import Gaussian, gaussian_flow_map, processes

t = sp.Symbol("t", positive=True)
_c = sp.Rational(8, 1000)
_vp_exponent = sp.Rational(199, 20) * t**2 + t / 10  # beta_d t^2/2 + beta_min t, beta_d = 19.9
_angle = (t + _c) / (1 + _c) * sp.pi / 2
# The closed forms, typed from the sources (EDM Table 1; Nichol & Dhariwal 2021 Eq. 17; rectified flow):
SYMPY = {
    "ve": (t, sp.Integer(1)),
    "vp": (sp.sqrt(sp.exp(_vp_exponent) - 1), 1 / sp.sqrt(sp.exp(_vp_exponent))),
    "vp-cosine": (
        sp.sqrt(sp.cos(_c / (1 + _c) * sp.pi / 2) ** 2 / sp.cos(_angle) ** 2 - 1),
        sp.cos(_angle) / sp.cos(_c / (1 + _c) * sp.pi / 2),
    ),
    "fm": (t / (1 - t), 1 - t),
}
TIMES = [0.02, 0.2, 0.5, 0.8, 0.95]


@pytest.mark.parametrize("name", processes.available())
def test_against_sympy(name):
    proc = processes.get(name)
    sig, s = SYMPY[name]
    for tv in TIMES:
        T = torch.tensor(tv, dtype=F64)
        for impl, expr in [
            (proc.sigma, sig), (proc.scale, s), (proc.sigma_deriv, sp.diff(sig, t)), (proc.scale_deriv, sp.diff(s, t)),
        ]:
            ref = float(expr.subs(t, tv).evalf(30))
            # closed forms in float64: a few ulps, amplified by at most the conditioning of expm1/cos near the ends
            assert float(impl(T)) == pytest.approx(ref, rel=1e-12, abs=1e-14), (name, impl.__name__, tv)
        assert float(proc.lam(T)) == pytest.approx(-math.log(float(sig.subs(t, tv).evalf(30))), rel=1e-12)
        assert float(proc.sigma_inv(proc.sigma(T))) == pytest.approx(tv, rel=1e-12)


@pytest.mark.parametrize("name", ["vp", "vp-cosine"])
def test_vp_processes_preserve_variance(name):
    proc = processes.get(name)
    T = torch.linspace(0.01, 0.95, 7, dtype=F64)
    # x_t = s x0 + s sigma n: unit data variance stays unit iff s^2 (1 + sigma^2) = 1
    torch.testing.assert_close(proc.scale(T) ** 2 * (1 + proc.sigma(T) ** 2), torch.ones(7, dtype=F64))


def test_flow_matching_interpolates():
    proc = processes.get("fm")
    T = torch.linspace(0.01, 0.99, 7, dtype=F64)
    # x_t = (1 - t) x0 + t n: s = 1 - t and s sigma = t
    torch.testing.assert_close(proc.scale(T) * proc.sigma(T), T)


@pytest.mark.parametrize("name", processes.available())
def test_general_form_drift_moves_the_exact_flow(name):
    """x(t) = s(t) Phi_{sigma(t0) -> sigma(t)}(x0 / s(t0)) solves EDM's Eq. 4; check with a central difference."""
    proc = processes.get(name)
    g = Gaussian([0.5, -0.3], [[0.8, 0.2], [0.2, 0.3]])
    x0 = torch.tensor([[1.0, 2.0], [-0.5, 0.1]], dtype=F64)
    t0, t1 = 0.7, 0.4

    def path(tt):
        sig = float(proc.sigma(tt))
        return float(proc.scale(tt)) * gaussian_flow_map(g, x0 / float(proc.scale(t0)), float(proc.sigma(t0)), sig)

    hstep = 1e-5
    fd = (path(t1 + hstep) - path(t1 - hstep)) / (2 * hstep)
    x = path(t1)
    sig, s = float(proc.sigma(t1)), float(proc.scale(t1))
    drift = proc.drift(x, t1, g.denoiser(x / s, sig))
    # central difference: O(h^2) truncation ~1e-10, round-off ~ eps/h ~ 1e-11
    torch.testing.assert_close(drift, fd, rtol=1e-7, atol=1e-7)


def test_unknown_process():
    with pytest.raises(ValueError, match="^name:"):
        processes.get("edm2")
