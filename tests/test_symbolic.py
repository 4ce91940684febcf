"""analytic.symbolic: local order and error constant of one step, checked against hand derivations.

Every expected leading coefficient below is derived by hand in the comment next to it (Taylor expansion of the
weights and of the exact increment); the numerical cross-check at the end evaluates update - exact with mpmath
quadrature, independently of the sympy expansion.
"""

from __future__ import annotations

import json
import math

import mpmath
import pytest
import sympy

from analytic import symbolic
from analytic.symbolic import (
    SYMPY_OPS,
    LocalError,
    derivative_symbols,
    h,
    local_error,
    phi,
    ratio_symbols,
    rule_error,
)

pytestmark = pytest.mark.theory

d0, d1, d2, d3, d4 = derivative_symbols("data-lambda", 5)
e0, e1, e2, e3, e4 = derivative_symbols("noise-sigma", 5)
r0, r1 = ratio_symbols(2)
z = sympy.Symbol("z")
H = h  # in form="noise-sigma" the symbol h stands for H = sigma_t - sigma_s
A = 1 - sympy.exp(-h)  # 1 - e^{-h} = -expm1(-h)


def same(a, b) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def assert_error(err: LocalError, local: int, leading) -> None:
    assert err.local_order == local
    assert err.global_order == max(local - 1, 0)
    assert same(err.leading, leading), f"leading {err.leading} != {leading}"


# --- phi functions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(6))
def test_phi_taylor_series(k):
    # phi_k(z) = sum_j z^j/(j+k)!
    expected = sum(z**j / sympy.factorial(j + k) for j in range(8))
    assert sympy.expand(sympy.series(phi(k, z), z, 0, 8).removeO() - expected) == 0


@pytest.mark.parametrize("k", range(5))
def test_phi_recursion(k):
    # phi_{k+1}(z) = (phi_k(z) - 1/k!)/z, phi_0 = exp
    assert same(phi(0, z), sympy.exp(z))
    assert same(phi(k + 1, z), (phi(k, z) - 1 / sympy.factorial(k)) / z)


# --- data-lambda: DDIM, DPM-Solver++(2M), exact-interpolation 3-step ----------------------------------------


def test_ddim_first_order():
    # update A D(lambda_s) = A d0; exact A d0 + h^2 phi_2(-h) d1 + O(h^3) = A d0 + d1 h^2/2 + O(h^3)
    assert_error(local_error([A], [0]), 2, -d1 / 2)


def test_dpmpp_2m_leading_coefficient():
    # Lu et al. 2022 (DPM-Solver++), Alg. 2: x_t = (s_t/s_s) x + A D0 + A/(2 r0) (D0 - D_{-1}),
    # D_{-1} = D(lambda_s - r0 h).
    # (D0 - D_{-1})/r0 = d1 h - d2 r0 h^2/2 + O(h^3); A = h - h^2/2 + O(h^3).
    # d1: A h/2 - h^2 phi_2(-h) = (h^2/2 - h^3/4) - (h^2/2 - h^3/6) = -h^3/12.
    # d2: -A r0 h^2/4 - h^3 phi_3(-h) = -r0 h^3/4 - h^3/6 = -(3 r0 + 2) h^3/12.
    # => LTE = -h^3 (d1 + (3 r0 + 2) d2)/12, as in docs/theory.md §9 (d2 = d^2 D/d lambda^2, no 1/2).
    err = local_error([A * (1 + 1 / (2 * r0)), -A / (2 * r0)], [0, -r0])
    assert_error(err, 3, -(d1 + (3 * r0 + 2) * d2) / 12)
    const = local_error([A * sympy.Rational(3, 2), -A / 2], [0, -1])  # r0 = 1
    assert_error(const, 3, -(d1 + 5 * d2) / 12)


def lagrange_exponential_weights(nodes):
    """w_j = int_0^h e^{-(h-tau)} l_j(tau/h) dtau = sum_m a_jm m! h phi_{m+1}(-h), l_j the Lagrange basis."""
    u = sympy.Symbol("u")
    weights = []
    for j, cj in enumerate(nodes):
        basis = sympy.prod([(u - ci) / (cj - ci) for i, ci in enumerate(nodes) if i != j])
        coeffs = sympy.Poly(sympy.expand(basis), u).all_coeffs()[::-1]
        weights.append(sum(a * sympy.factorial(m) * h * phi(m + 1, -h) for m, a in enumerate(coeffs)))
    return weights


