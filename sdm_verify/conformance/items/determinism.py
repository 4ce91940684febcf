"""Item `determinism`: two runs on the same input are bitwise identical, and the input is left unmodified.

An ODE solver is a deterministic map: any difference between two runs (hidden noise, a nondeterministic reduction)
or a change to the caller's tensor (an in-place update of x) is a defect. Compared on the raw bits, so that NaN
payloads compare equal to themselves (gmm-8d, 16 draws, EDM grid, N = 16).
"""

from __future__ import annotations

import torch

from ...harness import targets
from ..context import Context, Progress, tick
from ..per_process import Probe, per_process
from ..probing import grid, sigma_bounds
from ..result import Item

#: progress-bar steps per process (the two runs count as one)
RUNS = 1


def probe(solver, bar: Progress | None = None) -> Probe:
    """Two runs bitwise identical, input unmodified -> value "identical" or "differs"."""
    target = targets.get("gmm-8d")
    lo, hi = sigma_bounds(solver)
    x = target.sample(16, sigma=hi, generator=torch.Generator().manual_seed(7))
    sigmas = grid("edm", 16, None, lo, hi)
    given = x.clone()
    y1 = solver(target.denoiser, given, sigmas)
    y2 = solver(target.denoiser, x.clone(), sigmas)
    tick(bar)
    same = y1.shape == y2.shape and y1.dtype == y2.dtype and torch.equal(_bits(y1), _bits(y2))
    untouched = torch.equal(given, x)
    detail = ("two runs bitwise identical" if same else "two runs on the same input DIFFER") + (
        "; input unmodified" if untouched else "; the solver MODIFIED its input x in place")
    return Probe(same and untouched, "identical" if same and untouched else "differs", detail,
                 dict(identical=bool(same), input_unmodified=bool(untouched)))


def item(solver, ctx: Context) -> Item:
    """Determinism for the solver of every process (fails if any differs)."""
    return per_process("determinism", "bitwise", ctx, probe)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (NaN payloads compare equal to themselves)."""
    t = t.contiguous()
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])
