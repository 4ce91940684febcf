"""Momentum samplers: Polyak's heavy ball (HB) and generalised heavy ball (GHVB) for diffusion ODEs.

Wizadwongsa, Chinchuthakun, Khungurn, Raj & Suwajanakorn 2023, "Diffusion Sampling with Momentum for Mitigating
Divergence Artifacts" (ICLR 2024, arXiv 2307.11118); conventions as in the authors' code (sWizad/momentum-diffusion,
`dpm_solver_pytorch.py` and `momentum_scheduler.py`). In canonical variables (docs/solvers_more.md §3), with
beta in (0, 1] the momentum (beta = 1: no momentum) and a velocity v carried from step to step:

hb_dpmpp_2m  DPM-Solver++(2M) whose bracket is averaged: with u_i = (1 + 1/(2 r0)) D_i - D_{i-1}/(2 r0)
             (u_0 = D_0 on the first, first-order step), v_i = (1 - beta) v_{i-1} + beta u_i (v_0 = u_0) and
             x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) v_i.
hb_plms      PLMS (Adams-Bashforth in sigma on eps, lower-order warm-up k = min(order, i + 1)) whose combination
             p_i = sum_j c_j eps_{i-j} is averaged: v_i = (1 - beta) v_{i-1} + beta p_i, x_{i+1} = x_i + H v_i.
ghvb         the velocity averages eps itself, v_i = (1 - beta) v_{i-1} + beta eps_i (v_0 = eps_0), and the step
             applies an Adams-Bashforth-like combination of the last k velocities built so that the lag of the
             average is undone: in backward differences of v,
                 x_{i+1} = x_i + H sum_{m<k} (g_m + kappa g_{m-1}) nabla^m v_i,    kappa = (1 - beta)/beta,
             with g_m the Adams-Bashforth backward-difference coefficients (1, 1/2, 5/12, 3/8) and g_{-1} = 0.
             (Derivation, docs/solvers_more.md §3: v = beta/(1 - (1 - beta)E^-1) eps = eps/(1 + kappa nabla), so
             the combination above equals Adams-Bashforth on eps up to nabla^k: exact for polynomials of degree < k.)
At beta = 1 each reduces to its base solver: dpmpp_2m, and ipndm (= PLMS with lower-order warm-up) for the other two.
A step into sigma = 0 is x <- D(x, sigma), 1 NFE, for all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from math import comb

import torch

from ..errors import InputError
from .base import Solver, StepContext, combine, ode_derivative
from .pndm import ab_weights
from .registry import register

FINAL_STEP = "x <- D(x, sigma) (the DDIM/Euler step into sigma = 0), 1 NFE"


def _ab_backward_coefficients(n: int) -> tuple[Fraction, ...]:
    """g_0..g_{n-1} of Adams-Bashforth in backward differences, from sum_{j<=m} g_j/(m + 1 - j) = 1."""
    g: list[Fraction] = []
    for m in range(n):
        g.append(1 - sum(g[j] / (m + 1 - j) for j in range(m)))
    return tuple(g)


#: Adams-Bashforth backward-difference coefficients 1, 1/2, 5/12, 3/8
AB_BACKWARD = _ab_backward_coefficients(4)


def ghvb_weights(k: int, beta: float) -> list[float]:
    """The GHVB weights on v_i, v_{i-1}, ..., v_{i-k+1} (fractions of the step H) for k values and momentum beta."""
    kappa = (1.0 - beta) / beta
    w = [0.0] * k
    for m in range(k):
        coef = float(AB_BACKWARD[m]) + (kappa * float(AB_BACKWARD[m - 1]) if m > 0 else 0.0)
        for j in range(m + 1):  # nabla^m v_i = sum_j (-1)^j C(m, j) v_{i-j}
            w[j] += coef * (-1) ** j * comb(m, j)
    return w


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < beta <= 1.0:
        raise InputError(f"beta: must be a number in (0, 1] (got {beta!r})")
    return float(beta)


def _check_order(order, lo: int = 1, hi: int = 4) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not lo <= order <= hi:
        raise InputError(f"order: must be an integer in {lo}..{hi} (got {order!r})")
    return order


@dataclass
class MomentumState:
    """Per-run state: the values combined by the step (newest first) and the velocity."""

    history: list[torch.Tensor] = field(default_factory=list)
    velocity: torch.Tensor | None = None
    h_prev: float | None = None

    def remember(self, value: torch.Tensor, keep: int) -> None:
        self.history.insert(0, value)
        del self.history[keep:]

    def average(self, value: torch.Tensor, beta: float) -> torch.Tensor:
        """v <- (1 - beta) v + beta value (v <- value on the first call)."""
        if self.velocity is None or beta == 1.0:
            self.velocity = value
        else:
            self.velocity = torch.add(value * beta, self.velocity, alpha=1.0 - beta)
        return self.velocity


class _Momentum(Solver):
    nfe_per_step = 1
    final_step_nfe = 1
    final_step = FINAL_STEP
    order_conditions = "uniform steps"

    def init_state(self) -> MomentumState:
        return MomentumState()


class HBDPMSolverPP2M(_Momentum):
    """DPM-Solver++(2M) with heavy-ball momentum beta (the authors' default 0.8). First order for beta < 1."""

    name = "hb_dpmpp_2m"
    order_conditions = ""
    claim_source = ("Wizadwongsa et al. 2023 (arXiv 2307.11118), abstract and Sec. 4: HB methods 'have first-order "
                    "convergence' (beta < 1); beta = 1 is DPM-Solver++(2M), order 2 (Lu et al. 2022, Alg. 2)")

    def __init__(self, beta: float = 0.8):
        self.beta = _check_beta(beta)
        self.order = 2 if self.beta == 1.0 else 1
        self.notes = ("first step: DPM-Solver++(1), which starts the velocity (v_0 = D_0, as the authors' pixel-space "
                      "code); no lower-order final steps",)
        self.equivalent = "dpmpp_2m" if self.beta == 1.0 else None

    def params(self) -> dict:
        return {"beta": self.beta}

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        state = ctx.state
        h = math.log(s / t)
        state.remember(d, 2)
        if len(state.history) == 1:
            u = d
        else:
            r0 = state.h_prev / h
            u = torch.add(d * (1 + 1 / (2 * r0)), state.history[1], alpha=-1 / (2 * r0))
        state.h_prev = h
        v = state.average(u, self.beta)
        return torch.add((t / s) * x, v, alpha=-math.expm1(-h))


class _OrderBeta(_Momentum):
    """The PLMS-based momentum solvers: `order` history values and momentum beta; beta = 1 is iPNDM of that order."""

    def _set_order_beta(self, order, beta) -> None:
        self.history_size = _check_order(order)
        self.beta = _check_beta(beta)
        self.equivalent = "ipndm" if self.beta == 1.0 else None
        self.equivalent_params = {"max_order": self.history_size}

    def params(self) -> dict:
        return {"order": self.history_size, "beta": self.beta}


class HBPLMS(_OrderBeta):
    """PLMS (lower-order warm-up) with heavy-ball momentum on its combination. First order for beta < 1."""

    name = "hb_plms"
    claim_source = ("Wizadwongsa et al. 2023 (arXiv 2307.11118), abstract and Sec. 4: HB methods 'have first-order "
                    "convergence' (beta < 1); beta = 1 is PLMS/iPNDM of the given order (uniform steps)")

    def __init__(self, order: int = 4, beta: float = 0.8):
        self._set_order_beta(order, beta)
        self.order = self.history_size if self.beta == 1.0 else 1
        self.notes = ("warm-up: Adams-Bashforth with k = min(order, i + 1) values (Euler first step), as the "
                      "authors' PLMS",)

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        state = ctx.state
        state.remember(ode_derivative(x, d, s), self.history_size)
        k = len(state.history)
        p = combine(torch.zeros_like(x), ab_weights(k), state.history[:k])
        v = state.average(p, self.beta)
        return torch.add(x, v, alpha=t - s)


class GHVB(_OrderBeta):
    """Generalised heavy ball of order `order` with momentum beta: see the module docstring."""

    name = "ghvb"
    claim_source = ("Wizadwongsa et al. 2023 (arXiv 2307.11118), Sec. 4 (GHVB): an order-r method for every beta "
                    "(exact for polynomial eps of degree < r on uniform steps; derivation in docs/solvers_more.md "
                    "§3); beta = 1 is PLMS/iPNDM of order r")

    def __init__(self, order: int = 4, beta: float = 0.8):
        self._set_order_beta(order, beta)
        self.order = self.history_size
        self.notes = ("warm-up: k = min(order, i + 1) velocities; the velocity starts at eps_0 (as the authors' code), "
                      "so the first steps also carry the average's start-up lag",)

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        state = ctx.state
        v = state.average(ode_derivative(x, d, s), self.beta)
        state.remember(v, self.history_size)
        k = len(state.history)
        return combine(x, [(t - s) * w for w in ghvb_weights(k, self.beta)], state.history[:k])


register("hb_dpmpp_2m", HBDPMSolverPP2M)
register("hb_plms", HBPLMS)
register("ghvb", GHVB)
