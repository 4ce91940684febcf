"""The `sdm-verify` command line. Exit status: 0 success, 1 a check failed, 2 bad usage (one-line message)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

#: `theory --quick`: every default config (all three targets and meters, every process, four schedules) for the
#: solvers that carry the findings: first and second order references (euler, heun, dpmpp_2m), both known deviations
#: (dpmpp_3m, ipndm: claimed 3 and 4, measured 2) beside the corrected rule (dpmpp_3m_lagrange) and a third-order
#: predictor-corrector (unipc). rk4 is left out: 4 NFE per step on grids to N = 2048 would double the run; about a
#: minute on 2 cores without it.
QUICK_SOLVERS = ("euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_lagrange", "unipc", "ipndm")


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


def _solver_names(names) -> list[str]:
    from . import solvers

    known = solvers.available()
    for n in names:
        if n not in known:
            raise UsageError(f"--solvers: unknown solver {n!r}; available: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _symbolic_orders(cases) -> dict:
    """Symbolic orders (sdm_verify.crosscheck) of the cases' solvers; None where no coefficient functions."""
    from tqdm.auto import tqdm

    from .crosscheck import symbolic_order
    from .sweep import Cell, solver_for

    out, first = {}, {}
    for c in cases:
        first.setdefault(c.solver, c)
    for name, c in tqdm(first.items(), desc="symbolic orders", disable=None, leave=False):
        try:
            sym = symbolic_order(solver_for(Cell(c.target, name, c.schedule, 2, c.process).config()))
        except Exception as exc:  # a failed expansion must not cost the sweep: report it, show no symbolic order
            print(f"sdm-verify: warning: symbolic order of {name} failed ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            sym = None
        out[name] = sym.to_dict() if sym is not None else None
    return out


def _open_store(db: Path, must_exist: bool):
    import sqlite3

    from .store import ResultStore

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
    import torch

    from . import report, theory
    from .store import config_key
    from .sweep import run_cells

    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead
    if args.jobs < 1:
        raise UsageError(f"--jobs: must be >= 1 (got {args.jobs})")
    names = _solver_names(args.solvers) if args.solvers else list(QUICK_SOLVERS) if args.quick else None
    cases = theory.full_cases(names) if args.full else theory.default_cases(names)
    mode = "full" if args.full else "quick" if args.quick else "default"
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    records = [report.case_record(c) for c in cases]
    cells = [cell for c in cases for cell in c.cells()]
    with _open_store(db, must_exist=False) as store:
        keys = {config_key(c.config()) for c in cells}
        n_computed = len(keys - store.keys())
        t0 = time.perf_counter()
        rows = run_cells(cells, store, jobs=args.jobs, progress=True, desc=f"theory cells ({len(keys)})")
        wall = time.perf_counter() - t0
        per_cell = {config_key(c.config()): float(r.get("wall", 0.0)) for c, r in zip(cells, rows, strict=True)}
        cell_s = sum(per_cell.values())
        report.record_run(store, records, wall_s=wall, cell_s=cell_s, n_cells=len(keys), n_computed=n_computed,
                          jobs=args.jobs, mode=mode, symbolic=_symbolic_orders(cases))
        full_rows = run_cells(theory.full_sampler_cells(names), store, jobs=args.jobs, progress=True,
                              desc="full-sampler cells")
        store.set_meta(FULL_META, theory.full_sampler_markdown(full_rows))
        if not args.solvers:
            import warnings

            from .sdm_report import sdm_section

            data: dict = {}
            with warnings.catch_warnings():  # the 1-D quadrature's unconverged-refinement warnings: noted in the text
                warnings.simplefilter("ignore", RuntimeWarning)
                store.set_meta(SDM_META, sdm_section(quick=args.quick, data=data))
            store.set_meta(SDM_DATA_META, data)
        results, run = report.load_results(store)
        extra = _extra_sections(store)
    md, _ = _write_report(report, results, out, run, extra)
    print(f"{len(keys)} cells ({n_computed} computed) in {wall:.1f} s on {args.jobs} worker(s); db: {db}")
    _print_summary(results, md)
    return 0


SDM_META = "sdm_section"
FULL_META = "full_sampler_section"
#: sections stored as Markdown in the store's meta by `theory`, shown by `theory` and `report`: (meta key, title)
EXTRA_SECTIONS = ((FULL_META, "The full sampler: the final step into sigma = 0"),
                  (SDM_META, "SDM: the paper's claims and the Wasserstein bound on exact targets"))


SDM_DATA_META = "sdm_figure_data"


def _extra_sections(store) -> list[tuple[str, str, list]]:
    """(title, markdown, figures) of the stored extra sections; the SDM figures are drawn from stored numbers."""
    from .sdm_report import sdm_figures

    figures = {SDM_META: sdm_figures(store.get_meta(SDM_DATA_META) or {})}
    return [(title, store.get_meta(key), figures.get(key, [])) for key, title in EXTRA_SECTIONS if store.get_meta(key)]


def _write_report(report, results, out, run, extra):
    rep = report.theory_report(results, out, run)
    for title, md, figures in extra:
        rep.add_section(title, md, figures)
    return rep.write(out)


def _cmd_report(args) -> int:
    from . import report

    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    with _open_store(db, must_exist=True) as store:
        results, run = report.load_results(store)
        extra = _extra_sections(store)
    if not results:
        raise UsageError(f"--db: {db} holds no theory results (run `sdm-verify theory` first)")
    md, _ = _write_report(report, results, out, run, extra)
    _print_summary(results, md)
    return 0


# ------------------------------------------------------------------------------------------- validate


def load_solver(spec: str):
    """(name, solver): a registered name gives (name, None); `module:attr` gives the imported callable, a Solver
    class instantiated without arguments, or a solver instance."""
    from . import solvers

    if ":" not in spec:
        if spec in solvers.available():
            return spec, None
        raise UsageError(f"SOLVER: unknown solver {spec!r}; give a registered name ({', '.join(solvers.available())})"
                         " or module:attr")
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise UsageError(f"SOLVER: expected module:attr (got {spec!r})")
    if os.getcwd() not in sys.path:  # console scripts do not put the working directory on the path
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod)
    except Exception as exc:
        raise UsageError(f"SOLVER: cannot import module {mod!r} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"SOLVER: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(f"SOLVER: cannot instantiate {spec} without arguments ({exc})") from None
    if not callable(obj):
        raise UsageError(f"SOLVER: {spec} is not callable")
    try:
        inspect.signature(obj).bind(None, None, None)
    except TypeError:
        raise UsageError(f"SOLVER: {spec} is not callable as solver(denoiser, x, sigmas)") from None
    except ValueError:  # no signature to inspect (a builtin): try it
        pass
    return spec, obj


def validate(spec: str, claimed: float | None = None, targets=None):
    """Measure `spec`'s order on theory.DEFAULT_CONFIGS (restricted to `targets`) against `claimed` (default: the
    solver's declared `order`). Returns (results, symbolic dict or None, claimed)."""
    from tqdm.auto import tqdm

    from . import report, theory
    from .crosscheck import symbolic_order
    from .store import config_key
    from .sweep import Cell, compute_cell, grid_for, measure_run, solver_for

    name, solver = load_solver(spec)
    probe = solver if solver is not None else solver_for(Cell("gmm-8d", name, "edm", 2).config())
    if claimed is None:
        claimed = getattr(probe, "order", None)
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool):
            raise UsageError(f"--claimed-order: required, {spec} declares no numeric `order`")
    if not math.isfinite(claimed) or claimed <= 0:
        raise UsageError(f"--claimed-order: must be a positive number (got {claimed})")
    configs = [c for c in theory.validation_configs(claimed) if not targets or c[0] in targets]
    try:
        sym = symbolic_order(probe)
    except Exception:  # an outside solver's update_rule that sympy cannot expand: no symbolic order
        sym = None
    symbolic = sym.to_dict() if sym is not None else None
    family = report.solver_family(probe)

    cache: dict[str, dict] = {}  # canonical solvers on sigma-defined grids share cells across processes
    pairs = []
    total = sum(len(theory.grid_sizes(t, claimed)) for t, _, _ in configs)
    with tqdm(total=total, desc=f"validate {name}", disable=None, leave=False) as bar:
        for target, process, schedule in configs:
            rows = []
            for n in theory.grid_sizes(target, claimed):
                cfg = Cell(target, name, schedule, n, process).config()
                key = config_key(cfg)
                if key not in cache:
                    cache[key] = (compute_cell(cfg) if solver is None
                                  else measure_run(solver, target, grid_for(cfg), cfg["sigma_min"]))
                rows.append({"n": n, **cache[key]})
                bar.update(1)
            case = dict(solver=name, target=target, process=process, schedule=schedule, claimed=float(claimed),
                        family=family)
            pairs.append((case, rows))
    return report.results_from(pairs, {name: symbolic}), symbolic, float(claimed)


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def validation_json(spec: str, claimed: float, results, symbolic) -> dict:
    orders = [r.measurement.order for r in results if r.measurement.ok]
    cases = []
    for r in results:
        m = r.measurement
        cases.append(dict(target=m.target, process=m.process, schedule=m.schedule, ns=m.ns, nfe=m.nfe,
                          nfe_per_step=[nf / n for nf, n in zip(m.nfe, m.ns, strict=True)], metric=m.metric,
                          errors=[_finite(e) for e in m.errors], floor=m.floor, measured_order=m.order,
                          ci=list(m.ci) if m.ci else None, window=list(m.fit.window) if m.fit.window else None,
                          slopes=[_finite(s) for s in m.slopes], verdict=r.verdict, agrees=r.verdict == "agree",
                          reason=r.reason))
    per_step = sorted({c["nfe_per_step"][-1] for c in cases})
    return dict(solver=spec, claimed_order=claimed, measured_order=statistics.median(orders) if orders else None,
                measured_order_rule="median over the cases with an asymptotic window",
                nfe_per_step=per_step[0] if len(per_step) == 1 else per_step, symbolic=symbolic,
                verdict="agree" if all(r.verdict == "agree" for r in results) else "deviates", cases=cases)


