"""The SDM section of the theory report: the paper's claims checked on exact targets (sdm_verify.studies.sdm.bounds).

(a) curvature small at high noise and growing as sigma falls: exact kappa* vs the solver's proxy;
(b) the adaptive solver's W2 per NFE against Euler, Heun, DPM-Solver++(2M), UniPC;
(c) the SDM schedule against EDM rho = 7 and uniform logSNR at equal N (equal NFE for a solver), by exact W2;
(d) the estimate eta against the exact one-step error, 1 + O(h);
and the Wasserstein bound: R = bound / exact W2 of the Euler sampler per N, violations (R < 1) listed.
"""

from __future__ import annotations

import math

from analytic import GaussianMixture

from . import bounds as sdm_bounds

#: a mixture where the plain-sum bounds fail: unequal weights move the boundary between the modes
VIOLATION_TARGET = ("0.1 N(-3, 0.01) + 0.9 N(3, 0.01)", lambda: GaussianMixture(
    [0.1, 0.9], [[-3.0], [3.0]], [[[0.01]], [[0.01]]]))


def _e(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def sharpness_md(label, target, ns, data=None) -> str:
    rows = sdm_bounds.sharpness_table(target, ns)
    if data is not None:
        data.setdefault("sharpness", {})[label] = [
            {k: r[k] for k in ("N", "w2", *("R_" + b for b in sdm_bounds.BOUND_KEYS))} for r in rows]
    keys = [k for k in sdm_bounds.BOUND_KEYS]
    body = [[r["N"], r["nfe"], _e(r["w2"])] + [_e(r["R_" + k]) for k in keys] + [", ".join(r["violated"]) or "none"]
            for r in rows]
    viol = sdm_bounds.violations(rows)
    note = (f"**Violations**: {len(viol)} (bound < exact W2): " + "; ".join(
        f"N={v['N']} {v['bound']} R={v['R']:.2f}" for v in viol)) if viol else "No violation."
    return (f"#### {label} (metric: {rows[0]['metric']})\n\n"
            + _table(["N", "NFE", "W2 (Euler)"] + [f"R {k}" for k in keys] + ["violated"], body) + "\n\n" + note)


def sdm_section(quick: bool = False, data: dict | None = None) -> str:
    """Markdown of the SDM section (takes about a minute; `quick` uses fewer N). If `data` is a dict, the numbers
    behind the figures are put in it (JSON-safe; `sdm_figures` draws them)."""
    ns = (16, 32, 64) if quick else (16, 32, 64, 128)
    parts = ["Bounds are R = bound / exact W2 of the Euler sampler at sigma_min on the EDM grid; R < 1 means the bound "
             "is violated. B0 = plain sum of per-step errors, B1 = weighted by the growth factor A_i = "
             "exp(int mu) along the batch's paths (trajectory-wise, not a rigorous sup). `tau` = the exact rms "
             "one-step error from the oracle, `eta_rms` / `eta_mean` = SDM's estimator in the rms norm (bounds W2) "
             "and in the official mean-of-norms (a W1 quantity)."]
    parts.append(sharpness_md("Gaussian gauss-4d", "gauss-4d", ns, data))
    parts.append(sharpness_md("1-D mixture gmm-1d", "gmm-1d", ns, data))
    label, build = VIOLATION_TARGET
    parts.append(sharpness_md(f"Unequal-weight mixture {label}", build(), (8, 16, 32, 64, 128, 256), data))

    rows = sdm_bounds.error_per_nfe("gauss-4d", (32, 64, 128))
    parts.append("#### (b) W2 per NFE, gauss-4d, EDM grid (SDM: tau_k = 1e-4, decisions on 128 draws, replayed)\n\n"
                 + _table(["solver", "N", "NFE", "W2", "first Heun step j"],
                          [[r["solver"], r["N"], r["nfe"], _e(r["w2"]), r["j"] if r["j"] is not None else "—"]
                           for r in rows]))
    rows = sdm_bounds.schedule_comparison("gauss-4d", (16, 32, 64))
    parts.append("#### (c) Schedules at equal N, gauss-4d (SDM schedule: eta 2e-3..2e-2, p = 0.5, q = 0.1)\n\n"
                 + _table(["schedule", "solver", "N", "NFE", "W2"],
                          [[r["schedule"], r["solver"], r["N"], r["nfe"], _e(r["w2"])] for r in rows]))
    rows = sdm_bounds.estimator_ratio("gauss-4d")
    parts.append("#### (d) eta / exact one-step error (Euler, h = r sigma), gauss-4d\n\n"
                 + _table(["sigma", "r", "ratio (rms)", "ratio (mean)"],
                          [[r["sigma"], r["rel_h"], f"{r['ratio_rms']:.4f}", f"{r['ratio_mean']:.4f}"] for r in rows]))
    rows = sdm_bounds.curvature_profile("gauss-4d")
    if data is not None:
        data["curvature"] = [{k: r[k] for k in ("sigma", "kappa_star", "kappa_proxy")} for r in rows]
        dec = sdm_bounds.decide_lambdas("gauss-4d", sdm_bounds.schedule_grid("edm", 18, 0.002, 80.0, base=None),
                                        tau_k=1e-4)
        data["allocation"] = [{"sigma": r["sigma"], "kappa": r["kappa"], "lambda": r["lambda"]} for r in dec["trace"]]
    parts.append("#### (a) Curvature along an 18-step EDM grid, gauss-4d\n\n"
                 + _table(["i", "sigma", "exact kappa*", "proxy kappa", "proxy / exact"],
                          [[r["i"], f"{r['sigma']:.3g}", _e(r["kappa_star"]), _e(r["kappa_proxy"]), _e(r["ratio"])]
                           for r in rows]))
    return "\n\n".join(parts)


def sdm_figures(data: dict):
    """(figure, caption) pairs from the numbers `sdm_section` collected: curvature and the solver allocation, and
    the bounds' sharpness R against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if data.get("curvature") and data.get("allocation"):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        cur = data["curvature"]
        a.loglog([r["sigma"] for r in cur], [r["kappa_star"] for r in cur], "o-", label="exact kappa* = |x''|/|x'|")
        proxy = [(r["sigma"], r["kappa_proxy"]) for r in cur if r["kappa_proxy"] > 0]
        a.loglog(*zip(*proxy, strict=True), "s--", label="SDM proxy kappa (one-step lag)")
        a.axhline(1e-4, color="gray", lw=0.8, ls=":", label="tau_k = 1e-4")
        a.invert_xaxis()
        a.set_xlabel("sigma (decreasing ->)")
        a.set_ylabel("relative curvature")
        a.set_title("(a) curvature along an 18-step EDM grid, gauss-4d")
        a.legend(fontsize=8)
        alloc = data["allocation"]
        b.semilogx([r["sigma"] for r in alloc], [r["lambda"] for r in alloc], "o-", drawstyle="steps-post")
        b.invert_xaxis()
        b.set_yticks([0, 1], ["Heun (0)", "Euler (1)"])
        b.set_xlabel("sigma (decreasing ->)")
        b.set_title("solver allocation: lambda per step (tau_k = 1e-4, N = 18)")
        fig.tight_layout()
        out.append((fig, "SDM's curvature proxy against the exact curvature, and where the latch switches to Heun."))
    if data.get("sharpness"):
        fig, axes = plt.subplots(1, len(data["sharpness"]), figsize=(5 * len(data["sharpness"]), 4), squeeze=False)
        for ax, (label, rows) in zip(axes[0], data["sharpness"].items(), strict=True):
            ns = [r["N"] for r in rows]
            for k in sdm_bounds.BOUND_KEYS:
                ax.semilogx(ns, [r["R_" + k] for r in rows], "o-", label=k)
            ax.axhline(1.0, color="red", lw=1, ls="--", label="R = 1 (bound = exact W2)")
            ax.set_yscale("log")
            ax.set_xlabel("N (Euler steps)")
            ax.set_ylabel("R = bound / exact W2")
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append((fig, "Sharpness of the Wasserstein bounds; below the red line a bound is violated."))
    return out
