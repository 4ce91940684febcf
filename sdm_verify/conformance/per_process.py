"""One probe per process, one item: how the point-mass, affine, float32 and determinism items judge a solver that
supports several processes (each process is its own solver; the item fails if any of them fails).

A probe runs one solver and returns a `Probe` (ok, value, detail, data). The item's value is the worst value over
the processes whose probe is judged (a probe may set data["judged"] = False: reported, not judged), its detail names
every process and the worst one's reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from .context import Context, Progress
from .declared import ClaimError
from .result import Item


class Probe(NamedTuple):
    """One probe on one solver: `ok` (judged), `value` (a number, or a word such as "identical"), `detail` (one
    line) and `data` (the numbers, for JSON; data["judged"] = False marks it reported only)."""

    ok: bool
    value: float | str
    detail: str
    data: dict


def per_process(name: str, limit: str, ctx: Context, probe: Callable[[object, Progress | None], Probe]) -> Item:
    """Run `probe(solver, bar)` on the solver of every process in ctx.variants; the item fails if any probe does."""
    results: dict[str | None, Probe] = {}
    for process, solver in ctx.variants:
        try:
            results[process] = probe(solver, ctx.bar)
        except ClaimError as exc:  # a declaration it needs cannot be read: a failed claim
            results[process] = Probe(False, math.inf, f"unreadable claim {exc}", {"error": str(exc)})
        except Exception as exc:  # the solver raised on a plain input: that is the finding
            results[process] = Probe(False, math.inf, f"raised {type(exc).__name__}: {exc}", {"error": str(exc)})
    ok = all(r.ok for r in results.values())
    if len(results) == 1:
        (process, (_, value, detail, data)), = results.items()
        detail = detail if process is None else f"{process}: {detail}"
    else:
        judged = {p: r for p, r in results.items() if r.data.get("judged", True)} or results
        values = [r.value for r in judged.values()]
        numeric = all(isinstance(v, (int, float)) for v in values)
        value = max(values) if numeric else next((v for v in values if v != "identical"), "identical")
        worst = max(judged, key=lambda p: judged[p].value) if numeric else next(iter(judged))
        states = ", ".join(f"{p} {('ok' if r.ok else 'FAILED') if p in judged else 'not judged'} "
                           f"{r.value if isinstance(r.value, str) else format(r.value, '.1e')}"
                           for p, r in results.items())
        detail = (f"per process {states}; worst ({worst}): {results[worst].detail}"
                  + "".join(f"; {p}: {r.detail}" for p, r in results.items() if p not in judged))
        data = {str(p): r.data for p, r in results.items()}
    shown = value if isinstance(value, str) else f"{value:.1e}"
    return Item(name, "pass" if ok else "fail", shown, limit, detail, data)
