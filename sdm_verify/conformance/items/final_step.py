"""Item `final_step`: the run into sigma = 0, reported.

On EDM grids ending in 0 (N in FINAL_NS, gauss-4d): the output must be finite; its counted NFE (checked against
`nfe_to_zero(n)` by the nfe item) and its W2 distance to the exact p_0 (exact Bures distance on the Gaussian) are
reported. It fails only on non-finite output: its error does not shrink with N, since the last step has a fixed
size. n/a for a solver that declares `steps_into_zero = False` (a method defined only above sigma = 0).
"""

from __future__ import annotations

import math

from .. import declared
from ..context import Context
from ..probing import grid, run_row, sigma_bounds
from ..result import Item

FINAL_NS = (16, 64)
#: solver runs, for the progress bar
RUNS = len(FINAL_NS)


def item(solver, ctx: Context) -> Item:
    """EDM grids into 0 at FINAL_NS on gauss-4d: finite output, counted NFE, exact Bures W2 to p_0."""
    if not declared.steps_into_zero(solver):  # a method defined only above sigma = 0 (diffusers DEIS)
        why = declared.final_step(solver) or "declared steps_into_zero = False"
        return Item("final_step", "n/a", "—", "finite", f"the solver takes no step into sigma = 0 ({why})",
                    dict(runs=[], finite=None, target="gauss-4d", schedule="edm"))
    lo, hi = sigma_bounds(solver)
    runs, finite = [], True
    for n in FINAL_NS:
        sigmas = grid("edm", n, None, lo, hi, zero=True)
        row = run_row(solver, "gauss-4d", sigmas, 0.0)
        ctx.step()
        err = float(row["error"])
        ok = row["status"] == "ok" and math.isfinite(err)
        finite = finite and ok
        runs.append(dict(n=n, nfe=int(row["nfe"]) if ok else None, w2_to_p0=err if math.isfinite(err) else None,
                         status=row["status"], detail=row.get("detail", "")))
    detail = "W2 to the exact p_0 (gauss-4d, EDM grid into 0): " + ", ".join(
        f"N={r['n']} {r['w2_to_p0']:.2e} ({r['nfe']} NFE)" if r["w2_to_p0"] is not None
        else f"N={r['n']} non-finite ({r['status']}: {r['detail']})" for r in runs)
    value = "finite" if finite else "NON-FINITE"
    return Item("final_step", "info" if finite else "fail", value, "finite", detail,
                dict(runs=runs, finite=finite, target="gauss-4d", schedule="edm"))
