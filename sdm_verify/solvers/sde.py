"""Samplers of the reverse SDE in EDM's form: Euler-Maruyama and EDM's stochastic sampler (Algorithm 2).

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models", arXiv 2206.00364), Eq. 6,
with sigma(t) = t and s(t) = 1 (canonical variables, the noise level is the time):
    dx = -t grad log p(x; t) dt  -/+  beta(t) t^2 grad log p(x; t) dt  +  sqrt(2 beta(t)) t dw,
the '-' sign running backwards in time (dx_-). The score of the noisy law is grad log p = (D(x, t) - x)/t^2, so the
backward equation reads, in reverse time tau (dt = -dtau, w a Brownian motion in tau),
    dx = (1/t + beta(t)) (x - D(x, t)) dt + sqrt(2 beta(t)) t dw_tau,
and for any beta(t) >= 0 it carries p(x; t_0) to p(x; t) exactly (beta = 0 is the probability-flow ODE, Eq. 3).

Euler-Maruyama on one step t -> t' < t, Delta = t - t' (drift and diffusion frozen at the step's start):
    x' = x - Delta (1/t + beta(t)) (x - D(x, t)) + sqrt(2 beta(t) Delta) t z,      z ~ N(0, I).
The drift's first part is the ODE's Euler step x + (t' - t)(x - D)/t, so beta = 0 is `euler` exactly. Two forms of
beta(t): "inverse", beta(t) = beta/t (beta = 1: drift 2(x - D)/t and noise variance 2 t Delta, the reverse-time VE
SDE of Song et al. 2021 with g^2 = d sigma^2/dt = 2t; Karras et al. note beta(t) = sigma'(t)/sigma(t) gives it), and
"constant", beta(t) = beta.

EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): "churn" raises the noise level t -> t_hat = t (1 + gamma)
by adding fresh noise of variance t_hat^2 - t^2 (scaled by S_noise), then takes one Heun step of the ODE from t_hat
to t'. It is a heuristic (S_noise != 1 changes the limit law by design), so it claims no order.

Each sampler draws one noise tensor per step, `ctx.draw(i)` (sdm_verify.solvers.stochastic), and only when its
noise coefficient is non-zero.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .registry import register
from .stochastic import StochasticSolver

__all__ = ["EulerMaruyama", "EDMStochastic", "check_number"]


def check_number(value, name: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                 rule: str = "") -> float:
    """`value` as a float if it is a finite real number in [low, high] ((low, high] with low_open); else InputError
    naming `name` (the rule in words: `rule`, or the interval)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        if not rule:
            lo = "(" if low_open else "["
            rule = f"must be a finite number in {lo}{low:g}, {high:g}]" if math.isfinite(high) else \
                (f"must be a finite number > {low:g}" if low_open else f"must be a finite number >= {low:g}")
        raise InputError(f"{name}: {rule} (got {value!r})")
    return float(value)


#: the forms of beta(t) EulerMaruyama accepts
BETA_FORMS = ("inverse", "constant")


class EulerMaruyama(StochasticSolver):
    """Euler-Maruyama on the reverse SDE of Karras et al. 2022, Eq. 6 (sigma(t) = t, s(t) = 1):

        x' = x + (t' - t)(x - D)/t - Delta beta(t) (x - D) + s_noise sqrt(2 beta(t) Delta) t z,   Delta = t - t',

    with D = D(x, t), beta(t) = beta/t ("inverse", default) or beta ("constant"). beta = 0 is `euler` exactly (no
    draw is taken). A step into t' = 0 is the ODE's Euler step x + (0 - t)(x - D)/t (= D(x, t) up to rounding), no
    noise. 1 NFE per step. s_noise scales the noise (1: the scheme; other values are a deliberate error, for the
    harness to catch).

    Orders: the noise is additive (the diffusion coefficient sqrt(2 beta(t)) t depends on t only), so Euler-Maruyama
    coincides with the Milstein scheme and has strong order 1 (Kloeden & Platen 1992, Thm 10.2.2: order 1/2 in
    general; Sec. 10.3, Milstein: order 1, which Euler-Maruyama attains for additive noise) and weak order 1 (Thm
    14.1.5), for coefficients smooth on the grid's range (t >= sigma_min > 0; the drift's 1/t grows near 0).
    """

    name = "euler_maruyama"
    nfe_per_step = 1
    final_step_nfe = 1
    weak_order = 1
    strong_order = 1
    claim_source = ("Kloeden & Platen 1992, Thm 10.2.2 / Sec. 10.3 (strong order 1: Euler-Maruyama = Milstein for "
                    "additive noise, the diffusion coefficient sqrt(2 beta(t)) t depends on t only) and Thm 14.1.5 "
                    "(weak order 1); the SDE is Karras et al. 2022, Eq. 6")
    final_step = "the ODE's Euler step x <- x - t (x - D(x, t))/t = D(x, t) (up to rounding), no noise, 1 NFE"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler (beta > 0): exact only in law, and only in the limit of small steps"

    def __init__(self, beta: float = 1.0, beta_form: str = "inverse", s_noise: float = 1.0):
        self.beta = check_number(beta, "beta", low=0.0)
        if beta_form not in BETA_FORMS:
            raise InputError(f"beta_form: must be one of {', '.join(map(repr, BETA_FORMS))} (got {beta_form!r})")
        self.beta_form = beta_form
        self.s_noise = check_number(s_noise, "s_noise", low=0.0, low_open=True)
        self.notes = (
            f"beta(t) = {'beta/t' if beta_form == 'inverse' else 'beta'} with beta = {self.beta:g}"
            + (" (the reverse-time VE SDE of Song et al. 2021)" if beta_form == "inverse" and self.beta == 1 else ""),
            "explicit: a step with Delta (1/t + beta(t)) > 2 overshoots the mean (the damping factor goes below -1)",
            "the step into sigma = 0 is the ODE's Euler step (x <- D), no noise",
        ) + ((f"s_noise = {self.s_noise:g} scales the noise: the limit law is biased",) if self.s_noise != 1 else ())

    def params(self) -> dict:
        return {"beta": self.beta, "beta_form": self.beta_form, "s_noise": self.s_noise}

    def beta_at(self, t: float) -> float:
        """beta(t) for t > 0."""
        return self.beta / t if self.beta_form == "inverse" else self.beta

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = denoiser(x, s)
        x_next = torch.add(x, (x - denoised) / s, alpha=t - s)  # the ODE's Euler step (`euler`'s operations)
        if t == 0:
            return x_next
        b = self.beta_at(s)
        if b == 0:
            return x_next
        delta = s - t
        x_next = torch.add(x_next, x - denoised, alpha=-delta * b)
        return torch.add(x_next, ctx.draw(i), alpha=self.s_noise * math.sqrt(2.0 * b * delta) * s)


