"""Stochastic diffusers schedulers as suite samplers: sampler(denoiser, x, sigmas, noise) -> x (needs_noise = True).

The scheduler is driven as solver.py drives it; the only difference is where its noise comes from. A scheduler that
draws its noise inside `step` with `randn_tensor(shape, generator=..., device=..., dtype=...)` (imported by name into
its module, e.g. `diffusers.schedulers.scheduling_euler_ancestral_discrete.randn_tensor`) offers no other hook:
EulerAncestralDiscreteScheduler.step takes a `generator` only. So during each `step` call the adapter temporarily
replaces the name `randn_tensor` in the scheduler's module namespace by a function that returns the caller's draw
noise(j, sigma, sigma_next), j the running count of draws in the run and (sigma, sigma_next) the EDM sigmas of the
step (the grid's points i, i + 1), and puts the original back when `step` returns or raises. The draw is a standard
normal tensor in the scheduler's sample units (EulerAncestral's sample is x itself; in a VP scheduler it would be
x_vp, and the scheduler's own coefficient scales it). The keys do not depend on the values, so the harness's probe
law applies (sdm_verify.harness.stochastic_law). The replacement is process-wide while a step runs: do not step
the same scheduler class from another thread at the same time.

Schedulers whose step takes the draw (`variance_noise=`: DPMSolverMultistep with algorithm_type "sde-dpmsolver++",
DDIM with eta > 0) are handed noise(j, sigma, sigma_next) there instead (profile.noise_hook "variance_noise"); no
name is replaced. DDIM's eta is a step() argument: the user gives it as the config key `eta` (profile.step_args),
which the adapter removes from the constructor's config and passes to every step (listed in `notes` and `params`).
DDIM and DDPM index alphas_cumprod by integer timestep: the harness grid is imposed by writing the grid's abar into
that table at the timesteps handed to step (stochastic_profiles.py); grid="native" is not offered for them.

Profiles here declare `stochastic = True` or `is_stochastic(config)`; `scheduler_solver` builds a
`StochasticDiffusersSolver` for them. Registered twins (same update in canonical variables, same draws): `twin`.
    EulerAncestralDiscreteScheduler  k-diffusion's Euler ancestral with eta = 1 (not configurable): sigma_up =
        sqrt(t'^2 (t^2 - t'^2)/t^2), sigma_down = sqrt(t'^2 - sigma_up^2), x' = x + (sigma_down - t)(x - D)/t +
        sigma_up z; in canonical variables the registered `euler_ancestral` (eta = 1, s_noise = 1), i.e. DDPM.
        Into sigma = 0: sigma_up = 0, x' = D; it still draws once there (multiplied by 0). prediction_type "sample"
        raises NotImplementedError in its step: processes vp-eps and vp-v only. Its step casts the sample to float32;
        the adapter keeps float64 (keep_float64=True, float64.py).
    DPMSolverMultistepScheduler, sde-dpmsolver++  order 1: dpmpp_sde_1 (eta 1); order 2: dpmpp_2m_sde (eta 1, the
        config's solver_type) except the last step below 15 steps on grids ending above 0 (lower_order_final).
    DDIMScheduler (eta)  ddim_eta (eta = 0: deterministic, equivalent ddim).  DDPMScheduler  ddpm (fixed_small).
"""

from __future__ import annotations

import sys

import numpy as np

from ...grid import check_grid, check_x, checked_denoiser
from ...solvers.stochastic import NoiseError, checked_noise
from .grids import TimestepLookup
from .profiles import PROFILES
from .solver import DiffusersSolver