def test_three_step_exact_interpolation_is_third_order():
    # Integrating e^{-(h-tau)} times the quadratic interpolant P of D at 0, -r0 h, -(r0+r1) h is exact for
    # quadratic D, and D - P = d3/6 tau (tau + r0 h)(tau + (r0+r1) h) + O(h^4), so
    # update - exact = -(d3/6) int_0^h tau (tau + a h)(tau + b h) dtau = -(d3/6) h^4 (1/4 + (a+b)/3 + a b/2),
    # a = r0, b = r0 + r1.
    nodes = [0, -r0, -(r0 + r1)]
    err = local_error(lagrange_exponential_weights(nodes), nodes)
    a, b = r0, r0 + r1
    assert_error(err, 4, -d3 / 6 * (sympy.Rational(1, 4) + (a + b) / 3 + a * b / 2))
    for k, dk in enumerate((d0, d1, d2)):  # exact for quadratic D at every power of h, not only the leading
        assert err.series.coeff(dk) == 0, f"d{k} appears in {err.series}"


# --- noise-lambda -------------------------------------------------------------------------------------------


def test_dpm_solver_1_noise_lambda():
    # update x_s - s_s A e0; exact x_s - s_s (A e0 + e1 int_0^h e^{-tau} tau dtau + ...), int = h^2/2 + O(h^3)
    # => (update - exact)/s_s = e1 h^2/2.
    assert_error(local_error([A], [0], form="noise-lambda"), 2, e1 / 2)


def test_dpm_solver_2_noise_lambda_quadrature_part():
    # DPM-Solver-2 (Lu et al. 2022, Alg. 1, r1 = 1/2) in canonical variables:
    # x_t = x_s - s_s A eps(lambda_s + h/2), the stage taken on the exact path.
    # e1: -A h/2 + int e^{-tau} tau = -(h^2/2 - h^3/4) + (h^2/2 - h^3/3) = -h^3/12;
    # e2: -A h^2/8 + int e^{-tau} tau^2/2 = -h^3/8 + h^3/6 = h^3/24.
    err = local_error([A], [sympy.Rational(1, 2)], form="noise-lambda")
    assert_error(err, 3, -e1 / 12 + e2 / 24)


# --- noise-sigma: quadrature in sigma -----------------------------------------------------------------------


HALF = sympy.Rational(1, 2)
SIMPSON = [H / 6, 2 * H / 3, H / 6]  # weights at nodes 0, 1/2, 1
AB3 = [23 * H / 12, -16 * H / 12, 5 * H / 12]  # weights at nodes 0, -1, -2


@pytest.mark.parametrize(
    ("weights", "nodes", "local", "leading"),
    [
        # Euler: H e0 - (H e0 + e1 H^2/2) = -e1 H^2/2
        ([H], [0], 2, -e1 / 2),
        # AB2, constant steps: H(3/2 e0 - 1/2(e0 - e1 H + e2 H^2/2)) - exact; e2: -1/4 - 1/6 = -5/12
        ([3 * H / 2, -H / 2], [0, -1], 3, -5 * e2 / 12),
        # AB3, constant steps: e3 H^4 [(16/12)/6 - (5/12) 8/6 - 1/24] = -3/8 e3 H^4 (the AB3 error constant)
        (AB3, [0, -1, -2], 4, -3 * e3 / 8),
        # Heun with exact stage = trapezoid: e2 H^3 (1/4 - 1/6) = e2 H^3/12
        ([H / 2, H / 2], [0, 1], 3, e2 / 12),
        # RK4 quadrature = Simpson's rule on [0, H]: error H^5 f''''/2880
        (SIMPSON, [0, HALF, 1], 5, e4 / 2880),
    ],
    ids=["euler", "ab2", "ab3", "heun-trapezoid", "rk4-simpson"],
)
def test_noise_sigma_quadratures(weights, nodes, local, leading):
    assert_error(local_error(weights, nodes, form="noise-sigma"), local, leading)


