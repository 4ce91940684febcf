"""SA-Solver: stochastic Adams predictor-corrector in data prediction (Xue et al. 2023, NeurIPS, arXiv 2309.05019).

Canonical (EDM) variables: alpha = 1, lambda = -log sigma, a step t -> t' (noise levels) has H = lambda' - lambda =
log(t/t') > 0. The paper's variance-controlled reverse SDE with a constant noise scale tau(t) = tau >= 0 (tau = 0
is the probability-flow ODE, tau = 1 the original reverse SDE), in lambda,
    dx = -(1 + tau^2)(x - D(x, lambda)) dlambda + sigma tau sqrt(2) dW_lambda,
keeps the noisy marginals p_sigma for every tau (it is dpmpp_sde.py's eta-SDE with eta = tau^2). Variation of
constants over one step, with a = 1 + tau^2 (data prediction, divided by alpha_t; the official code cites the
paper's Eq. (15) and (18) for the predictor's and corrector's coefficients):
    x' = (t'/t) e^{-tau^2 H} x + a int_lambda^lambda' e^{a (l - lambda')} D(l) dl + t' sqrt(1 - e^{-2 tau^2 H}) z,
where (t'/t) e^{-tau^2 H} = e^{-a H} and the noise term is the exact Ito integral (variance
2 tau^2 int e^{-2a(lambda' - l)} e^{-2l} dl = t'^2 (1 - e^{-2 tau^2 H})). SA-Solver replaces D by its Lagrange
interpolant in lambda through the values D_j at nodes lambda_j:
    x' = e^{-aH} x + sum_j b_j D_j + t' sqrt(1 - e^{-2 tau^2 H}) z,
    b_j = a int_lambda^lambda' e^{a (l - lambda')} L_j(l) dl = sum_k c_jk m_k(aH),                      (*)
with u = (l - lambda)/H, L_j(u) = sum_k c_jk u^k the Lagrange basis on the nodes u_j = (lambda_j - lambda)/H, and
    m_k(g) = g int_0^1 e^{-g(1 - u)} u^k du = k! g phi_{k+1}(-g)        (m_0 = 1 - e^{-g}).
(In the official code and diffusers this is `(1 + tau^2) sigma_t e^{-tau^2 lambda_t} * sum_i lagrange_coeff *
int e^{(1 + tau^2) l} l^k dl`, the same integral in absolute lambda.) The moments are computed in closed form:
the series m_k = g sum_n (-g)^n k!/(n + k + 1)! for g <= 1 and the recursion m_k = 1 - (k/g) m_{k-1} (integration
by parts; error growth k/g < k per step) for g > 1, both to ~1e-16 relative (checked against mpmath and
scipy.integrate.quad in tests/test_samplers_sa_restart.py).

SA-Predictor of order p (Eq. 15): the p newest values D_i, D_{i-1}, ... at lambda_i, lambda_{i-1}, ... (nodes 0,
-r_0, -(r_0 + r_1), ...), an explicit stochastic Adams-Bashforth step; z = ctx.draw(i).
SA-Corrector of order c (Eq. 18; c = 0: none): once D_{i+1} = D(x_pred, t') is known (the next step's denoiser
call, no extra NFE), the step from the *same* start x with the *same* draw z is redone with the c newest values
including D_{i+1} (nodes 1, 0, -r_0, ...: stochastic Adams-Moulton); the corrected x replaces the predicted one,
while the history keeps D at the predicted point (the official PEC mode, diffusers' SASolverScheduler). There is no
corrector after the last step (its D would be one more call): a grid ending above 0 returns the last predictor
output, as the official `few_steps` mode and diffusers do.

Orders in use. Warm-up (not enough history), as the official code: step i predicts with min(p, i + 1) values and
the corrector of the interval ending at sigma_i uses min(c, i + 1) values. `lower_order_final` (default True, the
official code's fixed setting and diffusers' default): with M predictor steps (M = len(sigmas) - 1, less one if the
grid ends at 0) step i uses at most M - i values and the corrector of the interval ending at sigma_i at most
M - i + 2. This lowers the last steps' order on every grid, so the deterministic part's global order is
asymptotically capped at 2 (the last step is first order, local error O(h^2), though with a small constant near
sigma_min: tau = 0, p = 3, c = 4 on a mixture measured ~4 up to N = 256); lower_order_final=False keeps the full
orders.
variant="lagrange" (default): the weights (*) exactly (the paper's formulas; the official `more_steps` mode).
variant="rescaled": the order-2 steps (predictor and corrector alike) replace the coefficient m_1 of the first
difference by g/2 (Appendix D's rescaling, the official `few_steps` mode and diffusers: for tau = 0 this is UniPC's
B(h) = h with rho = 1/2), an O(h^3) change per step; other orders are unchanged.

tau is a constant here. The official default is a window (tau = 1 for 0.2 <= t <= 0.8 in VP time, else 0), which
has no schedule-free meaning in sigma; a constant tau keeps the sampler a function of the sigma grid alone.
A step into sigma = 0 is x <- D(x, sigma) at the predicted point (the step's own, last denoiser value), no noise,
1 NFE: the limit t' -> 0 of the first-order step (e^{-aH} -> 0, b_0 -> 1, t' -> 0); the correction pending for the
previous interval would only move x, which D then replaces. (The official `more_steps` mode instead corrects that
point and denoises the corrected x, one call more; diffusers' grids end above 0.)
Each predictor step with tau > 0 draws ctx.draw(i) once; its corrector reuses the same draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .base import combine
from .polynomials import lagrange_basis
from .registry import register
from .sde import check_number
from .stochastic import StochasticSolver

__all__ = ["SASolver", "exp_moments", "sa_weights"]

VARIANTS = ("lagrange", "rescaled")
XUE_2023 = "Xue et al. 2023 (SA-Solver, NeurIPS, arXiv 2309.05019)"


def exp_moments(g: float, kmax: int) -> list[float]:
    """[m_0(g), ..., m_kmax(g)], m_k(g) = g int_0^1 e^{-g (1 - u)} u^k du (module docstring), for g > 0."""
    if g <= 1.0:
        out = []
        for k in range(kmax + 1):
            term = g / (k + 1)  # n = 0: g k!/(k + 1)!
            total, n = term, 0
            while abs(term) > 1e-18 * abs(total):
                term *= -g / (n + k + 2)
                total += term
                n += 1
            out.append(total)
        return out
    out = [-math.expm1(-g)]
    for k in range(1, kmax + 1):
        out.append(1.0 - k / g * out[-1])
    return out


def sa_weights(g: float, nodes, rescaled: bool = False) -> list[float]:
    """b_j = sum_k c_jk m_k(g) on `nodes` (units of the step, newest first, the step from node 0 to node 1): the
    exponential-kernel integral of each Lagrange basis polynomial. rescaled: Appendix D's order-2 modification."""
    m = exp_moments(g, len(nodes) - 1)
    w = [sum(c * mk for c, mk in zip(coeffs, m, strict=True)) for coeffs in lagrange_basis(nodes)]
    if rescaled and len(nodes) == 2:
        delta = (0.5 * g - m[1]) / (nodes[0] - nodes[1])
        w = [w[0] + delta, w[1] - delta]
    return w


