"""Item `float32`: the solver's own float32 arithmetic stays within rounding of its float64 run.

The same inputs are run in float32 and in float64, with the denoiser computed in float64 and rounded to the run's
dtype, so only the solver's arithmetic differs. The RMS relative drift of the outputs at N in F32_NS (EDM grid,
gmm-8d, 64 draws) must be <= F32_LIMIT, and a float32 input must come back as float32.
"""

from __future__ import annotations

import math

import torch

from ...harness import targets
from ..context import Context, Progress, tick
from ..per_process import Probe, per_process
from ..probing import grid, sigma_bounds
from ..result import Item

#: float32 drift: unit roundoff 6e-8 per operation; the PF-ODE flow contracts an error made at sigma by about
#: sqrt(lambda + sigma_min^2)/sqrt(lambda + sigma^2) (the Gaussian flow-map Jacobian), so each step's rounding
#: reaches the output at about its own relative size: ~N x 6e-8 = 8e-6 at N = 128, and 1e-4 allows a growth of 10
F32_LIMIT = 1e-4
F32_NS = (32, 128)
#: solver runs per process (float64 and float32 at each N), for the progress bar
RUNS = len(F32_NS) * 2


def probe(solver, bar: Progress | None = None) -> Probe:
    """RMS relative float32 - float64 drift at F32_NS on gmm-8d; the worst N is the value."""
    target = targets.get("gmm-8d")
    lo, hi = sigma_bounds(solver)
    x = target.sample(64, sigma=hi, generator=torch.Generator().manual_seed(6))

    def denoiser(y, sigma):
        return target.denoiser(y, sigma).to(y.dtype)

    drift, parts = {}, []
    for n in F32_NS:
        sigmas = grid("edm", n, None, lo, hi)
        y64 = solver(denoiser, x.clone(), sigmas)
        tick(bar)
        y32 = solver(denoiser, x.to(torch.float32), sigmas)
        tick(bar)
        if y32.dtype != torch.float32:
            return Probe(False, math.inf, f"a float32 input came back as {y32.dtype}", dict(dtype=str(y32.dtype)))
        diff = (y32.to(torch.float64) - y64.to(torch.float64)).pow(2).sum(-1).mean().sqrt()
        value = float(diff / y64.to(torch.float64).pow(2).sum(-1).mean().sqrt())
        drift[str(n)] = value if math.isfinite(value) else None
        parts.append(f"N={n} {value:.1e}")
    worst = max(v if v is not None else math.inf for v in drift.values())
    return Probe(worst <= F32_LIMIT, worst, "RMS relative float32 - float64 drift: " + ", ".join(parts),
                 dict(drift=drift, limit=F32_LIMIT))


def item(solver, ctx: Context) -> Item:
    """The float32 drift for the solver of every process (fails if any exceeds F32_LIMIT)."""
    return per_process("float32", f"<= {F32_LIMIT:.0e}", ctx, probe)