def test_variable_step_ab2():
    # Linear interpolant through (0, e0), (-r H, e_{-1}) integrated over [0, H]:
    # weights H (1 + 1/(2r)), -H/(2r); e2: -r/4 - 1/6 = -(3r + 2)/12 (-5/12 at r = 1, the constant-step AB2)
    err = local_error([H * (1 + 1 / (2 * r0)), -H / (2 * r0)], [0, -r0], form="noise-sigma")
    assert_error(err, 3, -(3 * r0 + 2) * e2 / 12)
    assert same(err.leading.subs(r0, 1), -5 * e2 / 12)


def test_weights_that_need_a_general_series():
    # Node 0 only: the update differs from DDIM's by exactly (w - (1 - e^{-h})) d0.
    # h/(1 + h/2) = h - h^2/2 + h^3/4 + O(h^4):   h^3 coefficient 1/4 - 1/6 = 1/12
    # sqrt(1 + 2h) - 1 = h - h^2/2 + h^3/2 + O(h^4): h^3 coefficient 1/2 - 1/6 = 1/3
    ddim_h3 = sympy.expand(local_error([A], [0]).series).coeff(h, 3)
    cases = ((h / (1 + h / 2), sympy.Rational(1, 12)), (sympy.sqrt(1 + 2 * h) - 1, sympy.Rational(1, 3)))
    for weight, d0_coeff in cases:
        err = local_error([weight], [0])
        assert_error(err, 2, -d1 / 2)
        assert same(sympy.expand(err.series).coeff(h, 3) - ddim_h3, d0_coeff * d0)


def test_irrational_ratio():
    # variable-step AB2 at r = sqrt(2) (coefficients outside QQ(r0, ...)): -(3 sqrt(2) + 2) e2/12
    s2 = sympy.sqrt(2)
    err = local_error([H * (1 + 1 / (2 * s2)), -H / (2 * s2)], [0, -s2], form="noise-sigma")
    assert_error(err, 3, -(3 * s2 + 2) * e2 / 12)


# --- the module must be able to fail ------------------------------------------------------------------------


def test_inconsistent_weight_is_order_zero():
    # weight h/2 instead of 1 - e^{-h}: error d0 (h/2 - h) = -d0 h/2 at h^1
    assert_error(local_error([h / 2], [0]), 1, -d0 / 2)
    # noise-sigma Euler with weight 2H: error e0 H
    assert_error(local_error([2 * H], [0], form="noise-sigma"), 1, e0)


def test_wrong_second_coefficient_drops_2m_to_first_order():
    # 1/2 -> 1/3 in front of (D0 - D_{-1})/r0: d1 h^2 (1/3 - 1/2) = -d1 h^2/6
    third = sympy.Rational(1, 3)
    err = local_error([A * (1 + third / r0), -A * third / r0], [0, -r0])
    assert_error(err, 2, -d1 / 6)


# --- the helpers solvers use --------------------------------------------------------------------------------


def dpmpp_2m_rule(step, ratios, ops):
    """DPM-Solver++(2M) written generically over a math namespace, as a solver's update_rule would be."""
    a = -ops.expm1(-step)
    return [a * (1 + 1 / (2 * ratios[0])), -a / (2 * ratios[0])], [0, -ratios[0]]


def test_sympy_ops_and_rule_error():
    assert same(SYMPY_OPS.expm1(z), sympy.exp(z) - 1)
    assert same(SYMPY_OPS.exp(z), sympy.exp(z)) and same(SYMPY_OPS.log(z), sympy.log(z))
    assert same(SYMPY_OPS.sqrt(z), sympy.sqrt(z))
    err = rule_error(dpmpp_2m_rule, "data-lambda")
    assert_error(err, 3, -(d1 + (3 * r0 + 2) * d2) / 12)
    # the same rule evaluated with floats agrees with the sympy evaluation (the namespace is interchangeable)
    float_ops = type("Ops", (), dict(exp=math.exp, expm1=math.expm1, log=math.log, sqrt=math.sqrt))
    wf, _ = dpmpp_2m_rule(0.3, [0.7], float_ops)
    ws, _ = dpmpp_2m_rule(h, [r0], SYMPY_OPS)
    for a, b in zip(wf, ws, strict=True):
        # same formula, only float64 rounding of a few operations apart
        assert a == pytest.approx(float(b.subs({h: 0.3, r0: 0.7})), rel=1e-14)


