"""Item `affine`: on a Gaussian target the solver's map is affine, to rounding.

For a Gaussian target D(x, sigma) is affine in x; every stage of a solver is an affine combination of affine maps,
so the solver's whole map f is affine: f(a x1 + (1 - a) x2) = a f(x1) + (1 - a) f(x2), up to rounding. Checked on
gauss-4d with an interpolation (a = 0.3, EDM grid) and an extrapolation (a = -1.5, irregular grid); the relative
difference, to the largest magnitude among the inputs and outputs, must be < IDENTITY_RTOL (the same rounding
bound as the point-mass identity).
"""

from __future__ import annotations

import torch

from ...harness import targets
from ..context import Context, Progress, tick
from ..per_process import Probe, per_process
from ..probing import grid, irregular_grid, relative, sigma_bounds
from ..result import Item
from .point_mass import IDENTITY_RTOL

#: progress-bar steps per process (one per combination)
RUNS = 2


def probe(solver, bar: Progress | None = None) -> Probe:
    """The affinity identity on one solver: worst relative difference over the two combinations."""
    target = targets.get("gauss-4d")
    lo, hi = sigma_bounds(solver)
    g = torch.Generator().manual_seed(4)
    x1, x2 = target.sample(16, sigma=hi, generator=g), target.sample(16, sigma=hi, generator=g)
    worst, parts = 0.0, []
    for a, sigmas in ((0.3, grid("edm", 16, None, lo, hi)), (-1.5, irregular_grid(lo, hi, seed=5))):
        f1, f2 = solver(target.denoiser, x1.clone(), sigmas), solver(target.denoiser, x2.clone(), sigmas)
        fm = solver(target.denoiser, a * x1 + (1 - a) * x2, sigmas)
        rel = relative(fm, a * f1.to(torch.float64) + (1 - a) * f2.to(torch.float64), x1, x2, f1, f2)
        worst = max(worst, rel)
        parts.append(f"a={a:g} {rel:.1e}")
        tick(bar)
    return Probe(worst < IDENTITY_RTOL, worst, "f(a x1 + (1-a) x2) vs a f(x1) + (1-a) f(x2), relative: " + ", ".join(
        parts), dict(relative_error=worst, limit=IDENTITY_RTOL, cases=parts))


def item(solver, ctx: Context) -> Item:
    """The affinity identity for the solver of every process (fails if any fails)."""
    return per_process("affine", f"< {IDENTITY_RTOL:.0e}", ctx, probe)
