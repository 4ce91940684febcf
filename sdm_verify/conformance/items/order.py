"""Item `order`: the measured convergence order per case, against the claim.

For each process the solver declares (else for the canonical sigma-space solver on the VE and VP configurations of
harness.cases.validation_configs), the error at sigma_min is measured on theory's nested grids (harness.cases.
grid_sizes), the order is fitted on the asymptotic window, and each case is judged by the rules of
harness.verdicts.verdict. The claim passes only if every case agrees; the overall measured order is the median over
the cases with a window (also per process and per schedule).

These runs are the bulk of the check: `measure` runs them before the items (their counted NFE feed the nfe item),
`item` judges them last (the cases carry the symbolic item's order).
"""

from __future__ import annotations

import statistics

from ... import schedules, solvers
from ...adapters.spec import LoadedSolver
from ...harness import cases as theory
from ...harness.results import solver_family
from ..context import Context
from ..declared import ClaimError
from ..probing import grid, run_row, sigma_bounds, unreadable_row
from ..result import Item

#: configurations per process for solvers that expose `processes` (sigma-defined grids: any process can use them)
PROCESS_CONFIGS = (("gauss-4d", "edm"), ("gmm-8d", "edm"), ("gmm-8d", "logsnr"))
QUICK_CONFIGS = (("gmm-8d", "edm"), ("gmm-8d", "logsnr"))

#: one case of the plan: (process label, solver, target, grid process, schedule, grid sizes N)
PlannedCase = tuple[str, object, str, str | None, str, tuple[int, ...]]


def plan(loaded: LoadedSolver, ctx: Context, targets=None, quick: bool = False) -> list[PlannedCase]:
    """The order measurements: per process (or per default configuration), restricted to `targets`; `quick` keeps
    gmm-8d on the EDM and logSNR grids."""
    native = loaded.registered is not None and solvers.needs_process(loaded.registered)
    planned = []
    for process, solver in ctx.variants:
        if process is None:
            configs = [(t, p, s) for t, p, s in theory.validation_configs(ctx.claimed_order)
                       if not quick or (t, s) in QUICK_CONFIGS]
        else:
            configs = [(t, process, s) for t, s in (QUICK_CONFIGS if quick else PROCESS_CONFIGS)]
        for target, proc, schedule in configs:
            if targets and target not in targets:
                continue
            planned.append((proc, solver, target, proc if process is not None else None, schedule,
                            theory.grid_sizes(target, ctx.claimed_order, native=native)))
    return planned


def measure(loaded: LoadedSolver, planned: list[PlannedCase], ctx: Context) -> list[tuple[dict, list[dict]]]:
    """Run the plan: (case, its rows in N order) per planned case. A canonical solver on sigma-defined grids runs
    once for VE and VP (the cells are shared)."""
    family = solver_family(loaded.solver)
    cache: dict[tuple, dict] = {}
    pairs = []
    for label, solver, target, grid_process, schedule, ns in planned:
        try:
            lo, hi = sigma_bounds(solver)
        except ClaimError as exc:  # every run of this case: an error row naming the unreadable claim
            rows = [{"n": n, **unreadable_row(exc)} for n in ns]
            ctx.step(len(ns))
            pairs.append((dict(solver=loaded.name, target=target, process=label, schedule=schedule,
                               claimed=ctx.claimed_order, family=family), rows))
            continue
        key_process = grid_process if grid_process is not None else (
            label if schedules.uses_process(schedule) else "any")
        rows = []
        for n in ns:
            key = (target, key_process, schedule, n, lo, hi)
            if key not in cache:
                cache[key] = run_row(solver, target, grid(schedule, n, label, lo, hi), lo)
            rows.append({"n": n, **cache[key]})
            ctx.step()
        pairs.append((dict(solver=loaded.name, target=target, process=label, schedule=schedule,
                           claimed=ctx.claimed_order, family=family), rows))
    return pairs


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def item(solver, ctx: Context) -> Item:
    """Judge the measured cases (ctx.cases()): pass only if every case agrees with ctx.claimed_order. Fails without
    measurements when the declared order cannot be read (ctx.unreadable["order"])."""
    if "order" in ctx.unreadable:
        measured = dict(overall=None, per_process={}, per_schedule={},
                        rule="median over the cases with an asymptotic window")
        return Item("order", "fail", "—", "a readable claimed order", f"unreadable claim {ctx.unreadable['order']}; "
                    "no order measured (declare a positive number as `order`, or pass --claimed-order)",
                    dict(measured_order=measured, agree=0, cases=0, unreadable=ctx.unreadable["order"]))
    results = ctx.cases()
    raised = next((r["detail"] for _, rows in ctx.measured for r in rows if r.get("status") == "error"), None)
    ok = [r for r in results if r.measurement.ok]
    by_process, by_schedule = {}, {}
    for r in ok:
        by_process.setdefault(r.measurement.process, []).append(r.measurement.order)
        by_schedule.setdefault(r.measurement.schedule, []).append(r.measurement.order)
    measured = dict(overall=_median([r.measurement.order for r in ok]),
                    per_process={p: _median(v) for p, v in by_process.items()},
                    per_schedule={s: _median(v) for s, v in by_schedule.items()},
                    rule="median over the cases with an asymptotic window")
    n_agree = sum(r.verdict == "agree" for r in results)
    bad = [f"{r.measurement.process}/{r.measurement.target}/{r.measurement.schedule}: {r.reason}"
           for r in results if r.verdict != "agree"]
    fmt = lambda d: ", ".join(f"{k} {v:.2f}" for k, v in d.items() if v is not None) or "—"  # noqa: E731
    detail = (f"{n_agree}/{len(results)} cases agree; per process {fmt(measured['per_process'])}; per schedule "
              f"{fmt(measured['per_schedule'])}" + ("; " + "; ".join(bad) if bad else "")
              + (f"; the solver raised {raised}" if raised else ""))
    overall = measured["overall"]
    claimed = ctx.claimed_order
    return Item("order", "pass" if n_agree == len(results) else "fail",
                "—" if overall is None else f"{overall:.2f}", f"claimed {claimed:g} (verdicts.verdict)", detail,
                dict(measured_order=measured, agree=n_agree, cases=len(results)))
