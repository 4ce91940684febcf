"""The record of a theory run kept in the results store, and the results rebuilt from it (no recomputation).

`record_run` keeps, beside the rows, the run's cases (with the store keys of their rows), its wall and compute time
and the `environment()`; `load_results(store)` finds each case's rows by those keys and refits its order
(harness.results.results_from, which calls harness.orders.fit_order), so `sdm-verify report` redraws a run exactly.
"""

from __future__ import annotations

import platform
from importlib import metadata

from ..harness import cases as theory
from ..harness import verdicts
from ..harness.results import CaseResult, results_from, solver_family
from ..harness.store import ResultStore, config_key
from ..harness.sweep import SIGMA_MAX, SIGMA_MIN, SWEEP_VERSION, Cell, registered_solver
from .meta_keys import RUN_META, SYMBOLIC_META


def case_record(case: theory.Case, ns=None) -> dict:
    """The JSON record of a theory case kept in the store's meta: what `report` needs to find its rows (their
    store keys, so a later SWEEP_VERSION does not orphan them) and to draw it, without solver code."""
    ns = [int(n) for n in (ns or case.ns())]
    try:
        family = solver_family(registered_solver(case.solver, case.process))
    except ValueError:
        family = "other"
    keys = [config_key(Cell(case.target, case.solver, case.schedule, n, case.process).config()) for n in ns]
    return dict(solver=case.solver, target=case.target, process=case.process, schedule=case.schedule,
                claimed=case.claimed, ns=ns, keys=keys, family=family)


def record_run(store: ResultStore, cases: list[dict], *, wall_s: float, cell_s: float, n_cells: int,
               n_computed: int, jobs: int, mode: str, symbolic: dict) -> None:
    """Keep what the report needs beside the rows: the cases, the run's wall time, the summed compute time of its
    cells (stored per row, so it survives resumed runs), the number of cells, the environment."""
    store.set_meta(SYMBOLIC_META, {**store.get_meta(SYMBOLIC_META, {}), **symbolic})
    store.set_meta(RUN_META, dict(cases=cases, wall_s=wall_s, cell_s=cell_s, n_cells=n_cells, n_computed=n_computed,
                                  jobs=jobs, mode=mode, environment=environment()))


def load_results(store: ResultStore) -> tuple[list[CaseResult], dict]:
    """The last theory run's cases rebuilt from the store (no recomputation), and the run's meta record.

    Without a run record (a store filled by other code), every sigma_min-measured row group with one
    (solver, target, process, schedule) becomes a case."""
    run = store.get_meta(RUN_META)
    symbolic = store.get_meta(SYMBOLIC_META, {})
    if run is None:
        return results_from(_group_rows(store), symbolic), {}
    by_key = {r["key"]: r for r in store.rows()}
    pairs, missing = [], []
    for case in run["cases"]:
        rows = [by_key.get(k) for k in case["keys"]]
        if any(r is None for r in rows):
            missing.append(f"{case['solver']}-{case['target']}-{case['process']}-{case['schedule']}")
            continue
        pairs.append((case, rows))
    if missing:
        raise ValueError(f"db: {len(missing)} case(s) of the recorded run have no stored rows (e.g. {missing[0]}); "
                         "rerun `sdm-verify theory` with this --db")
    return results_from(pairs, symbolic), run


def _group_rows(store: ResultStore) -> list[tuple[dict, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for r in store.rows(final=False):
        if "error" not in r or "solver" not in r or r.get("kind") == "real":
            continue
        if r.get("sigma_min") != SIGMA_MIN or r.get("sigma_max") != SIGMA_MAX or r.get("solver_params"):
            continue
        key = (r["solver"], r["target"], r["process"], r["schedule"], r.get("version"))
        groups.setdefault(key, []).append(r)
    out = []
    for (solver, target, process, schedule, _), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["n"])
        if len(rows) < 3:
            continue
        try:
            case = case_record(theory.Case(solver, target, process if process != "any" else "ve", schedule),
                               ns=[r["n"] for r in rows])
        except ValueError:
            continue
        case["process"] = process
        out.append((case, rows))
    return out


def environment() -> dict:
    """Versions and the fixed inputs of the measurements (seeds, dtype, sigma range)."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "scipy", "sympy", "POT", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return dict(versions=versions, platform=platform.platform(), dtype="float64", sigma_min=SIGMA_MIN,
                sigma_max=SIGMA_MAX, sweep_version=SWEEP_VERSION, tol=verdicts.TOL)