class StochasticDiffusersSolver(DiffusersSolver):
    """A stochastic diffusers scheduler behind the sampler interface (module docstring): needs_noise = True (DDIM
    with eta = 0: False), no order claimed (diffusers states none), `notes` list the noise hook and what the adapter
    imposes, `twin` / `twin_params` name the registered sampler with the same update."""

    needs_noise = True
    weak_order = strong_order = None
    claim_source = "diffusers states no order"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler: its path is not the ODE flow"

    def __init__(self, cls, config, process, grid, keep_float64, _switch=False):
        profile = PROFILES.get(getattr(cls, "__name__", None))
        defaults = dict(getattr(profile, "step_args", {}))
        config = dict(config) if isinstance(config, dict) else config
        self.step_given = {k: config.pop(k) for k in defaults if isinstance(config, dict) and k in config}
        self.step_config = {**defaults, **self.step_given}
        super().__init__(cls, config, process, grid, keep_float64, _switch)

    def _configure(self, config, process, _switch):
        super()._configure(config, process, _switch)
        profile, cfg = self.profile, {**self.effective_config, **self.step_config}
        profile.check(cfg)
        if hasattr(profile, "impose") and self.grid == "native":
            raise ValueError(f"grid: {self.cls.__name__} is driven on the harness grid only (imposed exactly through "
                             "its alphas_cumprod table); grid='native' is not offered")
        draws = getattr(profile, "draws", None)
        self.needs_noise = True if draws is None else bool(draws(cfg))
        self.order = None if self.needs_noise else profile.order(cfg)
        eq = None if self.needs_noise else profile.equivalent(cfg)
        self.equivalent, self.equivalent_params = (eq[0], dict(eq[1])) if eq else (None, {})
        twin = profile.twin(cfg) if callable(getattr(profile, "twin", None)) else getattr(profile, "twin", None)
        self.twin, self.twin_params = (twin[0], dict(twin[1])) if twin else (None, {})
        if self.step_given:
            inner = ",".join(f"{k}={v!r}" for k, v in sorted(self.step_given.items()))
            self.name = (self.name[:-1] + "," + inner + "}") if self.name.endswith("}") else f"{self.name}{{{inner}}}"
        self.notes = list(self._warnings) + profile.notes(cfg)
        if profile.float32_cast:
            self.notes.append("step() casts the sample to float32" + (
                "; the adapter keeps float64 (keep_float64=True)" if self.keep_float64 else ": float32 round-off"))
        module = sys.modules[self.cls.__module__].__name__
        if profile.noise_hook == "variance_noise":
            self.notes.append("noise: the adapter passes step(..., variance_noise=noise(j, sigma, sigma_next)) (j the "
                              "running count of draws = the step index, sigma -> sigma_next the step's EDM sigmas); "
                              "no name is replaced")
        else:
            self.notes.append(f"noise: during each step() the adapter replaces the name randn_tensor in {module} by "
                              "the caller's noise(j, sigma, sigma_next) (j the running count of draws, sigma -> "
                              "sigma_next the step's EDM sigmas): the only hook this scheduler offers (its step takes "
                              "a generator only); the original is restored after each step")
        self._run = None

    def params(self) -> dict:
        out = super().params()
        out["config"] = {**out["config"], **self.step_given}
        return out

    def with_process(self, process: str):
        if process not in self.processes:
            raise ValueError(f"process: {self.cls.__name__} supports {', '.join(self.processes)} (got {process!r})")
        return type(self)(self.cls, {**self.user_config, **self.step_given}, process, self.grid, self.keep_float64,
                          _switch=True)

    def __call__(self, denoiser, x, sigmas, noise=None, callback=None):
        if callback is not None:
            raise ValueError("callback: the scheduler drives its own loop; per-step callbacks are not supported")
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        grid = check_grid(sigmas)
        # a missing source: NoiseError before any denoiser call (a deterministic config ignores the source)
        draw = checked_noise(noise, x, self.name) if self.needs_noise else None
        path = grid if self.grid != "native" else self.native_sigmas(grid.numel() - 1)
        self._run = {"draw": draw, "sigmas": [float(s) for s in path], "calls": 0}
        try:
            return super().__call__(denoiser, x, sigmas)
        finally:
            self._run = None

    def _draw(self, i: int, shape):
        run = self._run
        j, run["calls"] = run["calls"], run["calls"] + 1
        z = run["draw"](j, run["sigmas"][i], run["sigmas"][i + 1])
        if tuple(z.shape) != tuple(shape):
            raise NoiseError(f"noise: {self.cls.__name__}.step asked for a draw of shape {tuple(shape)}, the "
                             f"noise source gives {tuple(z.shape)}")
        return z

    def _step(self, sched, out, t, sample, i: int):
        kwargs = dict(self.step_config)
        if self.profile.noise_hook == "variance_noise":
            if self.needs_noise:
                kwargs["variance_noise"] = self._wrap(self._draw(i, out.shape))
            return sched.step(out, t, sample, return_dict=False, **kwargs)[0]
        module = sys.modules[self.cls.__module__]
        original = module.randn_tensor

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, **kw):
            z = self._draw(i, shape)
            return z if dtype is None else z.to(dtype)

        module.randn_tensor = randn_tensor
        try:
            return sched.step(out, t, sample, return_dict=False, **kwargs)[0]
        finally:
            module.randn_tensor = original

    def _harness(self, denoiser, x, grid):
        if not hasattr(self.profile, "impose"):
            return super()._harness(denoiser, x, grid)
        n, g = grid.numel() - 1, grid.numpy()
        if n > int(self.effective_config["num_train_timesteps"]):
            raise ValueError(f"sigmas: {self.cls.__name__} takes at most num_train_timesteps steps (got {n})")
        sched = self._scheduler(n, None)
        ts = self.profile.impose(sched, self.effective_config, np.asarray(g, dtype=np.float64))
        lookup = TimestepLookup(self.cls.__name__, ts.astype(np.float64), g[:n])
        return self._loop(sched, self._fake_model(denoiser, lookup), x, float(g[0]), float(g[-1]))

    def _sigma_after(self, sched, i: int) -> float:
        if self._run is not None:
            return self._run["sigmas"][min(i + 1, len(self._run["sigmas"]) - 1)]
        return super()._sigma_after(sched, i)

