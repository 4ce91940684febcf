"""The stability boundary of an error curve: where a solver joins its own asymptotic line, or where it diverges.

Asymptotic line: log e = a - p log N, the least-squares line through the order fit's window (harness.orders).
N* = the smallest measured N from which on every measured error, up to the window's last N, lies within a factor
`factor` (2) of the line (a lucky crossing of the line before the asymptotic range does not count: every later point
must stay within the band). Divergence: the largest N whose run diverged (non-finite state, or > 1e6 x the data
scale) and the step at which it did; None when no run diverged.
"""

from __future__ import annotations

import math

from ...errors import InputError


def asymptotic_line(ns, errors, window) -> tuple[float, float]:
    """(a, p) of log e = a - p log N fitted on points window = (i0, i1) (inclusive indices into ns, errors)."""
    i0, i1 = window
    xs = [math.log(n) for n in ns[i0:i1 + 1]]
    ys = [math.log(e) for e in errors[i0:i1 + 1]]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, -slope


def boundary(ns, errors, line: tuple[float, float], n_last: int, factor: float = 2.0) -> int | None:
    """Smallest N such that every error at N' in [N, n_last] is finite and within `factor` of exp(a - p log N')."""
    if not (isinstance(factor, (int, float)) and factor > 1 and math.isfinite(factor)):
        raise InputError(f"factor: must be a finite number > 1 (got {factor!r})")
    a, p = line
    best = None
    for n, e in sorted(zip(ns, errors, strict=True), reverse=True):
        if n > n_last:
            continue
        pred = math.exp(a - p * math.log(n))
        if not (math.isfinite(e) and e > 0 and pred / factor <= e <= pred * factor):
            break
        best = n
    return best


def stability(curve, factor: float = 2.0) -> dict:
    """{"n_star", "nfe_star", "line", "diverged_n", "diverged_step"} of a guidance Curve (orders.Curve)."""
    fit = curve.fit
    out = {"n_star": None, "nfe_star": None, "line": None, "diverged_n": None, "diverged_step": None}
    bad = [(n, s) for n, st, s in zip(curve.ns, curve.status, curve.steps, strict=True) if st == "diverged"]
    if bad:
        out["diverged_n"], out["diverged_step"] = bad[-1]
    if not fit.get("ok"):
        return out
    fns, ferr = fit["ns"], fit["errors"]
    line = asymptotic_line(fns, ferr, fit["window"])
    n_last = fns[fit["window"][1]]
    n_star = boundary(curve.ns, curve.errors, line, n_last, factor)
    out.update(line=list(line), n_star=n_star)
    if n_star is not None:
        out["nfe_star"] = curve.nfe[curve.ns.index(n_star)]
    return out
