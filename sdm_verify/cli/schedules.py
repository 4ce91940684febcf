"""`sdm-verify schedules`: every scored schedule against the exact optimal grid (sdm_verify.studies.schedules)."""

from __future__ import annotations

from ..errors import InputError
from .common import add_store_options, study_outputs, write_json


def add_parser(sub) -> None:
    s = sub.add_parser("schedules", help="schedules against the exact optimal N-step grid (efficiency, figures)",
                       description="Compute the certified error-minimising N-step grid of each solver on exact "
                       "targets, score the fixed and published schedules against it, and write OUT/index.md with "
                       "figures. --quick: euler, heun, dpmpp_2m on gauss-1d (N(0, 0.5^2), VE 80 -> 0.002), "
                       "N in {2, 3, 4, 8}; the full matrix: docs/schedules.md.")
    s.add_argument("--quick", action="store_true", help="the quick matrix (about a minute)")
    s.add_argument("--json", metavar="FILE", help="write the rows (solver, target, process, N, schedule, grid, "
                   "error) as a JSON list")
    s.add_argument("--out", default="reports/schedules", help="report folder (default: reports/schedules)")
    s.add_argument("--budget", type=float, metavar="SECONDS", help="start no new cell after this many seconds; "
                   "cells left out are marked in the report and computed by a rerun with the same store")
    add_store_options(s, "results/schedules.sqlite")
    s.add_argument("--no-published", action="store_true", help="score only the fixed schedules (EDM, logSNR, "
                   "uniform t) against the optimum")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..studies.schedules import report, study

    if args.budget is not None and not args.budget >= 0:
        raise InputError(f"--budget: must be a number of seconds >= 0 (got {args.budget})")
    out_json, out, store = study_outputs(args)
    rows = study.run(quick=args.quick, with_published=not args.no_published, store=store, budget_s=args.budget)
    if out_json is not None:
        write_json(out_json, [r.to_dict() for r in rows])
    print(f"wrote {report.write(rows, out)}")
    uncertified = [r for r in rows if r.schedule == "optimal" and r.status != "ok"]
    skipped = [r for r in uncertified if r.status.startswith("not computed")]
    if skipped:
        print(f"{len(skipped)} cell(s) not computed within the budget; rerun with the same --store to finish them")
        uncertified = [r for r in uncertified if r not in skipped]
    if uncertified:
        print(f"{len(uncertified)} cell(s) without a certified optimum: " + ", ".join(
            f"{r.solver}/{r.target}/N={r.N} ({r.status})" for r in uncertified))
    return 0
