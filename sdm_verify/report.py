"""The theory report: order tables, convergence figures and the environment, as Markdown and HTML.

`load_results(store)` rebuilds every case's OrderMeasurement from stored rows (refitting with orders.fit_order,
nothing recomputed); `theory_report(results, out_dir)` draws the figures (matplotlib Agg, PNG beside the pages)
and returns a `Report`; `Report.add_section(title, markdown, figures)` appends further sections (SDM curvature,
allocation, bound-vs-W2, schedule comparisons); `Report.write(out_dir)` writes index.md (GitHub-readable) and
index.html (self-contained but for the PNGs, referenced by relative path). The HTML is rendered from the same
Markdown by `markdown_to_html`, a converter for the subset the report uses, so the two never disagree.
"""

from __future__ import annotations

import html
import math
import platform
import re
import shutil
import statistics
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .harness import cases as theory
from .harness import verdicts
from .harness.convergence import OrderMeasurement
from .harness.results import VERDICTS, CaseResult, results_from, solver_family
from .harness.store import ResultStore, config_key
from .harness.sweep import SIGMA_MAX, SIGMA_MIN, SWEEP_VERSION, Cell, solver_for

__all__ = ["CaseResult", "Report", "Section", "load_results", "markdown_to_html", "record_run", "results_from",
           "theory_report", "environment", "solver_family"]

RUN_META = "theory_run"  # meta key of the last `sdm-verify theory` run: its cases, wall time, environment
SYMBOLIC_META = "symbolic_orders"  # meta key: solver name -> SymbolicOrder.to_dict() or None

FAMILIES = {  # solver module (unipc split by corrector) -> label of its figure panel
    "rk": "Runge-Kutta (EDM Euler, Heun, midpoint, RK4)",
    "native": "native process time (Euler, Heun in t)",
    "dpm": "DPM-Solver and DPM-Solver++",
    "deis": "DEIS (tAB)",
    "ipndm": "iPNDM",
    "unipc": "UniPC (predictor + corrector)",
    "unip": "UniP (predictor only)",
}


# ------------------------------------------------------------------------------------------- results


def case_record(case: theory.Case, ns=None) -> dict:
    """The JSON record of a theory case kept in the store's meta: what `report` needs to find its rows (their
    store keys, so a later SWEEP_VERSION does not orphan them) and to draw it, without solver code."""
    ns = [int(n) for n in (ns or case.ns())]
    try:
        family = solver_family(solver_for(Cell(case.target, case.solver, case.schedule, 2, case.process).config()))
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


# ------------------------------------------------------------------------------------------- environment


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


SEEDS = ("targets: gauss-4d from numpy default_rng(20260401), gmm-8d from default_rng(20260402), gmm-1d fixed "
         "parameters (harness.targets); gmm-8d errors on a fixed sample of 64 start points of p_sigma_max drawn "
         "with torch.Generator().manual_seed(0), the same for every N (SyncMeter); gauss-4d and gmm-1d errors are "
         "exact (Bures, quantiles) and use no samples")


def _rules() -> str:
    """The measurement rules, copied from theory.py's docstring."""
    doc = theory.__doc__ or ""
    start = doc.find("Rules")
    return doc[start:].split("\n", 1)[1].strip() if start >= 0 else doc.strip()


# ------------------------------------------------------------------------------------------- formatting


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _measured(m: OrderMeasurement) -> str:
    if not m.ok:
        return "no window"
    lo, hi = m.ci
    return f"{m.order:.2f} [{lo:.2f}, {hi:.2f}]"


def _symbolic(s: dict | None) -> str:
    if not s:
        return "—"
    mark = "†" if s["scope"].startswith("single-step") else "‡" if s["scope"].startswith("predictor") else ""
    return f"{s['general']} / {s['uniform']}{mark}"


def _cell(text: str) -> str:
    """Escape a Markdown table cell (pipes; newlines become <br>)."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _by_solver(results: list[CaseResult]) -> dict[str, list[CaseResult]]:
    out: dict[str, list[CaseResult]] = {}
    for r in results:
        out.setdefault(r.measurement.solver, []).append(r)
    return out


def _solver_verdict(rs: list[CaseResult]) -> str:
    counts = {v: sum(r.verdict == v for r in rs) for v in VERDICTS}
    if counts["agree"] == len(rs):
        return f"agree ({len(rs)}/{len(rs)})"
    parts = [f"{v} on {counts[v]}/{len(rs)}" for v in ("deviates", "no window") if counts[v]]
    return ", ".join(parts)


def _case_of(r: CaseResult) -> theory.Case:
    m = r.measurement
    return theory.Case(m.solver, m.target, m.process, m.schedule)


def _notes(rs: list[CaseResult]) -> str:
    """The recorded reasons of the solver's deviating cases (verdicts.known_deviation), each once."""
    reasons = dict.fromkeys(verdicts.known_deviation(_case_of(r)) for r in rs if r.verdict != "agree")
    return "; ".join(k for k in reasons if k) or verdicts.KNOWN_DEVIATIONS.get(rs[0].measurement.solver, "")


