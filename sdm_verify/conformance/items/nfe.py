"""Item `nfe`: the denoiser calls counted (harness.nfe, never the solver's own count) against the declaration.

At every N of the order runs, the count must equal the declared `nfe(n)` exactly, or K N for --claimed-nfe-per-step
K; on the final-step item's grids into sigma = 0 it must equal the declared `nfe_to_zero(n)`. Reported, not judged,
when the solver declares neither and no K is given. A declaration that raises or returns anything but a
non-negative integer fails the item (declared.count).
"""

from __future__ import annotations

from .. import declared
from ..context import Context
from ..result import Item


def item(solver, ctx: Context) -> Item:
    """Counted NFE of ctx.measured (and of the final_step item's runs, which it annotates with `declared_nfe`)
    against ctx.claimed_nfe_per_step, else each process's declared nfe(n) and the solver's nfe_to_zero(n)."""
    claimed_k = ctx.claimed_nfe_per_step
    counted = {}
    for case, rows in ctx.measured:
        for r in rows:
            if r.get("status") != "error":
                counted.setdefault(case["process"], {})[int(r["n"])] = int(r["nfe"])
    solvers_by_process = dict(ctx.variants)
    mismatches, source = [], None
    expected_all = {}
    unreadable = None
    try:
        for process, by_n in counted.items():
            fn = None if claimed_k is not None else declared.nfe(solvers_by_process.get(process, ctx.variants[0][1]))
            for n, nfe in sorted(by_n.items()):
                if claimed_k is not None:
                    expected, source = claimed_k * n, f"--claimed-nfe-per-step {claimed_k:g}"
                elif fn is not None:
                    expected, source = declared.count(fn, "nfe", n), "nfe(n)"
                else:
                    expected = None
                if expected is not None:
                    expected_all.setdefault(process, {})[n] = expected
                    if expected != nfe:
                        mismatches.append(f"{process}: N={n} counted {nfe}, declared {expected:g}")
        final = ctx.items.get("final_step")
        to_zero = final.data.get("runs", []) if final is not None else []
        fz = declared.nfe_to_zero(solver) if to_zero else None
        for run in to_zero:
            if fz is not None and run.get("nfe") is not None:
                source = source or "nfe_to_zero(n)"
                run["declared_nfe"] = declared.count(fz, "nfe_to_zero", run["n"])
                if run["declared_nfe"] != run["nfe"]:
                    mismatches.append(f"grid into 0, N={run['n']}: counted {run['nfe']}, declared "
                                      f"{run['declared_nfe']}")
    except declared.ClaimError as exc:  # a declaration that cannot be read is a failed claim, not a missing one
        unreadable = str(exc)
    per_step = sorted({nfe / n for by_n in counted.values() for n, nfe in by_n.items()})
    data = dict(counted={str(p): {str(n): v for n, v in by_n.items()} for p, by_n in counted.items()},
                declared={str(p): {str(n): v for n, v in by_n.items()} for p, by_n in expected_all.items()},
                source=source, per_step=per_step, mismatches=mismatches)
    value = "/".join(f"{k:g}" for k in per_step) + " per step" if per_step else "—"
    if unreadable is not None:
        data["unreadable"] = unreadable
        return Item("nfe", "fail", value, "a readable declaration", f"unreadable claim {unreadable}", data)
    if source is None:
        return Item("nfe", "info", value, "none declared", "counted only (declare nfe(n) or pass "
                    "--claimed-nfe-per-step to check it)", data)
    return Item("nfe", "fail" if mismatches else "pass", value, f"= {source} exactly",
                "; ".join(mismatches) if mismatches else f"counted = {source} at every N", data)
