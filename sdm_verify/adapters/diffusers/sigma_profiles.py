"""Profiles of the schedulers that step the ODE in sigma (or flow time t) itself: EulerDiscrete, HeunDiscrete,
LMSDiscrete (k-diffusion style, on a DDPM table), FlowMatchEulerDiscrete and EDMEuler.

k-diffusion style: the sample is x, the model input x/sqrt(sigma^2 + 1) (Karras et al. 2022, Table 1, VP), the
timesteps index the DDPM table (grids.py); with timestep_type "continuous" and v-prediction the timestep is EDM's
c_noise = log(sigma)/4. FlowMatchEulerDiscrete: the sample is x_t = x/(1 + sigma), timestep = T t. EDMEuler: the
sample is x, the network preconditioned with c_in, c_skip, c_out and c_noise = log(sigma)/4 (conventions.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .conventions import PROCESSES, flow_sigma
from .scheduler_profile import SchedulerProfile


class KarrasDiscreteProfile(SchedulerProfile):
    """k-diffusion-style schedulers: the sample is x, the model input x/sqrt(sigma^2 + 1), the table a DDPM one."""

    def harness_timesteps(self, sched, cfg, sigmas):
        if cfg.get("timestep_type") == "continuous" and cfg.get("prediction_type") == "v_prediction":
            return 0.25 * np.log(sigmas)
        return super().harness_timesteps(sched, cfg, sigmas)

    def model_sigma(self, sched, cfg, t):
        if cfg.get("timestep_type") == "continuous" and cfg.get("prediction_type") == "v_prediction":
            return math.exp(4.0 * t)
        return super().model_sigma(sched, cfg, t)


class EulerDiscreteProfile(KarrasDiscreteProfile):
    classes = ("EulerDiscreteScheduler",)
    float32_cast = True
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE"

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        return "euler", {}


class HeunDiscreteProfile(KarrasDiscreteProfile):
    classes = ("HeunDiscreteScheduler",)
    layout = "heun"
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE: 2N - 1 in all"

    def order(self, cfg):
        return 2

    def check(self, cfg):
        if cfg.get("clip_sample"):
            raise ValueError("config: clip_sample clamps D; not an ODE solver of the target")

    def equivalent(self, cfg):
        return "heun", {}


class LMSDiscreteProfile(KarrasDiscreteProfile):
    classes = ("LMSDiscreteScheduler",)
    final_step = "the order-4 Adams-Bashforth polynomial integrated down to sigma = 0 (not x <- D), 1 NFE"

    def order(self, cfg):
        return 4  # step(order=4): the adapter calls step() with its defaults

    def equivalent(self, cfg):
        # Adams-Bashforth in sigma on d = (x - D)/sigma with Lagrange coefficients (scipy quad): DEIS tAB-3 in VE.
        # Equal on grids ending above 0; into 0 the registered solver takes x <- D instead.
        return "deis_tab3", {}

    def prepare(self, sched):
        # step() integrates each Lagrange coefficient with scipy quad, its integrand doing arithmetic on 0-dim
        # tensors (~0.1 ms a call, ~85 calls a coefficient): most of a run's time. On float64 sigmas the same
        # integrand on Python floats is the same IEEE operations in the same order, so bitwise the same result.
        if sched.sigmas.dtype == torch.float64:
            sched.get_lms_coefficient = _float_lms_coefficient(sched)


def _float_lms_coefficient(sched):
    """LMSDiscreteScheduler.get_lms_coefficient (diffusers) on a float copy of sched.sigmas (refreshed if the
    scheduler's sigmas are replaced): the same scipy quad of the same integrand, without tensor arithmetic."""
    from scipy import integrate

    held = {}

    def get_lms_coefficient(order, t, current_order):
        if held.get("src") is not sched.sigmas:
            held["src"], held["sig"] = sched.sigmas, sched.sigmas.tolist()
        sig = held["sig"]

        def lms_derivative(tau):
            prod = 1.0
            for k in range(order):
                if current_order == k:
                    continue
                prod *= (tau - sig[t - k]) / (sig[t - current_order] - sig[t - k])
            return prod

        return integrate.quad(lms_derivative, sig[t], sig[t + 1], epsrel=1e-4)[0]

    return get_lms_coefficient


class FlowMatchEulerProfile(SchedulerProfile):
    classes = ("FlowMatchEulerDiscreteScheduler",)
    float32_cast = True
    final_step = "Euler in t into t = 0 (= x <- D), 1 NFE"

    def sample_convention(self, cfg):
        return "flow"

    def processes(self, cfg):
        return ("fm",)

    def process_of(self, cfg):
        return "fm"

    def process_config(self, process):
        return {}

    def check(self, cfg):
        if cfg.get("stochastic_sampling"):
            raise ValueError("config: stochastic_sampling=True is a stochastic sampler; the suite validates ODE "
                             "solvers")
        if cfg.get("invert_sigmas"):
            raise ValueError("config: invert_sigmas (t -> 1 - t) is not supported")
        if cfg.get("use_dynamic_shifting"):
            raise ValueError("config: use_dynamic_shifting needs a per-image `mu`; not supported")

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        # Euler in t on x_t = x/(1 + sigma), u = eps - D, is DDIM: x' = (sigma'/sigma) x + (1 - sigma'/sigma) D,
        # i.e. Euler in sigma (also the registered euler_t with the "fm" process)
        return "euler", {}

    def harness_timesteps(self, sched, cfg, sigmas):
        return cfg["num_train_timesteps"] * sigmas / (1.0 + sigmas)

    def model_sigma(self, sched, cfg, t):
        return flow_sigma(t / cfg["num_train_timesteps"])

    def sigma_range(self, sched, cfg):
        return None


class EDMEulerProfile(SchedulerProfile):
    classes = ("EDMEulerScheduler",)
    float32_cast = True
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE"

    def processes(self, cfg):
        return ("edm", "edm-v")

    def process_config(self, process):
        return {"prediction_type": PROCESSES[process].prediction}

    def process_of(self, cfg):
        return "edm-v" if cfg.get("prediction_type") == "v_prediction" else "edm"

    def sigma_data(self, cfg):
        return float(cfg["sigma_data"])

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        return "euler", {}

    def harness_timesteps(self, sched, cfg, sigmas):
        return 0.25 * np.log(sigmas)  # EDM's c_noise

    def model_sigma(self, sched, cfg, t):
        return math.exp(4.0 * t)

    def sigma_range(self, sched, cfg):
        return float(cfg["sigma_min"]), float(cfg["sigma_max"])
