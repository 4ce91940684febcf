"""Tests for sdm_verify.schedules: grid conventions, nesting, closed-form identities, validation.

References come from mathematics, not from the code under test: mpmath at 50 digits for Karras's formula,
Hoeffding's lemma for the rho -> inf limit, and the oracle's processes (analytic.processes) for process times.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analytic import processes
from sdm_verify import schedules
from sdm_verify.grid import check_grid

SMIN, SMAX = 0.002, 80.0
VE, VP, FM, COS = (processes.get(p) for p in ("ve", "vp", "fm", "vp-cosine"))

# (schedule name, params) covering every registered schedule and the processes it is used with
CASES = [
    ("edm", {}),
    ("edm", {"rho": 1.0}),
    ("edm", {"rho": 0.5}),
    ("edm", {"rho": 1e6}),
    ("logsnr", {}),
    ("loglinear", {}),
    ("uniform_t", {"process": VE}),
    ("uniform_t", {"process": VP}),
    ("uniform_t", {"process": FM}),
    ("uniform_t", {"process": COS}),
    ("time_quadratic", {"process": VE}),
    ("time_quadratic", {"process": VP}),
    ("time_quadratic", {"process": FM}),
]
IDS = [f"{n}-{p.get('process').name if 'process' in p else p.get('rho', '')}" for n, p in CASES]


def grid(name, n, zero=False, smin=SMIN, smax=SMAX, **params):
    return schedules.get(name)(n, smin, smax, zero=zero, **params)


def test_registry():
    assert set(schedules.available()) >= {"edm", "logsnr", "loglinear", "uniform_t", "time_quadratic"}
    assert schedules.get("loglinear") is schedules.get("logsnr")
    assert schedules.check is check_grid  # re-exported, not duplicated
    with pytest.raises(ValueError, match="^name"):
        schedules.get("karras2")
    with pytest.raises(ValueError, match="^name"):
        schedules.register("edm", schedules.edm)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_grid_conventions(name, params, n):
    g = grid(name, n, **params)
    assert g.dtype == torch.float64 and g.shape == (n + 1,)
    assert g[0].item() == SMAX and g[-1].item() == SMIN  # endpoints exact, not just close
    assert (g[1:] < g[:-1]).all()
    z = grid(name, n, zero=True, **params)
    assert z.dtype == torch.float64 and z.shape == (n + 1,)
    assert z[0].item() == SMAX and z[-1].item() == 0.0 and (z[1:] < z[:-1]).all()
    if n >= 2:  # n points sigma_max ... sigma_min (no duplicated sigma_min), then 0
        assert z[-2].item() == SMIN
        assert torch.equal(z[:-1], grid(name, n - 1, **params))  # the same family with n - 1 intervals
    check_grid(g), check_grid(z)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("n", [1, 3, 8, 25])
def test_nested_under_doubling(name, params, n):
    coarse, fine = grid(name, n, **params), grid(name, 2 * n, **params)
    # u = i/n and 2i/(2n) are the same float, so only the map's evaluation could differ: round-off at most
    torch.testing.assert_close(fine[::2], coarse, rtol=4e-16, atol=0)


def test_edm_rho1_is_uniform_in_sigma():
    n = 37
    # the convex-combination form has no cancellation near sigma_min
    expected = torch.tensor([((n - i) * SMAX + i * SMIN) / n for i in range(n + 1)], dtype=torch.float64)
    # exp(log1p(.)) evaluation: relative error ~ eps |log sigma| < 1e-15
    torch.testing.assert_close(grid("edm", n, rho=1.0), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("rho", [0.5, 1.0, 3.0, 7.0, 100.0, 1e6])
def test_edm_matches_karras_formula_in_high_precision(rho):
    n = 20
    with mpmath.workdps(60):
        a, b = mpmath.mpf(SMAX) ** (1 / mpmath.mpf(rho)), mpmath.mpf(SMIN) ** (1 / mpmath.mpf(rho))
        ref = [float((a + mpmath.mpf(i) / n * (b - a)) ** rho) for i in range(n + 1)]
    # the code's log1p form is accurate to ~ eps |log sigma| relative for every rho (even 1e6)
    torch.testing.assert_close(grid("edm", n, rho=rho), torch.tensor(ref, dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("rho", [7.0, 100.0, 1e6])
def test_edm_tends_to_logsnr_as_rho_grows(rho):
    n = 64
    u = torch.arange(n + 1, dtype=torch.float64) / n
    gap = torch.log(grid("edm", n, rho=rho)) - torch.log(grid("logsnr", n))
    span = math.log(SMAX / SMIN)
    # log sigma_edm = rho log E[e^{Z/rho}], Z in {log smax, log smin} with P(log smin) = u; Jensen and Hoeffding's
    # lemma give 0 <= gap <= span^2/(8 rho) exactly; 1e-13 absorbs round-off in two logs of O(10) numbers.
    assert (gap >= -1e-13).all() and (gap <= span**2 / (8 * rho) + 1e-13).all()
    if rho >= 100:
        # cumulant series of the same quantity: gap = k2/(2 rho) + k3/(6 rho^2) + O(k4/rho^3) with Z = log smax - D Y,
        # Y ~ Bernoulli(u), D = span: k2 = u(1-u) D^2, k3 = -u(1-u)(1-2u) D^3. The remainder is at most
        # D^2/(12 rho^2) relative to the first term (1e-3 at rho = 100, 1e-11 at rho = 1e6); atol: round-off.
        q = u * (1 - u)
        series = q * span**2 / (2 * rho) - q * (1 - 2 * u) * span**3 / (6 * rho**2)
        torch.testing.assert_close(gap, series, rtol=span**2 / (12 * rho**2), atol=1e-13)


def test_logsnr_has_constant_log_ratio():
    n = 50
    g = grid("logsnr", n)
    ratios = torch.log(g[:-1] / g[1:])
    # each log carries ~eps |log sigma| ~ 1e-15 of round-off
    torch.testing.assert_close(ratios, torch.full_like(ratios, math.log(SMAX / SMIN) / n), rtol=0, atol=1e-13)
    assert torch.equal(grid("loglinear", n), g)


def test_uniform_t_ve_is_uniform_in_sigma():
    # VE: t = sigma, so uniform in t is edm with rho = 1 (= linspace in sigma); both to round-off
    torch.testing.assert_close(grid("uniform_t", 33, process=VE), grid("edm", 33, rho=1.0), rtol=1e-14, atol=0)


def test_time_quadratic_ve_is_edm_rho2():
    # VE: uniform in sqrt(t) = sqrt(sigma) is Karras's map with rho = 2
    torch.testing.assert_close(grid("time_quadratic", 33, process=VE), grid("edm", 33, rho=2.0), rtol=1e-14, atol=0)


@pytest.mark.parametrize("proc", [VP, FM, COS], ids=lambda p: p.name)
def test_uniform_t_times_equally_spaced(proc):
    n, smin, smax = 40, 0.01, 50.0
    t = proc.sigma_inv(grid("uniform_t", n, smin=smin, smax=smax, process=proc))
    dt = (proc.sigma_inv(smax) - proc.sigma_inv(smin)) / n
    # sigma_inv(sigma(t)) round trip: a few ulps of t <= 1
    torch.testing.assert_close(t[:-1] - t[1:], torch.full((n,), float(dt), dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("proc", [VP, FM], ids=lambda p: p.name)
def test_time_quadratic_sqrt_times_equally_spaced(proc):
    n, smin, smax = 40, 0.01, 50.0
    r = torch.sqrt(proc.sigma_inv(grid("time_quadratic", n, smin=smin, smax=smax, process=proc)))
    dr = (math.sqrt(proc.sigma_inv(smax)) - math.sqrt(proc.sigma_inv(smin))) / n
    # round trip of t (a few ulps) through a sqrt of t >= t(0.01) ~ 1e-4: well below 1e-11
    torch.testing.assert_close(r[:-1] - r[1:], torch.full((n,), dr, dtype=torch.float64), rtol=0, atol=1e-11)


def test_sigma_schedules_ignore_process():
    assert torch.equal(grid("edm", 9, process=VP), grid("edm", 9))
    assert torch.equal(grid("logsnr", 9, process=VP), grid("logsnr", 9))


def test_one_step_to_zero():
    for name, params in CASES:
        assert grid(name, 1, zero=True, **params).tolist() == [SMAX, 0.0]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 64),
    lo=st.floats(1e-4, 10.0),
    ratio=st.floats(1.01, 1e5),
    rho=st.floats(0.2, 50.0),
    zero=st.booleans(),
)
def test_edm_properties_hypothesis(n, lo, ratio, rho, zero):
    hi = lo * ratio
    g = schedules.edm(n, lo, hi, rho=rho, zero=zero)
    assert g.shape == (n + 1,) and g[0].item() == hi and (g[1:] < g[:-1]).all()
    assert g[-1].item() == (0.0 if zero else lo)
    m = n - 1 if zero else n
    if m >= 1:
        with mpmath.workdps(50):
            a, b = mpmath.mpf(hi) ** (1 / mpmath.mpf(rho)), mpmath.mpf(lo) ** (1 / mpmath.mpf(rho))
            ref = [float((a + mpmath.mpf(i) / m * (b - a)) ** rho) for i in range(m + 1)]
        # relative error <= a few rho eps / base, base >= 1/m of its range: rho eps m <= 50 * 2.2e-16 * 64 < 1e-12
        torch.testing.assert_close(g[: m + 1], torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------ validation
class Bare:
    """A process without sigma_inv."""

    def sigma(self, t):
        return torch.as_tensor(t, dtype=torch.float64)


BAD = [
    ("edm", dict(n=0), "n"),
    ("edm", dict(n=-3), "n"),
    ("edm", dict(n=2.5), "n"),
    ("edm", dict(n="4"), "n"),
    ("edm", dict(n=True), "n"),
    ("edm", dict(n=None), "n"),
    ("logsnr", dict(sigma_min=0.0), "sigma_min"),
    ("logsnr", dict(sigma_min=-1.0), "sigma_min"),
    ("logsnr", dict(sigma_min=math.nan), "sigma_min"),
    ("logsnr", dict(sigma_min=math.inf), "sigma_min"),
    ("logsnr", dict(sigma_min="a"), "sigma_min"),
    ("edm", dict(sigma_min=80.0), "sigma_min"),
    ("edm", dict(sigma_min=100.0), "sigma_min"),
    ("edm", dict(sigma_max=math.nan), "sigma_max"),
    ("edm", dict(sigma_max=math.inf), "sigma_max"),
    ("edm", dict(sigma_max=torch.ones(2)), "sigma_max"),
    ("edm", dict(rho=0.0), "rho"),
    ("edm", dict(rho=-7.0), "rho"),
    ("edm", dict(rho=math.nan), "rho"),
    ("edm", dict(rho=math.inf), "rho"),
    ("edm", dict(zero="yes"), "zero"),
    ("logsnr", dict(rho=7.0), "params"),
    ("uniform_t", dict(process=VE, beta=1.0), "params"),
    ("edm", dict(zero=1), "zero"),
    ("edm", dict(n=10_000, sigma_min=1.0, sigma_max=1.0 + 1e-12), "n"),  # spacing below one ulp
    ("uniform_t", dict(), "process"),
    ("time_quadratic", dict(), "process"),
    ("uniform_t", dict(process=Bare()), "process"),
    ("uniform_t", dict(process=VP, sigma_min=1e-5), "sigma_min"),  # VP reaches sigma >= sigma(t_min) ~ 1e-3
    ("uniform_t", dict(process=VP, sigma_max=1e3), "sigma_max"),  # and sigma <= sigma(1) ~ 152
    ("time_quadratic", dict(process=VP, sigma_max=1e3), "sigma_max"),
]


@pytest.mark.parametrize("name,override,param", BAD, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_validation_names_the_parameter(name, override, param):
    args = {"n": 8, "sigma_min": SMIN, "sigma_max": SMAX, **override}
    with pytest.raises(ValueError, match=f"^{param}:"):
        schedules.get(name)(args.pop("n"), args.pop("sigma_min"), args.pop("sigma_max"), **args)


@settings(max_examples=30, deadline=None)
@given(
    a=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    b=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    name=st.sampled_from(["edm", "logsnr", "uniform_t"]),
)
def test_bad_sigma_pairs_hypothesis(a, b, name):
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)) and 0 < a < b
    kwargs = {"process": VE} if name == "uniform_t" else {}
    if ok and b > a * (1 + 1e-6):
        g = schedules.get(name)(4, a, b, **kwargs)
        assert g[0].item() == float(b) and g[-1].item() == float(a)
    elif ok:  # a few ulps apart: either a valid grid or "n: not strictly decreasing"
        try:
            check_grid(schedules.get(name)(4, a, b, **kwargs))
        except ValueError as exc:
            assert str(exc).startswith("n:")
    else:
        with pytest.raises(ValueError, match="^(sigma_min|sigma_max):"):
            schedules.get(name)(4, a, b, **kwargs)
