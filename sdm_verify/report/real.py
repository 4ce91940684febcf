"""The real-model sections of the report, rebuilt from the store (rows and run records; no recomputation).

Each recorded run (`sdm_verify.real.run.run_real`) becomes one section: the setup and the reference's checked
accuracy, the measured orders beside the same solvers' orders on the exact targets, SDM's pieces against the
baselines at equal NFE, the sample-quality table and the figures (error vs NFE, a grid of samples). A real case
agrees with its claim when |measured - claimed| <= REAL_TOL on the median trajectory's error.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .. import solvers
from ..harness.results import results_from, solver_family
from ..real.harness import BUDGETS, RealCase, case_from_rows, error_at_nfe
from ..real.run import RUNS_META
from .figures import convergence_figure, samples_figure
from .tables import num, slug, table

#: verdict tolerance on a real model: a trained field is smooth only approximately, and its reference is numerical
REAL_TOL = 0.25


def _verdict(c: RealCase) -> str:
    if c.claimed is None:
        return "—"
    if not c.fit.ok:
        return "no window"
    return "agree" if abs(c.fit.order - c.claimed) <= REAL_TOL else "deviates"


def _order(c: RealCase | None, rms: bool = False) -> str:
    if c is None:
        return ""
    fit = c.fit_rms if rms else c.fit
    if fit is None or not fit.ok:
        return "no window"
    lo, hi = fit.ci
    return f"{fit.order:.2f} [{lo:.2f}, {hi:.2f}]"


def load_cases(store, record) -> list[RealCase]:
    """The recorded run's cases whose rows are all in the store, rebuilt from those rows."""
    by_key = {r["key"]: r for r in store.rows(kind="real")}
    out = []
    for case in record["cases"]:
        rows = [by_key.get(k) for k in case["keys"]]
        if any(r is None for r in rows):
            continue
        out.append(case_from_rows(case["solver"], case["schedule"], record["ns"], rows))
    return out


def exact_orders(theory_results) -> dict[str, float]:
    """Median measured order of each solver over its theory cases with a window (the exact-target column)."""
    by: dict[str, list[float]] = {}
    for r in theory_results or []:
        m = r.measurement
        if m.ok:
            by.setdefault(m.solver, []).append(m.order)
    return {k: statistics.median(v) for k, v in by.items()}


def side_by_side(cases: list[RealCase], theory_results) -> str:
    exact = exact_orders(theory_results)
    scheds = list(dict.fromkeys(c.schedule for c in cases if c.schedule != "sdm"))
    by = {(c.solver, c.schedule): c for c in cases}
    rows = []
    for name in dict.fromkeys(c.solver for c in cases):
        claimed = next(c.claimed for c in cases if c.solver == name)
        cells = [x for s in scheds for x in (_order(by.get((name, s))), _order(by.get((name, s)), rms=True))]
        verdicts = {_verdict(by[(name, s)]) for s in scheds if (name, s) in by}
        rows.append([name, "—" if claimed is None else f"{claimed:g}", num(exact.get(name)), *cells,
                     " / ".join(sorted(verdicts))])
    heads = [h for s in scheds for h in (f"real {s}: median trajectory", f"real {s}: RMS")]
    return table(["solver", "claimed", "exact targets (median)", *heads, f"real verdict (±{REAL_TOL})"], rows)


def _slopes(cases: list[RealCase]) -> str:
    def fmt(fit):
        return ", ".join(num(x) for x in fit.slopes) if fit is not None and fit.slopes else "—"

    rows = [[f"{c.solver} / {c.schedule}", " ".join(f"{e:.2e}" for e in c.median_errors), fmt(c.fit), fmt(c.fit_rms)]
            for c in cases]
    body = table(["solver / schedule", "median-trajectory errors", "local slopes (median)", "local slopes (RMS)"],
                 rows)
    return f"<details><summary>errors and local slopes</summary>\n\n{body}\n\n</details>"


