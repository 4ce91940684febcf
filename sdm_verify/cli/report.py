"""`sdm-verify report`: the report rebuilt from a results store, nothing recomputed (orders refitted from the
stored errors)."""

from __future__ import annotations

from pathlib import Path

from .. import report
from ..real.run import RUNS_META
from .common import UsageError, open_store, print_summary


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="regenerate the theory report from a results store (no recomputation)",
                       description="Rebuild the theory report from the rows stored by `sdm-verify theory`: orders "
                       "are refitted from the stored errors, nothing is recomputed.")
    r.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    r.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite, the baseline)")
    r.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    with open_store(db, must_exist=True) as store:
        results, record = report.load_results(store)
        if not results and not store.get_meta(RUNS_META):
            raise UsageError(f"--db: {db} holds no theory or real-model results (run `sdm-verify theory` first)")
        md, _ = report.write_report(store, results, out, record)
    print_summary(results, md)
    return 0
