"""The inputs the items run a solver on, and how they compare its outputs.

The sigma interval is the sweep's [SIGMA_MIN, SIGMA_MAX] = [0.002, 80] cut to the solver's declared `sigma_range`;
grids come from the registered schedules (a process-defined schedule gets the process's oracle, VE by default),
plus an irregular grid with random interior points in log sigma, so that an identity cannot hold only because the
steps are uniform in some variable.
"""

from __future__ import annotations

import math

import torch

from analytic import processes as oracle_processes

from .. import schedules
from ..harness.run import measure_run
from ..harness.sweep import SIGMA_MAX, SIGMA_MIN
from . import declared


def sigma_bounds(solver) -> tuple[float, float]:
    """(lo, hi): [SIGMA_MIN, SIGMA_MAX] cut to the solver's declared sigma_range."""
    rng = declared.sigma_range(solver)
    if rng is None:
        return SIGMA_MIN, SIGMA_MAX
    lo, hi = max(rng[0], SIGMA_MIN), min(rng[1], SIGMA_MAX)
    if not lo < hi:
        raise declared.ClaimError(f"sigma_range: declared {rng}, which leaves nothing of [{SIGMA_MIN:g}, "
                                  f"{SIGMA_MAX:g}] to run on")
    return lo, hi


def grid(schedule: str, n: int, process: str | None, lo: float, hi: float, zero: bool = False) -> torch.Tensor:
    """The registered schedule's n-step grid from hi to lo (then 0 when `zero`), for `process` (default VE)."""
    params = {}
    if schedules.uses_process(schedule):
        params["process"] = oracle_processes.get(process or "ve")
    return schedules.get(schedule)(n, lo, hi, zero=zero, **params)


def irregular_grid(lo: float, hi: float, n: int = 11, seed: int = 3) -> torch.Tensor:
    """A strictly decreasing grid from hi to lo with random interior points in log sigma (non-uniform steps)."""
    g = torch.Generator().manual_seed(seed)
    inner = torch.sort(torch.rand(n - 1, dtype=torch.float64, generator=g), descending=True).values
    logs = math.log(lo) + inner * (math.log(hi) - math.log(lo))
    return torch.cat([torch.tensor([hi], dtype=torch.float64), logs.exp(), torch.tensor([lo], dtype=torch.float64)])


def relative(a: torch.Tensor, b: torch.Tensor, *scales: torch.Tensor) -> float:
    """max |a - b| over the largest magnitude among b and `scales` (inf when the difference is not finite)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    scale = max(float(s.abs().max()) for s in (b, *scales))
    err = float((a - b).abs().max())
    return err / scale if math.isfinite(err) else math.inf


def run_row(solver, target: str, sigmas: torch.Tensor, sigma_to: float) -> dict:
    """harness.run.measure_run; a solver that raises gives an error row (error inf, status "error", the reason)."""
    try:
        return measure_run(solver, target, sigmas, sigma_to)
    except declared.ClaimError as exc:  # a declaration the run needs cannot be read
        return unreadable_row(exc)
    except Exception as exc:  # an outside solver that raises: no error for this N, the reason kept
        return dict(error=math.inf, status="error", detail=f"{type(exc).__name__}: {exc}", nfe=0, runs=0, wall=0.0,
                    metric="?", floor=0.0)


def unreadable_row(exc: Exception) -> dict:
    """The error row of a run that could not start because a declaration cannot be read."""
    return dict(error=math.inf, status="error", detail=f"unreadable claim {exc}", nfe=0, runs=0, wall=0.0,
                metric="?", floor=0.0)
