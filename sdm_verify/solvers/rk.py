"""Explicit Runge-Kutta solvers of the EDM ODE dx/dsigma = (x - D(x, sigma))/sigma, stepping in sigma: tableaux.

Euler (= DDIM in VE/EDM), EDM Heun (Karras et al. 2022, Alg. 1: the trapezoidal predictor-corrector), explicit
midpoint and classic RK4 (Kutta 1901), each a Butcher tableau run by the generic step of solvers/butcher.py.
A step into sigma_next = 0 is one Euler step (x <- D(x, sigma)), as in EDM: the higher stages would need D at
sigma = 0 (Heun) or divide by 0; so a grid ending at 0 costs s (N - 1) + 1 calls for an s-stage method.
"""

from __future__ import annotations

from fractions import Fraction

from .butcher import ButcherTableau, ExplicitRK
from .registry import register

HALF, SIXTH, THIRD = Fraction(1, 2), Fraction(1, 6), Fraction(1, 3)

#: the tableaux, by registered name
TABLEAUX = {
    "euler": ButcherTableau(a=((0,),), b=(1,), c=(0,)),
    "heun": ButcherTableau(a=((0, 0), (1, 0)), b=(HALF, HALF), c=(0, 1)),
    "midpoint": ButcherTableau(a=((0, 0), (HALF, 0)), b=(0, 1), c=(0, HALF)),
    "rk4": ButcherTableau(a=((0, 0, 0, 0), (HALF, 0, 0, 0), (0, HALF, 0, 0), (0, 0, 1, 0)),
                          b=(SIXTH, THIRD, THIRD, SIXTH), c=(0, HALF, HALF, 1)),
}


class Euler(ExplicitRK):
    """x' = x + (sigma' - sigma) d, d = (x - D(x, sigma))/sigma. Order 1, 1 NFE per step."""

    name, order, tableau = "euler", 1, TABLEAUX["euler"]
    final_step = "Euler (x <- D(x, sigma)), 1 NFE"


class Heun(ExplicitRK):
    """EDM Heun (trapezoidal predictor-corrector): x' = x + h (d + d')/2, d' at (x + h d, sigma').

    Order 2, 2 NFE per step; the step into sigma = 0 is Euler (1 NFE), so a grid ending at 0 costs 2N - 1.
    """

    name, order, tableau = "heun", 2, TABLEAUX["heun"]
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 2N - 1"


class Midpoint(ExplicitRK):
    """Explicit midpoint: d at (x, sigma), x_m = x + (h/2) d, x' = x + h d(x_m, sigma + h/2). Order 2, 2 NFE."""

    name, order, tableau = "midpoint", 2, TABLEAUX["midpoint"]
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 2N - 1"


class RK4(ExplicitRK):
    """Classic 4-stage Runge-Kutta in sigma (Kutta 1901). Order 4, 4 NFE; the step into sigma = 0 is Euler."""

    name, order, tableau = "rk4", 4, TABLEAUX["rk4"]
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 4N - 3"


register("euler", Euler)
register("heun", Heun)
register("midpoint", Midpoint)
register("rk4", RK4)
