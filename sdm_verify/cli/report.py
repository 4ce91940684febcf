"""`sdm-verify report`: the report rebuilt from a results store, nothing recomputed (orders refitted from the
stored errors)."""

from __future__ import annotations

from .. import report
from ..errors import StoreError
from ..real.run import RUNS_META
from .common import UsageError, check_output_dir, open_store, print_summary


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="regenerate the theory report from a results store (no recomputation)",
                       description="Rebuild the theory report from the rows stored by `sdm-verify theory`: orders "
                       "are refitted from the stored errors, nothing is recomputed.")
    r.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    r.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite, the baseline)")
    r.set_defaults(func=run)


def run(args) -> int:
    out = check_output_dir(args.out, "--out")  # before reading anything: a report that cannot be written is refused
    db = args.db if args.db is not None else out / "results.sqlite"
    # read only: the store (often the committed baseline) is never written, its journal mode never changed
    with open_store(db, must_exist=True, readonly=True) as store:
        try:
            results, record = report.load_results(store)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a run record or rows of another shape
            raise StoreError(f"--db: {db} holds a theory run record this code cannot read ({type(exc).__name__}: "
                             f"{exc}): rebuild it with `sdm-verify theory --db {db}`") from None
        if not results and not store.get_meta(RUNS_META):
            raise UsageError(f"--db: {db} holds no theory or real-model results (run `sdm-verify theory` first)")
        md, _ = report.write_report(store, results, out, record)
    print_summary(results, md)
    return 0
