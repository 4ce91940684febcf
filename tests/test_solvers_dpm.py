"""DPM-Solver-1/2/3, DPM-Solver++ 2S/2M/3M and DDIM (sdm_verify/solvers/dpm.py) against mathematics.

Every expected value comes from a closed form derived in the comments (variation of constants in
lambda = -log sigma), from the oracle (analytic.GaussianMixture, analytic.reference_flow) or from sympy
(analytic.symbolic), never from the solvers themselves.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytic import GaussianMixture, reference_flow
from analytic.symbolic import SYMPY_OPS, derivative_symbols, local_error, ratio_symbols, rule_error
from analytic.symbolic import h as H
from sdm_verify import count_nfe
from sdm_verify.solvers import get
from sdm_verify.solvers.base import MATH_OPS

F64 = torch.float64
SINGLESTEP = {"ddim": 1, "dpm_solver_1": 1, "dpm_solver_2": 2, "dpm_solver_3": 3, "dpmpp_2s": 2}
MULTISTEP = ("dpmpp_2m", "dpmpp_3m")
ALL = (*SINGLESTEP, *MULTISTEP)
CLAIMED = {"ddim": 1, "dpm_solver_1": 1, "dpm_solver_2": 2, "dpm_solver_3": 3, "dpmpp_2s": 2, "dpmpp_2m": 2,
           "dpmpp_3m": 3}


def edm_grid(n: int, smax: float = 80.0, smin: float = 0.02, rho: float = 7.0, zero: bool = False) -> torch.Tensor:
    i = torch.arange(n + 1, dtype=F64)
    s = (smax ** (1 / rho) + i / n * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=F64)]) if zero else s


def mixture_1d() -> GaussianMixture:
    return GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [[[0.25]], [[0.5]]])


def mixture_3d() -> GaussianMixture:
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=g))
    c1 = (q * torch.tensor([0.05, 0.3, 1.2], dtype=F64)) @ q.T
    return GaussianMixture([0.5, 0.5], [[1.0, -1.0, 0.5], [-1.5, 0.5, 0.0]], torch.stack([c1, 0.2 * torch.eye(3)]))


# --- (a) NFE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("zero", [False, True])
def test_counted_nfe_matches_declared(name, zero):
    gm, n = mixture_3d(), 7
    solver = get(name)
    den = count_nfe(gm.denoiser)
    x = gm.sample(4, sigma=80.0, generator=torch.Generator().manual_seed(0))
    solver(den, x, edm_grid(n - 1 if zero else n, zero=zero))
    assert den.nfe == (solver.nfe_to_zero(n) if zero else solver.nfe(n))
    per_step = SINGLESTEP.get(name, 1)
    # independent count: k calls per step, and 1 on the step into sigma = 0
    assert den.nfe == (per_step * (n - 1) + 1 if zero else per_step * n)


# --- (b) exactness for a point mass: D = mu, exact flow x(t) = mu + (sigma_t/sigma_s)(x - mu) -------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("zero", [False, True])
def test_point_mass_is_exact(name, zero):
    mu = torch.tensor([0.7, -1.3], dtype=F64)
    x = torch.tensor([[30.0, 5.0], [-12.0, 44.0]], dtype=F64)
    sig = torch.tensor([50.0, 31.0, 9.0, 8.5, 2.0, 0.3, 0.29, 0.01], dtype=F64)  # irregular steps
    sig = torch.cat([sig, torch.zeros(1, dtype=F64)]) if zero else sig
    out = get(name)(lambda y, s: mu.expand_as(y).clone(), x, sig)
    exact = mu + (sig[-1] / sig[0]) * (x - mu)
    # every exponential integrator reproduces a constant D (or the then-constant eps) exactly: only round-off
    # of ~10 steps on |x| ~ 50 remains
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-12)


# --- (c) identities -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero", [False, True])
def test_ddim_euler_dpm_solver_1_coincide_in_ve(zero):
    gm = mixture_3d()
    x = gm.sample(6, sigma=80.0, generator=torch.Generator().manual_seed(1))
    grid = edm_grid(12, zero=zero)
    outs = [get(n)(gm.denoiser, x, grid) for n in ("ddim", "euler", "dpm_solver_1")]
    scale = outs[0].abs().max()
    for o in outs[1:]:
        # the three updates are the same affine map written three ways; differences are round-off only
        assert (o - outs[0]).abs().max() <= 1e-13 * scale


def test_dpmpp_2m_constant_h_is_textbook_formula():
    # On a geometric grid (constant h, r = 1): x_1 = e^-h x_0 + (1 - e^-h) D_0 and then
    # x_{n+1} = e^-h x_n + (1 - e^-h)(3/2 D_n - 1/2 D_{n-1})  (Lu et al. 2022, DPM-Solver++ Alg. 2 with r = 1).
    gm = mixture_3d()
    x0 = gm.sample(5, sigma=40.0, generator=torch.Generator().manual_seed(2))
    grid = torch.logspace(math.log10(40.0), math.log10(0.05), 11, dtype=F64)
    hh = math.log(grid[0].item() / grid[1].item())
    e, a = math.exp(-hh), -math.expm1(-hh)
    x, prev = x0.clone(), None
    for s in grid[:-1].tolist():
        d = gm.denoiser(x, s)
        x = e * x + a * (d if prev is None else 1.5 * d - 0.5 * prev)
        prev = d
    out = get("dpmpp_2m")(gm.denoiser, x0, grid)
    # same arithmetic up to the grid's rounding of the constant ratio: round-off only
    assert (out - x).abs().max() <= 1e-12 * x.abs().max()


# --- polynomial-in-lambda denoisers: exact per-step errors ------------------------------------------------------
# For D(x, sigma) = p(lambda), lambda = -log sigma, independent of x, variation of constants gives one step
#     x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^l p(l) dl = (sigma_t/sigma_s) x_s + q(lambda_t)
#           - (sigma_t/sigma_s) q(lambda_s),   q = p - p' + p''  (since (e^l q)' = e^l p for quadratic p).
# A step from the solver's own x_n therefore has the defect delta_n = x_{n+1} - [exact step from x_n], a function of
# the grid only. With c0 + c1 l + c2 l^2, d1 = p'(lambda_s), d2 = p'' = 2 c2, and A = 1 - e^{-h}:
#   * DPM-Solver++(1): delta = -(e^{-h} - 1 + h) d1 - (h^2/2 - h + 1 - e^{-h}) d2   (int_0^h e^{tau-h} tau^k/k!)
#   * 2M on a linear p: the difference quotient is exact, D_s - D_prev = r0 h d1, so
#       delta = A h d1/2 - (e^{-h} - 1 + h) d1, for any r0;
#   * 3M, quadratic p: D1 = h d1 and D2 = h^2 d2/2 exactly; the step weighs D2 by c h phi_3(-h) where the exact
#       increment has h^3 phi_3(-h) d2, so delta = (c/2 - 1) h^3 phi_3(-h) d2,
#       h^3 phi_3(-h) = h^2/2 - h + 1 - e^{-h}, and c = 1 ("authors", delta = -h^3 d2/12 + O(h^4)) or
#       c = 2 ("lagrange", delta = 0).

# lambda stays in [-3, 7] and step ratios in [0.1, 10]: |p| <= 60 and the difference quotients amplify round-off
# (~1e-14 on values of size 60) by at most ~100, so TOL = 1e-11 is far below the defects that are not zero
# (h >= 0.1 gives h^3 phi_3(-h) >= 1.5e-4).
TOL = 1e-11
VARIABLE_GRID = [10.0, 6.0, 2.5, 2.0, 0.7, 0.5, 0.1]  # step ratios from 0.4 to 6.8
grids = st.lists(st.floats(0.1, 1.0), min_size=4, max_size=7).flatmap(
    lambda hs: st.floats(0.5, 20.0).map(lambda s0: [s0 * math.exp(-sum(hs[:i])) for i in range(len(hs) + 1)])
)


def _poly_run(name, coeffs, sig, **params):
    c0, c1, c2 = coeffs
    p = lambda lam: c0 + c1 * lam + c2 * lam**2
    q = lambda lam: p(lam) - (c1 + 2 * c2 * lam) + 2 * c2
    xs = []
    x0 = torch.tensor([[0.3], [-2.0]], dtype=F64)
    den = lambda y, s: torch.full_like(y, p(-math.log(s)))
    get(name, **params)(den, x0, torch.tensor(sig, dtype=F64), callback=lambda info: xs.append(info["x"]))
    xs = [x0, *xs]
    defects, hs = [], []
    for n in range(len(sig) - 1):
        s, t = sig[n], sig[n + 1]
        exact = (t / s) * xs[n] + q(-math.log(t)) - (t / s) * q(-math.log(s))
        defects.append((xs[n + 1] - exact)[0, 0].item())
        hs.append(math.log(s / t))
    return defects, hs, [c1 + 2 * c2 * (-math.log(s)) for s in sig[:-1]]


def _phi2h(h):  # h^2 phi_2(-h) = e^{-h} - 1 + h
    return math.expm1(-h) + h


def _phi3h(h):  # h^3 phi_3(-h) = h^2/2 - h + 1 - e^{-h}
    return h * h / 2 - h - math.expm1(-h)


@settings(max_examples=25, deadline=None)
@given(sig=grids, coeffs=st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(-1, 1)))
@example(sig=VARIABLE_GRID, coeffs=(0.5, -1.0, 0.7))
def test_ddim_defect_on_quadratic_denoiser(sig, coeffs):
    d, hs, d1 = _poly_run("ddim", coeffs, sig)
    for n, (dn, h) in enumerate(zip(d, hs, strict=True)):
        expected = -_phi2h(h) * d1[n] - _phi3h(h) * 2 * coeffs[2]
        assert dn == pytest.approx(expected, abs=TOL)


@settings(max_examples=25, deadline=None)
@given(sig=grids, c=st.tuples(st.floats(-2, 2), st.floats(-2, 2)))
@example(sig=VARIABLE_GRID, c=(0.5, -1.0))
def test_dpmpp_2m_defect_on_linear_denoiser(sig, c):
    d, hs, _ = _poly_run("dpmpp_2m", (*c, 0.0), sig)
    a = lambda h: -math.expm1(-h)
    assert d[0] == pytest.approx(-_phi2h(hs[0]) * c[1], abs=TOL)  # first step is DPM-Solver++(1)
    for dn, h in zip(d[1:], hs[1:], strict=True):
        # 2M is NOT exact for linear D: its D' weight (1 - e^-h)/2 is h phi_2(-h) only to O(h^2)
        assert dn == pytest.approx(a(h) * h / 2 * c[1] - _phi2h(h) * c[1], abs=TOL)


@pytest.mark.parametrize("variant, c", [("authors", 1), ("lagrange", 2)])
@settings(max_examples=25, deadline=None)
@given(sig=grids, coeffs=st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(-1, 1)))
@example(sig=VARIABLE_GRID, coeffs=(0.5, -1.0, 0.7))
def test_dpmpp_3m_defect_on_quadratic_denoiser(variant, c, sig, coeffs):
    d, hs, _ = _poly_run("dpmpp_3m", coeffs, sig, variant=variant)
    for dn, h in zip(d[2:], hs[2:], strict=True):  # full-order steps (after the 1st- and 2nd-order warm-up)
        assert dn == pytest.approx((c / 2 - 1) * _phi3h(h) * 2 * coeffs[2], abs=TOL)


@pytest.mark.parametrize("variant", ["authors", "lagrange"])
@settings(max_examples=15, deadline=None)
@given(sig=grids, c=st.tuples(st.floats(-2, 2), st.floats(-2, 2)))
@example(sig=VARIABLE_GRID, c=(0.5, -1.0))
def test_dpmpp_3m_exact_on_linear_denoiser(variant, sig, c):
    d, _, _ = _poly_run("dpmpp_3m", (*c, 0.0), sig, variant=variant)
    assert max(abs(v) for v in d[2:]) <= TOL  # both variants integrate linear D exactly (D2 = 0, D1 = h d1)


# --- symbolic orders of the coefficient functions the steps use ------------------------------------------------


@pytest.mark.parametrize("name", ["ddim", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s"])
def test_singlestep_update_rule_orders(name):
    solver = get(name)
    w, c = solver.update_rule(H, [], SYMPY_OPS)
    err = local_error(w, c, form=solver.symbolic_form)
    # the quadrature (linear) part of each method has the claimed order (exact analysis for order <= 2; for
    # DPM-Solver-3 it is the r2 = 2/3 condition int_0^h e^-tau tau^2 ~ w2 (r2 h)^2)
    assert err.global_order == CLAIMED[name]


def test_stage_rules_are_first_order_steps():
    # each first stage is DPM-Solver-1 / DPM-Solver++(1) to lambda_s + c h: weight 1 - e^{-c h}
    for name in ("dpm_solver_2", "dpm_solver_3", "dpmpp_2s"):
        solver = get(name)
        (w, c), *_ = solver.stage_rules(0.37, MATH_OPS)
        _, nodes = solver.update_rule(0.37, [], MATH_OPS)
        assert c == [0] and w[0] == pytest.approx(-math.expm1(-nodes[1] * 0.37), rel=1e-15)


def test_dpmpp_2m_leading_error_matches_theory():
    solver = get("dpmpp_2m")
    r0 = ratio_symbols(1)[0]
    d = derivative_symbols("data-lambda", 3)
    err = local_error(*solver.update_rule(H, [r0], SYMPY_OPS), form="data-lambda")
    assert err.global_order == 2
    # docs/theory.md §9: LTE = -h^3 (d1 + (3 r0 + 2) d2)/12
    assert (err.leading - (-(d[1] + (3 * r0 + 2) * d[2]) / 12)).expand() == 0


def test_dpmpp_3m_orders():
    r0, r1 = ratio_symbols(2)
    d = derivative_symbols("data-lambda", 4)
    authors = rule_error(get("dpmpp_3m").update_rule, "data-lambda")
    lagrange = rule_error(get("dpmpp_3m", variant="lagrange").update_rule, "data-lambda")
    # finding (reported): the authors' coefficients give local error -h^3 d2/12 for all step ratios (hand
    # derivation above: (c/2 - 1) h^3 phi_3(-h) d2 with c = 1), i.e. global order 2, not the claimed 3
    assert authors.global_order == 2 and (authors.leading + d[2] / 12).expand() == 0
    # variable-step Adams-Bashforth-3 error constant (Lagrange remainder integrated over [0, h], e^{tau-h} ~ 1):
    # -(h^4/6) int_0^1 u (u + r0)(u + r0 + r1) du = -h^4 (6 r0^2 + 6 r0 r1 + 8 r0 + 4 r1 + 3)/72
    assert lagrange.global_order == 3
    assert (lagrange.leading + d[3] * (6 * r0**2 + 6 * r0 * r1 + 8 * r0 + 4 * r1 + 3) / 72).expand() == 0


# --- (d) convergence smoke test on a 1-D two-component mixture ------------------------------------------------

NS = (16, 32, 64)
SMOKE = [
    *[pytest.param(n, {}, id=n) for n in ("ddim", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s")],
    pytest.param("dpmpp_2m", {}, id="dpmpp_2m"),
    pytest.param(
        "dpmpp_3m",
        {},
        id="dpmpp_3m-authors",
        marks=pytest.mark.xfail(
            strict=True,
            reason="finding: the authors' DPM-Solver++(3M) coefficients are second order (local error -h^3 D''/12); "
            "measured local slopes here 16->32->64: 5.0, 1.05 (1.72, 1.89, 1.95 up to 256->512)",
        ),
    ),
    pytest.param("dpmpp_3m", {"variant": "lagrange"}, id="dpmpp_3m-lagrange"),
]


@pytest.fixture(scope="module")
def smoke_problem():
    gm = mixture_1d()
    x0 = torch.linspace(-2.0, 2.0, 5, dtype=F64).reshape(-1, 1) * 80.0
    # DOP853 at 1e-10: error floor ~1e-10 (measured against the 1e-12 solve), 100x below the smallest error
    # used here (~1.6e-5 for DPM-Solver-3 at N = 64)
    ref = reference_flow(gm, x0, 80.0, 0.02, rtol=1e-10, atol=1e-10)
    return gm, x0, ref


@pytest.mark.parametrize("name, params", SMOKE)
def test_convergence_smoke(smoke_problem, name, params):
    gm, x0, ref = smoke_problem
    solver = get(name, **params)
    errs = [(solver(gm.denoiser, x0, edm_grid(n)) - ref).abs().max().item() for n in NS]
    assert errs[0] > errs[1] > errs[2]
    slope = math.log2(errs[1] / errs[2])
    # smoke only: the last local slope lies within 0.5 of the claimed order (full order fits: the harness)
    assert abs(slope - CLAIMED[name]) < 0.5, (errs, slope)


# --- (e) float32 vs float64 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_float32_agrees_with_float64(name):
    gm = mixture_3d()
    x = gm.sample(8, sigma=80.0, generator=torch.Generator().manual_seed(4))
    grid = edm_grid(8)
    out64 = get(name)(gm.denoiser, x, grid)
    out32 = get(name)(lambda y, s: gm.denoiser(y.to(F64), s).to(y.dtype), x.float(), grid)
    assert out32.dtype == torch.float32
    # float32 round-off (6e-8) amplified over 8 steps and by (x - D)/sigma at sigma = 0.02 stays well below 1e-4
    assert ((out32.to(F64) - out64).abs().max() / out64.abs().max()).item() < 1e-4


# --- lower_order_final, parameters, validation ---------------------------------------------------------------------


def test_step_orders_warm_up_and_lower_order_final():
    assert [get("dpmpp_3m").step_order(i, 6) for i in range(6)] == [1, 2, 3, 3, 3, 3]
    lof = get("dpmpp_3m", lower_order_final=True)
    # the authors' rule: on fewer than 10 steps, step i uses order min(order, N - i)
    assert [lof.step_order(i, 6) for i in range(6)] == [1, 2, 3, 3, 2, 1]
    assert [lof.step_order(i, 10) for i in range(10)] == [1, 2] + [3] * 8
    assert [get("dpmpp_2m", lower_order_final=True).step_order(i, 5) for i in range(5)] == [1, 2, 2, 2, 1]


def test_lower_order_final_last_step_is_ddim():
    gm = mixture_3d()
    x0 = gm.sample(3, sigma=80.0, generator=torch.Generator().manual_seed(5))
    grid = edm_grid(6)
    xs = []
    out = get("dpmpp_2m", lower_order_final=True)(gm.denoiser, x0, grid, callback=lambda i: xs.append(i["x"]))
    s, t = grid[-2].item(), grid[-1].item()
    ddim = (t / s) * xs[-2] + (1 - t / s) * gm.denoiser(xs[-2], s)  # DPM-Solver++(1) from the same state
    assert (out - ddim).abs().max() <= 1e-13 * ddim.abs().max()  # same formula: round-off only
    long_grid = edm_grid(12)
    a = get("dpmpp_2m", lower_order_final=True)(gm.denoiser, x0, long_grid)
    b = get("dpmpp_2m")(gm.denoiser, x0, long_grid)
    assert torch.equal(a, b)  # no effect on 10 or more steps


def test_params_and_validation():
    assert get("dpmpp_3m").params() == {"lower_order_final": False, "variant": "authors"}
    assert get("dpm_solver_2").params() == {"r1": 0.5}
    assert get("dpmpp_2s", r=0.25).params() == {"r": 0.25}
    with pytest.raises(ValueError, match="^variant:"):
        get("dpmpp_3m", variant="bh2")
    with pytest.raises(ValueError, match="^lower_order_final:"):
        get("dpmpp_2m", lower_order_final=1)
    with pytest.raises(ValueError, match="^r1:"):
        get("dpm_solver_2", r1=1.0)
    with pytest.raises(ValueError, match="^r:"):
        get("dpmpp_2s", r=0.0)
    for name in ALL:
        assert get(name).final_step and get(name).order == CLAIMED[name]