def _cmd_validate(args) -> int:
    import torch

    torch.set_num_threads(1)
    results, symbolic, claimed = validate(args.solver, args.claimed_order, args.targets)
    data = validation_json(args.solver, claimed, results, symbolic)
    sym = (f"general ratios {symbolic['general']} / uniform steps {symbolic['uniform']} ({symbolic['scope']})"
           if symbolic else "none (no update_rule exposed)")
    print(f"solver {args.solver}: claimed order {claimed:g}; symbolic order: {sym}")
    header = ["target/process/schedule", "N", "NFE/step", "measured [CI]", "verdict", "reason"]
    rows = []
    for r, c in zip(results, data["cases"], strict=True):
        m = r.measurement
        rows.append([r.config, f"{m.ns[0]}..{m.ns[-1]}", f"{c['nfe_per_step'][-1]:g}",
                     f"{m.order:.2f} [{m.ci[0]:.2f}, {m.ci[1]:.2f}]" if m.ok else "no window", r.verdict, r.reason])
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False)) + "  " + row[-1])
    n_ok = sum(r.verdict == "agree" for r in results)
    measured = "—" if data["measured_order"] is None else f"{data['measured_order']:.2f}"
    print(f"\nmeasured order (median of cases) {measured}; {n_ok}/{len(results)} cases agree: "
          f"{data['verdict'].upper()}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if data["verdict"] == "agree" else 1


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

    from . import targets

    t = sub.add_parser(
        "theory", help="measure every solver's convergence order on exact targets and write the report",
        description="Run the theory matrix (sdm_verify.theory: every solver x target/process/schedule config on "
        "nested grids) into a resumable results store and write DIR/index.md, DIR/index.html and PNG figures. "
        "Exit status 0 whenever it ran, also when measured orders deviate from claims: the findings are the "
        "product, not an error (use `validate` to gate on a claim); 2 on bad usage.")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help=f"a representative subset: {', '.join(QUICK_SOLVERS)} on the default configs "
                      "(about a minute on 2 cores)")
    mode.add_argument("--full", action="store_true",
                      help="every process x schedule on every target (theory.full_cases; slow)")
    t.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    t.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite); reruns resume")
    t.add_argument("--solvers", nargs="+", metavar="NAME", help="registered solver names (default: all)")
    t.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: os.cpu_count() = %(default)s)")
    t.set_defaults(func=_cmd_theory)

    r = sub.add_parser("report", help="regenerate the theory report from a results store (no recomputation)",
                       description="Rebuild the theory report from the rows stored by `sdm-verify theory`: orders "
                       "are refitted from the stored errors, nothing is recomputed.")
    r.add_argument("--out", default="reports/theory", metavar="DIR", help="report directory (default: %(default)s)")
    r.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite)")
    r.set_defaults(func=_cmd_report)

    v = sub.add_parser(
        "validate", help="check one solver's claimed order; exit 1 if any case disagrees",
        description="Measure SOLVER's convergence order on the default theory configs, its symbolic order (when it "
        "exposes update_rule) and its counted NFE per step, and compare with the claimed order by the theory "
        "rules (|measured - claimed| <= 0.2 on mixtures; measured >= claimed - 0.2 on the Gaussian). "
        "Exit status 0 if every case agrees, 1 otherwise, 2 on bad usage.")
    v.add_argument("solver", metavar="SOLVER", help="a registered solver name, or module:attr naming a callable "
                   "solver(denoiser, x, sigmas) -> x, a Solver class (built without arguments) or instance")
    v.add_argument("--claimed-order", type=float, metavar="P", help="the order to check (default: the solver's "
                   "declared `order`)")
    v.add_argument("--json", metavar="FILE", help="write the measurements and the verdict as JSON")
    v.add_argument("--targets", nargs="+", choices=targets.available(), metavar="TARGET",
                   help=f"restrict to these targets ({', '.join(targets.available())}; default: all)")
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
