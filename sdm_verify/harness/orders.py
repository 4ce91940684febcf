"""Convergence orders from errors on a sequence of step counts: local slopes, asymptotic window, fit.

For errors e_j = e(N_j) ~ C N_j^-p the local slopes p_j = log(e_j / e_{j+1}) / log(N_{j+1} / N_j) tend to p.
The order is fitted only where they have settled (the asymptotic window) and the errors are well above the
reference's floor (docs/order-estimation.md; the practice of diffrax's `test_ode_order` and DiffEqDevTools' convergence
tests, with the window made explicit).

Window: searched from the finest end backwards, the first (finest) run of consecutive points in which every
error exceeds floor_factor * floor and *all* local slopes lie within slope_tol of each other (max - min; this is
stricter than "consecutive slopes agree", which lets a slow pre-asymptotic drift chain through the window), with
at least min_slopes slopes. Among the runs ending at a point the longest is taken.

Order: least-squares slope of -log e against log N on the window (for nested grids it is a positive-weighted
average of the window's local slopes).

Confidence interval (a bracket for the asymptotic order, not only a statistical interval): the hull of
  (a) [min - slope_tol/2, max + slope_tol/2] of the window's local slopes: the window only certifies its slopes
      to within slope_tol, so no interval is narrower than +-slope_tol/2 around the slopes it contains;
  (b) the drift bracket p_f +- g, p_f the finest slope of the window, g = 2 |p_f - p_{f-1}| r / (1 - r) with
      r = N_{f-1} / N_f: if the pre-asymptotic deviation decays like 1/N or faster, the slopes converge
      geometrically with ratio rho <= r and the limit lies within |p_f - p_{f-1}| rho / (1 - rho) of p_f
      (Richardson's argument on the slopes); the factor 2 allows rho up to 2r / (1 + r) (2/3 when doubling), as
      seen before the 1/N term is small (for e = N^-p (1 + a/N) inside a 0.1 window, rho <= 0.57);
  (c) with >= 4 points: the regression interval order +- t_{0.975, n-2} * se (Student t, se the standard error of
      the slope), which covers measurement noise that (a) and (b) may not.
With 3 points the regression has one degree of freedom and its interval is uninformative (t = 12.7), hence (c)
only from 4 points on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["OrderFit", "fit_order", "local_slopes"]


@dataclass
class OrderFit:
    """Result of `fit_order`. `window` = (i0, i1) inclusive point indices; `slopes[j]` is between points j, j+1."""

    order: float | None
    ci: tuple[float, float] | None
    slopes: list[float]
    window: tuple[int, int] | None
    ns: list[int]
    errors: list[float]
    ok: bool
    reason: str = ""

    def window_slopes(self) -> list[float]:
        if self.window is None:
            return []
        i0, i1 = self.window
        return self.slopes[i0:i1]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (non-finite floats, i.e. undefined slopes, become None)."""
        d = asdict(self)
        d["slopes"] = [s if math.isfinite(s) else None for s in self.slopes]
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["window"] = list(self.window) if self.window is not None else None
        return d

    def __str__(self) -> str:
        if not self.ok:
            return f"no order: {self.reason} (slopes {_fmt_slopes(self.slopes)})"
        i0, i1 = self.window
        lo, hi = self.ci
        return (
            f"order {self.order:.2f} [{lo:.2f}, {hi:.2f}] on N={self.ns[i0]}..{self.ns[i1]}"
            f" (slopes {_fmt_slopes(self.window_slopes())})"
        )


def _fmt_slopes(slopes) -> str:
    return " ".join(f"{s:.2f}" if math.isfinite(s) else "nan" for s in slopes)


def _check_ns(ns) -> np.ndarray:
    try:
        a = np.asarray(ns)
    except Exception as exc:
        raise ValueError(f"ns: must be a 1-D sequence of step counts ({exc})") from exc
    numeric = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    if a.ndim != 1 or a.dtype == bool or not numeric:
        raise ValueError(f"ns: must be a 1-D sequence of positive integers (got {ns!r})")
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        raise ValueError(f"ns: must be integers (got {a.tolist()})")
    a = a.astype(np.int64)
    if np.any(a <= 0):
        raise ValueError(f"ns: must be positive (got {a.tolist()})")
    if np.any(np.diff(a) <= 0):
        raise ValueError(f"ns: must be strictly increasing (got {a.tolist()})")
    return a


def _check_errors(errors, n: int, floor: float) -> np.ndarray:
    try:
        e = np.asarray(errors, dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"errors: must be a 1-D sequence of numbers ({exc})") from exc
    if e.ndim != 1 or e.shape[0] != n:
        raise ValueError(f"errors: must have one entry per step count ({n}), got shape {tuple(e.shape)}")
    bad = np.flatnonzero(~np.isfinite(e))
    if bad.size:
        raise ValueError(f"errors: must be finite (got {e[bad[0]]} at index {bad[0]})")
    neg = np.flatnonzero(e < 0)
    if neg.size:
        raise ValueError(f"errors: must be non-negative (got {e[neg[0]]} at index {neg[0]})")
    zero = np.flatnonzero(e == 0)
    if zero.size and floor == 0:
        raise ValueError(
            f"errors: exact zero at index {zero[0]}: the reference's floor was reached; pass floor= (> 0) so that "
            "such points are excluded"
        )
    return e


def _check_floors(floors, n: int) -> np.ndarray:
    if floors is None:
        return np.zeros(n)
    try:
        f = np.asarray(floors, dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"floors: must be a 1-D sequence of numbers ({exc})") from exc
    if f.shape != (n,) or not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"floors: must hold one finite floor >= 0 per step count ({n}), got {f.tolist()}")
    return f


