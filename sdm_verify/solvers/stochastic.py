"""Stochastic samplers: sampler(denoiser, x, sigmas, noise) -> x, with the noise owned by the caller.

`noise(i, sigma, sigma_next)` returns a standard normal tensor shaped like x (k-diffusion's `noise_sampler`
convention with the step index added). A source is a function of its arguments: the same (i, sigma, sigma_next)
gives the same draw, so a run can be replayed, and the harness can feed probe columns (the exact output law on a
Gaussian target) or the increments of one Brownian motion shared by runs at N and 2N steps
(`sdm_verify.harness.noise`). A sampler that needs several independent draws in one step asks with distinct
indices (documented in its module).

The loop is `sdm_verify.solvers.base.Solver`'s: a sampler declares `needs_noise = True` and its weak (and, where its
paper states one, strong) order, and implements `step`, reading its draws through `ctx.draw(i)`. Before any denoiser
call the loop refuses a missing or non-callable noise source and checks the first draw; every later draw is checked
as it comes (a floating tensor of x's shape, dtype and device, finite), naming the sampler, the step and the call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from ..grid import describe
from .base import Solver, StepContext

__all__ = ["StochasticSolver", "NoiseError", "checked_noise", "noise_problem"]


class NoiseError(InputError):
    """A missing noise source, or a draw that is not a finite standard-normal tensor shaped like x."""


def noise_problem(z, x: torch.Tensor) -> str | None:
    """Why `z` is not a valid noise draw for the state x (None if it is): a finite tensor of x's shape, dtype and
    device. (Standard normality is a property of the source, checked statistically in the tests, not per draw.)"""
    if not torch.is_tensor(z):
        return f"returned {describe(z)}, not a tensor"
    if z.shape != x.shape:
        return f"returned shape {tuple(z.shape)} for x of shape {tuple(x.shape)}"
    if z.dtype != x.dtype:
        return f"returned dtype {z.dtype} for x of dtype {x.dtype} (a sampler never casts its noise silently)"
    if z.device != x.device:
        return f"returned a tensor on {z.device} for x on {x.device}"
    if not bool(torch.isfinite(z).all()):
        return "returned NaN or inf"
    return None


def checked_noise(noise, x: torch.Tensor, sampler: str) -> Callable:
    """`noise` wrapped so that every draw is checked against x (noise_problem); a missing source is refused here."""
    if noise is None:
        raise NoiseError(f"noise: sampler {sampler!r} is stochastic and needs a noise source noise(i, sigma, "
                         "sigma_next) -> standard normal like x (e.g. sdm_verify.harness.noise.GaussianNoise)")
    if not callable(noise):
        raise NoiseError(f"noise: must be callable as noise(i, sigma, sigma_next), got {describe(noise)}")
    calls = 0

    def draw(i: int, sigma: float, sigma_next: float) -> torch.Tensor:
        nonlocal calls
        calls += 1
        z = noise(i, sigma, sigma_next)
        problem = noise_problem(z, x)
        if problem is not None:
            raise NoiseError(f"noise: {problem} (sampler {sampler!r}, step {i}, draw {calls}, "
                             f"sigma {float(sigma):.6g} -> {float(sigma_next):.6g})")
        return z

    return draw


class StochasticSolver(Solver):
    """A sampler that adds noise: called as sampler(denoiser, x, sigmas, noise, callback=None)."""

    needs_noise = True
    #: no sampler here exposes coefficient functions for the (deterministic) symbolic order check
    symbolic_form = None

    def __call__(self, denoiser, x: torch.Tensor, sigmas, noise=None, callback=None) -> torch.Tensor:
        return self._loop(denoiser, x, sigmas, callback, noise=noise)

    def _bind_noise(self, noise, x: torch.Tensor, ctx: StepContext) -> None:
        draw = checked_noise(noise, x, self.name)
        draw(0, ctx.sigmas[0], ctx.sigmas[1])  # the first draw is checked before any denoiser call (sources are pure)
        ctx.noise = draw
