"""DPM-Solver (noise prediction) and DPM-Solver++ (data prediction): exponential integrators in lambda = -log sigma.

Lu et al. 2022, "DPM-Solver", arXiv 2206.00927 (DPM-Solver-1/2/3, Alg. 1 and 2) and Lu et al. 2022,
"DPM-Solver++", arXiv 2211.01095 (2S: Alg. 1, 2M: Alg. 2; 3M as in the authors' code, `dpm_solver_pytorch.py`
`multistep_dpm_solver_third_update`, and diffusers' `multistep_dpm_solver_third_order_update`). In canonical (EDM)
variables alpha = 1, sigma is the noise level and h = lambda_t - lambda_s = log(sigma_s/sigma_t). Variation of
constants gives the two exact forms every step here discretizes:
    data prediction   x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^l D dl
    noise prediction  x_t = x_s - sigma_s int_0^h e^{-tau} eps(lambda_s + tau) dtau,      eps = (x - D)/sigma
Each solver exposes its coefficients through `update_rule(h, ratios, ops) -> (weights, nodes)` in the normalized
form named by `symbolic_form` (see analytic/symbolic.py); `step` evaluates the same function with MATH_OPS, so the
symbolic order check analyses the code that runs. Single-step methods also expose `stage_rules(h, ops)`, the
coefficients of their intermediate stages (an explicit exponential Runge-Kutta tableau in the same form).

A step into sigma = 0 (h = inf) is first order for every solver here: x <- D(x, sigma), 1 NFE.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .base import MATH_OPS
from .multistep import Multistep
from .registry import register
from .singlestep import SingleStep

FINAL_STEP = "x <- D(x, sigma) (DPM-Solver++(1) / DDIM into sigma = 0), 1 NFE"


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InputError(f"{name}: must be a number in (0, 1) (got {value!r})")
    return float(value)


class _ExponentialRK(SingleStep):
    """Explicit exponential Runge-Kutta step shared by the single-step solvers (and DDIM, DPM-Solver-1), run by
    solvers/singlestep.py. With v_0 = f(x_s, sigma_s) and f = D ("data-lambda") or eps ("noise-lambda"), stage j
    at sigma_j = sigma_s e^{-c_j h} (i.e. lambda_s + c_j h) is, with (a_j, .) = stage_rules(h)[j-1],
        data-lambda:  x_j = e^{-c_j h} x_s + sum_k a_jk v_k        noise-lambda:  x_j = x_s - sigma_s sum_k a_jk v_k
    then v_j = f(x_j, sigma_j); the output uses (weights, nodes) = update_rule(h) the same way at c = 1.
    """

    symbolic_form = "data-lambda"
    final_step = FINAL_STEP

    def into_zero(self, denoiser, x, sigma):
        return denoiser(x, sigma)


class DDIM(_ExponentialRK):
    """DDIM = DPM-Solver++(1): x_t = (sigma_t/sigma_s) x_s + (1 - sigma_t/sigma_s) D(x_s, sigma_s).

    Song et al. 2021 (DDIM); Lu et al. 2022 (DPM-Solver++, first-order step). In VE/EDM variables it coincides
    with Euler and with DPM-Solver-1. Order 1, 1 NFE per step.
    """

    name, order, nfe_per_step = "ddim", 1, 1

    def update_rule(self, h, ratios, ops):
        return [-ops.expm1(-h)], [0]


class DPMSolver1(_ExponentialRK):
    """DPM-Solver-1 (noise prediction): x_t = x_s - sigma_s (1 - e^{-h}) eps(x_s, sigma_s).

    Lu et al. 2022 (DPM-Solver, first-order step); with alpha = 1, sigma_t (e^h - 1) = sigma_s (1 - e^{-h}).
    Order 1, 1 NFE per step.
    """

    name, order, nfe_per_step = "dpm_solver_1", 1, 1
    symbolic_form = "noise-lambda"

    def update_rule(self, h, ratios, ops):
        return [-ops.expm1(-h)], [0]

    def step(self, denoiser, x, i, ctx):
        # the noise-lambda update x - sigma_s w (x - D)/sigma_s with sigma_s cancelled: x + w (D - x), i.e. the data
        # form (1 - w) x + w D; two passes (sub, fused add) instead of three (sub, div, add), equal up to rounding.
        # w is update_rule's weight, so the symbolic check still analyses the coefficient that runs.
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        if t == 0:
            return self.into_zero(denoiser, x, s)
        (w,), _ = self.update_rule(math.log(s / t), [], MATH_OPS)
        return torch.add(x, denoiser(x, s) - x, alpha=w)


class DPMSolver2(_ExponentialRK):
    """DPM-Solver-2 (single-step, noise prediction; Lu et al. 2022, Alg. 1), with phi(g) = 1 - e^{-g}:
        u   = x_s - sigma_s phi(r1 h) eps_s                                  at lambda_s + r1 h
        x_t = x_s - sigma_s phi(h) [eps_s + (eps(u) - eps_s) / (2 r1)]
    Order 2, 2 NFE per step (r1 = 1/2 by default).
    """

    name, order, nfe_per_step = "dpm_solver_2", 2, 2
    symbolic_form = "noise-lambda"

    def __init__(self, r1: float = 0.5):
        self.r1 = _check_fraction(r1, "r1")

    def params(self):
        return {"r1": self.r1}

    def stage_rules(self, h, ops):
        return [([-ops.expm1(-self.r1 * h)], [0])]

    def update_rule(self, h, ratios, ops):
        p1, r1 = -ops.expm1(-h), self.r1
        return [p1 * (1 - 1 / (2 * r1)), p1 / (2 * r1)], [0, r1]


class DPMSolver3(_ExponentialRK):
    """DPM-Solver-3 (single-step, noise prediction; Lu et al. 2022, Alg. 2, r1 = 1/3, r2 = 2/3), with
    phi(g) = 1 - e^{-g} and psi(g) = phi(g)/g - e^{-g}  (= sigma_t((e^g - 1)/g - 1)/sigma_s):
        u1  = x_s - sigma_s phi(r1 h) eps_s                                                      at lambda_s + r1 h
        u2  = x_s - sigma_s phi(r2 h) eps_s - sigma_s (r2/r1) psi(r2 h) (eps(u1) - eps_s)        at lambda_s + r2 h
        x_t = x_s - sigma_s phi(h) eps_s - sigma_s psi(h)/r2 (eps(u2) - eps_s)
    Order 3, 3 NFE per step. The weight of eps(u1) in the output is 0 (it enters through u2 only).
    """

    name, order, nfe_per_step = "dpm_solver_3", 3, 3
    symbolic_form = "noise-lambda"
    r1, r2 = 1 / 3, 2 / 3

    @staticmethod
    def _psi(g, ops):
        return -ops.expm1(-g) / g - ops.exp(-g)

    def stage_rules(self, h, ops):
        r1, r2 = self.r1, self.r2
        b = (r2 / r1) * self._psi(r2 * h, ops)
        return [([-ops.expm1(-r1 * h)], [0]), ([-ops.expm1(-r2 * h) - b, b], [0, r1])]

    def update_rule(self, h, ratios, ops):
        b = self._psi(h, ops) / self.r2
        return [-ops.expm1(-h) - b, 0, b], [0, self.r1, self.r2]


class DPMSolverPP2S(_ExponentialRK):
    """DPM-Solver++(2S) (single-step, data prediction; Lu et al. 2022, DPM-Solver++ Alg. 1):
        u   = e^{-r h} x_s + (1 - e^{-r h}) D_s                                                  at lambda_s + r h
        x_t = (sigma_t/sigma_s) x_s + (1 - e^{-h}) [(1 - 1/(2r)) D_s + D(u)/(2r)]
    Order 2, 2 NFE per step (r = 1/2 by default).
    """

    name, order, nfe_per_step = "dpmpp_2s", 2, 2

    def __init__(self, r: float = 0.5):
        self.r = _check_fraction(r, "r")

    def params(self):
        return {"r": self.r}

    def stage_rules(self, h, ops):
        return [([-ops.expm1(-self.r * h)], [0])]

    def update_rule(self, h, ratios, ops):
        p1, r = -ops.expm1(-h), self.r
        return [p1 * (1 - 1 / (2 * r)), p1 / (2 * r)], [0, r]


class _DataMultistep(Multistep):
    """Multistep data-prediction exponential integrator (solvers/multistep.py): x_t = (sigma_t/sigma_s) x_s +
    sum_j w_j D_j, with D_j the denoiser values at the current and previous grid points (nodes 0, -r0, -(r0 + r1),
    ...), r_j ratios of steps in lambda.

    Warm-up as in the papers: step i (0-based) uses order min(order, i + 1). With `lower_order_final` (default
    OFF) the rule of the authors' code (dpm-solver `DPM_Solver.sample`, multistep) applies as well: on a grid of
    fewer than 10 steps (N = len(sigmas) - 1, counting a final step into 0), step i uses order <= N - i.
    """

    symbolic_form = "data-lambda"
    final_step = FINAL_STEP
    lower_order_final_below = 10

    def __init__(self, lower_order_final: bool = False):
        if not isinstance(lower_order_final, bool):
            raise InputError(f"lower_order_final: must be a bool (got {lower_order_final!r})")
        self.lower_order_final = lower_order_final

    def params(self):
        return {"lower_order_final": self.lower_order_final}

    def update_rule(self, h, ratios, ops, order: int | None = None):
        """(weights, nodes) of a step of the given order (default: full); uses ratios[:order - 1]."""
        raise NotImplementedError

    def weights(self, h, ratios, k):
        return self.update_rule(h, ratios, MATH_OPS, order=k)[0]


def dpmpp_2m_rule(h, r0, ops):
    """(weights, nodes) of DPM-Solver++(2M) on (D_s, D_prev), r0 = h_prev/h (shared with SDM's blended step)."""
    p1 = -ops.expm1(-h)
    return [p1 * (1 + 1 / (2 * r0)), -p1 / (2 * r0)], [0, -r0]


class DPMSolverPP2M(_DataMultistep):
    """DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++ Alg. 2), r0 = h_prev/h:
        x_t = (sigma_t/sigma_s) x_s + (1 - e^{-h}) [(1 + 1/(2 r0)) D_s - D_prev/(2 r0)]
    Order 2, 1 NFE per step; the first step is DPM-Solver++(1).
    """

    name, order, history_size = "dpmpp_2m", 2, 2

    def update_rule(self, h, ratios, ops, order=None):
        if (order or self.order) == 1:
            return [-ops.expm1(-h)], [0]
        return dpmpp_2m_rule(h, ratios[0], ops)


class DPMSolverPP3M(_DataMultistep):
    """DPM-Solver++(3M), multistep data prediction, r0 = h_1/h, r1 = h_2/h (previous step sizes in lambda):
        D1_0 = (D_s - D_1)/r0,  D1_1 = (D_1 - D_2)/r1,  D2 = (D1_0 - D1_1)/(r0 + r1),  D1 = D1_0 + r0 D2
        x_t = (sigma_t/sigma_s) x_s + (1 - e^{-h}) D_s + h phi_2(-h) D1 + c2 h phi_3(-h) D2,
    with h phi_2(-h) = (e^{-h} - 1 + h)/h and h phi_3(-h) = 1/2 - phi_2(-h). Claimed order 3, 1 NFE per step; the
    first two steps are DPM-Solver++(1) and (2M).
    variant="authors" (default): c2 = 1, the coefficients of the authors' code, diffusers and k-diffusion. For a
    quadratic interpolant D1 = h D' and D2 = h^2 D''/2, so this step's local error is -h^3 D''/12 + O(h^4) for any
    step ratios: global order 2 (see tests/test_solvers_dpm.py).
    variant="lagrange": c2 = 2, the exact integral of the quadratic interpolant of D in lambda (exponential
    Adams-Bashforth, global order 3).
    """

    name, order, history_size = "dpmpp_3m", 3, 3
    variants = ("authors", "lagrange")

    def __init__(self, lower_order_final: bool = False, variant: str = "authors"):
        super().__init__(lower_order_final)
        if variant not in self.variants:
            raise InputError(f"variant: must be one of {self.variants} (got {variant!r})")
        self.variant = variant

    def params(self):
        return {**super().params(), "variant": self.variant}

    def update_rule(self, h, ratios, ops, order=None):
        order = order or self.order
        if order == 1:
            return [-ops.expm1(-h)], [0]
        if order == 2:
            return dpmpp_2m_rule(h, ratios[0], ops)
        r0, r1 = ratios[0], ratios[1]
        p1 = -ops.expm1(-h)  # h phi_1(-h)
        p2 = ops.expm1(-h) / h + 1  # h phi_2(-h)
        p3 = (0.5 - p2 / h) * (1 if self.variant == "authors" else 2)  # c2 h phi_3(-h)
        # coefficient vectors on (D_s, D_1, D_2)
        d1_0 = [1 / r0, -1 / r0, 0]
        d1_1 = [0, 1 / r1, -1 / r1]
        d2 = [(a - b) / (r0 + r1) for a, b in zip(d1_0, d1_1, strict=True)]
        d1 = [a + r0 * b for a, b in zip(d1_0, d2, strict=True)]
        weights = [p2 * a + p3 * b for a, b in zip(d1, d2, strict=True)]
        weights[0] = weights[0] + p1
        return weights, [0, -r0, -(r0 + r1)]


register("ddim", DDIM)
register("dpm_solver_1", DPMSolver1)
register("dpm_solver_2", DPMSolver2)
register("dpm_solver_3", DPMSolver3)
register("dpmpp_2s", DPMSolverPP2S)
register("dpmpp_2m", DPMSolverPP2M)
register("dpmpp_3m", DPMSolverPP3M)
register("dpmpp_3m_lagrange", DPMSolverPP3M, variant="lagrange")
