"""Profiles of the deterministic schedulers added for issue 17: KDPM2Discrete, EDMDPMSolverMultistep,
FlowMatchHeunDiscrete and IPNDM (PNDM: pndm_profile.py).

    KDPM2DiscreteScheduler   k-diffusion's sample_dpm_2 (Karras et al. 2022, Alg. 2 with the DPM-Solver-2 midpoint):
        an Euler stage from sigma to the geometric mean sigma_mid = sqrt(sigma sigma'), then x' = x + (sigma' - sigma)
        d(x_mid, sigma_mid); into sigma = 0 the Euler stage alone (x <- D). 2 NFE a step, 2N - 1 into 0. The harness
        grid is imposed in the scheduler's own interleaved layout (`_kdpm2_layout`), sigmas_interpol by its own rule
        (the geometric mean). Order 2 (a second-order Runge-Kutta method; Karras et al. 2022, Sec. 3).
    EDMDPMSolverMultistepScheduler  DPMSolverMultistep on EDM's sample x (alpha = 1, sigma_t = sigma) with EDM's
        preconditioning (c_noise = log(sigma)/4): the registered dpmpp_2m (solver_order 2, midpoint), order
        `solver_order` as DPMSolverMultistep (Lu et al. 2022b); `final_sigmas_type` decides the final step.
    FlowMatchHeunDiscreteScheduler  Heun's method in the flow time t on the velocity u = eps - D, HeunDiscrete's
        interleaved layout; 2 NFE a step, the last step into t = 0 its Euler stage alone. Order 2 (Heun).
    IPNDMScheduler  iPNDM (Zhang & Chen 2023): Adams-Bashforth in sigma on eps with the fixed uniform-step weights
        [1], [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24, on the trigonometric table beta = sin, alpha = cos
        (sigma = tan(pi t / 2)); its network is a v-prediction one (ets = beta x_vp + alpha v = eps). The harness
        grid is imposed by writing its betas = sigma/sqrt(1 + sigma^2), alphas = 1/sqrt(1 + sigma^2). Equal to the
        registered ipndm on grids ending above 0; into 0 it extrapolates eps there (not x <- D).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .conventions import PROCESSES
from .exponential_profiles import DPMSolverMultistepProfile
from .sigma_profiles import EDMEulerProfile, FlowMatchEulerProfile, KarrasDiscreteProfile

F64 = torch.float64


class KDPM2Profile(KarrasDiscreteProfile):
    classes = ("KDPM2DiscreteScheduler",)
    layout = "heun"  # 2 model calls a step, the step into 0 its first stage alone: the NFE of HeunDiscrete
    final_step = "the Euler stage alone into sigma = 0 (x <- D), 1 NFE: 2N - 1 in all"

    def processes(self, cfg):
        return ("vp-eps", "vp-v")  # prediction_type "sample" raises NotImplementedError in its step

    def order(self, cfg):
        return 2

    def notes(self, cfg):
        return ["DPM-Solver-2 stage at the geometric mean sqrt(sigma sigma') (k-diffusion sample_dpm_2); the "
                "harness imposes its grid in the scheduler's interleaved layout, sigmas_interpol by the same rule"]

    def impose_grid(self, sched, cfg, grid: np.ndarray):
        """Write the harness grid in KDPM2's layout; returns (timesteps, EDM sigma of each model call)."""
        ends_zero = grid[-1] == 0
        ext = grid if ends_zero else np.concatenate([grid, [0.0]])
        with np.errstate(divide="ignore"):
            mid = np.exp(0.5 * (np.log(ext) + np.log(np.roll(ext, 1))))
        mid[0] = 0.0  # never read
        sched.sigmas = torch.tensor(np.concatenate([ext[:1], np.repeat(ext[1:], 2), ext[-1:]]), dtype=F64)
        sched.sigmas_interpol = torch.tensor(np.concatenate([mid[:1], np.repeat(mid[1:], 2), mid[-1:]]), dtype=F64)
        n = len(grid) - 1
        calls = [float(grid[0])]
        for k in range(1, n + 1):
            calls.append(float(mid[k]))
            if k < n:
                calls.append(float(grid[k]))
        if ends_zero:
            calls = calls[:-1]  # into 0: the last step is its Euler stage alone
        call_sigmas = np.array(calls)
        ts = self.harness_timesteps(sched, cfg, call_sigmas)
        sched.timesteps = torch.tensor(ts, dtype=F64)
        return ts, call_sigmas

    def shipped_steps(self, sched):
        return sched.timesteps[0::2]

    def shipped_path(self, sched, cfg):
        s = sched.sigmas.double().numpy()
        return np.concatenate([s[:1], s[1:-1:2]])