@dataclass
class SAState:
    """Per-run state: D at the grid points (predicted x), newest first; the start x of the last predictor step
    (corrected) and its draw, for that step's corrector."""

    history: list[torch.Tensor] = field(default_factory=list)
    x: torch.Tensor | None = None
    noise: torch.Tensor | None = None


def _order(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 4:
        raise InputError(f"{name}: must be an integer in {low}..4 (got {value!r})")
    return value


class SASolver(StochasticSolver):
    """SA-Predictor of order `predictor_order` (1..4) with SA-Corrector of order `corrector_order` (0..4, 0: none),
    noise scale `tau` >= 0 (module docstring). 1 NFE per step; into sigma = 0: x <- D (no noise).

    tau = 0, p = 1, c = 0 is DDIM (`euler`); tau = 1, p = 1, c = 0 is DDPM's posterior step (`ddpm`); with c = 0
    and lower_order_final=False, p = 2 and 3 are `dpmpp_2m_sde` (solver_type "heun") and `dpmpp_3m_sde` (variant
    "lagrange") with eta = tau^2; tau = 0, variant "rescaled", c = p + 1 is UniPC bh1 of order p
    (`unipc_bh1_p<p>`, p <= 3)."""

    name = "sa_solver"
    nfe_per_step = 1
    final_step_nfe = 1
    final_step = "x <- D(x, sigma) at the predicted point (no corrector into sigma = 0), no noise, 1 NFE"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler (tau > 0): its path is not the ODE flow"
    weak_order = None
    strong_order = None
    claim_source = (f"no order declared: {XUE_2023} give convergence guarantees for SA-Predictor and SA-Corrector, "
                    "but the theorem's statement (strong or weak sense, which order for tau > 0) could not be read "
                    "when this module was written; an order belongs here only as read from the paper")

    def __init__(self, predictor_order: int = 3, corrector_order: int = 4, tau: float = 1.0,
                 lower_order_final: bool = True, variant: str = "lagrange"):
        self.predictor_order = _order(predictor_order, "predictor_order", 1)
        self.corrector_order = _order(corrector_order, "corrector_order", 0)
        self.tau = check_number(tau, "tau", low=0.0, rule="must be a finite number >= 0")
        if not isinstance(lower_order_final, bool):
            raise InputError(f"lower_order_final: must be a bool (got {lower_order_final!r})")
        if variant not in VARIANTS:
            raise InputError(f"variant: must be one of {VARIANTS} (got {variant!r})")
        self.lower_order_final, self.variant = lower_order_final, variant
        self.history_size = max(self.predictor_order, self.corrector_order)
        self.notes = (
            f"tau = {self.tau:g} constant (the official default is a window in VP time; not modelled)",
            ("lower_order_final: the last steps lower their order (official code): deterministic part "
             "asymptotically capped at global order 2") if lower_order_final
            else "lower_order_final off: full orders up to the last step",
            "variant 'rescaled': Appendix D's order-2 rescaling (official few_steps, diffusers)"
            if variant == "rescaled" else "variant 'lagrange': the exact Lagrange weights (official more_steps)",
            "no corrector after the last step; into sigma = 0: D at the predicted point",
        )

    def params(self) -> dict:
        return {"predictor_order": self.predictor_order, "corrector_order": self.corrector_order, "tau": self.tau,
                "lower_order_final": self.lower_order_final, "variant": self.variant}

    def init_state(self) -> SAState:
        return SAState()

    def _update(self, x, sigmas: list[float], a: int, top: int, values, z) -> torch.Tensor:
        """The step sigmas[a] -> sigmas[a + 1] from x with the values D at grid indices top, top - 1, ... (newest
        first: top = a for the predictor, a + 1 for the corrector) and the draw z (None when tau = 0)."""
        s, t = sigmas[a], sigmas[a + 1]
        h = math.log(s / t)
        tau2 = self.tau * self.tau
        nodes = [math.log(s / sigmas[top - j]) / h for j in range(len(values))]
        w = sa_weights((1.0 + tau2) * h, nodes, rescaled=self.variant == "rescaled")
        out = combine((t / s) * math.exp(-tau2 * h) * x, w, values)
        if z is not None:
            out = torch.add(out, z, alpha=t * math.sqrt(-math.expm1(-2.0 * tau2 * h)))
        return out

    def step(self, denoiser, x, i, ctx):
        sig, st = ctx.sigmas, ctx.state
        s, t = sig[i], sig[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        st.history.insert(0, d)
        del st.history[self.history_size:]
        n_pred = len(sig) - 1 - (sig[-1] == 0)  # predictor steps of this grid
        if self.corrector_order > 0 and i > 0:
            c = min(self.corrector_order, i + 1)
            if self.lower_order_final:
                c = min(c, n_pred - i + 2)
            x = self._update(st.x, sig, i - 1, i, st.history[:c], st.noise)
        p = min(self.predictor_order, i + 1)
        if self.lower_order_final:
            p = min(p, n_pred - i)
        z = ctx.draw(i) if self.tau > 0 else None
        st.x, st.noise = x, z
        return self._update(x, sig, i, i, st.history[:p], z)


register("sa_solver", SASolver)
