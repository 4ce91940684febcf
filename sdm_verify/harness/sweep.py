"""The theory sweep: (solver x schedule x process x target x N) cells -> tidy result rows, resumable.

A cell is one sampler run measured against the oracle (sdm_verify.harness.meters): the target's exact noisy law at
sigma_max is pushed through the solver on the schedule's grid and compared, in W2 (or its synchronous upper
bound), with the exact law at the grid's end:
    final=False  the grid ends at sigma_min and the error is measured against p_{sigma_min}: the error that converges
                 with N (docs/theory.md §5 (a));
    final=True   the same family of grids ends with a step into sigma = 0 and the error is measured against p_0: the
                 full sampler, whose last fixed-size step does not shrink with N; reported separately.
NFE comes from counting the denoiser calls of one run, never from the solver. The process matters only where the
grid depends on it (uniform_t, time_quadratic) or the solver integrates in the process's own time (euler_t, heun_t):
canonical solvers on sigma-defined grids give the same numbers for every process, so such cells are keyed with
process "any" and computed once.
A cell's config also holds the fingerprint of the code that computes it (`code_for`: its solver, its schedule, the
harness and the oracle, and the versions of torch, numpy, scipy and sdm_verify; sdm_verify.harness.fingerprint), so a
stored row is reused only for the same code; the store's meta CODE_META lists the files behind each part's digest.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import asdict, dataclass, field
from functools import cache

import torch

from analytic import processes as oracle_processes

from .. import schedules, solvers
from . import fingerprint
from .meters import cached_meter
from .progress import Progress
from .run import measure_run
from .store import ResultStore, config_key, run_pending

#: bump when a change alters the numbers a cell produces, so stored rows are not reused across it
SWEEP_VERSION = 3
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: meta key of the store: part digest -> {"part": name, "files": {path: file digest}} (which code a digest names)
CODE_META = "code_parts"


@dataclass(frozen=True)
class Cell:
    """One sampler run to measure: `solver` on `schedule`'s grid of `n` steps from sigma_max to sigma_min (or into
    0, final=True), started from `target`'s exact law, in `process`'s variables where that matters."""

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
        """The JSON-safe configuration that keys this cell in the results store, with the fingerprint of the code
        that computes it under "code" (code_for)."""
        relevant = schedules.uses_process(self.schedule) or self.solver in _NEEDS_PROCESS
        cfg = asdict(self)
        cfg["process"] = self.process if relevant else "any"
        cfg["version"] = SWEEP_VERSION
        cfg["code"] = code_for(cfg)
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


def registered_solver(name: str, process: str = "ve", params: dict | None = None):
    """The registered solver `name` configured with `params`; a solver that integrates in a process's own time is
    given the oracle's `process` ("any": VE), every other solver ignores it."""
    params = dict(params or {})
    if name in _NEEDS_PROCESS:
        params["process"] = oracle_processes.get(process if process != "any" else "ve")
    return solvers.get(name, **params)


def solver_for(cfg: dict):
    """The solver of a cell configuration."""
    return registered_solver(cfg["solver"], cfg["process"], cfg.get("solver_params"))


def code_for(cfg: dict) -> dict:
    """The fingerprint of the code that computes cell config `cfg`: part digests {solver, schedule, harness, oracle}
    (None for a solver or schedule that is not registered: such a cell cannot be computed) and the versions."""
    params = json.dumps(cfg.get("solver_params") or {}, sort_keys=True)
    return dict(_code(cfg["solver"], params, cfg["process"], cfg["schedule"]))


#: every part this process has fingerprinted, by digest (for CODE_META)
_PARTS: dict[str, fingerprint.Part] = {}


@cache
def _code(solver: str, params: str, process: str, schedule: str) -> tuple:
    try:
        cls = type(solver_for({"solver": solver, "solver_params": json.loads(params), "process": process}))
    except ValueError:
        cls = None
    try:
        fn = schedules.get(schedule)
    except ValueError:
        fn = None
    parts = [fingerprint.solver_part(cls) if cls is not None else None,
             fingerprint.schedule_part(fn.__module__) if fn is not None else None, *fingerprint.harness_parts()]
    _PARTS.update((p.digest, p) for p in parts if p is not None)
    code = {name: p.digest if p is not None else None
            for name, p in zip(("solver", "schedule", "harness", "oracle"), parts, strict=True)}
    return tuple({**code, **fingerprint.versions()}.items())


