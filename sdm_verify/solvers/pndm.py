"""PNDM and PLMS: the pseudo numerical methods of Liu et al. 2022 (ICLR, arXiv 2202.09778), in canonical variables.

The paper splits a step into a "gradient part" (an estimate eps' of the noise prediction over the step) and a
"transfer part" phi(x, eps', t, t') (its Eq. 9), which is the DDIM step. In canonical (EDM) variables
x = x0 + sigma n the DDIM step is x' = x + (sigma' - sigma) eps', with eps = (x - D(x, sigma))/sigma: the Euler
step of dx/dsigma = eps (docs/solvers_more.md §1). Writing H = sigma_{i+1} - sigma_i and eps_j = eps at grid point j:

pndm (the paper's F-PNDM, its Algorithm 2): the first three steps are pseudo Runge-Kutta (PRK, Eq. 12), four
    evaluations at sigma_i, the midpoint m, m, sigma_{i+1}:
        e1 = eps(x, s);  e2 = eps(x + (m - s) e1, m);  e3 = eps(x + (m - s) e2, m);  e4 = eps(x + H e3, t)
        x_{i+1} = x + H (e1 + 2 e2 + 2 e3 + e4)/6,
    then pseudo linear multistep (PLMS, Eq. 13), one evaluation per step:
        x_{i+1} = x + H (55 eps_i - 59 eps_{i-1} + 37 eps_{i-2} - 9 eps_{i-3})/24.
    The midpoint is "t - delta/2" in the paper's time, the DDPM timestep index of a linear-beta schedule (the
    authors' code: (t + t_next)/2). midpoint="vp_time" (default) maps sigma to the continuous version of that time
    (linear-beta VP, beta_min = 0.1, beta_d = 19.9: the DDPM betas 1e-4..0.02 times 1000 steps), takes the middle
    time and maps back; the authors' code also truncates the discrete index to an integer, which is left out here.
    midpoint="sigma" takes (sigma_i + sigma_{i+1})/2: then PRK is classical RK4 in sigma.
plms (PLMS as diffusers' PNDMScheduler runs it with skip_prk_steps=True): the first step is the pseudo improved
    Euler step x_1 = x_0 + H (e0 + eps(x_0 + H e0, sigma_1))/2 (2 NFE), then Adams-Bashforth with
    k = min(max_order, i + 1) values: [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24.
s_pndm (the paper's S-PNDM, authors' `gen_order_2`): the same improved-Euler start, then 2-value PLMS (max_order 2).

The Adams-Bashforth weights are the fixed uniform-step ones (blind to the step ratios): the paper's claims hold for
uniform steps in its own time. A step into sigma = 0 is x <- D(x, sigma), 1 NFE (the Euler/DDIM step into 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from ..errors import InputError
from .base import Solver, StepContext, combine, ode_derivative
from .registry import register

#: fixed Adams-Bashforth weights for k = 1..4 values (newest first), as exact fractions of the step
AB_WEIGHTS = (
    (Fraction(1),),
    (Fraction(3, 2), Fraction(-1, 2)),
    (Fraction(23, 12), Fraction(-16, 12), Fraction(5, 12)),
    (Fraction(55, 24), Fraction(-59, 24), Fraction(37, 24), Fraction(-9, 24)),
)
#: the Runge-Kutta weights of the PRK step on (e1, e2, e3, e4)
PRK_WEIGHTS = (Fraction(1, 6), Fraction(2, 6), Fraction(2, 6), Fraction(1, 6))
#: the continuous linear-beta VP schedule of the paper's DDPM models: beta(t) = beta_min + beta_d t, t in [0, 1]
VP_BETA_MIN, VP_BETA_D = 0.1, 19.9
MIDPOINTS = ("vp_time", "sigma")


def ab_weights(k: int) -> list[float]:
    """The k-value Adams-Bashforth weights (newest first) as floats."""
    return [float(c) for c in AB_WEIGHTS[k - 1]]


def vp_time(sigma: float) -> float:
    """t with sigma(t) = sigma for the linear-beta VP: beta_d t^2/2 + beta_min t = log(1 + sigma^2)."""
    ell = math.log1p(sigma * sigma)
    return 2.0 * ell / (VP_BETA_MIN + math.sqrt(VP_BETA_MIN**2 + 2.0 * VP_BETA_D * ell))


def vp_sigma(t: float) -> float:
    """sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1) of the linear-beta VP."""
    return math.sqrt(math.expm1(0.5 * VP_BETA_D * t * t + VP_BETA_MIN * t))


def midpoint_sigma(kind: str, s: float, t: float) -> float:
    """The noise level of the PRK midpoint between s and t (both > 0)."""
    if kind == "sigma":
        return 0.5 * (s + t)
    return vp_sigma(0.5 * (vp_time(s) + vp_time(t)))


def _eps(denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return ode_derivative(x, denoiser(x, sigma), sigma)


@dataclass
class PseudoState:
    """Per-run state: eps at the grid points so far, newest first (at most 4 kept)."""

    history: list[torch.Tensor] = field(default_factory=list)

    def remember(self, value: torch.Tensor, keep: int) -> None:
        self.history.insert(0, value)
        del self.history[keep:]


def _check_int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name}: must be an integer in {lo}..{hi} (got {value!r})")
    return value


class PNDM(Solver):
    """F-PNDM: three pseudo Runge-Kutta steps (4 NFE each), then 4-value PLMS (1 NFE per step)."""

    name = "pndm"
    #: the paper's convergence statement for F-PNDM (see claim_source)
    order = 3
    order_conditions = "uniform steps in the paper's time (DDPM timestep index), exact warm-up"
    claim_source = ("Liu et al. 2022 (PNDM, ICLR), Sec. 3 'convergence order' of the pseudo methods (Eq. 12-13, "
                    "Alg. 2): third order for F-PNDM as recalled; the paper's text was not reachable here, so the "
                    "number is to be confirmed against the paper (docs/solvers_more.md §2)")
    nfe_per_step = 1
    final_step_nfe = 1
    final_step = "x <- D(x, sigma) (the DDIM/Euler step into sigma = 0), 1 NFE, in the warm-up as after it"
    warmup_steps = 3

    def __init__(self, midpoint: str = "vp_time"):
        if midpoint not in MIDPOINTS:
            raise InputError(f"midpoint: must be one of {MIDPOINTS} (got {midpoint!r})")
        self.midpoint = midpoint
        self.notes = (
            f"PRK midpoint: {midpoint!r} (docs/solvers_more.md §2); 'vp_time' is the paper's t - delta/2 in the "
            "continuous linear-beta VP time (the authors' integer truncation of the index is left out)",
            "fixed uniform-step PLMS weights: blind to the step ratios of a non-uniform grid",
        )

    def params(self) -> dict:
        return {"midpoint": self.midpoint}

    def nfe(self, n_steps: int) -> int:
        warm = min(n_steps, self.warmup_steps)
        return 4 * warm + (n_steps - warm)

    def init_state(self) -> PseudoState:
        return PseudoState()

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        if t == 0:
            return denoiser(x, s)
        h = t - s
        state = ctx.state
        e1 = _eps(denoiser, x, s)
        state.remember(e1, 4)
        if i < self.warmup_steps:
            m = midpoint_sigma(self.midpoint, s, t)
            e2 = _eps(denoiser, torch.add(x, e1, alpha=m - s), m)
            e3 = _eps(denoiser, torch.add(x, e2, alpha=m - s), m)
            e4 = _eps(denoiser, torch.add(x, e3, alpha=h), t)
            return combine(x, [h * float(c) for c in PRK_WEIGHTS], [e1, e2, e3, e4])
        k = min(4, len(state.history))
        return combine(x, [h * c for c in ab_weights(k)], state.history[:k])


class PLMS(Solver):
    """PLMS with the pseudo improved-Euler start (2 NFE), then Adams-Bashforth with up to `max_order` values."""

    name = "plms"
    order_conditions = "uniform steps in the paper's time (DDPM timestep index)"
    nfe_per_step = 1
    final_step_nfe = 1
    final_step = "x <- D(x, sigma) (the DDIM/Euler step into sigma = 0), 1 NFE"

    def __init__(self, max_order: int = 4):
        self.max_order = _check_int(max_order, "max_order", 2, 4)
        if self.max_order == 2:
            self.order = 2
            self.claim_source = ("Liu et al. 2022 (PNDM), S-PNDM: pseudo improved Euler start then 2-value PLMS, "
                                 "second order as recalled (paper text not reachable here; docs/solvers_more.md §2)")
        else:
            self.order = 3 if self.max_order == 4 else self.max_order
            self.claim_source = (
                "Liu et al. 2022 (PNDM): the PLMS claim (third order with 4 values, as recalled; paper text not "
                "reachable here). The improved-Euler start is diffusers' (PNDMScheduler, skip_prk_steps=True), "
                "which the paper does not pair with 4-value PLMS (docs/solvers_more.md §2)")
        self.notes = ("start: pseudo improved Euler (Heun in sigma), a local error O(H^3), i.e. at best second "
                      "order globally whatever the later steps",
                      "fixed uniform-step Adams-Bashforth weights: blind to the step ratios of a non-uniform grid")

    def params(self) -> dict:
        return {"max_order": self.max_order}

    def nfe(self, n_steps: int) -> int:
        return n_steps + (1 if n_steps > 0 else 0)

    def init_state(self) -> PseudoState:
        return PseudoState()

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        if t == 0:
            return denoiser(x, s)
        h = t - s
        state = ctx.state
        e = _eps(denoiser, x, s)
        state.remember(e, self.max_order)
        if i == 0:
            e_pred = _eps(denoiser, torch.add(x, e, alpha=h), t)
            return combine(x, [0.5 * h, 0.5 * h], [e, e_pred])
        k = min(self.max_order, len(state.history))
        return combine(x, [h * c for c in ab_weights(k)], state.history[:k])


register("pndm", PNDM)
register("plms", PLMS)
register("s_pndm", PLMS, max_order=2)
