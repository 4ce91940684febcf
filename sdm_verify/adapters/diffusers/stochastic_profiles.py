"""Profiles of the stochastic schedulers the adapter drives (scheduler_solver builds a StochasticDiffusersSolver for
a profile with `stochastic = True`, or whose `is_stochastic(config)` is true; how their noise is fed: stochastic.py).

`noise_hook`: "randn_tensor" (the scheduler draws inside step with its module's randn_tensor: the adapter replaces
that name during step) or "variance_noise" (step takes the draw as `variance_noise=`: the adapter passes it).
`step_args`: keys of the config the adapter consumes and passes to step() instead of the constructor (DDIM's eta).
Profiles with `impose` put the harness grid on a scheduler that indexes alphas_cumprod by integer timestep.
"""

from __future__ import annotations

import numpy as np
import torch

from .exponential_profiles import DPMSolverMultistepProfile
from .scheduler_profile import SchedulerProfile
from .sigma_profiles import KarrasDiscreteProfile


class EulerAncestralProfile(KarrasDiscreteProfile):
    classes = ("EulerAncestralDiscreteScheduler",)
    stochastic = True
    noise_hook = "randn_tensor"
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


class DPMSolverMultistepSDEProfile(DPMSolverMultistepProfile):
    """DPMSolverMultistep: the ODE configs as DPMSolverMultistepProfile; algorithm_type "sde-dpmsolver++" is a
    stochastic sampler (its step takes `variance_noise=`). "sde-dpmsolver" (noise prediction) stays refused."""

    noise_hook = "variance_noise"

    def is_stochastic(self, config) -> bool:
        return config.get("algorithm_type") == "sde-dpmsolver++"

    def check(self, cfg):
        kind = cfg.get("algorithm_type")
        if kind == "sde-dpmsolver":
            raise ValueError("config: algorithm_type 'sde-dpmsolver' is a stochastic (SDE) sampler the adapter does "
                             "not drive; 'sde-dpmsolver++' is")
        super().check({**cfg, "algorithm_type": "dpmsolver++"} if kind == "sde-dpmsolver++" else cfg)

    def order(self, cfg):
        return None if self.is_stochastic(cfg) else super().order(cfg)

    def equivalent(self, cfg):
        return None if self.is_stochastic(cfg) else super().equivalent(cfg)

    def twin(self, cfg):
        """The registered sampler with the same update in canonical variables (None: none)."""
        if self._modified(cfg) or cfg.get("euler_at_final") or int(cfg["solver_order"]) > 2:
            return None
        if int(cfg["solver_order"]) == 1:
            return "dpmpp_sde_1", {"eta": 1.0, "s_noise": 1.0}
        return "dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, "solver_type": cfg["solver_type"]}

    def notes(self, cfg):
        if not self.is_stochastic(cfg):
            return super().notes(cfg)
        out = ["sde-dpmsolver++ = SDE-DPM-Solver++ (eta = 1): x' = (t'/t) e^-h x + (1 - e^-2h) D + 2nd-order term + "
               f"t' sqrt(1 - e^-2h) z; solver_type {cfg['solver_type']!r}: D_1 weight "
               + ("(1 - e^-2h)/2 (registered dpmpp_2m_sde solver_type='midpoint')" if cfg["solver_type"] == "midpoint"
                  else "1 - (1 - e^-2h)/(2h) (registered dpmpp_2m_sde solver_type='heun')")]
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: below 15 steps the last step is first order (SDE-DPM-Solver++1); the "
                       "registered dpmpp_2m_sde keeps its second-order update there: they differ in the last step on "
                       "grids of fewer than 15 steps ending above 0 (into 0 both take x <- D)")
        if int(cfg["solver_order"]) == 3:
            out.append("solver_order 3: no registered twin of diffusers' third-order SDE update")
        return out


class _VPTableProfile(SchedulerProfile):
    """DDIM / DDPM: the sample is x_vp, step() indexes alphas_cumprod by integer timestep. The harness grid s_0 > ...
    > s_N is imposed exactly by writing abar = 1/(1 + s^2) of the grid's points into the entries of alphas_cumprod
    at the timesteps the adapter hands step (`impose`), and the end point's abar where step reads its final one."""

    stochastic = True
    final_step = "the scheduler's own step into sigma = 0 (abar = 1: x <- D, no noise), 1 NFE"

    def sample_convention(self, cfg):
        return "vp"

    def check(self, cfg):
        if cfg.get("clip_sample"):
            raise ValueError("config: clip_sample=True (the class's default) clamps D to [-clip_sample_range, "
                             "clip_sample_range]: not a sampler of the target; pass clip_sample=false")
        if cfg.get("thresholding"):
            raise ValueError("config: thresholding clamps D (dynamic thresholding): not a sampler of the target")

    @staticmethod
    def _abar(s: float) -> float:
        return 1.0 / (1.0 + s * s)

    def _table(self, sched, entries: dict[int, float]):
        table = sched.alphas_cumprod.double().clone()
        for k, s in entries.items():
            table[k] = self._abar(s)
        sched.alphas_cumprod = table