def _record_code(store: ResultStore, configs: list[dict]) -> None:
    """Add the files behind the part digests of `configs` to the store's CODE_META (once per digest)."""
    known = store.get_meta(CODE_META, {})
    digests = {d for cfg in configs for d in (cfg.get("code") or {}).values() if d in _PARTS and d not in known}
    if digests:
        store.set_meta(CODE_META, {**known, **{d: _PARTS[d].manifest() for d in sorted(digests)}})


def compute_cell(cfg: dict) -> dict:
    """The result row of one cell configuration (see Cell.config)."""
    sigmas = grid_for(cfg)
    return measure_run(solver_for(cfg), cfg["target"], sigmas, 0.0 if cfg["final"] else cfg["sigma_min"])


#: measured cost of one denoiser call of one meter run, by target (us, CPU, one thread; sum over a cell's runs:
#: the 1-D quantile meter runs the solver ~8 times, its first round on 2160 points), for the longest-first order
_CALL_COST = {"gauss-4d": 120.0, "gmm-8d": 180.0, "gmm-1d": 8 * 370.0}


def cost_estimate(cfg: dict) -> float:
    """A cell's expected compute time (us): its counted NFE x the per-call cost of its target's meter, twice for a
    solver that decides on the data (one decision run before the measured one). Only orders the work (LPT)."""
    try:
        solver = solver_for(cfg)
        nfe = solver.nfe_to_zero(cfg["n"]) if cfg["final"] else solver.nfe(cfg["n"])
    except Exception:  # an unregistered or misconfigured cell fails in compute_cell, not here
        return 0.0
    runs = 2 if getattr(solver, "data_dependent", False) else 1
    return float(nfe) * runs * _CALL_COST.get(cfg["target"], 200.0)


def lpt_order(configs: list[dict]) -> list[dict]:
    """The configs longest first (LPT: Graham's longest-processing-time rule), so that the workers of a pool finish
    together instead of one worker computing the last long cell alone; ties keep their order."""
    costs = [cost_estimate(c) for c in configs]
    return [configs[i] for i in sorted(range(len(configs)), key=lambda i: -costs[i])]


def _init_worker() -> None:
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead, and the workers share the cores


def _compute_pair(cfg: dict) -> tuple[dict, dict]:
    return cfg, compute_cell(cfg)


def run_cells(cells, store: ResultStore | None = None, *, jobs: int = 1, progress: bool = True,
              desc: str = "cells") -> list[dict]:
    """Compute every cell not already in `store`, writing each row as it finishes (an interrupted sweep loses at
    most the cells in progress), then return all rows in the order of `cells`, each as {**config, **row}.
    Cells may be Cells or their configs; a config without "code" gets its fingerprint (code_for).
    jobs > 1 computes in that many worker processes, longest cells first (lpt_order; the parent alone writes to the
    store). Without a store the rows are computed and returned only. progress: a bar with an ETA over the cells to
    compute (harness.progress), drawn by the parent."""
    configs = [c.config() if isinstance(c, Cell) else c if "code" in c else {**c, "code": code_for(c)}
               for c in cells]
    if store is None:
        out = []
        with Progress(len(configs), desc, enabled=progress) as bar:
            for cfg in configs:
                out.append({**cfg, **compute_cell(cfg)})
                bar.update()
        return out
    _record_code(store, configs)
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
            missing = lpt_order(missing)
            ctx = mp.get_context("fork")
            with ctx.Pool(jobs, initializer=_init_worker) as pool, Progress(len(missing), desc,
                                                                             enabled=progress) as bar:
                for cfg, row in pool.imap_unordered(_compute_pair, missing):
                    store.put(cfg, row)
                    bar.update()
    else:
        run_pending(configs, compute_cell, store, progress=progress, desc=desc)
    return [{**cfg, **store.get(cfg)} for cfg in configs]
