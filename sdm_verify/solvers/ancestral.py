"""Ancestral samplers in canonical (EDM) variables: DDPM, DDIM with eta, and k-diffusion's Euler ancestral.

Canonical variables. A VP model x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (ab = alpha_bar) becomes, with
y = x / sqrt(ab) and sigma^2 = (1 - ab)/ab (so ab = 1/(1 + sigma^2) and 1 - ab = sigma^2 ab), y = x0 + sigma eps:
the forward process is the VE Brownian motion y_t = y_s + sqrt(sigma_t^2 - sigma_s^2) xi. Below t = sigma_t (the
current level), t' = sigma_{t-1} < t (the next), a = t'^2/t^2, and D = D(y, t) = E[x0 | y] = (y - t eps_hat), the
x0-prediction of Ho et al. written in these variables.

DDPM posterior (Ho et al. 2020, Eq. 6-7): q(x_{t-1} | x_t, x0) = N(mu, beta_tilde I) with
    mu = sqrt(ab')(1 - ab/ab')/(1 - ab) x0 + sqrt(ab/ab')(1 - ab')/(1 - ab) x_t,
    beta_tilde = (1 - ab')(1 - ab/ab')/(1 - ab).
In y' = x_{t-1}/sqrt(ab'), y = x_t/sqrt(ab): the coefficient of y is (ab/ab')(1 - ab')/(1 - ab) = (ab/ab')(t'^2 ab')/
(t^2 ab) = a; that of x0 is (1 - ab/ab')/(1 - ab) = (ab' - ab)/(ab'(1 - ab)) = (t^2 - t'^2)/t^2 = 1 - a (using
ab' - ab = (t^2 - t'^2) ab ab' and 1 - ab = t^2 ab); the variance is beta_tilde/ab' = t'^2 (1 - a). So
    q(y' | y, x0) = N(a y + (1 - a) x0, t'^2 (1 - a) I),
the Brownian bridge of the VE process, and DDPM (with the posterior variance beta_tilde, x0 <- D) is
    y' = a y + (1 - a) D + t' sqrt(1 - a) z.

DDIM (Song et al. 2021, Eq. 12 and 16): x_{t-1} = sqrt(ab') x0_hat + sqrt(1 - ab' - s_eta^2) eps_hat + s_eta z, with
s_eta = eta sqrt((1 - ab')/(1 - ab)) sqrt(1 - ab/ab'). Divided by sqrt(ab'): y' = D + sqrt(t'^2 - c^2) eps_hat + c z
with c = s_eta/sqrt(ab'), since (1 - ab')/ab' = t'^2; and c^2 = eta^2 ((1 - ab')/ab') (1 - ab/ab')/(1 - ab)
= eta^2 t'^2 (t^2 - t'^2)/t^2 by the same identity as above, i.e. c = eta t' sqrt(1 - a). With eps_hat = (y - D)/t:
    y' = D + sqrt(t'^2 - c^2) (y - D)/t + c z.
eta = 0: y' = D + (t'/t)(y - D), the Euler / DDIM step. eta = 1: c^2 = t'^2 (1 - a), sqrt(t'^2 - c^2) = t'^2/t, so
y' = D + a (y - D) + c z = DDPM.

Euler ancestral (k-diffusion's `get_ancestral_step`): sigma_up = min(t', eta t' sqrt(1 - a)) and sigma_down =
sqrt(t'^2 - sigma_up^2), y' = y + (sigma_down - t)(y - D)/t + s_noise sigma_up z = D + sigma_down (y - D)/t +
s_noise sigma_up z. For eta in [0, 1], eta t' sqrt(1 - a) <= t', so sigma_up = c and sigma_down = sqrt(t'^2 - c^2):
with s_noise = 1 it is the DDIM-eta map above, the same map in canonical variables (eta = 1: DDPM).

Every sampler here takes one noise draw per step, `ctx.draw(i)`, only when its noise coefficient is non-zero; a step
into t' = 0 is x <- D(x, t) (no noise), 1 NFE.
"""

from __future__ import annotations

import math

import torch

from .registry import register
from .sde import check_number
from .stochastic import StochasticSolver

__all__ = ["DDPMAncestral", "DDIMEta", "EulerAncestral"]

FINAL_STEP = "x <- D(x, sigma) (the posterior mean at sigma' = 0), no noise, 1 NFE"
POINT_MASS_NOTE = "a stochastic sampler: on a point mass its one-step law is exact, its path is not the ODE flow"
LU_2022 = "Lu et al. 2022 (DPM-Solver++, arXiv 2211.01095)"


def _bridge(s: float, t: float) -> tuple[float, float]:
    """(a, t' sqrt(1 - a)) of the step s -> t, a = t^2/s^2, in forms without cancellation."""
    a = (t / s) ** 2
    return a, t * math.sqrt((s - t) * (s + t)) / s