class EDMStochastic(StochasticSolver):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2). Step i, t = sigmas[i] -> t' = sigmas[i + 1],
    N = len(sigmas) - 1 steps:

        gamma = min(S_churn/N, sqrt(2) - 1) if S_tmin <= t <= S_tmax else 0
        t_hat = t (1 + gamma);   x_hat = x + sqrt(t_hat^2 - t^2) S_noise z       (z = ctx.draw(i), only if gamma > 0)
        d = (x_hat - D(x_hat, t_hat))/t_hat;   x' = x_hat + (t' - t_hat) d                            (Euler)
        if t' != 0:  d' = (x' - D(x', t'))/t';   x' = x_hat + (t' - t_hat)(d + d')/2                (Heun correction)

    Defaults: the paper's ImageNet-64 setting (Table 5: S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).
    S_churn = 0 is `heun` (to rounding). 2 NFE per step, 1 for the step into 0 (Euler).
    """

    name = "edm_stochastic"
    nfe_per_step = 2
    final_step_nfe = 1
    weak_order = None
    strong_order = None
    claim_source = ("no order claimed (Karras et al. 2022, Alg. 2 is a heuristic; S_noise != 1 biases the limit law "
                    "by design)")
    final_step = "churn (if gamma > 0), then one Euler step from t_hat to 0: x <- D(x_hat, t_hat), 1 NFE"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler (churn adds noise): not the ODE flow; S_churn = 0 is heun"

    def __init__(self, S_churn: float = 40.0, S_tmin: float = 0.05, S_tmax: float = 50.0,  # noqa: N803 (paper's names)
                 S_noise: float = 1.003):
        self.S_churn = check_number(S_churn, "S_churn", low=0.0)
        self.S_tmin = check_number(S_tmin, "S_tmin", low=0.0)
        self.S_tmax = check_number(S_tmax, "S_tmax", low=self.S_tmin,
                                   rule=f"must be a finite number >= S_tmin = {self.S_tmin:g}")
        self.S_noise = check_number(S_noise, "S_noise", low=0.0, low_open=True)
        self.notes = (
            "heuristic (Karras et al. 2022, Alg. 2): no order is claimed",
            f"churn on S_tmin = {self.S_tmin:g} <= sigma <= S_tmax = {self.S_tmax:g}, gamma = "
            f"min(S_churn / N, sqrt(2) - 1) with S_churn = {self.S_churn:g}",
        ) + ((f"S_noise = {self.S_noise:g} != 1 inflates the added noise: the limit law is biased by design",)
             if self.S_noise != 1 else ())

    def params(self) -> dict:
        return {"S_churn": self.S_churn, "S_tmin": self.S_tmin, "S_tmax": self.S_tmax, "S_noise": self.S_noise}

    def gamma(self, t: float, n_steps: int) -> float:
        """The churn factor of a step starting at t on a grid of n_steps steps."""
        if self.S_churn == 0 or not self.S_tmin <= t <= self.S_tmax:
            return 0.0
        return min(self.S_churn / n_steps, math.sqrt(2.0) - 1.0)

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        gamma = self.gamma(s, len(ctx.sigmas) - 1)
        s_hat = s * (1.0 + gamma)
        if gamma > 0:
            # sqrt(s_hat^2 - s^2) = s sqrt(gamma (2 + gamma)), without the cancellation
            x = torch.add(x, ctx.draw(i), alpha=s * math.sqrt(gamma * (2.0 + gamma)) * self.S_noise)
        return heun_step(denoiser, x, s_hat, t)


def heun_step(denoiser, x: torch.Tensor, s: float, t: float) -> torch.Tensor:
    """One EDM Heun step s -> t (Karras et al. 2022, Alg. 1; Euler into t = 0): the deterministic part of Alg. 2 and
    of Restart's forward and restart passes."""
    d = (x - denoiser(x, s)) / s
    x_euler = torch.add(x, d, alpha=t - s)
    if t == 0:
        return x_euler
    d_next = (x_euler - denoiser(x_euler, t)) / t
    return torch.add(torch.add(x, d, alpha=0.5 * (t - s)), d_next, alpha=0.5 * (t - s))


register("euler_maruyama", EulerMaruyama)
register("edm_stochastic", EDMStochastic)