class DDIMProfile(_VPTableProfile):
    classes = ("DDIMScheduler",)
    noise_hook = "variance_noise"
    step_args = {"eta": 0.0}

    def check(self, cfg):
        super().check(cfg)
        eta = cfg.get("eta", 0.0)
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"config: eta (DDIM's step argument, read from the config by the adapter) must be a "
                             f"number in [0, 1] (got {eta!r})")

    def draws(self, cfg) -> bool:
        return cfg.get("eta", 0.0) > 0

    def order(self, cfg):
        return 1 if cfg.get("eta", 0.0) == 0 else None

    def equivalent(self, cfg):
        return ("ddim", {}) if cfg.get("eta", 0.0) == 0 else None

    def twin(self, cfg):
        return ("ddim_eta", {"eta": float(cfg.get("eta", 0.0))}) if cfg.get("eta", 0.0) > 0 else None

    def notes(self, cfg):
        return [f"eta = {float(cfg.get('eta', 0.0)):g}: a step() argument, given as the config key 'eta' (default 0, "
                "step's default) and passed to every step (with variance_noise= the caller's draw when eta > 0); "
                "registered twin: ddim_eta (eta = 0: ddim)",
                "harness grid: the adapter writes abar = 1/(1 + s^2) of the grid's points into alphas_cumprod at "
                "timesteps (N - 1 - i) * (num_train_timesteps // N) and sets final_alpha_cumprod to the end point's"]

    def impose(self, sched, cfg, grid: np.ndarray) -> np.ndarray:
        n = len(grid) - 1
        stride = int(cfg["num_train_timesteps"]) // n
        ts = np.array([(n - 1 - i) * stride for i in range(n)], dtype=np.int64)
        self._table(sched, {int(t): float(s) for t, s in zip(ts, grid[:n], strict=True)})
        sched.final_alpha_cumprod = torch.tensor(self._abar(float(grid[-1])), dtype=torch.float64)
        sched.timesteps = torch.from_numpy(ts)
        return ts


class DDPMProfile(_VPTableProfile):
    classes = ("DDPMScheduler",)
    noise_hook = "randn_tensor"

    def check(self, cfg):
        super().check(cfg)
        if cfg.get("variance_type") not in ("fixed_small", "fixed_small_log", "fixed_large"):
            raise ValueError(f"config: variance_type {cfg.get('variance_type')!r}: the adapter drives 'fixed_small', "
                             "'fixed_small_log' and 'fixed_large' (learned variances need extra network channels)")

    def twin(self, cfg):
        return ("ddpm", {}) if cfg.get("variance_type") in ("fixed_small", "fixed_small_log") else None

    def notes(self, cfg):
        vt = cfg.get("variance_type")
        out = ["harness grid: the adapter writes abar = 1/(1 + s^2) of the grid's points into alphas_cumprod at "
               "timesteps N - 1 - i (grid ending in 0) or N - i (ending above 0, where step's final abar `one` is set "
               "to the end point's); step draws (randn_tensor) only at timesteps > 0"]
        if vt == "fixed_large":
            out.append("variance_type 'fixed_large': variance beta_t = 1 - abar/abar' (Ho et al.'s upper choice), not "
                       "the posterior's: no registered twin")
        else:
            out.append(f"variance_type {vt!r}: the posterior variance beta_tilde: registered twin ddpm")
        return out

    def impose(self, sched, cfg, grid: np.ndarray) -> np.ndarray:
        n = len(grid) - 1
        zero = grid[-1] == 0
        ts = np.arange(n - 1, -1, -1, dtype=np.int64) + (0 if zero else 1)
        self._table(sched, {int(t): float(s) for t, s in zip(ts, grid[:n], strict=True)})
        sched.one = torch.tensor(1.0 if zero else self._abar(float(grid[-1])), dtype=torch.float64)
        sched.timesteps = torch.from_numpy(ts)
        return ts
