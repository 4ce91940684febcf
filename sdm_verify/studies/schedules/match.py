"""How many steps (and NFE) a schedule needs to reach the optimum's error at N (docs/schedules.md §4).

steps_to_match(solver, target, make, goal, start, cap): the smallest M >= start found with error(make(M)) <= goal,
searched by doubling M from `start` and then bisecting the last bracket. The error of a schedule need not be
monotone in M (dpmpp_2m on a Gaussian has isolated near-zeros), so the answer is the smallest M that the doubling and
bisection visit, an upper bound on the true smallest one; M > cap is reported as None ("more than cap").
The NFE of a grid is counted by running the solver once through a counting denoiser (harness.nfe), so a solver
whose NFE depends on the data (SDM's latch) is counted as it runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...errors import InputError
from ...harness.nfe import count_nfe
from .optimum import grid_error

__all__ = ["grid_nfe", "steps_to_match"]


def grid_nfe(solver, target, grid) -> int:
    """NFE of one run of `solver` on `grid` (a batch of 16 exact draws of p_{grid[0]})."""
    from ... import solvers
    fn = solvers.get(solver) if isinstance(solver, str) else solver
    g = torch.as_tensor(grid, dtype=torch.float64)
    x = target.sample(16, sigma=float(g[0]), generator=torch.Generator().manual_seed(0))
    counted = count_nfe(target.denoiser)
    fn(counted, x, g)
    return counted.nfe


def steps_to_match(solver, target, make: Callable[[int], torch.Tensor], goal: float, start: int,
                   cap: int) -> int | None:
    """Module docstring. make(M) -> the schedule's grid of M steps."""
    if not (isinstance(goal, float) and goal > 0 and math.isfinite(goal)):
        raise InputError(f"goal: must be a finite error > 0 (got {goal!r})")
    if not (isinstance(start, int) and isinstance(cap, int) and 1 <= start <= cap):
        raise InputError(f"start, cap: need 1 <= start <= cap (got {start!r}, {cap!r})")
    memo: dict[int, float] = {}

    def ok(m: int) -> bool:
        if m not in memo:
            memo[m] = grid_error(solver, target, make(m))
        return memo[m] <= goal

    lo, m = start - 1, start  # invariant: ok(m) unknown; every visited M <= lo failed
    while not ok(m):
        if m >= cap:
            return None
        lo, m = m, min(2 * m, cap)
    while m - lo > 1:  # ok(m) holds, the last failure was at lo
        mid = (lo + m) // 2
        lo, m = (lo, mid) if ok(mid) else (mid, m)
    return m