class EDMDPMSolverMultistepProfile(EDMEulerProfile):
    classes = ("EDMDPMSolverMultistepScheduler",)
    final_zero = "config"
    final_step = "first-order step into sigma = 0 (x <- D), 1 NFE"
    float32_cast = False
    _dpm = DPMSolverMultistepProfile()

    def processes(self, cfg):
        return ("edm", "edm-v")

    def process_config(self, process):
        return {"prediction_type": PROCESSES[process].prediction}

    def check(self, cfg):
        if str(cfg.get("algorithm_type", "")).startswith("sde-"):
            raise ValueError(f"config: algorithm_type {cfg['algorithm_type']!r} is a stochastic (SDE) sampler the "
                             "adapter does not drive for this class; 'dpmsolver++' is")
        if cfg.get("thresholding"):
            raise ValueError("config: thresholding clamps D (dynamic thresholding): not a sampler of the target")

    def order(self, cfg):
        return int(cfg["solver_order"])

    def equivalent(self, cfg):
        return self._dpm.equivalent({**cfg, "algorithm_type": "dpmsolver++"})

    def notes(self, cfg):
        return self._dpm.notes({**cfg, "algorithm_type": "dpmsolver++"})


class FlowMatchHeunProfile(FlowMatchEulerProfile):
    classes = ("FlowMatchHeunDiscreteScheduler",)
    layout = "heun"
    final_step = "the Euler stage alone into t = 0 (x <- D), 1 NFE: 2N - 1 in all"

    def check(self, cfg):
        pass  # no stochastic or shifting options in its config (s_churn is a step() argument, 0 by default)

    def order(self, cfg):
        return 2

    def equivalent(self, cfg):
        return None  # Heun in t is not Heun in sigma (the registered heun_t needs the "fm" process object)

    def notes(self, cfg):
        return ["Heun's method in the flow time t on u = eps - D (HeunDiscrete's interleaved layout in t)"]

    def shipped_steps(self, sched):
        return sched.timesteps[0::2]


class IPNDMProfile(KarrasDiscreteProfile):
    classes = ("IPNDMScheduler",)
    final_step = "the Adams-Bashforth step into sigma = 0 with extrapolated eps (not x <- D), 1 NFE"

    def sample_convention(self, cfg):
        return "vp"

    def processes(self, cfg):
        return ("vp-v",)

    def process_of(self, cfg):
        return "vp-v"

    def process_config(self, process):
        return {}

    def check(self, cfg):
        if cfg.get("trained_betas") is not None:
            raise ValueError("config: trained_betas replaces the trigonometric table; not supported")

    def order(self, cfg):
        return 4  # the uniform-grid claim of iPNDM (Zhang & Chen 2023), as the registered ipndm

    def equivalent(self, cfg):
        return "ipndm", {}

    def notes(self, cfg):
        return ["fixed uniform-step Adams-Bashforth weights in sigma: order 4 on uniform grids only (the registered "
                "ipndm); into sigma = 0 it extrapolates eps there instead of x <- D",
                "timestep t in [0, 1] with sigma = tan(pi t / 2) (its trigonometric table)"]

    @staticmethod
    def _t(sigma):
        return np.arctan(np.asarray(sigma, dtype=np.float64)) * 2.0 / math.pi

    def harness_timesteps(self, sched, cfg, sigmas):
        return self._t(sigmas)

    def model_sigma(self, sched, cfg, t):
        return math.tan(math.pi * float(t) / 2.0)

    def sigma_range(self, sched, cfg):
        return None

    def impose_grid(self, sched, cfg, grid: np.ndarray):
        g = np.asarray(grid, dtype=np.float64)
        alpha = 1.0 / np.sqrt(1.0 + g * g)
        sched.alphas, sched.betas = torch.tensor(alpha, dtype=F64), torch.tensor(g * alpha, dtype=F64)
        ts = self._t(g[:-1])
        sched.timesteps = torch.tensor(ts, dtype=F64)
        return ts, g[:-1]

    def shipped_path(self, sched, cfg):
        b, a = sched.betas.double().numpy(), sched.alphas.double().numpy()
        return b / a


