"""Profiles of the stochastic schedulers the adapter drives (`stochastic = True`: scheduler_solver builds a
StochasticDiffusersSolver for them; how their noise is fed: stochastic.py)."""

from __future__ import annotations

from .sigma_profiles import KarrasDiscreteProfile


class EulerAncestralProfile(KarrasDiscreteProfile):
    classes = ("EulerAncestralDiscreteScheduler",)
    stochastic = True
    float32_cast = True
    final_step = "Euler into sigma = 0 (x <- D; sigma_up = 0, its draw there multiplied by 0), 1 NFE"
    twin = ("euler_ancestral", {"eta": 1.0, "s_noise": 1.0})

    def processes(self, cfg):
        return ("vp-eps", "vp-v")

    def order(self, cfg):
        return None

    def notes(self, cfg):
        return ["eta = 1, s_noise = 1 (fixed in diffusers' step: sigma_up = sqrt(t'^2 (t^2 - t'^2)/t^2)); registered "
                "twin of the same update in canonical variables: euler_ancestral (eta = 1, s_noise = 1)"]
