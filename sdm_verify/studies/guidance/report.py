"""The guidance study's page: orders against w, stability boundaries, few-step errors at w = 7.5, the DPM-Solver++
claim answered, thresholding, SDM under guidance, stochastic samplers, the CFG-to-tilted gap; figures."""

from __future__ import annotations

import math
from pathlib import Path

from ...harness.progress import format_seconds
from ...harness.verdicts import KNOWN_DEVIATIONS
from . import claim
from .orders import TOL
from .study import Results

FEW_NFE = (5, 10, 15, 20, 25)
TARGET_TEXT = {
    "mix-1d": "1-D labelled mixture (5 components, labels 0, 0, 1, 1, 2; guided to label 1); exact W2 by quadrature "
              "against the DOP853 guided flow (floor 1e-12)",
    "mix-2d": "2-D labelled mixture (5 components, labels 0, 0, 1, 1, 2; guided to label 1); synchronous RMS error "
              "over 64 exact draws against the DOP853 guided flow (an upper bound on W2; floor 1e-12)",
    "joint-2d": "joint Gaussian, d = 2, commuting covariances (conditional N((0.8, -0.4), U diag(0.4, 0.3) U^T), "
                "unconditional N(0, U diag(1, 0.5) U^T)); exact Bures W2 against the closed-form guided flow law",
}


