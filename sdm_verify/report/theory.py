"""The theory page: findings, the order matrix and table, the cases, convergence figures, local slopes and the
environment of the run, from the judged cases (`load_results`); and the full-sampler section `sdm-verify theory`
stores beside them.

Orders are fitted on the asymptotic window of nested grids N = 2^j (harness.orders); the verdict of a case follows
harness.verdicts (|measured - claimed| <= TOL on mixtures, measured >= claimed - TOL on the Gaussian).
"""

from __future__ import annotations

import html
from pathlib import Path

from ..harness import cases as theory
from ..harness.results import CaseResult
from ..harness.sweep import SIGMA_MIN
from .figures import convergence_figure
from .order_tables import by_solver, case_table, findings, order_matrix, order_table, slope_table
from .page import Report
from .records import environment
from .tables import slug, table

SEEDS = ("targets: gauss-4d from numpy default_rng(20260401), gmm-8d from default_rng(20260402), gmm-1d fixed "
         "parameters (harness.targets); gmm-8d errors on a fixed sample of 64 start points of p_sigma_max drawn "
         "with torch.Generator().manual_seed(0), the same for every N (SyncMeter); gauss-4d and gmm-1d errors are "
         "exact (Bures, quantiles) and use no samples")


def _rules() -> str:
    """The measurement rules, copied from the docstring of harness.cases."""
    doc = theory.__doc__ or ""
    start = doc.find("Rules")
    return doc[start:].split("\n", 1)[1].strip() if start >= 0 else doc.strip()


def theory_report(results: list[CaseResult], out_dir, run: dict | None = None) -> Report:
    """The theory report of `results` (figures drawn into out_dir now); `run` is the run record (record_run)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = run or {}
    n_solvers = len(by_solver(results))
    rep = Report("sdm-verify: convergence orders on exact targets",
                 f"{len(results)} cases, {n_solvers} solvers. Errors are measured at σ_min = {SIGMA_MIN:g} "
                 f"against the exact law p_σ_min (the final step to σ = 0 is excluded); orders are fitted on the "
                 f"asymptotic window of nested grids N = 2^j (harness.orders). Verdict rules: see Environment.")
    rep.add_section("Findings", findings(results))
    rep.add_section("Order matrix", order_matrix(results))
    rep.add_section("Order table", order_table(results) + "\n\n" + (
        "Symbolic: global order of the solver's own coefficient functions expanded by sympy, for general step "
        "ratios / uniform steps (harness.symbolic_order); † single-step methods: quadrature part only, exact up "
        "to order 2; ‡ predictor-corrector: the corrected step; — no coefficient functions exposed. Measured: "
        "least-squares order on the asymptotic window [bracket, harness.orders]; the verdict per case follows "
        "verdicts.verdict."))
    rep.add_section("Cases", case_table(results))
    configs: dict[str, list[CaseResult]] = {}
    for r in results:
        configs.setdefault(r.config, []).append(r)
    figs = []
    for config, rs in configs.items():
        path = out / f"convergence-{slug(config)}.png"
        convergence_figure(rs, path, config)
        figs.append((path, f"error vs NFE on {config}"))
    rep.add_section("Convergence figures",
                    "Log-log error at σ_min against counted NFE, one figure per target/process/schedule and one "
                    "panel per solver family. Dotted grey lines: reference slopes NFE^-p, p = 1..4, through the "
                    "median error at the smallest NFE. The legend gives each fitted order.", figs)
    slopes = [f"<details><summary>{html.escape(solver)}: local slopes</summary>\n\n{slope_table(rs)}\n\n</details>"
              for solver, rs in by_solver(results).items()]
    rep.add_section("Local slopes", "Local slopes `p_j = log(e_j / e_{j+1}) / log(N_{j+1} / N_j)`; N marked * "
                    "lie in the fitted window.\n\n" + "\n\n".join(slopes))
    rep.add_section("Environment", _environment_md(run))
    return rep


def _environment_md(run: dict) -> str:
    env = run.get("environment") or environment()
    rows = [[k, str(v)] for k, v in env["versions"].items()]
    wall, cell_s = run.get("wall_s"), run.get("cell_s")
    lines = [
        table(["package", "version"], rows), "",
        f"- dtype: {env['dtype']}; σ range {env['sigma_min']:g} .. {env['sigma_max']:g}; sweep version "
        f"{env['sweep_version']}; platform {env['platform']}",
        f"- seeds: {SEEDS}",
        f"- sweep: {run.get('mode', 'unknown')} run of {run.get('n_cells', '?')} distinct cells, "
        f"{run.get('n_computed', '?')} computed by this run (the others reused from the store) in "
        f"{'?' if wall is None else f'{wall:.1f}'} s wall time on {run.get('jobs', '?')} worker(s); the cells' "
        f"own compute times sum to {'?' if cell_s is None else f'{cell_s:.1f}'} s",
        "", "Measurement rules (theory.py):", "", "```", _rules(), "```",
    ]
    return "\n".join(lines)


def full_sampler_markdown(rows: list[dict]) -> str:
    """One row per solver: W2 to the exact p_0 and counted NFE at each N, per target."""
    by = {}
    for r in rows:
        by.setdefault(r["solver"], {})[(r["target"], r["n"])] = r
    head = ["solver"] + [f"{t} N={n}" for t in theory.FULL_SAMPLER_TARGETS for n in theory.FULL_SAMPLER_NS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for solver, cells in by.items():
        vals = []
        for t in theory.FULL_SAMPLER_TARGETS:
            for n in theory.FULL_SAMPLER_NS:
                r = cells.get((t, n))
                vals.append("—" if r is None else f"{float(r['error']):.2e} ({r['nfe']})")
        lines.append(f"| `{solver}` | " + " | ".join(vals) + " |")
    return ("W2 of the whole sampler at sigma = 0 (exact Bures on gauss-4d, exact 1-D W2 on gmm-1d) against the exact "
            "data law, EDM grid with its last step into 0 (counted NFE in brackets). This error does not converge "
            "with N at the rate of the solver: the final step is a fixed-size step into 0 (docs/theory.md §5 (b)), so "
            "it is reported here, apart from the order measurements at sigma_min.\n\n" + "\n".join(lines))