def local_slopes(ns, errors) -> list[float]:
    """p_j = log(e_j / e_{j+1}) / log(N_{j+1} / N_j), j = 0..len-2; nan where an error is exactly 0."""
    n = _check_ns(ns)
    e = _check_errors(errors, n.shape[0], floor=math.inf)
    return _slopes(n, e)


def _slopes(n: np.ndarray, e: np.ndarray) -> list[float]:
    out = []
    for j in range(len(n) - 1):
        if e[j] > 0 and e[j + 1] > 0:
            out.append(float(math.log(e[j] / e[j + 1]) / math.log(n[j + 1] / n[j])))
        else:
            out.append(math.nan)
    return out


def _find_window(above: np.ndarray, slopes: list[float], tol: float, min_slopes: int):
    """Finest run [i0, i1] of points above the floor whose slopes span <= tol, with >= min_slopes slopes."""
    n = len(above)
    for i1 in range(n - 1, min_slopes - 1, -1):
        if not above[i1]:
            continue
        i0, lo, hi = i1, math.inf, -math.inf
        while i0 > 0 and above[i0 - 1]:
            s = slopes[i0 - 1]
            if max(hi, s) - min(lo, s) > tol:
                break
            lo, hi, i0 = min(lo, s), max(hi, s), i0 - 1
        if i1 - i0 >= min_slopes:
            return i0, i1
    return None


def _no_window_reason(n, above, slopes, floor_factor, min_slopes) -> str:
    longest = run = 0
    for a in above:
        run = run + 1 if a else 0
        longest = max(longest, run)
    if longest < min_slopes + 1:
        low = np.flatnonzero(~above)
        tail = int(low[0]) if not above[low[0] :].any() else None
        where = f"from N={n[tail]}" if tail is not None else "at N=" + ", ".join(str(int(v)) for v in n[low])
        return (
            f"errors within {floor_factor:g}x of the reference floor {where} "
            f"(at most {longest} consecutive points above it, need {min_slopes + 1})"
        )
    usable = [s for j, s in enumerate(slopes) if above[j] and above[j + 1]]
    return "local slopes do not settle: " + ", ".join(f"{s:.2f}" for s in usable)


def fit_order(
    ns, errors, *, floor: float = 0.0, floor_factor: float = 100.0, slope_tol: float = 0.1, min_slopes: int = 2,
    floors=None,
) -> OrderFit:
    """Fit the convergence order p of errors ~ C N^-p on the asymptotic window (module docstring).

    ns: strictly increasing positive step counts (nested N = 2^j typically); errors: matching finite errors >= 0.
    floor: the reference's error floor; points with error <= floor_factor * floor are excluded (they may be 0).
    floors: optional per-point floors (e.g. a Monte Carlo standard error that shrinks with N), used with `floor`:
    point j is excluded when its error <= floor_factor * max(floor, floors[j]).
    Returns an OrderFit; with no window, order=None, ok=False and `reason` says why.
    """
    for name, v in (("floor", floor), ("floor_factor", floor_factor), ("slope_tol", slope_tol)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name}: must be a finite number (got {v!r})")
    if floor < 0:
        raise ValueError(f"floor: must be >= 0 (got {floor})")
    if floor_factor < 1:
        raise ValueError(f"floor_factor: must be >= 1 (got {floor_factor})")
    if slope_tol <= 0:
        raise ValueError(f"slope_tol: must be > 0 (got {slope_tol})")
    if not isinstance(min_slopes, (int, np.integer)) or isinstance(min_slopes, bool) or min_slopes < 1:
        raise ValueError(f"min_slopes: must be an integer >= 1 (got {min_slopes!r})")
    n = _check_ns(ns)
    if n.shape[0] < min_slopes + 1:
        raise ValueError(f"ns: need at least {min_slopes + 1} points for {min_slopes} slopes (got {n.shape[0]})")
    e = _check_errors(errors, n.shape[0], floor)

    slopes = _slopes(n, e)
    above = e > floor_factor * np.maximum(floor, _check_floors(floors, n.shape[0]))
    common = dict(slopes=slopes, ns=[int(v) for v in n], errors=[float(v) for v in e])
    win = _find_window(above, slopes, slope_tol, min_slopes)
    if win is None:
        reason = _no_window_reason(n, above, slopes, floor_factor, min_slopes)
        return OrderFit(order=None, ci=None, window=None, ok=False, reason=reason, **common)

    i0, i1 = win
    x, y = np.log(n[i0 : i1 + 1].astype(np.float64)), -np.log(e[i0 : i1 + 1])
    xc = x - x.mean()
    sxx = float(xc @ xc)
    order = float(xc @ (y - y.mean()) / sxx)

    ws = slopes[i0:i1]
    lo, hi = min(ws) - slope_tol / 2, max(ws) + slope_tol / 2  # (a)
    if len(ws) >= 2:  # (b) drift bracket around the finest slope
        r = n[i1 - 2] / n[i1 - 1]
        g = 2.0 * abs(ws[-1] - ws[-2]) * r / (1 - r)
        lo, hi = min(lo, ws[-1] - g), max(hi, ws[-1] + g)
    npts = i1 - i0 + 1
    if npts >= 4:  # (c) regression interval
        resid = y - y.mean() - order * xc
        se = math.sqrt(float(resid @ resid) / (npts - 2) / sxx)
        half = float(stats.t.ppf(0.975, npts - 2)) * se
        lo, hi = min(lo, order - half), max(hi, order + half)
    return OrderFit(order=order, ci=(float(lo), float(hi)), window=(int(i0), int(i1)), ok=True, **common)
