"""Explicit Runge-Kutta solvers of the EDM ODE dx/dsigma = (x - D(x, sigma))/sigma, stepping in sigma.

Euler (= DDIM in VE/EDM), EDM Heun (Karras et al. 2022, Alg. 1), explicit midpoint and classic RK4.
A step into sigma_next = 0 is one Euler step (x <- D(x, sigma)), as in EDM: the higher stages would need D at
sigma = 0 (Heun) or divide by 0.
"""

from __future__ import annotations

import torch

from .base import Solver, StepContext, ode_derivative
from .registry import register


class Euler(Solver):
    """x' = x + (sigma' - sigma) d, d = (x - D(x, sigma))/sigma. Order 1, 1 NFE per step."""

    name, order, nfe_per_step = "euler", 1, 1

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        return torch.add(x, ode_derivative(x, denoiser(x, s), s), alpha=t - s)


class Heun(Solver):
    """EDM Heun (trapezoidal predictor-corrector): x' = x + h (d + d')/2, d' at (x + h d, sigma').

    Order 2, 2 NFE per step; the step into sigma = 0 is Euler (1 NFE), so a grid ending at 0 costs 2N - 1.
    """

    name, order, nfe_per_step = "heun", 2, 2
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 2N - 1"

    final_step_nfe = 1

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = ode_derivative(x, denoiser(x, s), s)
        x_pred = x + (t - s) * d
        if t == 0:
            return x_pred
        d2 = ode_derivative(x_pred, denoiser(x_pred, t), t)
        return torch.add(x, d + d2, alpha=0.5 * (t - s))


class Midpoint(Solver):
    """Explicit midpoint: d at (x, sigma), x_m = x + (h/2) d, x' = x + h d(x_m, sigma + h/2). Order 2, 2 NFE."""

    name, order, nfe_per_step = "midpoint", 2, 2
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 2N - 1"

    final_step_nfe = 1

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = ode_derivative(x, denoiser(x, s), s)
        if t == 0:
            return x + (t - s) * d
        m = 0.5 * (s + t)
        x_mid = x + (m - s) * d
        return x + (t - s) * ode_derivative(x_mid, denoiser(x_mid, m), m)


class RK4(Solver):
    """Classic 4-stage Runge-Kutta in sigma (Kutta 1901). Order 4, 4 NFE; the step into sigma = 0 is Euler."""

    name, order, nfe_per_step = "rk4", 4, 4
    final_step = "Euler (x <- D(x, sigma)), 1 NFE: total 4N - 3"

    final_step_nfe = 1

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        h = t - s

        def f(y, sig):
            return ode_derivative(y, denoiser(y, sig), sig)

        k1 = f(x, s)
        if t == 0:
            return x + h * k1
        m = s + 0.5 * h
        k2 = f(x + 0.5 * h * k1, m)
        k3 = f(x + 0.5 * h * k2, m)
        k4 = f(x + h * k3, t)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


register("euler", Euler)
register("heun", Heun)
register("midpoint", Midpoint)
register("rk4", RK4)
