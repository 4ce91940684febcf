"""SDE-DPM-Solver++: data-prediction exponential integrators of the eta-SDE, first order, (2M) and k-diffusion's (3M).

Canonical (EDM) variables: alpha = 1, lambda = -log sigma, a step t -> t' (noise levels) has h = lambda' - lambda =
log(t/t') > 0. For eta >= 0 the reverse SDE, written in lambda (sigma = e^{-lambda}, dsigma = -sigma dlambda),
    dx = -(1 + eta)(x - D(x, lambda)) dlambda + sigma sqrt(2 eta) dW_lambda,
carries the noisy marginals p_sigma exactly: it is the family dx = (1 + beta)(x - D)/sigma dsigma + noise of variance
2 beta sigma |dsigma| (Karras et al. 2022, Eq. 6, beta(t) = eta/t), and eta = 0 is the probability-flow ODE.
Variation of constants over one step, with the kernel e^{-(1 + eta)(lambda' - u)} and g = (1 + eta) h:
    x' = e^{-g} x + (1 + eta) int_lambda^lambda' e^{-(1+eta)(lambda'-u)} D(u) du + t' sqrt(1 - e^{-2 eta h}) z,
where e^{-g} = (t'/t) e^{-eta h} and the noise variance is 2 eta int e^{-2(1+eta)(lambda'-u)} e^{-2u} du
= t'^2 (1 - e^{-2 eta h}) (exact: the noise enters linearly). With D expanded in tau = u - lambda,
D(u) = sum_k tau^k D^(k)/k!, each term integrates to a phi-function of -g:
    (1 + eta) int_0^h e^{-(1+eta)(h-tau)} tau^k/k! dtau = h^k g phi_{k+1}(-g),
    phi_{k+1}(z) = int_0^1 e^{(1-v) z} v^k/k! dv   (tau = h v),
    p1 = g phi_1(-g) = 1 - e^{-g},   p2 = g phi_2(-g) = (e^{-g} - 1 + g)/g = 1 - p1/g,   p3 = g phi_3(-g) = 1/2 - p2/g.
So x' = e^{-g} x + p1 D + p2 h D' + p3 h^2 D'' + ... + noise; the samplers below replace h D' and h^2 D'' by
differences of the denoiser values at the previous grid points (multistep), exactly as DPM-Solver++(2M)/(3M) do for
the ODE (Lu et al. 2022, DPM-Solver++, arXiv 2211.01095; eta = 1 is the SDE of their appendix, eta = 0 the ODE).

Every step draws one standard normal tensor, ctx.draw(i), when its noise coefficient is non-zero (eta > 0 and t' > 0);
s_noise scales it (s_noise != 1 changes the limit law by design). A step into t' = 0 (h = inf) is x <- D(x, t), no
noise, 1 NFE: the limit of the first-order step as t' -> 0 (e^{-g} -> 0, p1 -> 1, the noise factor t' -> 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .base import combine
from .registry import register
from .sde import check_number
from .stochastic import StochasticSolver

__all__ = ["DPMPPSDE1", "DPMPP2MSDE", "DPMPP3MSDE", "SDEHistory"]

LU_2022 = "Lu et al. 2022 (DPM-Solver++, arXiv 2211.01095)"
FINAL_STEP = "x <- D(x, sigma) (the first-order step's limit at sigma' = 0), no noise, 1 NFE"
POINT_MASS_NOTE = "a stochastic sampler: on a point mass its one-step law is exact, its path is not the ODE flow"


@dataclass
class SDEHistory:
    """Per-run state of the multistep samplers: the denoiser values at the previous grid points, newest first."""

    denoised: list[torch.Tensor] = field(default_factory=list)


def phis(g: float) -> tuple[float, float, float]:
    """(p1, p2, p3) = (g phi_1(-g), g phi_2(-g), g phi_3(-g)) (module docstring), in the closed forms the papers'
    codes use (p2 and p3 lose relative accuracy ~1e-16/g and ~1e-16/g^2: negligible on grids with g >~ 1e-3)."""
    p1 = -math.expm1(-g)
    p2 = math.expm1(-g) / g + 1.0
    return p1, p2, 0.5 - p2 / g


class _EtaSDE(StochasticSolver):
    """The shared step: x' = e^{-g} x + sum_j w_j D_j + s_noise t' sqrt(1 - e^{-2 eta h}) z, where the weights w on
    (D_s, D_prev, D_prev2) come from `weights(g, ratios)` (ratios r_j = h_{i-1-j}/h_i of the previous steps)."""

    nfe_per_step = 1
    final_step_nfe = 1
    final_step = FINAL_STEP
    strong_order = None
    point_mass_exact = False
    point_mass_note = POINT_MASS_NOTE
    #: the most denoiser values a step combines (1: no history)
    history_size = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        self.eta = check_number(eta, "eta", low=0.0, rule="must be a finite number >= 0")
        self.s_noise = check_number(s_noise, "s_noise", low=0.0, low_open=True, rule="must be a finite number > 0")

    def params(self) -> dict:
        return {"eta": self.eta, "s_noise": self.s_noise}

    def init_state(self) -> SDEHistory:
        return SDEHistory()

    def weights(self, g: float, ratios: list[float]) -> list[float]:
        """Weights on (D_s, D_prev, ...): len(ratios) + 1 of them (the step's order is len(ratios) + 1)."""
        raise NotImplementedError

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        history = ctx.state.denoised
        history.insert(0, d)
        del history[self.history_size:]
        h = math.log(s / t)
        k = len(history)
        ratios = [math.log(ctx.sigmas[i - 1 - j] / ctx.sigmas[i - j]) / h for j in range(k - 1)]
        w = self.weights((1.0 + self.eta) * h, ratios)
        out = combine((t / s) * math.exp(-self.eta * h) * x, w, history[:k])
        if self.eta > 0:
            out = torch.add(out, ctx.draw(i), alpha=self.s_noise * t * math.sqrt(-math.expm1(-2.0 * self.eta * h)))
        return out


class DPMPPSDE1(_EtaSDE):
    """SDE-DPM-Solver++1 with eta (Lu et al. 2022, DPM-Solver++, the first-order SDE solver of the appendix at
    eta = 1; k-diffusion's eta form): D held constant over the step in the formula of the module docstring,

        x' = (t'/t) e^{-eta h} x + (1 - e^{-(1 + eta) h}) D(x, t) + s_noise t' sqrt(1 - e^{-2 eta h}) z.

    eta = 1: e^{-h} = t'/t gives x' = (t'^2/t^2) x + (1 - t'^2/t^2) D + t' sqrt(1 - t'^2/t^2) z, DDPM's posterior
    step (the VE bridge with x0 <- D). eta = 0: DDIM = DPM-Solver++(1) = Euler (registered `ddim`, `dpm_solver_1`,
    `euler`). 1 NFE per step; into 0: x <- D.
    """

    name = "dpmpp_sde_1"
    weak_order = 1
    claim_source = (f"{LU_2022}, appendix (SDE solvers): SDE-DPM-Solver++1 is their first-order solver of the "
                    "diffusion SDE and equals DDPM (eta = 1); eta != 1 is k-diffusion's generalisation, the same "
                    "exponential-Euler step of the eta-SDE (first order, no separate claim)")

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        super().__init__(eta, s_noise)
        self.notes = ("eta = 1: DDPM's posterior step; eta = 0: DDIM / Euler (deterministic, no draw)",
                      "s_noise != 1 scales the injected noise: a different limit law, the claim is for s_noise = 1")

    def weights(self, g, ratios):
        return [-math.expm1(-g)]


SOLVER_TYPES = ("midpoint", "heun")


class DPMPP2MSDE(_EtaSDE):
    """SDE-DPM-Solver++(2M) with eta (Lu et al. 2022 at eta = 1, midpoint; k-diffusion's `sample_dpmpp_2m_sde`):
    with r = h_prev/h and D_1 = (D - D_prev)/r (= h D' + O(h^2) for a D smooth in lambda),

        x' = (t'/t) e^{-eta h} x + (1 - e^{-g}) D + c D_1 + s_noise t' sqrt(1 - e^{-2 eta h}) z,    g = (1 + eta) h,

    solver_type "midpoint" (default): c = (1 - e^{-g})/2, DPM-Solver++(2M)'s weight (Alg. 2) with the SDE's kernel;
    solver_type "heun": c = p2 = (e^{-g} - 1 + g)/g = 1 - (1 - e^{-g})/g, the exact first-order Taylor term.
    Derivation of "heun": D linear in lambda over the step, D(lambda + tau) = D + tau D', adds to the variation of
    constants formula (1 + eta) D' int_0^h e^{-(1+eta)(h - tau)} tau dtau; with v = h - tau and c = 1 + eta,
    c int_0^h e^{-c v} (h - v) dv = h (1 - e^{-g}) - [(1 - e^{-g})/c - h e^{-g}] = h - (1 - e^{-g})/c
    = h (1 - (1 - e^{-g})/g), so the term is p2 (h D') = p2 D_1 to leading order. Both are second order in the
    deterministic part (their difference, (p2 - p1/2) D_1 = O(h^2) D_1, is O(h^3) per step).
    First step (no history): the 1-step form (dpmpp_sde_1). Into 0: x <- D, no noise. eta = 0 and "midpoint" is the
    registered `dpmpp_2m` (default lower_order_final=False; with lower_order_final=True and a grid of fewer than 10
    steps ending above 0, dpmpp_2m's last step is first order and the two differ there). 1 NFE per step.
    """

    name = "dpmpp_2m_sde"
    history_size = 2
    weak_order = None
    claim_source = (f"no weak order stated: {LU_2022} give SDE-DPM-Solver++(2M) (eta = 1, midpoint weight) as the "
                    "multistep second-order data-prediction update of the diffusion SDE (named after the order of "
                    "its deterministic part, DPM-Solver++(2M)) without a convergence theorem for it; eta != 1 and "
                    "'heun' are k-diffusion's")

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint"):
        super().__init__(eta, s_noise)
        if solver_type not in SOLVER_TYPES:
            raise InputError(f"solver_type: must be one of {SOLVER_TYPES} (got {solver_type!r})")
        self.solver_type = solver_type
        self.notes = (f"solver_type {solver_type!r}: the D_1 weight is "
                      + ("(1 - e^-g)/2 (DPM-Solver++(2M))" if solver_type == "midpoint" else "1 - (1 - e^-g)/g"),
                      "eta = 0, midpoint: the registered dpmpp_2m to rounding; eta = 0, heun: no registered twin",
                      "s_noise != 1 scales the injected noise: a different limit law")

    def params(self) -> dict:
        return {**super().params(), "solver_type": self.solver_type}

    def weights(self, g, ratios):
        p1, p2, _ = phis(g)
        if not ratios:
            return [p1]
        c = (0.5 * p1 if self.solver_type == "midpoint" else p2) / ratios[0]
        return [p1 + c, -c]


VARIANTS = ("authors", "lagrange")


class DPMPP3MSDE(_EtaSDE):
    """DPM-Solver++(3M) SDE (k-diffusion's `sample_dpmpp_3m_sde`; no paper), two history points, r0 = h_1/h and
    r1 = h_2/h (the previous steps over the current one, in lambda):

        D1_0 = (D - D_1)/r0,  D1_1 = (D_1 - D_2)/r1,  D2 = (D1_0 - D1_1)/(r0 + r1),  D1 = D1_0 + r0 D2,
        x' = (t'/t) e^{-eta h} x + p1 D + p2 D1 + c2 p3 D2 + s_noise t' sqrt(1 - e^{-2 eta h}) z,

    with g = (1 + eta) h and p1, p2, p3 = g phi_{1,2,3}(-g) (module docstring). Derivation: for D quadratic in the
    normalised time v = tau/h, q(v) = D + a v + b v^2 with a = h D', b = h^2 D''/2, the Newton differences at
    v = 0, -r0, -(r0 + r1) give D1_0 = a - b r0, D1_1 = a - b (2 r0 + r1), so D2 = b and D1 = a exactly; the
    exponential integral of q is p1 D + p2 h D' + p3 h^2 D'' = p1 D + p2 D1 + 2 p3 D2. Hence
    variant="lagrange": c2 = 2, the exact integral of the quadratic interpolant (an exponential Adams-Bashforth step;
    its deterministic part is third order, as `dpmpp_3m_lagrange`);
    variant="authors" (default): c2 = 1, k-diffusion's weight (its `- phi_3 d2` with phi_3 = p2/g - 1/2 = -p3), the
    DPM-Solver++(3M) coefficients of the authors' code carried over to the SDE kernel: the D2 term is half the
    interpolant's, a local error -p3 b = -h^3 D''/12 (1 + eta) + O(h^4) per step, so the deterministic part is only
    second order (as `dpmpp_3m`).
    Warm-up as k-diffusion: step 0 is the 1-step form, step 1 adds p2 D1_0 (the exact integral of the linear
    interpolant: the "heun" weight of dpmpp_2m_sde, not DPM-Solver++(2M)'s (1 - e^{-g})/2). So at eta = 0 this is
    `dpmpp_3m` (resp. `dpmpp_3m_lagrange`) on every step but the second, where dpmpp_3m takes the 2M step: the two
    runs differ by O(h^3) there. Into 0: x <- D, no noise. 1 NFE per step.
    """

    name = "dpmpp_3m_sde"
    history_size = 3
    weak_order = None
    claim_source = "no paper; k-diffusion's DPM-Solver++(3M) SDE (sample_dpmpp_3m_sde): no order stated"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, variant: str = "authors"):
        super().__init__(eta, s_noise)
        if variant not in VARIANTS:
            raise InputError(f"variant: must be one of {VARIANTS} (got {variant!r})")
        self.variant = variant
        self.notes = (("variant 'authors': k-diffusion's D2 weight p3, half the quadratic interpolant's 2 p3: its "
                       "deterministic part is second order (eta = 0: dpmpp_3m, itself measured second order)")
                      if variant == "authors" else
                      "variant 'lagrange': D2 weight 2 p3, the exact integral of the quadratic interpolant",
                      "the second step uses p2 D1 (k-diffusion's warm-up), not DPM-Solver++(2M)'s (1 - e^-g)/2 D1",
                      "s_noise != 1 scales the injected noise: a different limit law")

    def params(self) -> dict:
        return {**super().params(), "variant": self.variant}

    def weights(self, g, ratios):
        p1, p2, p3 = phis(g)
        if not ratios:
            return [p1]
        if len(ratios) == 1:
            c = p2 / ratios[0]
            return [p1 + c, -c]
        r0, r1 = ratios
        c3 = p3 * (1.0 if self.variant == "authors" else 2.0)
        # coefficient vectors on (D, D_1, D_2)
        d1_0 = [1 / r0, -1 / r0, 0.0]
        d1_1 = [0.0, 1 / r1, -1 / r1]
        d2 = [(a - b) / (r0 + r1) for a, b in zip(d1_0, d1_1, strict=True)]
        d1 = [a + r0 * b for a, b in zip(d1_0, d2, strict=True)]
        w = [p2 * a + c3 * b for a, b in zip(d1, d2, strict=True)]
        w[0] += p1
        return w


register("dpmpp_sde_1", DPMPPSDE1)
register("dpmpp_2m_sde", DPMPP2MSDE)
register("dpmpp_3m_sde", DPMPP3MSDE)
