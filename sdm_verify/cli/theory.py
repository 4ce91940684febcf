"""`sdm-verify theory`, the main job: its arguments and its run.

The run computes the theory matrix (sdm_verify.harness.cases) into a working store (WORK_DB, gitignored), whose rows
are keyed by configuration and by the fingerprint of the code that computes them (sdm_verify.harness.fingerprint):
changed code is computed again, and an interrupted run resumes. It writes the report to --out, then compares the
run with the baseline store (BASELINE_DB, the committed report's store; read only): the cells and orders that moved
beyond their tolerances and every verdict that changed (sdm_verify.harness.baseline). A changed verdict is exit
status 1, unless --update-baseline made this run the new baseline.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import report, solvers
from ..errors import StoreError
from ..harness import cases as matrix
from ..harness.baseline import compare, write_baseline
from ..harness.store import ResultStore, config_key
from ..harness.sweep import CODE_META, registered_solver, run_cells
from ..harness.symbolic_order import symbolic_order
from ..real.run import RUNS_META
from ..report.meta_keys import FULL_META, RUN_META, SDM_DATA_META, SDM_META, SYMBOLIC_META
from ..studies.sdm.report import sdm_section
from .common import check_output_dir, print_summary

#: `theory --quick`: every default config (all three targets and meters, every process, four schedules) for the
#: solvers that carry the findings: first and second order references (euler, heun, dpmpp_2m), both known deviations
#: (dpmpp_3m, ipndm: claimed 3 and 4, measured 2) beside the corrected rule (dpmpp_3m_lagrange) and a third-order
#: predictor-corrector (unipc). rk4 is left out: 4 NFE per step on grids to N = 2048 would double the run; about a
#: minute on 2 cores without it.
QUICK_SOLVERS = ("euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_lagrange", "unipc", "ipndm")
#: the working store (gitignored): the cells this code computed; an interrupted run resumes from it
WORK_DB = "results/theory.sqlite"
#: the store a run is compared with: the committed report's store
BASELINE_DB = "reports/theory/results.sqlite"
#: the run's comparison with the baseline, kept in the working store's meta
COMPARISON_META = "baseline_comparison"


def add_parser(sub) -> None:
    """The `theory` subcommand's arguments."""
    t = sub.add_parser(
        "theory", help="measure every solver's convergence order on exact targets, write the report and compare it "
        "with the baseline",
        description="Run the theory matrix (sdm_verify.harness.cases: every solver x target/process/schedule config on "
        f"nested grids) into a working store (--db, default {WORK_DB}), write DIR/index.md, DIR/index.html and PNG "
        f"figures, and compare the run with the baseline store (--baseline, default {BASELINE_DB}, the committed "
        "report's store). The working store keys each cell by its configuration and by a fingerprint of the code "
        "that computes it (solver, schedule, harness and oracle modules; torch, numpy, scipy and sdm_verify "
        "versions): changed code is computed again, unchanged cells are reused, and an interrupted run resumes. The "
        "comparison lists the cells whose error moved, the orders that moved (beyond the tolerances stated in "
        "sdm_verify.harness.baseline) and every verdict that changed. Exit status 0 whenever it ran and no verdict "
        "changed against the baseline, also when measured orders deviate from claims: the findings are the product, "
        "not an error (use `validate` to gate on a claim); 1 when a verdict (agree / deviates / no window) changed "
        "against the baseline, unless --update-baseline accepted it; 2 on bad usage.")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help=f"a representative subset: {', '.join(QUICK_SOLVERS)} on the default configs "
                      "(about a minute on 2 cores)")
    mode.add_argument("--full", action="store_true",
                      help="every process x schedule on every target (harness.cases.full_cases; slow)")
    t.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    t.add_argument("--db", metavar="FILE", help=f"working store (default: {WORK_DB}, gitignored); reruns reuse the "
                   "cells computed by the same code and resume an interrupted run")
    base = t.add_mutually_exclusive_group()
    base.add_argument("--baseline", metavar="FILE", help=f"the store to compare with (default: {BASELINE_DB}; "
                      "read only). The report's real-model sections come from the working store if `sdm-verify "
                      "real` recorded runs there, else from the baseline")
    base.add_argument("--no-baseline", action="store_true", help="compare with nothing")
    t.add_argument("--update-baseline", action="store_true",
                   help="after the comparison, make this run the baseline (its cells, record and sections; the "
                   "baseline's real-model runs are kept): for regenerating the committed report. Exit status 0 "
                   "even when verdicts changed")
    t.add_argument("--solvers", nargs="+", metavar="NAME", help="registered solver names (default: all)")
    t.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: os.cpu_count() = %(default)s)")
    t.set_defaults(func=run)


