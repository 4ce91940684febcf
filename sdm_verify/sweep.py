"""The theory sweep: (solver x schedule x process x target x N) cells -> tidy result rows, resumable.

A cell is one sampler run measured against the oracle (sdm_verify.meters): the target's exact noisy law at
sigma_max is pushed through the solver on the schedule's grid and compared, in W2 (or its synchronous upper
bound), with the exact law at the grid's end:
    final=False  the grid ends at sigma_min and the error is measured against p_{sigma_min}: the error that converges
                 with N (theory.md §5 (a));
    final=True   the same family of grids ends with a step into sigma = 0 and the error is measured against p_0: the
                 full sampler, whose last fixed-size step does not shrink with N; reported separately.
NFE comes from counting the denoiser calls of one run, never from the solver. The process matters only where the
grid depends on it (uniform_t, time_quadratic) or the solver integrates in the process's own time (euler_t, heun_t):
canonical solvers on sigma-defined grids give the same numbers for every process, so such cells are keyed with
process "any" and computed once.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from analytic import processes as oracle_processes

from . import schedules, solvers, targets
from .errors import SolverDivergedError
from .meters import cached_meter, meter_for
from .nfe import count_nfe
from .store import ResultStore, config_key, run_pending

#: bump when a change alters the numbers a cell produces, so stored rows are not reused across it
SWEEP_VERSION = 3
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


@dataclass(frozen=True)
class Cell:
    target: str
    solver: str
    schedule: str
    n: int
    process: str = "ve"
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    final: bool = False
    solver_params: dict = field(default_factory=dict, hash=False)
    schedule_params: dict = field(default_factory=dict, hash=False)

    def config(self) -> dict:
        """The JSON-safe configuration that keys this cell in the results store."""
        relevant = schedules.uses_process(self.schedule) or self.solver in _NEEDS_PROCESS
        cfg = asdict(self)
        cfg["process"] = self.process if relevant else "any"
        cfg["version"] = SWEEP_VERSION
        return cfg


#: registered solvers that integrate in a process's own time and take `process=`
_NEEDS_PROCESS = frozenset(n for n in solvers.available() if solvers.needs_process(n))


def grid_for(cfg: dict) -> torch.Tensor:
    """The sigma grid of a cell configuration."""
    proc = oracle_processes.get(cfg["process"]) if cfg["process"] != "any" else None
    params = dict(cfg.get("schedule_params") or {})
    if proc is not None:
        params["process"] = proc
    return schedules.get(cfg["schedule"])(cfg["n"], cfg["sigma_min"], cfg["sigma_max"], zero=cfg["final"], **params)


def solver_for(cfg: dict):
    params = dict(cfg.get("solver_params") or {})
    if cfg["solver"] in _NEEDS_PROCESS:
        params["process"] = oracle_processes.get(cfg["process"] if cfg["process"] != "any" else "ve")
    return solvers.get(cfg["solver"], **params)


def replayed(solver, target, sigmas: torch.Tensor, batch: int = 128, seed: int = 0):
    """For an adaptive solver whose per-step decisions depend on the batch (SDM's kappa latch): the decisions it
    makes on a realistic batch (exact draws of p_{sigmas[0]}), fixed and replayed, so the meter's points (e.g. the
    Gaussian meter's d + 1 probes) do not make the decisions themselves. Other solvers are returned unchanged."""
    if not getattr(solver, "data_dependent", False):
        return solver
    from .solvers.sdm import replay_lambdas, run_with_trace

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


def compute_cell(cfg: dict) -> dict:
    """The result row of one cell configuration (see Cell.config)."""
    sigmas = grid_for(cfg)
    return measure_run(solver_for(cfg), cfg["target"], sigmas, 0.0 if cfg["final"] else cfg["sigma_min"])


def _init_worker() -> None:
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead, and the workers share the cores


def _compute_pair(cfg: dict) -> tuple[dict, dict]:
    return cfg, compute_cell(cfg)


def run_cells(cells, store: ResultStore | None = None, *, jobs: int = 1, progress: bool = True,
              desc: str = "cells") -> list[dict]:
    """Compute every cell not already in `store`, writing each row as it finishes (an interrupted sweep loses at
    most the cells in progress), then return all rows in the order of `cells`, each as {**config, **row}.
    jobs > 1 computes in that many worker processes (the parent alone writes to the store). Without a store the
    rows are computed and returned only."""
    configs = [c.config() if isinstance(c, Cell) else c for c in cells]
    if store is None:
        bar = tqdm(configs, desc=desc, disable=None if progress else True, leave=False)
        return [{**cfg, **compute_cell(cfg)} for cfg in bar]
    if jobs > 1:
        seen, missing = set(), []
        for cfg in configs:
            key = config_key(cfg)
            if key not in seen and not store.has_key(key):
                seen.add(key)
                missing.append(cfg)
        if missing:
            for cfg in missing:  # build each meter (and its reference solve) once, before the workers fork
                cached_meter(cfg["target"], cfg["sigma_max"], 0.0 if cfg["final"] else cfg["sigma_min"])
            ctx = mp.get_context("fork")
            with ctx.Pool(jobs, initializer=_init_worker) as pool, tqdm(
                total=len(missing), desc=desc, disable=None if progress else True, leave=False
            ) as bar:
                for cfg, row in pool.imap_unordered(_compute_pair, missing):
                    store.put(cfg, row)
                    bar.update(1)
    else:
        run_pending(configs, compute_cell, store, progress=progress, desc=desc)
    return [{**cfg, **store.get(cfg)} for cfg in configs]
