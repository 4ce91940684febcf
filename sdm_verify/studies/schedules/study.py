"""The schedule study: every scored schedule against the exact optimum, per (solver, target, N, endpoint) (issue #16).

    rows        one per (solver, target, process, N, schedule, final): its grid and its exact error, with the
                optimum as schedule "optimal" (certified; a cell whose optimiser did not converge or whose
                certificate failed is kept, marked, never called optimal). One cell = studies/schedules/cells.py.
    store       each cell's rows are written to a results store (harness.store) as the cell finishes, keyed by the
                cell's config and the fingerprint of the code that computes it: a rerun reuses what is stored for
                the same code and recomputes what changed; a killed run loses at most the cell in progress.
    efficiency  error(optimal) / error(schedule), <= 1 up to the optimiser's tolerance.

Matrices:
    quick   the issue's: euler, heun, dpmpp_2m on `gauss-1d` (N(0, 0.5^2)), VE from sigma 80 to 0.002, N in
            {2, 3, 4, 8}.
    full    euler, heun, dpmpp_2m, unipc, ipndm and SDM's adaptive solver (`sdm`) on `gauss-1d` and `gauss-spec16`,
            N in {5, 8, 10, 18, 32, 64}, to sigma_min; the full sampler into 0 for euler, heun, dpmpp_2m on
            `gauss-spec16` at N in {5, 10}; the 1-D mixture `gmm-1d` (exact quantile W2, ~0.5 s per error at
            N = 5, so minutes per optimum) for euler, heun, dpmpp_2m at N = 5 from the EDM start only.
    Cells at larger N take the optimum at the previous N of the same (solver, target, final) as a warm start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ...errors import InputError
from ...harness import fingerprint
from ...harness.progress import Progress
from ...harness.store import ResultStore
from .cells import FIXED, SIGMA_MAX, SIGMA_MIN, Row, compute, target  # noqa: F401  (re-exported)

STUDY = "schedules/v1"
FULL_SOLVERS = ("euler", "heun", "dpmpp_2m", "unipc", "ipndm", "sdm")
FULL_NS = (5, 8, 10, 18, 32, 64)


@dataclass(frozen=True)
class Cell:
    solver: str
    target: str
    N: int
    final: str = "sigma_min"
    starts: tuple = ("edm", "logsnr", "random")


def plan(quick: bool = True, solvers=None, target_names=None, ns=None) -> list[Cell]:
    """The cells of the quick or full matrix (module docstring); solvers/target_names/ns restrict the main block."""
    if ns is not None and any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in ns):
        raise InputError(f"ns: step counts must be integers >= 1 (got {list(ns)})")
    if quick:
        return [Cell(s, t, n) for t in (target_names or ("gauss-1d",)) for s in (solvers or ("euler", "heun",
                "dpmpp_2m")) for n in (ns or (2, 3, 4, 8))]
    cells = [Cell(s, t, n) for t in (target_names or ("gauss-1d", "gauss-spec16")) for s in (solvers or FULL_SOLVERS)
             for n in (ns or FULL_NS)]
    if solvers is None and target_names is None and ns is None:
        cells += [Cell(s, "gauss-spec16", n, "zero") for s in ("euler", "heun", "dpmpp_2m") for n in (5, 10)]
        cells += [Cell(s, "gmm-1d", 5, starts=("edm",)) for s in ("euler", "heun", "dpmpp_2m")]
    return sorted(cells, key=lambda c: c.N)  # stable: every family at small N first (warm starts need N - 1 done)


#: the study's own code: cells.py and its imports within these packages (the solver is fingerprinted on its own)
SCOPE = ("sdm_verify.studies.schedules", "sdm_verify.studies.sdm", "sdm_verify.schedules", "sdm_verify.harness",
         "analytic") + fingerprint.BASE_MODULES


#: cells.py, and SDM's schedule (reached through the schedule registry by name, so not an import of cells.py)
STARTS = ("sdm_verify.studies.schedules.cells", "sdm_verify.studies.sdm.schedule")


def code(solver: str | None = None) -> dict:
    """The fingerprint of the code that computes a cell: the study's modules (cells.py and its imports in SCOPE), the
    solver's own code (harness.fingerprint.solver_part: its class's modules and their imports), and the versions of
    torch, numpy, scipy and sdm_verify. A change elsewhere (another solver, a report) keeps the stored cells."""
    part = fingerprint.modules_part("schedules", STARTS, SCOPE)
    out = {"schedules": part.digest}
    if solver is not None:
        from ... import solvers
        out["solver"] = fingerprint.solver_part(type(solvers.get(solver))).digest
    return {**out, **fingerprint.versions()}


def config(cell: Cell, with_published: bool, warm_from: int | None) -> dict:
    return {"study": STUDY, "solver": cell.solver, "target": cell.target, "process": "ve", "N": cell.N,
            "final": cell.final, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "published": bool(with_published),
            "starts": list(cell.starts), "warm_from": warm_from, "code": code(cell.solver)}


def run(quick: bool = True, solvers=None, target_names=None, ns=None, with_published: bool = True,
        progress: bool = True, store=None, budget_s: float | None = None) -> list[Row]:
    """The study's rows (module docstring). store: a results-store path (or an open ResultStore); None computes
    everything in memory. budget_s: no cell is started after this many seconds; a cell not stored and not computed
    is one row `optimal` with status "not computed (budget)" (a rerun with the store computes it)."""
    t0 = time.perf_counter()
    cells = plan(quick, solvers, target_names, ns)
    own = store is not None and not isinstance(store, ResultStore)
    db = ResultStore(store) if own else store
    rows: list[Row] = []
    best: dict = {}  # (solver, target, final) -> (N, optimal grid) of the largest N done so far
    try:
        with Progress(len(cells), "schedules", enabled=progress) as bar:
            for cell in cells:
                prev = best.get((cell.solver, cell.target, cell.final))
                warm = prev if prev is not None and prev[0] < cell.N else None
                cfg = config(cell, with_published, warm[0] if warm else None)
                hit = db.get(cfg) if db is not None else None
                if hit is not None:
                    got = [Row.from_dict(d) for d in hit["rows"]]
                elif budget_s is not None and time.perf_counter() - t0 >= budget_s:
                    rows.append(Row(cell.solver, cell.target, "ve", cell.N, "optimal", [], math.inf, 0.0,
                                    f"not computed (budget {budget_s:g} s)", final=cell.final))
                    bar.update()
                    continue
                else:
                    got = compute(cell.solver, cell.target, cell.N, cell.final, with_published,
                                  warm[1] if warm else None, cell.starts)
                    if db is not None:
                        db.put(cfg, {"rows": [r.to_dict() for r in got]})
                rows += got
                opt = next(r for r in got if r.schedule == "optimal")
                if opt.grid and math.isfinite(opt.error):
                    best[(cell.solver, cell.target, cell.final)] = (cell.N, opt.grid)
                bar.update()
    finally:
        if own:
            db.close()
    return rows


def efficiency(rows: list[Row]) -> dict:
    """(solver, target, N, schedule, final) -> error(optimal) / error(schedule) (None where either is missing or 0)."""
    best = {(r.solver, r.target, r.N, r.final): r.error for r in rows if r.schedule == "optimal"}
    out = {}
    for r in rows:
        o = best.get((r.solver, r.target, r.N, r.final))
        key = (r.solver, r.target, r.N, r.schedule, r.final)
        out[key] = None if o is None or not math.isfinite(r.error) or r.error <= 0 else o / r.error
    return out