def order_table(results: list[CaseResult]) -> str:
    """solver | claimed | symbolic | measured per case with CI | verdict | note (KNOWN_DEVIATIONS)."""
    rows = []
    for solver, rs in _by_solver(results).items():
        claimed = rs[0].measurement.claimed
        per_case = "\n".join(f"{r.config}: {_measured(r.measurement)}" + (f" {r.verdict}" if r.measurement.ok else "")
                             for r in rs)
        rows.append([f"`{solver}`", f"{claimed:g}" if claimed is not None else "—", _symbolic(rs[0].symbolic),
                     per_case, _solver_verdict(rs), _notes(rs)])
    return _table(["solver", "claimed", "symbolic (general / uniform)", "measured per case [CI]", "verdict", "note"],
                  rows)


def case_table(results: list[CaseResult]) -> str:
    """One row per case: the fitted window and the verdict's reason."""
    rows = []
    for r in results:
        m = r.measurement
        window = f"N={m.fit.ns[m.fit.window[0]]}..{m.fit.ns[m.fit.window[1]]}" if m.ok else "—"
        rows.append([f"`{m.solver}`", r.config, m.metric, _measured(m), window, r.verdict, r.reason])
    return _table(["solver", "target/process/schedule", "metric", "measured [CI]", "window", "verdict", "reason"],
                  rows)


def slope_table(rs: list[CaseResult]) -> str:
    """The local slope table of each case: N, error, NFE, the slope to the next N; window points marked *."""
    rows = []
    for r in rs:
        m = r.measurement
        i0, i1 = m.fit.window if m.ok else (-1, -1)
        for j, n in enumerate(m.ns):
            slope = _num(m.slopes[j]) if j < len(m.slopes) else ""
            mark = "*" if i0 <= j <= i1 else ""
            rows.append([r.config if j == 0 else "", f"{n}{mark}", str(m.nfe[j]), f"{m.errors[j]:.3e}", slope])
    return _table(["case", "N (* window)", "NFE", "error", "slope to next N"], rows)