def equal_nfe(cases: list[RealCase]) -> str:
    budgets = [b for b in BUDGETS if any(error_at_nfe(c, b) is not None for c in cases)]
    if not budgets:
        return "(no case spans the NFE budgets)"
    rows, best = [], {b: min((e for c in cases if (e := error_at_nfe(c, b)) is not None), default=None)
                      for b in budgets}
    for c in cases:
        cells = []
        for b in budgets:
            e = error_at_nfe(c, b)
            cells.append("—" if e is None else (f"**{e:.2e}**" if e == best[b] else f"{e:.2e}"))
        rows.append([f"{c.solver} / {c.schedule}", *cells])
    return table(["solver / schedule", *[f"NFE {b}" for b in budgets]], rows)


QUALITY_COLUMNS = (("fd_feat", "FD features", 3), ("kid", "KID ×1e3", 3), ("fd_pix", "FD pixels", 3),
                   ("confidence", "confidence", 3), ("confident_frac", "conf > 0.9", 2),
                   ("nn_dist_train", "NN dist. to train", 3))


def _quality_table(rows: list[dict]) -> str:
    def ci(v, scale=1.0):
        if isinstance(v, dict) and "estimate" in v:
            e, lo, hi = (scale * v[k] for k in ("estimate", "lo", "hi"))
            return f"{e:.3g} [{lo:.3g}, {hi:.3g}]"
        return "—" if v is None else f"{scale * v:.3g}"

    keys = [c for c in QUALITY_COLUMNS if any(c[0] in r for r in rows)]
    return table(["sampler", "NFE", "n", *[label for _, label, _ in keys]],
                  [[r["sampler"], str(r["nfe"] or "—"), str(r["n"]),
                    *[ci(r.get(k), 1e3 if k == "kid" else 1.0) for k, _, _ in keys]] for r in rows])


def _figures(cases: list[RealCase], record: dict, out: Path, name: str) -> list[tuple[Path, str]]:
    """One error-vs-NFE figure per schedule, one panel per solver family (as the theory figures)."""
    figs = []
    for schedule in dict.fromkeys(c.schedule for c in cases):
        pairs = []
        for c in (c for c in cases if c.schedule == schedule):
            case = dict(solver=c.solver, target=record["model"], process=record["settings"]["dtype"],
                        schedule=c.schedule, claimed=c.claimed,
                        family=solver_family(solvers.get(c.solver)))
            pairs.append((case, [dict(r, error=r.get("error_median", r["error"]), metric="median trajectory RMS")
                                 for r in c.rows]))
        path = out / f"real-{name}-{schedule}.png"
        convergence_figure(results_from(pairs), path,
                                         f"{record['model']} ({record['settings']['dtype']}), {schedule} grid")
        figs.append((path, f"error vs NFE on {record['model']}, {schedule} grid"))
    return figs


def _shown(source: str) -> str:
    """A checkpoint shipped with the package by its path inside the package; other paths as given."""
    marker = "sdm_verify/models/checkpoints/"
    return source[source.index(marker):] if marker in source else source