class DDPMAncestral(StochasticSolver):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2 with the posterior variance beta_tilde) in canonical variables:

        x' = (t'^2/t^2) x + (1 - t'^2/t^2) D(x, t) + t' sqrt(1 - t'^2/t^2) z,

    the exact bridge posterior q(x' | x, x0) of the VE process with x0 <- D(x, t) (derivation from VP's posterior
    in the module docstring). On a point-mass target (D = x0) one step maps the exact law N(x0, t^2 I) to the exact
    N(x0, t'^2 I); on a wider target it misses the posterior spread of x0: Cov(x') = Cov_{p_t'} - (1 - a)^2
    E[Cov(x0 | x)]. Step into 0: x <- D. 1 NFE per step.
    """

    name = "ddpm"
    nfe_per_step = 1
    final_step_nfe = 1
    weak_order = 1
    strong_order = None
    claim_source = (f"{LU_2022}: DDPM is their first-order SDE solver (data-prediction form, x' = (t'/t) e^-h x + "
                    "(1 - e^-2h) D + t' sqrt(1 - e^-2h) z with e^-h = t'/t: this step exactly), a first-order "
                    "discretisation of the reverse SDE")
    final_step = FINAL_STEP
    point_mass_exact = False
    point_mass_note = POINT_MASS_NOTE
    notes = ("the posterior variance beta_tilde (Ho et al. 2020's sigma_t^2 = beta_tilde_t), in canonical variables",)

    def params(self) -> dict:
        return {}

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = denoiser(x, s)
        if t == 0:
            return denoised
        a, c = _bridge(s, t)
        return torch.add(torch.add(denoised, x - denoised, alpha=a), ctx.draw(i), alpha=c)


class DDIMEta(StochasticSolver):
    """DDIM with eta in [0, 1] (Song et al. 2021, Eq. 12 and 16) in canonical variables:

        c = eta t' sqrt(1 - t'^2/t^2),     x' = D + sqrt(t'^2 - c^2) (x - D)/t + c z,      D = D(x, t),

    c being VP's sigma_t(eta)/sqrt(alpha_bar_{t-1}) (module docstring). eta = 0 is `euler` (DDIM), eta = 1 is `ddpm`.
    Step into 0: x <- D. 1 NFE per step.
    """

    name = "ddim_eta"
    nfe_per_step = 1
    final_step_nfe = 1
    weak_order = 1
    strong_order = None
    claim_source = ("the DDIM paper (Song et al. 2021, Eq. 12-16) states no order; 1 is the order of its limits: "
                    "eta = 0 is Euler = DDIM (order 1 on the ODE), eta = 1 is DDPM (weak order 1, " + LU_2022 + ")")
    final_step = FINAL_STEP
    point_mass_exact = False
    point_mass_note = POINT_MASS_NOTE

    def __init__(self, eta: float = 1.0):
        self.eta = check_number(eta, "eta", low=0.0, high=1.0, rule="must be a number in [0, 1]")
        self.notes = (f"eta = {self.eta:g}: a first-order step of the reverse SDE with beta(t) = eta^2/t "
                      "(Karras et al. 2022, Eq. 6), to leading order in the step",)

    def params(self) -> dict:
        return {"eta": self.eta}

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = denoiser(x, s)
        if t == 0:
            return denoised
        _, spread = _bridge(s, t)
        c = self.eta * spread
        # sqrt(t'^2 - c^2)/t = t' sqrt(t^2 - eta^2 (t - t')(t + t'))/t^2
        k = t * math.sqrt(max(s * s - self.eta ** 2 * (s - t) * (s + t), 0.0)) / (s * s)
        x_next = torch.add(denoised, x - denoised, alpha=k)
        return torch.add(x_next, ctx.draw(i), alpha=c) if c > 0 else x_next


class EulerAncestral(StochasticSolver):
    """k-diffusion's Euler ancestral step (`sample_euler_ancestral`, `get_ancestral_step`), with d = (x - D)/t:

        sigma_up = min(t', eta sqrt(t'^2 (t^2 - t'^2)/t^2)),   sigma_down = sqrt(t'^2 - sigma_up^2),
        x' = x + (sigma_down - t) d + s_noise sigma_up z       (no noise when t' = 0: x' = x - t d = D).

    For eta in [0, 1] and s_noise = 1 it is `ddim_eta` with the same eta (module docstring: the same map); eta = 0
    is `euler`, eta = 1 `ddpm`. eta > 1 clips sigma_up at t' (then x' = D + t' z). 1 NFE per step.
    """

    name = "euler_ancestral"
    nfe_per_step = 1
    final_step_nfe = 1
    weak_order = 1
    strong_order = None
    claim_source = ("no paper states one for this sampler; k-diffusion's Euler ancestral at eta = 1 is DDPM, weak "
                    "order 1 as the first-order SDE solver of " + LU_2022 + "; eta = 0 is Euler (order 1)")
    final_step = "Euler into 0: x <- x - t (x - D)/t = D(x, t) (up to rounding), no noise, 1 NFE"
    point_mass_exact = False
    point_mass_note = POINT_MASS_NOTE

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        self.eta = check_number(eta, "eta", low=0.0)
        self.s_noise = check_number(s_noise, "s_noise", low=0.0, low_open=True)
        self.notes = (("eta > 1: sigma_up is clipped at sigma' (x' = D + sigma' z), not a discretisation of a "
                       "reverse SDE with the right law",) if self.eta > 1 else ()) + (
            (f"s_noise = {self.s_noise:g} scales the noise: the limit law is biased",) if self.s_noise != 1 else ())

    def params(self) -> dict:
        return {"eta": self.eta, "s_noise": self.s_noise}

    def ancestral_step(self, s: float, t: float) -> tuple[float, float]:
        """(sigma_down, sigma_up) of the step s -> t."""
        if t == 0 or self.eta == 0:
            return t, 0.0
        up = min(t, self.eta * t * math.sqrt((s - t) * (s + t)) / s)
        return math.sqrt(max((t - up) * (t + up), 0.0)), up

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        down, up = self.ancestral_step(s, t)
        x_next = torch.add(x, (x - denoiser(x, s)) / s, alpha=down - s)
        return torch.add(x_next, ctx.draw(i), alpha=self.s_noise * up) if up > 0 else x_next


register("ddpm", DDPMAncestral)
register("ddim_eta", DDIMEta)
register("euler_ancestral", EulerAncestral)