def _f(v, fmt=".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, fmt) if isinstance(v, float) else str(v)


def _targets(res: Results):
    return list(dict.fromkeys(c.target for c in res.curves))


def _ws(res: Results):
    return sorted({c.w for c in res.curves})


def _solvers(res: Results):
    return list(dict.fromkeys(c.solver for c in res.curves))


def _grid(title, header, rows) -> list[str]:
    return [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""]


def _orders(res: Results) -> list[str]:
    out = ["## Orders against w", "",
           f"Order fitted on the asymptotic window of the doubling subset N = 2^j (harness.orders.fit_order). Mark: "
           f"`ok` |p - claimed| <= {TOL} (mixtures) or p >= claimed - {TOL} (joint Gaussian, a linear problem), `✗` "
           "otherwise (`✗ (known)`: a deviation the theory matrix already records on unguided targets, "
           "harness.verdicts.KNOWN_DEVIATIONS), `—` no window (slopes not settled, or errors at the floor).", ""]
    by = {(c.solver, c.target, c.w): c for c in res.curves}
    for t in _targets(res):
        rows = []
        for s in _solvers(res):
            cells = []
            for w in _ws(res):
                c = by.get((s, t, w))
                if c is None or c.order is None:
                    cells.append("—")
                else:
                    mark = "ok" if c.agrees() else ("✗ (known)" if s in KNOWN_DEVIATIONS else "✗")
                    cells.append(f"{c.order:.2f} {mark}")
            claimed = next((c.claimed for c in res.curves if c.solver == s), None)
            rows.append(f"| {s} | {_f(claimed, 'g')} | " + " | ".join(cells) + " |")
        out += _grid(f"### {t}", ["solver", "claimed", *[f"w = {w:g}" for w in _ws(res)]], rows)
    return out


def _stability(res: Results, stab) -> list[str]:
    out = ["## Stability boundary against w", "",
           "N* = the smallest N from which every measured error (up to the fit window's end) is within 2x of the "
           "solver's own asymptotic line (the window's least-squares line extrapolated); shown as N* (NFE). "
           "`div N@i`: the largest N whose run diverged (non-finite, or > 1e6 x the data scale) and the step i.", ""]
    for t in _targets(res):
        rows = []
        for s in _solvers(res):
            cells = []
            for w in _ws(res):
                st = stab.get((s, t, w))
                if st is None:
                    cells.append("—")
                    continue
                txt = "—" if st["n_star"] is None else f"{st['n_star']} ({st['nfe_star']})"
                if st["diverged_n"] is not None:
                    txt += f", div {st['diverged_n']}@{st['diverged_step']}"
                cells.append(txt)
            rows.append(f"| {s} | " + " | ".join(cells) + " |")
        out += _grid(f"### {t}", ["solver", *[f"w = {w:g}" for w in _ws(res)]], rows)
    return out


def few_step_error(curve, nfe_max: int):
    pts = [(n, e) for n, e in zip(curve.nfe, curve.errors, strict=True) if n is not None and n <= nfe_max]
    return max(pts)[1] if pts else None


def _few(res: Results, w: float = 7.5) -> list[str]:
    out = [f"## Few-step regime at w = {w:g}", "",
           "Error at the largest measured NFE <= the column's budget (counted NFE; EDM rho = 7 grid). `inf`: "
           "diverged. On mix-1d a run whose map is not monotone on the quadrature nodes (a few coarse runs at large "
           "w) gives the synchronous error, an upper bound on W2 (the curve's `exact` flags in the JSON).", ""]
    for t in _targets(res):
        rows = []
        for c in res.curves:
            if c.target == t and c.w == w and c.variant == "plain":
                rows.append(f"| {c.solver} | " + " | ".join(_f(few_step_error(c, b)) for b in FEW_NFE) + " |")
        if rows:
            out += _grid(f"### {t}", ["solver", *[f"NFE <= {b}" for b in FEW_NFE]], rows)
    return out


def _claim(res: Results, stab) -> list[str]:
    ws = _ws(res)
    out = ["## The DPM-Solver++ guidance claim, answered", "", f"> {claim.CLAIM}", "", claim.README, "",
           claim.SETTING, "",
           "DDIM is `euler` here (on the VE EDM ODE in canonical variables the DDIM update and the Euler step are "
           "the same map). Per cell: N* in NFE (the stability boundary) / the NFE needed to reach and stay below "
           f"the tolerance {claim.TOLERANCES[1]:g} (`—`: not within the measured grids).", ""]
    names = [s for s in (claim.DDIM, *claim.SINGLESTEP_HIGH, *claim.MULTISTEP) if s in _solvers(res)]
    for t in _targets(res):
        rows = []
        for r in claim.table(res.curves, stab, t, names, ws, claim.TOLERANCES[1]):
            rows.append(f"| {r['solver']} | " + " | ".join(
                f"{_f(r['cells'][w]['nfe_star'])} / {_f(r['cells'][w]['nfe_tol'])}" if w in r["cells"] else "—"
                for w in ws) + " |")
        out += _grid(f"### {t}", ["solver", *[f"w = {w:g}" for w in ws]], rows)
    out += ["### Verdicts (computed from the tables)", ""]
    for tol in claim.TOLERANCES:
        out += [f"- {v}" for v in claim.verdicts(res.curves, stab, ws, tol)]
    return out + [""]


def _thresholding(res: Results) -> list[str]:
    if not res.thresholding:
        return []
    rows = [f"| {r['solver']} | {r['w']:g} | {_f(r['bias'])} | {_f(r['plain']['errors'][-1])} | "
            f"{_f(r['n_star_plain'])} | {_f(r['n_star_thresholded'])} | "
            f"{_f(_first(r['plain']))} / {_f(_first(r['thresholded']))} |" for r in res.thresholding]
    return ["## Dynamic thresholding", "",
            "`thresholded(D, p = 0.995, max_value = 1)` (Imagen / DPM-Solver++) on the 1-D joint Gaussian N(1.2, 0.3) "
            "given c, N(0, 1) unconditional (clipping bites: the guided data prediction exceeds 1), error against "
            "the exact guided flow law (W2 by quadrature, 256 x 8 nodes; monotone maps). bias = the thresholded "
            "error at N = 512 (it tends to a constant: the clipped field is not the guided field); N* plain: the "
            "stability boundary; N* thr.: the smallest N from which the thresholded error stays within 10% of its "
            "limit; first column pair: the error at N = 4 plain / thresholded.", "",
            "| solver | w | bias (thr., N = 512) | plain error N = 512 | N* plain | N* thr. | N = 4: plain / thr. |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def _first(curve: dict):
    e = curve["errors"][0]
    return math.inf if e is None else e


def _adaptive(res: Results) -> list[str]:
    if not res.adaptive:
        return []
    rows = []
    for a in res.adaptive:
        latch = "; ".join(f"N = {r['N']}: " + ("never" if r["step"] is None else f"step {r['step']} (sigma "
                                                                                 f"{r['sigma']:.3g})")
                          for r in a["latch"])
        sc = a["schedule"]
        e = sc["errors"]
        rows.append(f"| {a['target']} | {a['w']:g} | {latch} | {_f(sc['B0'])} | {_f(e['euler']['sdm'])} | "
                    f"{'yes' if sc['bounds'] else 'NO'} | {_f(e['sdm']['sdm'])} / {_f(e['sdm']['edm'])} | "
                    f"{_f(e['heun']['sdm'])} / {_f(e['heun']['edm'])} |")
    return ["## SDM's adaptive solver and its eta-bounded schedule under guidance", "",
            "Latch: the first step with lambda = 0 (Heun from there on) of `sdm` (tau_k = 1e-4) on the decision batch, "
            "EDM grid. Schedule: SDM's eta-bounded schedule built on the guided field, N = 18; B0 = sum of its "
            "per-step eta estimates (Euler path); bounds: B0 >= the measured Euler error on it. Errors on the SDM "
            "schedule / on EDM's at N = 18.", "",
            "| target | w | latch | B0 | Euler error | bounds | sdm: sdm sched. / EDM | heun: sdm sched. / EDM |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def _stochastic(res: Results) -> list[str]:
    if not res.stochastic:
        return []
    rows = []
    for r in res.stochastic:
        fit = r["fit"]
        rows.append(f"| {r['sampler']} | {r['w']:g} | {_f(r['claimed'], 'g')} | {_f(fit.get('order'), '.2f')} | "
                    + " ".join(_f(e, ".2e") for e in r["self"]) + f" | {_f(r['ode_gap'])} |")
    return ["## Stochastic samplers under guidance (joint Gaussian, exact laws)", "",
            "Weak error W2(law_N, law_8Nmax) against the same sampler on a grid 8x finer than the largest N (each "
            "sampler's own limit: under guidance the limits differ), order fitted on it; ode gap = W2 of that limit "
            "to the guided probability-flow ODE's exact law (at w = 1 both target p(. | c)). "
            "With three grids (the quick run: N in {8, 16, 32}) the fitted slope is pre-asymptotic: read it as a "
            "slope, not as an order.", "",
            "| sampler | w | claimed weak order | fitted | W2 at N = "
            + ", ".join(str(n) for n in res.stochastic[0]["ns"]) + " | ode gap |",
            "|---|---|---|---|---|---|", *rows, ""]


def _gap(res: Results) -> list[str]:
    rows = [f"| {g['w']:g} | {_f(g.get('joint-2d'))} | {_f(g.get('mix-1d'))} |" for g in res.gap]
    return ["## The CFG-to-tilted gap", "",
            "W2 between the law CFG's probability-flow ODE produces (from the exact p_80(. | c)) and the tilted law "
            "p(x | c)^w p(x)^(1 - w): joint Gaussian exact (to sigma = 0), 1-D mixture at sigma = 0.002 by "
            "quadrature (floor 5e-13; docs/guidance.md §9). CFG does not sample the tilted law.", "",
            "| w | joint-2d | mix-1d |", "|---|---|---|", *rows, ""]


def markdown(res: Results) -> str:
    stab = res.stab()
    out = ["# Classifier-free guidance: orders, stability and the DPM-Solver++ claim", "",
           f"Generated by `sdm-verify guidance{' --quick' if res.quick else ''}` in {format_seconds(res.seconds)} "
           "(one CPU thread; cells reused from the results store count as 0). Every error is measured against the "
           "guided flow's own law at sigma = 0.002 from the exact p_80(. | c) (VE, EDM rho = 7 grids, canonical "
           "variables): the discretisation error of the guided ODE alone. Method: docs/guidance.md §7-§9.", "",
           "Targets:", ""]
    out += [f"- `{t}`: {TARGET_TEXT.get(t, t)}" for t in _targets(res)]
    out += ["", "![order against w](orders.png)", "", "![stability boundary against w](stability.png)", "",
            "![error against NFE at w = 7.5](few_step.png)", ""]
    out += _claim(res, stab) + _orders(res) + _stability(res, stab) + _few(res) + _thresholding(res)
    out += _adaptive(res) + _stochastic(res) + _gap(res)
    return "\n".join(out)


def figures(res: Results, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stab = res.stab()
    ts, ws = _targets(res), _ws(res)
    for fname, value, ylabel, log in (("orders.png", lambda c: c.order, "fitted order", False),
                                      ("stability.png", lambda c: stab[(c.solver, c.target, c.w)]["nfe_star"],
                                       "N* (NFE)", True)):
        fig, axes = plt.subplots(1, len(ts), figsize=(5 * len(ts), 4), squeeze=False)
        for ax, t in zip(axes[0], ts, strict=True):
            for s in _solvers(res):
                pts = [(c.w, value(c)) for c in res.curves if c.target == t and c.solver == s]
                pts = [(w, v) for w, v in sorted(pts) if v is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), ".-", label=s, lw=0.8, ms=3)
            if log:
                ax.set_yscale("log")
            ax.set_title(t, fontsize=9)
            ax.set_xlabel("guidance scale w")
            ax.set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=4, ncol=2)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=80)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(ts), figsize=(5 * len(ts), 4), squeeze=False)
    w = 7.5 if 7.5 in ws else ws[-1]
    for ax, t in zip(axes[0], ts, strict=True):
        for c in res.curves:
            if c.target == t and c.w == w:
                pts = [(n, e) for n, e in zip(c.nfe, c.errors, strict=True)
                       if n is not None and n <= 60 and math.isfinite(e)]
                if pts:
                    ax.loglog(*zip(*sorted(pts), strict=True), ".-", label=c.solver, lw=0.8, ms=3)
        ax.axvspan(5, 25, color="0.9")
        ax.set_title(f"{t}, w = {w:g}", fontsize=9)
        ax.set_xlabel("NFE (counted)")
        ax.set_ylabel("error")
    axes[0][-1].legend(fontsize=4, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "few_step.png", dpi=80)
    plt.close(fig)


def write(res: Results, out: Path, with_figures: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text(markdown(res), encoding="utf-8")
    if with_figures:
        figures(res, out)
    return out / "index.md"
