"""One run, counted and measured: `measure_run(solver, target, sigmas, sigma_to)`; and a data-dependent solver's
decisions, frozen on a batch: `freeze_decisions`.

The solver is started from the target's exact law at sigmas[0] and its output is compared, by the target's meter
(`sdm_verify.harness.meters`), with the exact law at sigma_to. NFE comes from counting the denoiser's calls, never
from the solver: nfe = (calls counted over the meter's runs) // (number of runs). An adaptive solver whose
decisions depend on the batch (SDM's kappa latch, `sdm_verify.solvers.sdm`) is frozen first (`replayed`): its
per-step decisions are recorded on a realistic batch and replayed, so that the meter's probe points (e.g. the
Gaussian meter's d + 1 probes) do not make the decisions themselves and the measured sampler is one fixed map.
On a Gaussian the decision run itself is measured (its map read off the batch: one run instead of two).
The theory harness, the SDM study (`studies.sdm.bounds`) and the real-model harness (`real.harness`) freeze
decisions through `freeze_decisions`, and read a solver's `data_dependent` declaration through `decides_on_data`.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import SolverDivergedError
from ..solvers.sdm import replay_lambdas, run_with_trace
from . import targets
from .meters import GaussianMeter, cached_meter, meter_for
from .nfe import count_nfe

#: the batch a data-dependent solver decides on in the theory harness: exact draws of p_{sigmas[0]}
DECISION_BATCH, DECISION_SEED = 128, 0


def decides_on_data(solver) -> bool:
    """Whether `solver` makes per-step decisions on the batch it runs in: its declared `data_dependent`
    (`sdm_verify.solvers.interface`). A plain callable with the solver signature (e.g. a benchmark's timing
    wrapper) declares nothing and is taken as one fixed map. The one place the harness reads the declaration."""
    return bool(getattr(solver, "data_dependent", False))


def freeze_decisions(solver, denoiser, x: torch.Tensor, sigmas: torch.Tensor):
    """Run `solver` on the batch x (through `denoiser`: pass a counted one to count the decision run's calls) and
    record its per-step trace (`solvers.sdm.run_with_trace`). Returns (solver, trace): for a solver that decides on
    the data, a solver of the same configuration and name that replays those decisions (`lambdas=`) on any points;
    any other solver as it is (its trace still describes the run on x)."""
    _, trace = run_with_trace(solver, denoiser, x, sigmas)
    if not decides_on_data(solver):
        return solver, trace
    fixed = type(solver)(**{**solver.params(), "lambdas": replay_lambdas(trace)})
    fixed.name = solver.name
    return fixed, trace


def decision_batch(target, sigma: float, batch: int = DECISION_BATCH, seed: int = DECISION_SEED) -> torch.Tensor:
    """`batch` exact draws of p_sigma of a GaussianMixture target (generator seeded with `seed`)."""
    return target.sample(batch, sigma=float(sigma), generator=torch.Generator().manual_seed(seed))


def replayed(solver, target, sigmas: torch.Tensor, batch: int = DECISION_BATCH, seed: int = DECISION_SEED):
    """A solver that decides on the data, with the decisions it makes on a realistic batch (exact draws of
    p_{sigmas[0]}) frozen (`freeze_decisions`). Other solvers are returned unchanged, without a run."""
    if not decides_on_data(solver):
        return solver
    return freeze_decisions(solver, target.denoiser, decision_batch(target, sigmas[0], batch, seed), sigmas)[0]


def measure_run(solver, target, sigmas: torch.Tensor, sigma_to: float, meter=None) -> dict:
    """Run `solver` (any callable with the solver signature) from the exact law at sigmas[0] and measure its output
    against the exact law at sigma_to. `target`: an embedded target's name (its meter is cached) or a
    GaussianMixture (pass `meter` to reuse one across runs: common random numbers, one reference solve).
    Returns {error, status ("ok" / "diverged"), detail, nfe, runs, wall, metric, floor}; a solver that diverges
    gives error inf and status "diverged" (not an exception)."""
    if isinstance(target, str):
        meter = meter or cached_meter(target, float(sigmas[0]), float(sigma_to))
        target = targets.get(target)
    else:
        meter = meter or meter_for(target, float(sigmas[0]), float(sigma_to))
    counted = count_nfe(target.denoiser)
    if decides_on_data(solver) and isinstance(meter, GaussianMeter) and 2 * (target.d + 1) <= DECISION_BATCH:
        return _measure_decision_run(solver, target, sigmas, meter, counted)
    solver = replayed(solver, target, sigmas)
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


def _measure_decision_run(solver, target, sigmas: torch.Tensor, meter: GaussianMeter, counted) -> dict:
    """measure_run of a solver that decides on the data, on a Gaussian: its decision run is the measured run. The
    decisions made on the batch (exact draws of p_{sigmas[0]}, decision_batch) and replayed on any points give the
    run's own output on that batch exactly (tests/test_sdm_solver.py), and the frozen sampler is affine on a
    Gaussian, so the meter reads its map (M, c) off the batch (GaussianMeter.affine_of: least squares over 128
    points, equal to the d + 1 probes' differences up to round-off) instead of replaying it on the probes: one run
    instead of two. A divergence in the decision run raises, as in `replayed`."""
    t0 = time.perf_counter()
    x = decision_batch(target, float(sigmas[0]))
    y, _ = run_with_trace(solver, counted, x, sigmas)
    error = meter.bures(*meter.affine_of(x, y))
    return dict(error=error, status="ok", detail="", nfe=counted.nfe, runs=1, wall=time.perf_counter() - t0,
                metric=meter.metric, floor=meter.floor)