class PNDMProfile(KarrasDiscreteProfile):
    """PNDMScheduler (Liu et al. 2022): the pseudo transfer phi(x, eps, t, t') (DDIM's update) driven by eps combined
    with Runge-Kutta weights (the 3 warm-up steps, 4 NFE each: PRK) then the fixed Adams-Bashforth weights of PLMS;
    skip_prk_steps: PLMS from the start with a 2-call second-order first step. It indexes alphas_cumprod by integer
    timestep and steps by timestep - num_train_timesteps // N: the harness grid is imposed by writing abar =
    1/(1 + s^2) of the grid's points at the timesteps it hands the model (the PRK midpoints: the mean of
    their ends in sigma, the variable in which the transfer integrates eps: the PRK steps are then
    classical RK4 in sigma), and final_alpha_cumprod = the end point's; timestep_spacing 'leading' (uniform integer
    strides) and a table of at least 2N entries are imposed for that (listed in `imposed`)."""

    classes = ("PNDMScheduler",)
    final_step = "a PLMS step into sigma = 0 (final_alpha_cumprod = 1), 1 NFE"

    def sample_convention(self, cfg):
        return "vp"

    def processes(self, cfg):
        return ("vp-eps", "vp-v")

    def order(self, cfg):
        return 4  # F-PNDM's claim (Liu et al. 2022, Sec. 3.3: fourth-order pseudo linear multistep)

    def nfe_extra(self, cfg):
        return 1 if cfg.get("skip_prk_steps") else 9  # PLMS's 2-call first step; PRK: 3 steps of 4 calls

    def notes(self, cfg):
        return ["PLMS takes the fixed uniform-step Adams-Bashforth weights (55, -59, 37, -9)/24: order 4 on grids "
                "uniform in the scheduler's timestep only",
                "harness grid: abar = 1/(1 + s^2) of the grid written into alphas_cumprod at the handed timesteps "
                "(PRK midpoints: the mean of their ends in sigma), final_alpha_cumprod the end point's"]

    def harness_config(self, cfg, n: int) -> dict:
        """Config keys the harness run imposes for an n-step grid (strides of at least 2 in 'leading' spacing)."""
        out = {}
        if cfg.get("timestep_spacing") != "leading":
            out["timestep_spacing"] = "leading"
        if int(cfg["num_train_timesteps"]) // n < 2:
            out["num_train_timesteps"] = 2 * n
        return out

    def impose_grid(self, sched, cfg, grid: np.ndarray):
        n = len(grid) - 1
        stride = int(sched.config.num_train_timesteps) // n
        half, off = stride // 2, int(sched.config.steps_offset)
        abar = sched.alphas_cumprod.double().clone()
        table = {}
        for i in range(n):
            table[(n - 1 - i) * stride + off] = float(grid[i])
            if i < n - 1:
                mid = 0.5 * (float(grid[i]) + float(grid[i + 1]))
                # step_prk's first stage transfers to t - half, its next model call is at t' + half (t' = t - stride):
                # the same point when the stride is even, one timestep apart when odd: both entries get the midpoint
                table[(n - 2 - i) * stride + off + half] = table[(n - 1 - i) * stride + off - half] = mid
        for t, s in table.items():
            abar[t] = 1.0 / (1.0 + s * s)
        sched.alphas_cumprod = abar
        sched.final_alpha_cumprod = torch.tensor(1.0 / (1.0 + float(grid[-1]) ** 2), dtype=F64)
        ts = sched.timesteps.numpy()
        return ts.astype(np.float64), np.array([table[int(t)] for t in ts])

    def shipped_steps(self, sched):
        """Its timesteps with PRK's and PLMS's by-design consecutive repeats (a stage's two calls) merged."""
        ts = [float(t) for t in sched.timesteps]
        return [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]

    def shipped_path(self, sched, cfg):
        abar = sched.alphas_cumprod.double()
        ts = sorted({int(t) for t in sched.timesteps}, reverse=True)
        stride = int(sched.config.num_train_timesteps) // int(sched.num_inference_steps)
        ts = [t for t in ts if (t - int(sched.config.steps_offset)) % stride == 0] if stride > 1 else ts
        sig = [float(((1 - abar[t]) / abar[t]).sqrt()) for t in ts]
        fin = float(sched.final_alpha_cumprod)
        return np.array(sig + [math.sqrt(max(1.0 - fin, 0.0) / fin)])