def test_python_floats_are_read_as_small_rationals():
    # Simpson's weights computed in floating point (1/6 and 2/3 are not binary fractions) keep order 4.
    err = local_error([H * (1 / 6), H * (2 / 3), H * (1 / 6)], [0, 0.5, 1.0], form="noise-sigma")
    assert_error(err, 5, e4 / 2880)
    # a genuinely perturbed constant is not rounded away: 0.6667 instead of 2/3 is inconsistent
    assert local_error([H / 6, 0.6667 * H, H / 6], [0, 0.5, 1], form="noise-sigma").global_order == 0


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(weights=[A, A], nodes=[0]), "nodes"),
        (dict(weights=[A], nodes=[0], form="data"), "form"),
        (dict(weights=[], nodes=[]), "weights"),
        (dict(weights=[A], nodes=[h]), "nodes"),
        (dict(weights=[A * d1], nodes=[0]), "weights"),
        (dict(weights=[sympy.log(h)], nodes=[0]), "weights"),
        (dict(weights=[A], nodes=[0], max_power=0), "max_power"),
        # Simpson's first error term is at H^5: nothing up to H^4
        (dict(weights=SIMPSON, nodes=[0, HALF, 1], form="noise-sigma", max_power=4), "max_power"),
    ],
)
def test_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        local_error(**kwargs)


def test_unknown_form_in_helpers():
    with pytest.raises(ValueError, match="^form:"):
        derivative_symbols("data", 2)


# --- numerical cross-check, independent of the sympy expansion ----------------------------------------------

DIGITS = 40  # the errors measured below are >= 1e-13, the 40-digit quadrature is accurate to ~1e-35


def f_lam(lam):  # a smooth, non-polynomial D (or eps) along the path
    return mpmath.cos(2 * lam) + lam**3 / 3 + mpmath.exp(lam / 3)


def num_2m(step):  # data-lambda, lambda_s = 0.3, previous point at lambda_s - r0 h, r0 = 0.7
    lam0, ratio = mpmath.mpf("0.3"), mpmath.mpf("0.7")
    a = -mpmath.expm1(-step)
    upd = a * f_lam(lam0) + a / (2 * ratio) * (f_lam(lam0) - f_lam(lam0 - ratio * step))
    exact = mpmath.quad(lambda tau: mpmath.exp(-(step - tau)) * f_lam(lam0 + tau), [0, step])
    return upd - exact


def num_dpm1(step):  # (update - exact)/sigma_s for x_t = x_s - s_s A eps(lambda_s), dx/dsigma = eps
    lam0 = mpmath.mpf("0.3")
    upd = mpmath.expm1(-step) * f_lam(lam0)  # -(1 - e^{-h}) eps(lambda_s)
    exact = -mpmath.quad(lambda tau: mpmath.exp(-tau) * f_lam(lam0 + tau), [0, step])
    return upd - exact


def num_ab3(step):  # noise-sigma at sigma_s = 0.3, sigma decreasing: H = -step; eps(sigma) = f_lam(sigma)
    sig0, big_h = mpmath.mpf("0.3"), -step
    upd = big_h * (23 * f_lam(sig0) - 16 * f_lam(sig0 - big_h) + 5 * f_lam(sig0 - 2 * big_h)) / 12
    return upd - mpmath.quad(f_lam, [sig0, sig0 + big_h])


