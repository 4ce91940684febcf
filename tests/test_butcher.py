"""Explicit Runge-Kutta methods as Butcher tableaux (sdm_verify/solvers/butcher.py, rk.py).

- The tableau is checked on construction (explicit, row sums, consistency; exact entries only).
- Each registered tableau's order, from the order conditions up to order 4 (Butcher 2016, Numerical Methods for
  ODEs, Sec. 31: one condition per rooted tree), evaluated in exact rational arithmetic. The conditions are written
  out here, independently of the step code and of analytic.symbolic.
- The generic step evaluates the tableau: it reproduces the textbook formulas of Heun and RK4 to rounding, and a
  tableau that fails an order-3 coupling condition is measured second order on a nonlinear ODE, while RK4 on the
  same problem is measured fourth order.
- The symbolic order read from the tableau's coefficient functions (harness.symbolic_order), against the known
  values; and where that check stops (the quadrature part only).
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import pairwise

import pytest
import torch

from analytic import GaussianMixture, reference_flow
from sdm_verify import count_nfe, solvers
from sdm_verify.harness.symbolic_order import symbolic_order
from sdm_verify.solvers.butcher import ButcherTableau, ExplicitRK
from sdm_verify.solvers.rk import TABLEAUX

F64 = torch.float64
R = Fraction


# ------------------------------------------------------------------------------------------- construction


def test_a_valid_tableau_is_stored_as_exact_fractions():
    t = ButcherTableau(a=((0, 0), ("2/3", 0)), b=(R(1, 4), R(3, 4)), c=(0, "2/3"))
    assert t.stages == 2 and t.a[1][0] == R(2, 3) and t.c == (0, R(2, 3))
    assert all(isinstance(v, Fraction) for v in t.b + t.c + t.a[1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(a=((0, 0), (1, 1)), b=(R(1, 2), R(1, 2)), c=(0, 2)), "^a: row 1 has entries on or above the diagonal"),
    (dict(a=((0, 1), (0, 0)), b=(R(1, 2), R(1, 2)), c=(1, 0)), "^a: row 0 has entries on or above the diagonal"),
    (dict(a=((0, 0), (1, 0)), b=(R(1, 2), R(1, 2)), c=(0, R(1, 2))), r"^c: c\[1\] = 1/2 differs from the row sum"),
    (dict(a=((0, 0), (1, 0)), b=(R(1, 2), R(1, 3)), c=(0, 1)), "^b: the weights sum to 5/6, not 1"),
    (dict(a=((0, 0), (0.5, 0)), b=(0, 1), c=(0, R(1, 2))), r"^a\[1\]\[0\]: tableau entries must be exact"),
    (dict(a=((0, 0), (1, 0)), b=(R(1, 2), R(1, 2)), c=(0,)), "^c: expected 2 nodes"),
    (dict(a=((0,), (1, 0)), b=(R(1, 2), R(1, 2)), c=(0, 1)), "^a: expected a 2 x 2 matrix"),
    (dict(a=(), b=(), c=()), "^b: a tableau needs at least one stage"),
])
def test_a_bad_tableau_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ButcherTableau(**kwargs)


def test_the_tableau_is_frozen():
    with pytest.raises(AttributeError):
        TABLEAUX["heun"].b = (1, 0)


# ------------------------------------------------------------------------------------------- order conditions


def order_conditions(a, b, c) -> dict[int, list[tuple[str, Fraction, Fraction]]]:
    """(tree, value, required) for every rooted tree up to order 4: sum of the elementary weights = 1/gamma."""
    s = range(len(b))
    ac = [sum(a[i][j] * c[j] for j in s) for i in s]  # (A c)_i
    ac2 = [sum(a[i][j] * c[j] ** 2 for j in s) for i in s]  # (A c^2)_i
    aac = [sum(a[i][j] * ac[j] for j in s) for i in s]  # (A A c)_i
    return {
        1: [("b.1", sum(b), R(1))],
        2: [("b.c", sum(b[i] * c[i] for i in s), R(1, 2))],
        3: [("b.c^2", sum(b[i] * c[i] ** 2 for i in s), R(1, 3)),
            ("b.Ac", sum(b[i] * ac[i] for i in s), R(1, 6))],
        4: [("b.c^3", sum(b[i] * c[i] ** 3 for i in s), R(1, 4)),
            ("b.(c*Ac)", sum(b[i] * c[i] * ac[i] for i in s), R(1, 8)),
            ("b.Ac^2", sum(b[i] * ac2[i] for i in s), R(1, 12)),
            ("b.AAc", sum(b[i] * aac[i] for i in s), R(1, 24))],
    }


def tableau_order(t: ButcherTableau) -> int:
    """The highest p <= 4 such that every condition of order <= p holds exactly (4 means: at least 4)."""
    conditions = order_conditions(t.a, t.b, t.c)
    p = 0
    for q in (1, 2, 3, 4):
        if any(value != required for _, value, required in conditions[q]):
            break
        p = q
    return p


#: Kutta's third-order method (1901): meets every condition of order 3, misses b.c^3 = 1/4
KUTTA3 = ButcherTableau(a=((0, 0, 0), (R(1, 2), 0, 0), (-1, 2, 0)), b=(R(1, 6), R(2, 3), R(1, 6)),
                        c=(0, R(1, 2), 1))
#: RK4's nodes and weights (Simpson's rule) with the second stage split between k1 and k2: the quadrature
#: conditions (b.c^k) of order 4 hold, the coupling condition b.Ac = 1/6 does not (1/8): a second-order method
SPLIT_RK4 = ButcherTableau(a=((0, 0, 0, 0), (R(1, 2), 0, 0, 0), (R(1, 4), R(1, 4), 0, 0), (0, 0, 1, 0)),
                           b=(R(1, 6), R(1, 3), R(1, 3), R(1, 6)), c=(0, R(1, 2), R(1, 2), 1))


@pytest.mark.parametrize("name, expected", [("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
def test_registered_tableau_meets_the_order_conditions_of_its_claim(name, expected):
    assert tableau_order(TABLEAUX[name]) == expected == solvers.get(name).order


def test_the_conditions_separate_orders():
    assert tableau_order(KUTTA3) == 3
    conditions = order_conditions(SPLIT_RK4.a, SPLIT_RK4.b, SPLIT_RK4.c)
    assert [v == r for _, v, r in conditions[3]] == [True, False]  # b.c^2 holds, b.Ac = 1/8 does not
    assert tableau_order(SPLIT_RK4) == 2


# ------------------------------------------------------------------------------------------- the generic step


class SplitRK4(ExplicitRK):
    name, order, tableau = "split_rk4", 4, SPLIT_RK4  # claims 4, is 2: the measurement below must say so


class Kutta3(ExplicitRK):
    name, order, tableau = "kutta3", 3, KUTTA3


GM = GaussianMixture([0.3, 0.7], [[-1.0], [0.8]], [[[0.25]], [[0.09]]])
SIGMA_0, SIGMA_1 = 2.0, 0.3


def test_cost_follows_the_number_of_stages():
    assert (SplitRK4().nfe(5), SplitRK4().nfe_to_zero(5)) == (20, 17)
    assert (Kutta3().nfe_per_step, Kutta3().final_step_nfe) == (3, 1)
    assert (solvers.get("euler").nfe_per_step, solvers.get("euler").final_step_nfe) == (1, None)


def test_generic_step_is_the_textbook_heun_and_rk4():
    x = GM.sample(6, sigma=SIGMA_0, generator=torch.Generator().manual_seed(1))
    sigmas = torch.linspace(SIGMA_0, SIGMA_1, 5, dtype=F64)

    def eps(y, s):
        return (y - GM.denoiser(y, s)) / s

    heun, rk4 = x.clone(), x.clone()
    for s, t in pairwise(sigmas.tolist()):
        h = t - s
        d = eps(heun, s)
        heun = heun + h / 2 * (d + eps(heun + h * d, t))
        k1 = eps(rk4, s)
        k2 = eps(rk4 + h / 2 * k1, s + h / 2)
        k3 = eps(rk4 + h / 2 * k2, s + h / 2)
        k4 = eps(rk4 + h * k3, t)
        rk4 = rk4 + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    torch.testing.assert_close(solvers.get("heun")(GM.denoiser, x, sigmas), heun, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(solvers.get("rk4")(GM.denoiser, x, sigmas), rk4, rtol=1e-13, atol=1e-13)


def test_step_into_zero_is_one_euler_step():
    x = GM.sample(4, sigma=SIGMA_0, generator=torch.Generator().manual_seed(2))
    for solver in (solvers.get("rk4"), solvers.get("midpoint"), Kutta3()):
        den = count_nfe(GM.denoiser)
        out = solver(den, x, torch.tensor([SIGMA_0, 0.0], dtype=F64))
        assert den.nfe == 1
        torch.testing.assert_close(out, GM.denoiser(x, SIGMA_0), rtol=1e-12, atol=1e-12)


def _measured_order(solver, ns) -> float:
    """Slope of log error vs log N (the last pair of ns) on a uniform sigma grid, against the exact flow of the
    1-d mixture. Local slopes measured from N = 16 up: RK4 4.05, 4.02, 4.02; Kutta3 3.55, 3.36, 2.97, 2.98 (it settles
    late, by N = 128); the split tableau 1.96, 1.98, 1.99."""
    x = GM.sample(32, sigma=SIGMA_0, generator=torch.Generator().manual_seed(0))
    exact = reference_flow(GM, x, SIGMA_0, SIGMA_1)
    errs = [float((solver(GM.denoiser, x, torch.linspace(SIGMA_0, SIGMA_1, n + 1, dtype=F64)) - exact).abs().max())
            for n in ns]
    return math.log(errs[-2] / errs[-1]) / math.log(ns[-1] / ns[-2])


def test_measured_order_follows_the_conditions_not_the_quadrature():
    """The mixture's D is nonlinear in x, so every tree's condition matters: RK4 and Kutta's method are measured at
    their orders, the tableau with Simpson's weights but a wrong coupling (b.Ac = 1/8) at 2."""
    assert abs(_measured_order(solvers.get("rk4"), (32, 64)) - 4) < 0.2
    assert abs(_measured_order(Kutta3(), (128, 256)) - 3) < 0.2
    assert abs(_measured_order(SplitRK4(), (64, 128)) - 2) < 0.2


# ------------------------------------------------------------------------------------------- symbolic order


@pytest.mark.parametrize("name, expected", [("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
def test_symbolic_order_of_the_registered_tableaux(name, expected):
    sym = symbolic_order(solvers.get(name))
    assert sym.form == "noise-sigma" and sym.general == sym.uniform == expected


def test_symbolic_order_reads_the_quadrature_only():
    """harness.symbolic_order expands the output weights with the stages on the exact solution: Simpson's rule is
    fourth order whatever the stage coupling, so the split tableau (second order, above) reads 4 there. The stage
    conditions are what the tests above check."""
    sym = symbolic_order(SplitRK4())
    assert sym.general == 4 and sym.scope.startswith("single-step: quadrature part only")
