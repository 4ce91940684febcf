"""Item `point_mass`: a consistent solver reproduces the exact flow of a point-mass target to rounding.

For D(x, sigma) = x0 (a point-mass target) the exact flow is x(sigma') = x0 + (sigma'/sigma)(x - x0). Along it
dx/dsigma = (x - x0)/sigma = c is constant (x - x0 = sigma c), so every stage of a consistent solver sees the same
derivative c and the same denoised value x0:
  - an RK step with sum b = 1 gives x + (sigma' - sigma) c;
  - a linear multistep step whose weights sum to sigma' - sigma gives the same;
  - an exponential integrator x' = (sigma'/sigma) x + sum_j w_j D_j with sum_j w_j = 1 - sigma'/sigma gives
    (sigma'/sigma) x + (1 - sigma'/sigma) x0.
All equal the exact x0 + sigma' c, so the whole run reproduces the flow up to rounding on any grid: the relative
error (to the largest magnitude carried, max |x|) must be < IDENTITY_RTOL, on an EDM grid and an irregular one.

A solver stepping in another time variable is exact only where the trajectory is affine in it (native time t:
s(t)(x0 + sigma(t) c) is affine in t for VE and FM, not VP); it may declare `point_mass_exact = False` (with
`point_mass_note`), and the number is then reported, not judged.
"""

from __future__ import annotations

import torch

from .. import declared
from ..context import Context, Progress, tick
from ..per_process import Probe, per_process
from ..probing import grid, irregular_grid, relative, sigma_bounds
from ..result import Item

#: exactness identities: float64 rounding of a run relative to the largest magnitude carried is ~ (steps x
#: operations per step) x 1.1e-16 <= 16 x 20 x 1.1e-16 = 4e-14; 1e-12 leaves 25x room and catches a 1e-6 x^2 term
IDENTITY_RTOL = 1e-12
#: solver runs per process, for the progress bar
RUNS = 2


def probe(solver, bar: Progress | None = None) -> Probe:
    """The point-mass identity on one solver: worst relative error to the exact flow over the two grids."""
    lo, hi = sigma_bounds(solver)
    x0 = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64)
    x = x0 + hi * torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def denoiser(y, sigma):
        return x0.to(y.dtype).expand_as(y).clone()

    worst, parts = 0.0, []
    for label, sigmas in (("edm N=12", grid("edm", 12, None, lo, hi)), ("irregular N=11", irregular_grid(lo, hi))):
        out = solver(denoiser, x.clone(), sigmas)
        exact = x0 + (float(sigmas[-1]) / float(sigmas[0])) * (x - x0)
        rel = relative(out, exact, x)
        worst = max(worst, rel)
        parts.append(f"{label} {rel:.1e}")
        tick(bar)
    detail = "relative error to the exact flow: " + ", ".join(parts)
    data = dict(relative_error=worst, limit=IDENTITY_RTOL, grids=parts, judged=True)
    if not declared.point_mass_exact(solver):  # declared: steps in a variable the flow is not affine in
        data["judged"] = False
        return Probe(True, worst, f"{detail} (reported, not judged: {declared.point_mass_note(solver)})", data)
    return Probe(worst < IDENTITY_RTOL, worst, detail, data)


def item(solver, ctx: Context) -> Item:
    """The point-mass identity for the solver of every process (fails if any judged process fails)."""
    return per_process("point_mass", f"< {IDENTITY_RTOL:.0e}", ctx, probe)
