"""The report's figures: convergence (log-log error against counted NFE, one panel per solver family, reference
slopes NFE^-p) and a grid of image samples. matplotlib is imported when a figure is drawn (Agg backend, PNG files).

A method of order p shows as a line of slope -p: error ~ C NFE^-p on the asymptotic window (harness.orders);
dashed lines deviate from their claim, filled markers are the fitted window.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from ..harness.results import CaseResult

FAMILIES = {  # solver module (unipc split by corrector) -> label of its figure panel
    "rk": "Runge-Kutta (EDM Euler, Heun, midpoint, RK4)",
    "native": "native process time (Euler, Heun in t)",
    "dpm": "DPM-Solver and DPM-Solver++",
    "deis": "DEIS (tAB)",
    "ipndm": "iPNDM",
    "unipc": "UniPC (predictor + corrector)",
    "unip": "UniP (predictor only)",
}


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


def samples_figure(grid: np.ndarray, path: Path, title: str) -> None:
    """A grid of image samples (ten a row), values in [-1, 1] shown in [0, 1]; one channel in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = grid.shape[0]
    ncol = 10
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 0.6, nrow * 0.6 + 0.4))
    for k, ax in enumerate(np.atleast_1d(axes).flat):
        ax.axis("off")
        if k < n:
            img = grid[k]
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax.imshow(np.clip((img + 1) / 2, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