def findings(results: list[CaseResult]) -> str:
    """Deviations and cases without an asymptotic window, stated plainly; then symbolic-vs-claim mismatches."""
    lines = []
    by_solver = _by_solver(results)
    for solver, rs in by_solver.items():
        bad = [r for r in rs if r.verdict != "agree"]
        if not bad:
            continue
        m0 = rs[0].measurement
        cases = "; ".join(f"{r.config} {_measured(r.measurement)}" if r.verdict == "deviates"
                          else f"{r.config} no window ({r.reason})" for r in bad)
        reasons = dict.fromkeys(verdicts.known_deviation(_case_of(r)) for r in bad)  # ordered, unique
        known = "; ".join(k for k in reasons if k)
        if known and None not in reasons:
            tag = f" Known deviation: {known}."
        elif known:
            tag = f" Partly known ({known}); the other cases are not a known deviation."
        else:
            tag = " Not a known deviation."
        claim = f"{m0.claimed:g}" if m0.claimed is not None else "none"
        lines.append(f"- **`{solver}`** (claimed order {claim}) fails on {len(bad)} of {len(rs)} cases: {cases}.{tag}")
    sym = []
    for solver, rs in by_solver.items():
        s, claimed = rs[0].symbolic, rs[0].measurement.claimed
        if s and claimed is not None and s["general"] < claimed:
            where = "on uniform steps only" if s["uniform"] >= claimed else "even on uniform steps"
            sym.append(f"- `{solver}`: symbolic order {s['general']} for general step ratios (claimed {claimed:g}; "
                       f"{s['uniform']} {where}); leading error term `{s['leading_general']}`.")
    n_ok = sum(all(r.verdict == "agree" for r in rs) for rs in by_solver.values())
    out = [f"{n_ok} of {len(by_solver)} solvers agree with their claimed order on every case; "
           f"{sum(r.verdict == 'agree' for r in results)} of {len(results)} cases agree."]
    if lines:
        out += ["", "Measured deviations:", "", *lines]
    if sym:
        out += ["", "Symbolic order below the claim (general step ratios):", "", *sym]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- figures


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def convergence_figure(results: list[CaseResult], path: Path, title: str) -> None:
    """Log-log error vs counted NFE, one panel per solver family, with reference slopes NFE^-p, p = 1..4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    present = list(dict.fromkeys(r.family for r in results))
    fams = [f for f in FAMILIES if f in present] + sorted(f for f in present if f not in FAMILIES)
    ncol = min(2, len(fams))  # each panel keeps its legend on its right, clear of the data
    nrow = math.ceil(len(fams) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.8 * ncol, 4.2 * nrow), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(fams):]:
        ax.set_visible(False)
    metric = results[0].measurement.metric
    for ax, fam in zip(axes.flat, fams, strict=False):
        rs = [r for r in results if r.family == fam]
        pts = [(n, e) for r in rs for n, e in zip(r.measurement.nfe, r.measurement.errors, strict=True)
               if math.isfinite(e) and e > 0]
        if not pts:
            continue
        for k, r in enumerate(rs):
            m = r.measurement
            xy = [(n, e) for n, e in zip(m.nfe, m.errors, strict=True) if math.isfinite(e) and e > 0]
            if not xy:
                continue
            label = f"{m.solver} (p = {m.order:.2f})" if m.ok else f"{m.solver} (no window)"
            marker = "os^vD<>ph"[k % 9]
            line, = ax.loglog(*zip(*xy, strict=True), marker=marker, ms=5, lw=1.3, label=label, mfc="white",
                              ls="-" if r.verdict == "agree" else "--")
            if m.ok:  # the fitted window: filled markers over the hollow ones
                i0, i1 = m.fit.window
                ax.loglog(m.nfe[i0:i1 + 1], m.errors[i0:i1 + 1], marker=marker, ms=5, ls="none",
                          color=line.get_color())
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        ax.set_xlim(x0 / 1.3, x1 * 1.3)
        ax.set_ylim(y0 / 3, y1 * 3)
        anchor = statistics.median(e for n, e in pts if n == x0)
        for p in (1, 2, 3, 4):  # reference slopes through the median error at the smallest NFE
            ax.loglog([x0, x1], [anchor, anchor * (x0 / x1) ** p], color="0.55", lw=0.9, ls=":", zorder=0)
            xe = min(x1, x0 * (anchor / (y0 / 2.5)) ** (1 / p))  # where the line leaves the panel
            ax.text(xe, anchor * (x0 / xe) ** p, f"NFE$^{{-{p}}}$ ", fontsize=8, color="0.4", ha="right",
                    va="bottom")
        floor = 100 * max(r.measurement.floor for r in rs)
        if floor > y0 / 3:
            ax.axhline(floor, color="tab:red", lw=0.8, ls="-.", label="100 × reference floor")
        ax.set_title(FAMILIES.get(fam, f"{fam} solvers"), fontsize=10)
        ax.set_xlabel("NFE (counted denoiser calls)", fontsize=9)
        ax.set_ylabel(f"error at σ_min ({metric})", fontsize=9)
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle(f"{title}: error vs NFE (dashed: deviates from its claim; filled: fitted window)", fontsize=12)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- the report


@dataclass
class Section:
    title: str
    markdown: str
    figures: list = field(default_factory=list)  # (path or matplotlib Figure, caption)


class Report:
    """A report of titled Markdown sections with figures, written as index.md and index.html."""

    def __init__(self, title: str, intro: str = ""):
        self.title, self.intro = title, intro
        self.sections: list[Section] = []

    def add_section(self, title: str, markdown: str, figures=()) -> Section:
        """Append a section. figures: paths to image files (copied beside the pages unless already there) or
        matplotlib Figures (saved as PNG), each optionally as (figure, caption)."""
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title: must be a non-empty string (got {title!r})")
        figs = [f if isinstance(f, tuple) else (f, "") for f in figures]
        section = Section(title, markdown, figs)
        self.sections.append(section)
        return section

    def _figure_files(self, out: Path) -> list[list[tuple[str, str]]]:
        placed = []
        for k, s in enumerate(self.sections):
            names = []
            for j, (fig, caption) in enumerate(s.figures):
                if hasattr(fig, "savefig"):
                    name = f"{_slug(s.title)[:40] or 'section'}-{k}-{j}.png"
                    fig.savefig(out / name, dpi=100)
                else:
                    src = Path(fig)
                    if not src.is_file():
                        raise ValueError(f"figures: no such file {src}")
                    dest = out / src.name
                    if src.resolve() != dest.resolve():
                        shutil.copyfile(src, dest)
                    name = src.name
                names.append((name, caption))
            placed.append(names)
        return placed

    def markdown(self, placed=None) -> str:
        parts = [f"# {self.title}", ""]
        if self.intro:
            parts += [self.intro, ""]
        parts += ["Contents: " + " · ".join(f"[{s.title}](#{_slug(s.title)})" for s in self.sections), ""]
        for k, s in enumerate(self.sections):
            parts += [f"## {s.title}", "", s.markdown.strip(), ""]
            for name, caption in (placed[k] if placed else []):
                parts += [f"![{caption or name}]({name})", ""]
        return "\n".join(parts).rstrip() + "\n"

    def write(self, out_dir) -> tuple[Path, Path]:
        """Write out_dir/index.md and out_dir/index.html (figures beside them); returns both paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = self.markdown(self._figure_files(out))
        (out / "index.md").write_text(md, encoding="utf-8")
        (out / "index.html").write_text(markdown_to_html(md, title=self.title), encoding="utf-8")
        return out / "index.md", out / "index.html"


