"""The schedule study's page (docs/schedules.md): per (solver, target, endpoint), the exact error of every schedule at
each N and its efficiency error(optimal) / error(schedule); the steps and NFE a schedule needs to reach the
optimum's error; a summary per schedule; where the optimum puts its steps against the flow's curvature; SDM's
schedule claim answered; figures (the grids side by side, efficiency against N, steps against curvature)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .cells import ZERO
from .study import Row, efficiency

SDM_CLAIM = ("Jo & Choi (arXiv 2602.12624), abstract: the method reaches its best FIDs \"with a reduced number of "
             "function evaluations compared to existing samplers\"; its schedule bounds each step's Wasserstein "
             "error by a tolerance eta(sigma) (docs/sdm.md §4). It is compared there with EDM rho = 7, AYS, GITS "
             "and COS.")


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def _pairs(rows):
    return list(dict.fromkeys((r.solver, r.target, r.final) for r in rows))


def _title(solver, tname, final) -> str:
    return f"{solver} on {tname}" + (", full sampler into 0" if final == "zero" else "")


def _zero_opt(rows) -> dict:
    """Cells whose optimum gives no meaningful ratio: at the zero level, or not certified (not converged, failed its
    certificate, or not computed): a ratio to an uncertified or near-zero optimum says nothing."""
    return {(r.solver, r.target, r.N, r.final): r.error <= ZERO or r.status != "ok" for r in rows
            if r.schedule == "optimal"}


def summary(rows: list[Row]) -> dict:
    """schedule -> (median, min, max, number of cells) of its efficiency over every cell whose optimum is certified
    and not at the zero level."""
    eff, zero = efficiency(rows), _zero_opt(rows)
    by: dict = {}
    for (solver, tname, n, name, final), e in eff.items():
        if name != "optimal" and e is not None and not zero.get((solver, tname, n, final)):
            by.setdefault(name, []).append(e)
    return {k: (statistics.median(v), min(v), max(v), len(v)) for k, v in by.items()}


def _table(rows, eff, zero, solver, tname, final) -> list[str]:
    cell = [r for r in rows if (r.solver, r.target, r.final) == (solver, tname, final)]
    ns = sorted({r.N for r in cell})
    out = [f"## {_title(solver, tname, final)}", "",
           "| schedule | " + " | ".join(f"N = {n}: error (eff.)" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for name in dict.fromkeys(r.schedule for r in cell):
        cells = []
        for n in ns:
            r = next((r for r in cell if r.N == n and r.schedule == name), None)
            if r is None:
                cells.append("—")
                continue
            note = "" if r.status == "ok" else f" ({r.status.split(':')[0]})"
            e = None if zero.get((solver, tname, n, final)) else eff.get((solver, tname, n, name, final))
            cells.append(f"{_fmt(r.error)} ({_fmt(e)}){note}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    matched = [r for r in cell if r.match_steps is not None or (r.schedule != "optimal" and r.nfe is not None
                                                                and not zero.get((solver, tname, r.N, final)))]
    names = list(dict.fromkeys(r.schedule for r in matched if r.schedule in ("edm", "logsnr", "uniform_t", "sdm")))
    if names:
        opt = {r.N: r for r in cell if r.schedule == "optimal"}
        out += ["", "Steps (NFE) each schedule needs to reach the optimum's error at N (`> 4N`: not within 4N steps; "
                "`—`: the optimum's error is zero):", "",
                "| schedule | " + " | ".join(f"N = {n} (optimal: {opt[n].nfe} NFE)" if n in opt and opt[n].nfe
                                         else f"N = {n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for name in names:
            cells = []
            for n in ns:
                r = next((r for r in cell if r.N == n and r.schedule == name), None)
                if r is None or zero.get((solver, tname, n, final)):
                    cells.append("—")
                elif r.match_steps is None:
                    cells.append(f"> {4 * n}")
                else:
                    cells.append(f"{r.match_steps} ({r.match_nfe})")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out + [""]


def _curvature(rows) -> list[str]:
    opts = [r for r in rows if r.schedule == "optimal" and r.extra.get("allocation") and r.error > ZERO
            and r.status == "ok"]
    if not opts:
        return []
    out = ["## Where the optimum puts its steps, against the flow's curvature", "",
           "kappa(sigma) = mean ||x''|| / ||x'|| on exact draws of p_sigma (docs/schedules.md §5). A curvature "
           "allocation takes steps h ~ 1/kappa in sigma: slope -1 of log h against log kappa, rank correlation 1. "
           "Only certified optima with a non-zero error (a zero-error grid is one of a family).", "",
           "| solver | target | N | slope d log h / d log kappa | rank corr(h, 1/kappa) | h kappa: min – max |",
           "|---|---|---|---|---|---|"]
    for r in opts:
        a = r.extra["allocation"]
        hk = a.get("h_kappa") or [math.nan]
        out.append(f"| {r.solver} | {r.target}{' (into 0)' if r.final == 'zero' else ''} | {r.N} | "
                   f"{_fmt(a['slope'])} | {_fmt(a['rank_corr'])} | {_fmt(min(hk))} – {_fmt(max(hk))} |")
    return out + [""]


def _sdm_answer(rows, summ) -> list[str]:
    eff, zero = efficiency(rows), _zero_opt(rows)
    out = ["## SDM's schedule claim, answered", "", f"> {SDM_CLAIM}", ""]
    if "sdm" not in summ:
        return out + ["No SDM schedule rows in this run.", ""]
    med, lo, hi, k = summ["sdm"]
    same = sum(1 for r in rows if r.schedule == "sdm" and math.isfinite(r.error) and any(
        q.schedule == "edm" and (q.solver, q.target, q.N, q.final) == (r.solver, r.target, r.N, r.final)
        and abs(q.error - r.error) <= 1e-9 * max(q.error, 1e-300) for q in rows))
    total = sum(1 for r in rows if r.schedule == "sdm" and math.isfinite(r.error))
    wins = {name: 0 for name in ("edm", "ays", "gits", "cos")}
    for (solver, tname, n, name, final), e in eff.items():
        if name != "sdm" or e is None or zero.get((solver, tname, n, final)):
            continue
        for rival in wins:
            er = eff.get((solver, tname, n, rival, final))
            if er is not None and e > er * (1 + 1e-6):
                wins[rival] += 1
    out += [f"Over {k} cells with a certified non-zero optimum, SDM's schedule has efficiency median {med:.3g} (range "
            f"{lo:.3g} – {hi:.3g}); in {same} of {total} cells its grid's error equals EDM rho = 7's to 1e-9 "
            "relative (where the eta-bounded build takes a single interval, its resampling is EDM's rho = 7 grid "
            "exactly: docs/sdm.md §6). Cells where it beats each rival: "
            + ", ".join(f"{n} {c} of {k}" for n, c in wins.items()) + ".", "",
            "Caveat: the schedule is built with the official defaults, eta from 0.02 to 0.2 in absolute L2 units of "
            "the whole sample vector (docs/sdm.md §4). Those were set for images (d = 3072 and more); on these "
            "low-dimensional targets they are loose enough for the build to take sigma_max -> sigma_min in one "
            "step, and the resampled grid is then EDM's. A tolerance scaled to the target is the comparison still "
            "to be made.", ""]
    return out


def markdown(rows: list[Row]) -> str:
    eff, zero, summ = efficiency(rows), _zero_opt(rows), summary(rows)
    out = ["# Schedules against their optimum", "",
           "Generated by `sdm-verify schedules`. Exact error of each schedule (Bures W2 on Gaussians, quantile W2 on "
           "1-D mixtures) from the exact law at sigma 80 to p_0.002 (VE), or to the data law for the full sampler "
           "into 0, and its efficiency = error(optimal) / error(schedule) (1 = as good as the optimum). `optimal`: "
           "the certified error-minimising grid (multi-start L-BFGS-B; a cell marked otherwise was not certified and "
           "is not called optimal). Where the optimum is not certified or its error is at the zero level "
           f"(<= {ZERO:g}) the efficiency is not shown (nor counted in the summary): on a Gaussian target a "
           "sampler's output law can match the target exactly for a whole family of grids (its errors cancel), so "
           "a ratio to zero says nothing. AYS is implemented from its objective as we could reconstruct it (a KL "
           "upper bound with the denoiser frozen per interval), not verified against "
           "the paper's text: read its row with that caveat. Method: docs/schedules.md.", "",
           "## Summary: efficiency per schedule over all cells", "",
           "| schedule | median | min | max | cells |", "|---|---|---|---|---|"]
    for name, (med, lo, hi, k) in sorted(summ.items(), key=lambda kv: -kv[1][0]):
        out.append(f"| {name} | {med:.3g} | {lo:.3g} | {hi:.3g} | {k} |")
    out.append("")
    out += _sdm_answer(rows, summ)
    for solver, tname, final in _pairs(rows):
        out += _table(rows, eff, zero, solver, tname, final)
    out += _curvature(rows)
    out += ["![grids](grids.png)", "", "![efficiency](efficiency.png)", ""]
    if any(r.extra.get("allocation") for r in rows):
        out += ["![curvature](curvature.png)", ""]
    return "\n".join(out)


def _grid_axes(plt, pairs):
    cols = min(len(pairs), 4)
    nrows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.axis("off")
    return fig, axes.flat


def figures(rows: list[Row], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = _pairs(rows)
    fig, axes = _grid_axes(plt, pairs)
    for ax, (solver, tname, final) in zip(axes, pairs, strict=False):
        sel = [r for r in rows if (r.solver, r.target, r.final) == (solver, tname, final)]
        n = max(r.N for r in sel)
        for r in sel:
            if r.N == n and r.grid:
                pos = [g for g in r.grid if g > 0]
                ax.plot(range(len(pos)), [math.log(g) for g in pos], "o-" if r.schedule == "optimal" else ".--",
                        label=r.schedule, lw=2 if r.schedule == "optimal" else 1, ms=3)
        ax.set_title(f"{_title(solver, tname, final)}, N = {n}", fontsize=8)
        ax.set_xlabel("step index")
        ax.set_ylabel("log sigma")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(out / "grids.png", dpi=80)
    plt.close(fig)
    eff, zero = efficiency(rows), _zero_opt(rows)
    fig, axes = _grid_axes(plt, pairs)
    for ax, (solver, tname, final) in zip(axes, pairs, strict=False):
        for name in dict.fromkeys(r.schedule for r in rows if r.schedule != "optimal"):
            pts = sorted((r.N, eff.get((solver, tname, r.N, name, final))) for r in rows
                         if (r.solver, r.target, r.final, r.schedule) == (solver, tname, final, name)
                         and not zero.get((solver, tname, r.N, final)))
            pts = [(n, e) for n, e in pts if e is not None and e > 0]
            if pts:
                ax.semilogy(*zip(*pts, strict=True), "o-", label=name, ms=3)
        ax.set_title(_title(solver, tname, final), fontsize=8)
        ax.set_xlabel("N")
        ax.set_ylabel("efficiency")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(out / "efficiency.png", dpi=80)
    plt.close(fig)
    opts = [r for r in rows if r.schedule == "optimal" and r.extra.get("allocation") and r.error > ZERO
            and r.status == "ok"]
    if opts:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for r in opts:
            a = r.extra["allocation"]
            if r.N >= 8:
                ax.loglog(a["kappa"], a["step"], ".-", ms=3, lw=0.8, label=f"{r.solver}/{r.target}/N={r.N}")
        ax.set_xlabel("kappa(sigma) at the step's midpoint")
        ax.set_ylabel("optimal step h = sigma_i - sigma_{i+1}")
        ax.set_title("optimal steps against the flow's curvature (h ~ 1/kappa: slope -1)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=4, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "curvature.png", dpi=80)
        plt.close(fig)


def write(rows: list[Row], out: Path, with_figures: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text(markdown(rows), encoding="utf-8")
    if with_figures:
        figures(rows, out)
    return out / "index.md"
