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

Profiles here declare `stochastic = True`; `scheduler_solver` builds a `StochasticDiffusersSolver` for them.
    EulerAncestralDiscreteScheduler  k-diffusion's Euler ancestral with eta = 1 (not configurable): sigma_up =
        sqrt(t'^2 (t^2 - t'^2)/t^2), sigma_down = sqrt(t'^2 - sigma_up^2), x' = x + (sigma_down - t)(x - D)/t +
        sigma_up z; in canonical variables the registered `euler_ancestral` (eta = 1, s_noise = 1), i.e. DDPM.
        Into sigma = 0: sigma_up = 0, x' = D; it still draws once there (multiplied by 0). prediction_type "sample"
        raises NotImplementedError in its step: processes vp-eps and vp-v only. Its step casts the sample to float32;
        the adapter keeps float64 (keep_float64=True, float64.py).
"""

from __future__ import annotations

import sys

from ...grid import check_grid, check_x, checked_denoiser
from ...solvers.stochastic import NoiseError, checked_noise
from .solver import DiffusersSolver


class StochasticDiffusersSolver(DiffusersSolver):
    """A stochastic diffusers scheduler behind the sampler interface (module docstring): needs_noise = True, no
    order claimed (diffusers states none), `notes` list the noise hook and what the adapter imposes."""

    needs_noise = True
    weak_order = strong_order = None
    claim_source = "diffusers states no order"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler: its path is not the ODE flow"

    def _configure(self, config, process, _switch):
        super()._configure(config, process, _switch)
        self.order, self.equivalent, self.equivalent_params = None, None, {}
        module = sys.modules[self.cls.__module__].__name__
        self.notes.append(f"noise: during each step() the adapter replaces the name randn_tensor in {module} by the "
                          "caller's noise(j, sigma, sigma_next) (j the running count of draws, sigma -> sigma_next the "
                          "step's EDM sigmas): the only hook this scheduler offers (its step takes a generator only); "
                          "the original is restored after each step")
        self._run = None

    def __call__(self, denoiser, x, sigmas, noise=None, callback=None):
        if callback is not None:
            raise ValueError("callback: the scheduler drives its own loop; per-step callbacks are not supported")
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        grid = check_grid(sigmas)
        draw = checked_noise(noise, x, self.name)  # a missing source: NoiseError before any denoiser call
        path = grid if self.grid != "native" else self.native_sigmas(grid.numel() - 1)
        self._run = {"draw": draw, "sigmas": [float(s) for s in path], "calls": 0}
        try:
            return super().__call__(denoiser, x, sigmas)
        finally:
            self._run = None

    def _step(self, sched, out, t, sample, i: int):
        run = self._run
        module = sys.modules[self.cls.__module__]
        original = module.randn_tensor
        s, s_next = run["sigmas"][i], run["sigmas"][i + 1]

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, **kwargs):
            j, run["calls"] = run["calls"], run["calls"] + 1
            z = run["draw"](j, s, s_next)
            if tuple(z.shape) != tuple(shape):
                raise NoiseError(f"noise: {self.cls.__name__}.step asked for a draw of shape {tuple(shape)}, the "
                                 f"noise source gives {tuple(z.shape)}")
            return z if dtype is None else z.to(dtype)

        module.randn_tensor = randn_tensor
        try:
            return super()._step(sched, out, t, sample, i)
        finally:
            module.randn_tensor = original