def section(store, record: dict, theory_results, out: Path) -> tuple[str, str, list]:
    """(title, markdown, figures) of one recorded real run; figures drawn into `out`."""
    cases = load_cases(store, record)
    s, ref = record["settings"], record["reference"]
    title = f"Real model: {record['model']} ({s['dtype']})"
    prec = record.get("precision", {})
    floor_p = record.get("floor_precision", 0.0)
    lines = [
        f"Model `{_shown(record['source'])}` ({record['format'] or '?'}; "
        f"{record['description'] or 'no description'}), "
        f"sample shape {tuple(record['shape'])}, run on {record['device']} in {s['dtype']}"
        + (f" across {record['world']} processes" if record.get("world", 1) > 1 else "") + ".",
        "",
        f"- Error: pixel RMS at σ_min = {s['sigma_min']:g} over {s['seeds']} start points x = "
        f"{s['sigma_max']:g}·n (seeds {s['seed0']}..{s['seed0'] + s['seeds'] - 1}) against the reference solution "
        "from the same points (no final step).",
        f"- Reference: DOP853 in λ = −log σ at rtol {ref['rtol']:.0e} ({ref['nfev']} model calls with its check); "
        f"its accuracy, checked against a run at 100× the tolerance: {ref['estimate']:.1e} RMS (the coarser run's "
        "error; the reference itself is ~100× better).",
        f"- Precision floor of {s['dtype']}: " + (f"{floor_p:.1e} RMS (a 256-step Heun run in {s['dtype']} against "
                                                  "the same run in float64)" if floor_p else
                                                  "the reference's estimate (float64 round-off is far below)")
        + f". Orders are fitted only on errors above 100× the floor ({record['floor']:.1e}).",
        f"- GPU precision: TF32 off (cuda matmul {prec.get('cuda_matmul_tf32')}, cuDNN "
        f"{prec.get('cudnn_tf32')}); without it float32 convolutions on Ampere+ carry ~1e-3 relative error.",
        f"- Run time {record['wall']:.0f} s" + (" (quick)" if record.get("quick") else "") + ".",
        "",
        "### Orders: exact targets beside the real model",
        "",
        "Exact targets: median of the solver's measured orders over the theory cases above (σ 80 → 0.002). Real: "
        "least-squares order on the asymptotic window [bracket], N = " + ", ".join(map(str, record["ns"])) + ", "
        "of the median trajectory's error (the median over start points of each trajectory's pixel RMS error; the "
        "verdict) and of the pixel RMS over all start points. Each trajectory is its own initial value problem; "
        "the RMS over a few of them follows the slowest to become asymptotic (a trajectory that a coarse grid "
        "sends across the boundary between two digits), the median follows the typical one.",
        "",
        side_by_side(cases, theory_results),
        "",
        _slopes(cases),
        "",
        "### SDM's pieces against the baselines at equal NFE",
        "",
        "Pixel-RMS error at σ_min interpolated in log-log between measured points at the given NFE (— outside the "
        "measured range); bold: the smallest per column. `sdm` is SDM's adaptive solver (its per-step choices made "
        "on the first 8 start points and replayed); `/ sdm` rows run on SDM's η-bounded schedule built from the "
        "model (the schedule's construction NFE is not counted).",
        "",
        equal_nfe(cases),
    ]
    if record.get("quality"):
        lines += ["", "### Sample quality (full samplers into σ = 0)", "",
                  "Features: penultimate layer of the digits classifier trained here (sdm_verify.models.classifier);"
                  " FD = Fréchet distance, KID = unbiased polynomial-kernel MMD², with 95% bootstrap intervals "
                  "(FD: the basic interval, which targets the true FD; its finite-n bias is of the order of the "
                  "distance itself); every set is compared with the 1500 training digits the model learned. The "
                  "held-out row (297 digits by other writers) is what real data scores: a model matching it is as "
                  "close as the data allow; the Gaussian fit (mean and covariance of the training digits) is the "
                  "baseline every model must beat. NN dist.: mean pixel distance to the nearest training digit "
                  "(memorisation shows as a distance well below the held-out row's).", "",
                  _quality_table(record["quality"])]
    figs = []
    name = slug(f"{record['model']}-{s['dtype']}")[:60]
    if cases:
        figs += _figures(cases, record, out, name)
    blob = store.get_blob(record["samples_blob"]) if record.get("samples_blob") else None
    if blob is not None:
        spath = out / f"real-{name}-samples.png"
        q = (record.get("quality") or [{}])[0]
        samples_figure(blob.reshape(-1, *record["shape"]), spath, f"{q.get('sampler', 'samples')}")
        figs.append((spath, "samples"))
    return title, "\n".join(lines), figs


def real_sections(store, theory_results, out) -> list[tuple[str, str, list]]:
    """(title, markdown, figures) of every real run recorded in `store`; figures drawn into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [section(store, store.get_meta(k), theory_results, out) for k in store.get_meta(RUNS_META, [])
            if store.get_meta(k)]
