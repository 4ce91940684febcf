"""One run, counted and measured: `measure_run(solver, target, sigmas, sigma_to)`.

The solver is started from the target's exact law at sigmas[0] and its output is compared, by the target's meter
(`sdm_verify.harness.meters`), with the exact law at sigma_to. NFE comes from counting the denoiser's calls, never
from the solver. An adaptive solver whose decisions depend on the batch is frozen first (`replayed`), so that the
meter's probe points do not make the decisions themselves.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import SolverDivergedError
from ..solvers.sdm import replay_lambdas, run_with_trace
from . import targets
from .meters import cached_meter, meter_for
from .nfe import count_nfe


def replayed(solver, target, sigmas: torch.Tensor, batch: int = 128, seed: int = 0):
    """For an adaptive solver whose per-step decisions depend on the batch (SDM's kappa latch): the decisions it
    makes on a realistic batch (exact draws of p_{sigmas[0]}), fixed and replayed, so the meter's points (e.g. the
    Gaussian meter's d + 1 probes) do not make the decisions themselves. Other solvers are returned unchanged."""
    if not getattr(solver, "data_dependent", False):
        return solver
    x = target.sample(batch, sigma=float(sigmas[0]), generator=torch.Generator().manual_seed(seed))
    _, trace = run_with_trace(solver, target.denoiser, x, sigmas)
    fixed = type(solver)(**{**solver.params(), "lambdas": replay_lambdas(trace)})
    fixed.name = solver.name
    return fixed


def measure_run(solver, target, sigmas: torch.Tensor, sigma_to: float, meter=None) -> dict:
    """Run `solver` (any callable with the solver signature) from the exact law at sigmas[0] and measure its output
    against the exact law at sigma_to. `target`: an embedded target's name (its meter is cached) or a
    GaussianMixture (pass `meter` to reuse one across runs: common random numbers, one reference solve)."""
    if isinstance(target, str):
        meter = meter or cached_meter(target, float(sigmas[0]), float(sigma_to))
        target = targets.get(target)
    else:
        meter = meter or meter_for(target, float(sigmas[0]), float(sigma_to))
    solver = replayed(solver, target, sigmas)
    counted = count_nfe(target.denoiser)
    calls = [0]

    def run(x):
        calls[0] += 1
        return solver(counted, x, sigmas)

    t0 = time.perf_counter()
    try:
        error, status, detail = meter.measure(run), "ok", ""
    except SolverDivergedError as exc:
        error, status, detail = math.inf, "diverged", str(exc)
    wall = time.perf_counter() - t0
    nfe = counted.nfe // max(calls[0], 1)
    return dict(error=error, status=status, detail=detail, nfe=nfe, runs=calls[0], wall=wall,
                metric=meter.metric, floor=meter.floor)