CASES = {  # numerical error, the symbolic analysis of the same step, hand-derived local order, sign of H
    "2m": (num_2m, lambda: local_error([A * (1 + 1 / (2 * r0)), -A / (2 * r0)], [0, -r0]), 3, 1),
    "dpm1": (num_dpm1, lambda: local_error([A], [0], form="noise-lambda"), 2, 1),
    "ab3": (num_ab3, lambda: local_error(AB3, [0, -1, -2], form="noise-sigma"), 4, -1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_numerical_order_and_constant(case):
    num, analysis, p, sign = CASES[case]
    err = analysis()
    assert err.local_order == p
    with mpmath.workdps(DIGITS):
        observed = math.log2(abs(float(num(mpmath.mpf("0.1")) / num(mpmath.mpf("0.05")))))
        small = float(num(mpmath.mpf("1e-3")))
    assert abs(observed - p) < 0.15  # the next term is O(h) relative: ~0.05-0.1 in log2 at h = 0.1
    # leading coefficient: err/h^p -> leading(derivatives of f at 0.3) as h -> 0
    lam = sympy.Symbol("lam")
    f_sym = sympy.cos(2 * lam) + lam**3 / 3 + sympy.exp(lam / 3)
    subs = {r0: sympy.Rational(7, 10)}
    for k in range(6):
        value = sympy.diff(f_sym, lam, k).subs(lam, sympy.Rational(3, 10))
        subs[sympy.Symbol(f"d{k}")] = value
        subs[sympy.Symbol(f"e{k}")] = value
    predicted = float(err.leading.subs(subs)) * (sign * 1e-3) ** p
    assert small == pytest.approx(predicted, rel=1e-2)  # relative O(h) correction, ~1e-3 at h = 1e-3


# --- the expansion cache (analytic.symbolic.cached) ---------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache folder (never the user's), and an empty in-process layer before and after."""
    monkeypatch.setenv(symbolic.CACHE_ENV, str(tmp_path / "root"))
    symbolic.clear_memo()
    yield tmp_path / "root" / "symbolic"
    symbolic.clear_memo()


def entries(folder):
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_cache_hit_is_the_fresh_expansion(cache):
    calls = []

    def rule(step, ratios, ops):
        calls.append(1)
        return dpmpp_2m_rule(step, ratios, ops)

    fresh = rule_error(rule, "data-lambda")  # no fingerprint: not cached
    assert entries(cache) == []
    fp = symbolic.code_fingerprint(rule)
    cold = rule_error(rule, "data-lambda", fingerprint=fp)
    assert len(entries(cache)) == 1 and len(calls) == 2
    memo = rule_error(rule, "data-lambda", fingerprint=fp)
    symbolic.clear_memo()
    disk = rule_error(rule, "data-lambda", fingerprint=fp)
    assert len(calls) == 2, "a hit must not evaluate the rule again"
    for err in (cold, memo, disk):
        assert err == fresh  # orders, leading term, series and coefficients, exactly
        assert_error(err, 3, -(d1 + (3 * r0 + 2) * d2) / 12)
    # the displayed (factored) form, as the report shows it
    assert str(disk.leading_factored()) == "-d1/12 - d2*(3*r0 + 2)/12"
    # the expansion parameters are part of the key
    other = rule_error(rule, "data-lambda", max_power=5, fingerprint=fp)
    assert len(calls) == 3 and other.local_order == 3 and len(entries(cache)) == 2


def test_cache_invalidated_when_the_rule_changes(cache):
    def rule(step, ratios, ops):  # DPM-Solver++(2M): second order
        a = -ops.expm1(-step)
        return [a * (1 + 1 / (2 * ratios[0])), -a / (2 * ratios[0])], [0, -ratios[0]]

    first_fp = symbolic.code_fingerprint(rule)
    first = rule_error(rule, "data-lambda", fingerprint=first_fp)
    assert first.global_order == 2

    def rule(step, ratios, ops):  # noqa: F811 - redefined: 1/2 -> 1/3, first order
        a = -ops.expm1(-step)
        return [a * (1 + 1 / (3 * ratios[0])), -a / (3 * ratios[0])], [0, -ratios[0]]

    second_fp = symbolic.code_fingerprint(rule)
    assert second_fp != first_fp
    for drop_memo in (False, True):
        if drop_memo:
            symbolic.clear_memo()
        second = rule_error(rule, "data-lambda", fingerprint=second_fp)
        assert second == rule_error(rule, "data-lambda")  # the fresh expansion of the new source, not a stale hit
        assert_error(second, 2, -d1 / 6)
    assert len(entries(cache)) == 2

    # a constant or a helper the rule reads by name is part of its code
    def helper(r):
        return 2 * r

    def via_helper(step, ratios, ops):
        a = -ops.expm1(-step)
        return [a * (1 + 1 / helper(ratios[0])), -a / helper(ratios[0])], [0, -ratios[0]]

    before = symbolic.code_fingerprint(via_helper)
    assert rule_error(via_helper, "data-lambda", fingerprint=before).global_order == 2

    def helper(r):  # noqa: F811
        return 3 * r

    after = symbolic.code_fingerprint(via_helper)
    assert after != before
    assert_error(rule_error(via_helper, "data-lambda", fingerprint=after), 2, -d1 / 6)


def test_cache_ignores_damaged_entries(cache):
    fp = symbolic.code_fingerprint(dpmpp_2m_rule)
    fresh = rule_error(dpmpp_2m_rule, "data-lambda")
    rule_error(dpmpp_2m_rule, "data-lambda", fingerprint=fp)
    (path,) = entries(cache)
    good = json.loads(path.read_text())
    damaged = [b"\x00\xff not json", b"", b"[1, 2]", json.dumps({"key": good["key"], "value": {"x": 1}}).encode(),
               json.dumps({"key": "another", "value": good["value"]}).encode(),
               json.dumps({"key": good["key"], "value": {**good["value"], "leading": ["F", "eval", [["Z", "1"]]]}})
               .encode()]
    for content in damaged:
        path.write_bytes(content)
        symbolic.clear_memo()
        assert rule_error(dpmpp_2m_rule, "data-lambda", fingerprint=fp) == fresh
        assert json.loads(path.read_text()) == good  # computed again and written back
    # a folder where the entry should be: unreadable, ignored
    path.unlink()
    path.mkdir()
    symbolic.clear_memo()
    assert rule_error(dpmpp_2m_rule, "data-lambda", fingerprint=fp) == fresh


@pytest.mark.parametrize("where", ["under-a-file", "off"])
def test_cache_location_that_cannot_be_written(tmp_path, monkeypatch, where):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(symbolic.CACHE_ENV, str(blocker / "root") if where == "under-a-file" else "off")
    symbolic.clear_memo()
    try:
        assert (symbolic.cache_dir() is None) == (where == "off")
        fresh = rule_error(dpmpp_2m_rule, "data-lambda")
        fp = symbolic.code_fingerprint(dpmpp_2m_rule)
        assert rule_error(dpmpp_2m_rule, "data-lambda", fingerprint=fp) == fresh
        assert rule_error(dpmpp_2m_rule, "data-lambda", fingerprint=fp) == fresh  # in-process layer still works
        assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    finally:
        symbolic.clear_memo()


def test_cache_writes_whole_files(cache):
    values = [symbolic.cached(f"test-{j}", lambda j=j: {"j": j, "list": list(range(j))}) for j in range(5)]
    assert values == [{"j": j, "list": list(range(j))} for j in range(5)]
    symbolic.clear_memo()
    assert [symbolic.cached(f"test-{j}", lambda: pytest.fail("not a hit")) for j in range(5)] == values
    assert len(entries(cache)) == 5 and not [p for p in cache.iterdir() if p.suffix != ".json"]  # no temp files
    with pytest.raises(ValueError, match="^fingerprint:"):
        symbolic.cached("", dict)


def test_expression_encoding_round_trips_and_refuses_code():
    exprs = [d1 / 12 - d2 * (3 * r0 + 2) / 12, sympy.sqrt(2) * e2 + sympy.pi * h**-2, sympy.exp(-h / 3) * r1,
             sympy.Rational(-7, 10**30), sympy.log(1 + r0) * sympy.I]
    for e in exprs:
        tree = symbolic.encode_expr(e)
        assert symbolic.decode_expr(json.loads(json.dumps(tree))) == e
    for bad in (["F", "eval", [["Z", "1"]]], ["F", "__import__", []], ["S", "x", {"positive": "yes"}], ["Z", 1],
                "Symbol('x')", []):
        with pytest.raises(ValueError, match="^expr:"):
            symbolic.decode_expr(bad)
    with pytest.raises(TypeError):
        symbolic.encode_expr(sympy.Float(0.1) * h)  # not stored: the value is returned uncached


def test_solver_symbolic_order_is_cached_by_its_code(cache):
    from sdm_verify import solvers
    from sdm_verify.harness import fingerprint
    from sdm_verify.harness import symbolic_order as so

    solver = solvers.get("dpmpp_2m")
    key = so.rule_fingerprint(solver)
    assert fingerprint.solver_part(type(solver)).digest in key and repr(solver.params()) in key
    assert so.rule_fingerprint(solvers.get("deis_tab3")) != so.rule_fingerprint(solvers.get("deis_tab2"))
    fresh = so._expand(solver)
    so._CACHE.pop(key, None)
    assert so.symbolic_order(solver) == fresh
    assert len(entries(cache)) == 1
    so._CACHE.pop(key, None)
    symbolic.clear_memo()
    assert so.symbolic_order(solver) == fresh  # from disk
    assert fresh.general == fresh.uniform == 2 and fresh.leading_general == "-d1/12 - d2*(3*r0 + 2)/12"
