"""The DPM-Solver++ paper's guidance claim (Lu et al. 2022, arXiv 2211.01095), quoted, and the measured answer.

The claim has three parts, each answered on the study's targets (EDM rho = 7 grids, VE 80 -> 0.002; errors against
the guided flow's own law, docs/guidance.md §7):
  (i)   "high-order fast samplers suffer from instability issues": the stability boundary N* (in counted NFE) of
        the single-step high-order solvers against DDIM (= `euler` on the VE EDM ODE in canonical variables: the
        two updates are the same map, x' = (s'/s) x + (1 - s'/s) D) and against DPM-Solver++(2M), as w grows;
  (ii)  "they even become slower than DDIM when the guidance scale grows large": the NFE each solver needs to reach
        an error tolerance (and keep below it at every larger N), against DDIM's, per w;
  (iii) "a multistep variant ... to address the instability issue by reducing the effective step size":
        dpmpp_2m's N* and tolerance-NFE against the single-step second-order dpmpp_2s / dpm_solver_2.
"""

from __future__ import annotations

import math

CLAIM = ("Lu et al., DPM-Solver++ (arXiv 2211.01095), abstract: \"Although recent works propose dedicated high-order "
         "solvers and achieve a further speedup for sampling without guidance, their effectiveness for guided "
         "sampling has not been well-tested before. In this work, we demonstrate that previous high-order fast "
         "samplers suffer from instability issues, and they even become slower than DDIM when the guidance scale "
         "grows large. [...] DPM-Solver++ solves the diffusion ODE with the data prediction model and adopts "
         "thresholding methods to keep the solution matches training data distribution. We further propose a "
         "multistep variant of DPM-Solver++ to address the instability issue by reducing the effective step size. "
         "Experiments show that DPM-Solver++ can generate high-quality samples within only 15 to 20 steps for guided "
         "sampling by pixel-space and latent-space DPMs.\"")
README = ("The official code's README (github.com/LuChengTHU/dpm-solver, commit 52bc3fb) recommends multistep "
          "DPM-Solver++ \"for guided sampling with `order = 2`\" (and order 3 for unconditional sampling); its "
          "dynamic thresholding is clip(x0, -s, s)/s with s = max(quantile_p |x0|, thresholding_max_val).")
SETTING = ("The paper's evidence is sample quality (FID, visual samples) of pixel-space ImageNet 256 models with "
           "classifier guidance scale 8.0 and latent text-to-image models; here the same question is asked of the "
           "exact W2 error on low-dimensional targets: a different, narrower setting.")

DDIM = "euler"
SINGLESTEP_HIGH = ("heun", "midpoint", "rk4", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s")
MULTISTEP = ("dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "deis_tab3")
TOLERANCES = (1e-1, 1e-2)


def nfe_to_reach(curve, tol: float) -> int | None:
    """The smallest counted NFE from which on (every larger N measured) the error is <= tol; None if never."""
    best = None
    for _n, e, nfe in sorted(zip(curve.ns, curve.errors, curve.nfe, strict=True), reverse=True):
        if not (math.isfinite(e) and e <= tol):
            break
        best = nfe
    return best


def table(curves, stab: dict, target: str, solvers, ws, tol: float) -> list[dict]:
    """Rows per solver: per w, (N* in NFE, NFE to reach tol) on `target`. stab: (solver, target, w) -> stability."""
    by = {(c.solver, c.target, c.w): c for c in curves if c.variant == "plain"}
    out = []
    for s in solvers:
        row = {"solver": s, "cells": {}}
        for w in ws:
            c = by.get((s, target, w))
            if c is None:
                continue
            st = stab.get((s, target, w), {})
            row["cells"][w] = {"nfe_star": st.get("nfe_star"), "nfe_tol": nfe_to_reach(c, tol),
                               "diverged_n": st.get("diverged_n")}
        if row["cells"]:
            out.append(row)
    return out


def verdicts(curves, stab: dict, ws, tol: float = TOLERANCES[1]) -> list[str]:
    """Plain-language answers per target, computed from the measured numbers."""
    out = []
    targets = list(dict.fromkeys(c.target for c in curves))
    names = {c.solver for c in curves}
    for t in targets:
        rows = {r["solver"]: r["cells"] for r in table(curves, stab, t, sorted(names), ws, tol)}
        if DDIM not in rows:
            continue
        slower, faster = [], []
        for s, cells in rows.items():
            if s == DDIM:
                continue
            for w, cell in cells.items():
                ref = rows[DDIM].get(w, {}).get("nfe_tol")
                mine = cell["nfe_tol"]
                if ref is None:
                    continue
                if mine is None or mine > ref:
                    slower.append((s, w, mine, ref))
                else:
                    faster.append((s, w, mine, ref))
        large = [x for x in slower if x[1] >= 5]
        text = (f"**{t}** (tolerance {tol:g}): {len(slower)} of {len(slower) + len(faster)} (solver, w) cells need "
                f"more NFE than DDIM to reach and stay below the tolerance; at w >= 5: "
                + (", ".join(f"{s} at w = {w:g} ({'never' if m is None else m} vs {r} NFE)" for s, w, m, r in large)
                   if large else "none") + ".")
        out.append(text)
    return out