def theory_report(results: list[CaseResult], out_dir, run: dict | None = None) -> Report:
    """The theory report of `results` (figures drawn into out_dir now); `run` is the run record (record_run)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = run or {}
    n_solvers = len(_by_solver(results))
    rep = Report("sdm-verify: convergence orders on exact targets",
                 f"{len(results)} cases, {n_solvers} solvers. Errors are measured at σ_min = {SIGMA_MIN:g} "
                 f"against the exact law p_σ_min (the final step to σ = 0 is excluded); orders are fitted on the "
                 f"asymptotic window of nested grids N = 2^j (harness.orders). Verdict rules: see Environment.")
    rep.add_section("Findings", findings(results))
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
        path = out / f"convergence-{_slug(config)}.png"
        convergence_figure(rs, path, config)
        figs.append((path, f"error vs NFE on {config}"))
    rep.add_section("Convergence figures",
                    "Log-log error at σ_min against counted NFE, one figure per target/process/schedule and one "
                    "panel per solver family. Dotted grey lines: reference slopes NFE^-p, p = 1..4, through the "
                    "median error at the smallest NFE. The legend gives each fitted order.", figs)
    slopes = [f"<details><summary>{html.escape(solver)}: local slopes</summary>\n\n{slope_table(rs)}\n\n</details>"
              for solver, rs in _by_solver(results).items()]
    rep.add_section("Local slopes", "Local slopes `p_j = log(e_j / e_{j+1}) / log(N_{j+1} / N_j)`; N marked * "
                    "lie in the fitted window.\n\n" + "\n\n".join(slopes))
    rep.add_section("Environment", _environment_md(run))
    return rep


def _environment_md(run: dict) -> str:
    env = run.get("environment") or environment()
    rows = [[k, str(v)] for k, v in env["versions"].items()]
    wall, cell_s = run.get("wall_s"), run.get("cell_s")
    lines = [
        _table(["package", "version"], rows), "",
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


# ------------------------------------------------------------------------------------------- Markdown -> HTML

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
details table{font-size:.78em}details{margin:.4em 0}summary{cursor:pointer}code{background:#f4f4f4;padding:0 .2em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}figure{margin:1.5em 0}img{max-width:100%}
figcaption{font-size:.9em;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}"""


def _inline(text: str) -> str:
    """Inline Markdown: `code`, **bold**, *italic*, [text](url), <br>; everything else escaped."""
    codes: list[str] = []

    def keep(m):
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    t = re.sub(r"`([^`]+)`", keep, text)
    t = html.escape(t, quote=False).replace("&lt;br&gt;", "<br>")
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', t)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], t)


def _split_row(line: str) -> list[str]:
    """Cells of a pipe-table row; escaped pipes (\\|) stay in their cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(md: str, title: str = "report") -> str:
    """HTML for the Markdown subset the report writes: headings, paragraphs, bullet lists, pipe tables,
    fenced code, images on their own line and raw HTML lines (<details>, <summary>)."""
    body, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
        elif s.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            level, text = len(m.group(1)), m.group(2)
            body.append(f'<h{level} id="{_slug(text)}">{_inline(text)}</h{level}>')
            i += 1
        elif s.startswith("<"):
            body.append(s)
            i += 1
        elif m := re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", s):
            alt, src = html.escape(m.group(1)), html.escape(m.group(2))
            body.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')
            i += 1
        elif s.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            rows = [_split_row(x) for x in lines[i:j]]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            trs = ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[2:]]
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
            i = j
        elif re.match(r"[-*]\s", s):
            items = []
            while i < len(lines) and lines[i].strip():
                t = lines[i].strip()
                if re.match(r"[-*]\s", t):
                    items.append(t[2:])
                elif items:
                    items[-1] += " " + t
                i += 1
            body.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        else:
            para, i = [s], i + 1
            while i < len(lines) and lines[i].strip() and not re.match(r"(#|\||```|<|[-*]\s|!\[)", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{_inline(' '.join(para))}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
