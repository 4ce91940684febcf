"""The `sdm-verify` command line. Exit status: 0 success, 1 a check failed, 2 bad usage (one-line message)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


class UsageError(ValueError):
    """Bad command-line usage: reported on one line, exit status 2."""


def _cmd_check_oracle(args) -> int:
    from analytic.selfcheck import run_checks

    rows = run_checks()
    w = max(len(r.name) for r in rows)
    print(f"{'check':<{w}}  {'value':>9}  {'limit':>7}  ok    detail")
    for r in rows:
        print(f"{r.name:<{w}}  {r.value:>9.2e}  {r.limit:>7.0e}  {'yes' if r.ok else 'NO ':<4}  {r.detail}")
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} oracle self-checks passed")
    return 1 if failed else 0



# ------------------------------------------------------------------------------------------- theory, report


def _open_store(db: Path, must_exist: bool):
    import sqlite3

    from .harness.store import ResultStore

    if must_exist and not db.is_file():
        raise UsageError(f"--db: no such file {db}")
    try:
        return ResultStore(db)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--db: {db} is not a results database ({exc})") from None


def _print_summary(results, md: Path) -> None:
    counts = {v: sum(r.verdict == v for r in results) for v in ("agree", "deviates", "no window")}
    print(f"{len(results)} cases: {counts['agree']} agree, {counts['deviates']} deviate, "
          f"{counts['no window']} without an asymptotic window")
    print(f"report: {md} and {md.with_suffix('.html')}")


def _cmd_theory(args) -> int:
    """`sdm-verify theory`, the main job (sdm_verify.theory_job)."""
    from .theory_job import run

    return run(args, _print_summary)


def _extra_sections(store) -> list[tuple[str, str, list]]:
    """(title, markdown, figures) of the sections `theory` stored (sdm_verify.report.assemble.extra_sections)."""
    from .report import extra_sections

    return extra_sections(store)


def _write_report(report, results, out, run, extra, store=None):
    """The whole report (sdm_verify.report.assemble.write_report); `report` is the sdm_verify.report package."""
    return report.write_report(store, results, out, run, extra)


def _cmd_report(args) -> int:
    from . import report
    from .real.run import RUNS_META

    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    with _open_store(db, must_exist=True) as store:
        results, run = report.load_results(store)
        if not results and not store.get_meta(RUNS_META):
            raise UsageError(f"--db: {db} holds no theory or real-model results (run `sdm-verify theory` first)")
        md, _ = report.write_report(store, results, out, run)
    _print_summary(results, md)
    return 0


# ------------------------------------------------------------------------------------------- real


def _cmd_real(args) -> int:
    """`sdm-verify real`: measure a real model into the store, then rewrite the report (theory + real sections)."""
    from . import report
    from .real.cli import run_from_args

    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    with _open_store(db, must_exist=False) as store:
        record = run_from_args(args, store)
        if not record:  # a non-zero rank of a torchrun launch: rank 0 writes the report
            return 0
        results, run = report.load_results(store)
        extra = _extra_sections(store)
        md, _ = _write_report(report, results, out, run, extra, store)
    print(f"report: {md}")
    return 0


# ------------------------------------------------------------------------------------------- validate


def load_solver(spec: str, config: dict | None = None):
    """SPEC -> sdm_verify.adapters.spec.LoadedSolver: a registered name, module:attr (a callable, a class built
    without arguments or an instance), diffusers:ClassName or kdiffusion:sample_name (with `config`)."""
    from .adapters import spec as specs

    return specs.load(spec, config)


def _read_config(text: str | None) -> dict | None:
    """--config: a JSON object, given inline or as the path of a JSON file."""
    if text is None:
        return None
    source = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source = Path(text).read_text(encoding="utf-8")
    try:
        config = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config: not a JSON object or a JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config: expected a JSON object, got {type(config).__name__}")
    return config


def _positive(value, option: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{option}: must be a positive number (got {value})")


def validate(spec: str, claimed: float | None = None, targets=None, *, config: dict | None = None,
             claimed_nfe_per_step: float | None = None, quick: bool = False, progress: bool = True):
    """The conformance check (sdm_verify.conformance.check) of `spec` against `claimed` (default: the solver's
    declared `order`). Returns the ConformanceResult."""
    from .conformance import check

    loaded = load_solver(spec, config)
    if claimed is None:
        claimed = getattr(loaded.solver, "order", None)
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool):
            raise UsageError(f"--claimed-order: required, {spec} declares no numeric `order`")
    _positive(claimed, "--claimed-order")
    if claimed_nfe_per_step is not None:
        _positive(claimed_nfe_per_step, "--claimed-nfe-per-step")
    return check(loaded, float(claimed), config, claimed_nfe_per_step=claimed_nfe_per_step, targets=targets,
                 quick=quick, progress=progress)


def validation_json(result) -> dict:
    """The --json document: claimed and measured orders (overall, per process, per schedule), NFE, symbolic order,
    identities, float32 drift, final step, determinism, items, verdict and the per-case details."""
    return result.to_json()


def _cmd_validate(args) -> int:
    import torch

    torch.set_num_threads(1)
    config = _read_config(args.config)
    if args.claimed_order is not None:
        _positive(args.claimed_order, "--claimed-order")
    if args.claimed_nfe_per_step is not None:
        _positive(args.claimed_nfe_per_step, "--claimed-nfe-per-step")
    result = validate(args.solver, args.claimed_order, args.targets, config=config,
                      claimed_nfe_per_step=args.claimed_nfe_per_step, quick=args.quick)
    print(result.table())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(validation_json(result), indent=2) + "\n", encoding="utf-8")
    return 0 if result.ok else 1


# ------------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sdm-verify", description="Verification suite for diffusion ODE samplers. Exit status: 0 "
                "success, 1 a checked claim failed, 2 bad usage.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("check-oracle", help="print the oracle's self-checks (reference floor, W2 agreements)",
                       description="Run the oracle's self-checks against independent closed forms and print them.")
    c.set_defaults(func=_cmd_check_oracle)

    from .harness import targets
    from .theory_job import add_parser as add_theory_parser

    add_theory_parser(sub, _cmd_theory)

    r = sub.add_parser("report", help="regenerate the theory report from a results store (no recomputation)",
                       description="Rebuild the theory report from the rows stored by `sdm-verify theory`: orders "
                       "are refitted from the stored errors, nothing is recomputed.")
    r.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    r.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite)")
    r.set_defaults(func=_cmd_report)

    from .real.cli import add_parser as add_real_parser

    add_real_parser(sub, _cmd_real)

    v = sub.add_parser(
        "validate", help="conformance check of one solver (orders, symbolic order, NFE, exactness identities, "
        "float32, final step, determinism); exit 1 if a claim fails",
        description="Run the conformance check (sdm_verify.conformance) on SPEC: its measured convergence order on "
        "exact targets per process and schedule, judged against the claimed order by the theory rules "
        "(|measured - claimed| <= 0.2 on mixtures; measured >= claimed - 0.2 on the Gaussian); its symbolic order "
        "(own update_rule, or a declared equivalent registered solver checked to 1e-10); counted NFE against the "
        "declared nfe(n) or --claimed-nfe-per-step; exactness on a point-mass target and affinity on a Gaussian "
        "target (1e-12); float32 drift (<= 1e-4); the final step into sigma = 0 (reported); bitwise determinism. "
        "Prints a verdict table. Exit status 0 if every item passes, 1 if one fails, 2 on bad usage.")
    v.add_argument("solver", metavar="SPEC", help="a registered solver name; module:attr naming a callable "
                   "solver(denoiser, x, sigmas) -> x, a class (built without arguments) or an instance; "
                   "diffusers:SchedulerClass (with --config); kdiffusion:sample_name (with --config for its keyword "
                   "arguments, e.g. '{\"eta\": 0}')")
    v.add_argument("--config", metavar="JSON", help="diffusers scheduler config or k-diffusion sampler keyword "
                   "arguments: a JSON object, inline or as a file path")
    v.add_argument("--claimed-order", type=float, metavar="P", help="the order to check (default: the solver's "
                   "declared `order`)")
    v.add_argument("--claimed-nfe-per-step", type=float, metavar="K", help="check counted NFE = K N exactly "
                   "(default: the solver's declared nfe(n), if any)")
    v.add_argument("--json", metavar="FILE", help="write the measurements, items and verdict as JSON")
    v.add_argument("--targets", nargs="+", choices=targets.available(), metavar="TARGET",
                   help=f"restrict the order measurements to these targets ({', '.join(targets.available())}; "
                   "default: all)")
    v.add_argument("--quick", action="store_true", help="measure orders on gmm-8d (EDM and logSNR grids) only")
    v.set_defaults(func=_cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with status 2 on bad usage
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sdm-verify: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
