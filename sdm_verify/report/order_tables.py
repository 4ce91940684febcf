"""The theory page's tables: the compact order matrix, the long order table, the cases, the local slopes and the
findings, from judged cases (harness.results.CaseResult; verdict rules in harness.verdicts).

A case's order p is the least-squares slope of -log error against log N on its asymptotic window, with a confidence
interval [lo, hi] (harness.orders); the local slope between nested grids is
p_j = log(e_j / e_{j+1}) / log(N_{j+1} / N_j).
"""

from __future__ import annotations

from ..harness import cases as theory
from ..harness import verdicts
from ..harness.convergence import OrderMeasurement
from ..harness.results import VERDICTS, CaseResult
from .page import verdict_span
from .tables import num, table


def measured(m: OrderMeasurement) -> str:
    """"order [lo, hi]" (the CI of the fitted window), or "no window"."""
    if not m.ok:
        return "no window"
    lo, hi = m.ci
    return f"{m.order:.2f} [{lo:.2f}, {hi:.2f}]"


def symbolic(s: dict | None) -> str:
    """"general / uniform" symbolic order, † single-step (quadrature part), ‡ predictor-corrector; — none."""
    if not s:
        return "—"
    mark = "†" if s["scope"].startswith("single-step") else "‡" if s["scope"].startswith("predictor") else ""
    return f"{s['general']} / {s['uniform']}{mark}"


def by_solver(results: list[CaseResult]) -> dict[str, list[CaseResult]]:
    """The results grouped by solver, in order of first appearance."""
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


#: the legend above the order matrix; verdict colours in HTML, the marks in both pages
MATRIX_LEGEND = (
    "Each cell: the order measured for the solver (row) on the target/process/schedule (column); hover a cell for its "
    "confidence interval and the verdict's reason. Colour: " + verdict_span("agree", "agrees with the claim") + " · "
    + verdict_span("deviates", "deviates ✗") + " · " + verdict_span("no window", "— no asymptotic window")
    + "; blank: case not in the matrix. The order table below gives every CI and the notes.")


def order_matrix(results: list[CaseResult]) -> str:
    """The compact order matrix: solvers as rows, configurations (target/process/schedule) as columns, the measured
    order in each cell as a verdict span (coloured in HTML; CI and reason in its title), under a legend."""
    configs = list(dict.fromkeys(r.config for r in results))
    rows = []
    for solver, rs in by_solver(results).items():
        by_config = {r.config: r for r in rs}
        claimed = rs[0].measurement.claimed
        cells = [_matrix_cell(by_config[c]) if c in by_config else "" for c in configs]
        rows.append([f"`{solver}`", f"{claimed:g}" if claimed is not None else "—", *cells])
    head = ["solver", "claimed", *(c.replace("/", "<br>") for c in configs)]
    return MATRIX_LEGEND + "\n\n" + table(head, rows)


def _matrix_cell(r: CaseResult) -> str:
    m = r.measurement
    if r.verdict == "no window":
        reason = r.reason if r.reason.startswith("no asymptotic window") else f"no asymptotic window: {r.reason}"
        return verdict_span("no window", "—", f"{m.solver} on {r.config}: {reason}")
    text = f"{m.order:.2f}" + (" ✗" if r.verdict == "deviates" else "")
    return verdict_span(r.verdict, text, f"{m.solver} on {r.config}: {measured(m)}; {r.verdict}: {r.reason}")


def order_table(results: list[CaseResult]) -> str:
    """solver | claimed | symbolic | measured per case with CI | verdict | note (KNOWN_DEVIATIONS)."""
    rows = []
    for solver, rs in by_solver(results).items():
        claimed = rs[0].measurement.claimed
        per_case = "\n".join(f"{r.config}: {measured(r.measurement)}" + (f" {r.verdict}" if r.measurement.ok else "")
                             for r in rs)
        rows.append([f"`{solver}`", f"{claimed:g}" if claimed is not None else "—", symbolic(rs[0].symbolic),
                     per_case, _solver_verdict(rs), _notes(rs)])
    return table(["solver", "claimed", "symbolic (general / uniform)", "measured per case [CI]", "verdict", "note"],
                  rows)


def case_table(results: list[CaseResult]) -> str:
    """One row per case: the fitted window and the verdict's reason."""
    rows = []
    for r in results:
        m = r.measurement
        window = f"N={m.fit.ns[m.fit.window[0]]}..{m.fit.ns[m.fit.window[1]]}" if m.ok else "—"
        rows.append([f"`{m.solver}`", r.config, m.metric, measured(m), window, r.verdict, r.reason])
    return table(["solver", "target/process/schedule", "metric", "measured [CI]", "window", "verdict", "reason"],
                  rows)


def slope_table(rs: list[CaseResult]) -> str:
    """The local slope table of each case: N, error, NFE, the slope to the next N; window points marked *."""
    rows = []
    for r in rs:
        m = r.measurement
        i0, i1 = m.fit.window if m.ok else (-1, -1)
        for j, n in enumerate(m.ns):
            slope = num(m.slopes[j]) if j < len(m.slopes) else ""
            mark = "*" if i0 <= j <= i1 else ""
            rows.append([r.config if j == 0 else "", f"{n}{mark}", str(m.nfe[j]), f"{m.errors[j]:.3e}", slope])
    return table(["case", "N (* window)", "NFE", "error", "slope to next N"], rows)


def findings(results: list[CaseResult]) -> str:
    """Deviations and cases without an asymptotic window, stated plainly; then symbolic-vs-claim mismatches."""
    lines = []
    grouped = by_solver(results)
    for solver, rs in grouped.items():
        bad = [r for r in rs if r.verdict != "agree"]
        if not bad:
            continue
        m0 = rs[0].measurement
        cases = "; ".join(f"{r.config} {measured(r.measurement)}" if r.verdict == "deviates"
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
    for solver, rs in grouped.items():
        s, claimed = rs[0].symbolic, rs[0].measurement.claimed
        if s and claimed is not None and s["general"] < claimed:
            where = "on uniform steps only" if s["uniform"] >= claimed else "even on uniform steps"
            sym.append(f"- `{solver}`: symbolic order {s['general']} for general step ratios (claimed {claimed:g}; "
                       f"{s['uniform']} {where}); leading error term `{s['leading_general']}`.")
    n_ok = sum(all(r.verdict == "agree" for r in rs) for rs in grouped.values())
    out = [f"{n_ok} of {len(grouped)} solvers agree with their claimed order on every case; "
           f"{sum(r.verdict == 'agree' for r in results)} of {len(results)} cases agree."]
    if lines:
        out += ["", "Measured deviations:", "", *lines]
    if sym:
        out += ["", "Symbolic order below the claim (general step ratios):", "", *sym]
    return "\n".join(out)