def solver_names(names) -> list[str]:
    known = solvers.available()
    for n in names:
        if n not in known:
            raise ValueError(f"--solvers: unknown solver {n!r}; available: {', '.join(known)}")
    return list(dict.fromkeys(names))


def symbolic_orders(cases) -> dict:
    """Symbolic orders (harness.symbolic_order) of the cases' solvers; None where no coefficient functions."""
    out, first = {}, {}
    for c in cases:
        first.setdefault(c.solver, c)
    for name, c in tqdm(first.items(), desc="symbolic orders", disable=None, leave=False):
        try:
            sym = symbolic_order(registered_solver(name, c.process))
        except Exception as exc:  # a failed expansion must not cost the sweep: report it, show no symbolic order
            print(f"sdm-verify: warning: symbolic order of {name} failed ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            sym = None
        out[name] = sym.to_dict() if sym is not None else None
    return out


def stores(args) -> tuple[Path, Path | None]:
    """(working store, baseline store or None) of the run, checked before any work: --out can be written, --db can be
    written (file and folder; run() opens it before the sweep, refusing a damaged or foreign one); --baseline, where
    it exists, is an undamaged store of this code (read only: never written, its journal mode never changed), and
    with --update-baseline it can be replaced. Every refusal is one line naming the option."""
    check_output_dir(args.out, "--out")
    # its pages, tables and schema are checked when run() opens it, before the sweep and before anything is written
    db = ResultStore.check_path(args.db if args.db is not None else WORK_DB, name="--db", writable=True)
    if args.no_baseline:
        if args.update_baseline:
            raise ValueError("--update-baseline: not allowed with --no-baseline")
        return db, None
    baseline = ResultStore.check_path(args.baseline if args.baseline is not None else BASELINE_DB,
                                      name="--baseline", writable=False)
    if baseline.resolve() == db.resolve():
        raise ValueError(f"--baseline: {baseline} is also the working store (--db): a baseline is compared with, never "
                         "computed into; give --db another file, or --no-baseline")
    if baseline.is_file():
        ResultStore(baseline, readonly=True, name="--baseline").close()
    elif args.baseline and not args.update_baseline:
        raise StoreError(f"--baseline: no such file {baseline}")
    if args.update_baseline:  # it is replaced after the run: refuse now what would fail then
        ResultStore.check_path(baseline, name="--baseline", writable=True)
        wal = Path(f"{baseline}-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise StoreError(f"--update-baseline: {baseline} is open for writing elsewhere ({wal.name} beside it); "
                             "close that process")
    return db, baseline


def compare_with_baseline(store, baseline: Path | None, configs: list[dict], results):
    """The run's cells and cases against the baseline store (harness.baseline.compare), or None without one."""
    if baseline is None or not baseline.is_file():
        return None
    with ResultStore(baseline, readonly=True, name="--baseline") as base:
        note = ""
        try:
            base_results, _ = report.load_results(base)
        except ValueError as exc:
            base_results, note = None, f"the baseline's cases could not be read ({exc}): cells compared only"
        return compare([(cfg, store.get(cfg)) for cfg in configs], results, base, base_results,
                       store.get_meta(CODE_META, {}), note)


def run(args) -> int:
    """Run `sdm-verify theory` with parsed `args`. Returns the exit status."""
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead
    if args.jobs < 1:
        raise ValueError(f"--jobs: must be >= 1 (got {args.jobs})")
    names = solver_names(args.solvers) if args.solvers else list(QUICK_SOLVERS) if args.quick else None
    db, baseline = stores(args)
    cases = matrix.full_cases(names) if args.full else matrix.default_cases(names)
    mode = "full" if args.full else "quick" if args.quick else "default"
    out = Path(args.out)
    records = [report.case_record(c) for c in cases]
    cells = [cell for c in cases for cell in c.cells()]
    full_cells = matrix.full_sampler_cells(names)
    configs = [c.config() for c in cells + full_cells]
    with ResultStore(db, name="--db") as store:
        keys = {config_key(c.config()) for c in cells}
        n_computed = len(keys - store.keys())
        n_full = len({config_key(c) for c in configs[len(cells):]} - store.keys())
        t0 = time.perf_counter()
        rows = run_cells(cells, store, jobs=args.jobs, progress=True, desc=f"theory cells ({len(keys)})")
        wall = time.perf_counter() - t0
        per_cell = {config_key(c.config()): float(r.get("wall", 0.0)) for c, r in zip(cells, rows, strict=True)}
        cell_s = sum(per_cell.values())
        report.record_run(store, records, wall_s=wall, cell_s=cell_s, n_cells=len(keys), n_computed=n_computed,
                          jobs=args.jobs, mode=mode, symbolic=symbolic_orders(cases))
        full_rows = run_cells(full_cells, store, jobs=args.jobs, progress=True, desc="full-sampler cells")
        store.set_meta(FULL_META, report.full_sampler_markdown(full_rows))
        if not args.solvers:
            data: dict = {}
            with warnings.catch_warnings():  # the 1-D quadrature's unconverged-refinement warnings: noted in the text
                warnings.simplefilter("ignore", RuntimeWarning)
                store.set_meta(SDM_META, sdm_section(quick=args.quick, data=data))
            store.set_meta(SDM_DATA_META, data)
        results, record = report.load_results(store)
        comparison = compare_with_baseline(store, baseline, configs, results)
        if comparison is not None:
            store.set_meta(COMPARISON_META, comparison.to_dict())
        extra = report.extra_sections(store)
        # real-model runs are recorded by `sdm-verify real` (in the baseline by default): shown from there
        if store.get_meta(RUNS_META) or baseline is None or not baseline.is_file():
            md, _ = report.write_report(store, results, out, record, extra)
        else:
            with ResultStore(baseline, readonly=True, name="--baseline") as base:
                md, _ = report.write_report(base, results, out, record, extra)
        if args.update_baseline:
            n_rows = write_baseline(store, {config_key(c) for c in configs}, baseline,
                                    theory_meta=(RUN_META, SYMBOLIC_META, FULL_META, SDM_META, SDM_DATA_META))
    print(f"{len(keys)} cells ({n_computed} computed) and {len(full_cells)} full-sampler cells ({n_full} computed) "
          f"in {wall:.1f} s on {args.jobs} worker(s); working store: {db}")
    print_summary(results, md)
    if comparison is None:
        print("no baseline compared" + (f" (no store at {baseline})" if baseline is not None else ""))
    else:
        print("\n".join(comparison.lines()))
    if args.update_baseline:
        print(f"baseline updated: {baseline} now holds this run ({n_rows} rows, its real-model runs kept)")
        return 0
    if comparison is not None and comparison.changed_verdicts:
        print(f"exit status 1: {comparison.changed_verdicts} verdict(s) changed against the baseline "
              "(--update-baseline accepts them)")
        return 1
    return 0
