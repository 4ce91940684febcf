"""Measured convergence orders: `measure_order(solver, target, ...)`.

Errors at sigma_min (final=False) on nested grids N = 2^j of one schedule, common random numbers across N (the same
start points for every N), fitted by `orders.fit_order` on the asymptotic window only, above 100x the meter's floor.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from analytic import GaussianMixture
from analytic import processes as oracle_processes

from .. import schedules, solvers
from ..errors import InputError
from ..grid import describe
from . import targets
from .meters import meter_for
from .orders import OrderFit, fit_order
from .run import measure_run
from .store import ResultStore
from .sweep import SIGMA_MAX, SIGMA_MIN, Cell, grid_for, run_cells, solver_for

DEFAULT_NS = (32, 64, 128, 256)


def row_error(row: dict) -> float:
    """A result row's error; inf for a run that produced none (status "error": the message is in its error field)."""
    return float(row["error"]) if row.get("status", "ok") in ("ok", "diverged") else math.inf


def fit_rows(ns, rows: list[dict], **fit_kw) -> OrderFit:
    """fit_order on result rows (one per N): floor = the largest stated meter floor; a run without a finite error
    (diverged, failed) leaves no window to fit, and the reason says which."""
    ns = [int(n) for n in ns]
    errors = [row_error(r) for r in rows]
    bad = [(n, str(r.get("status", "ok"))) for n, e, r in zip(ns, errors, rows, strict=True) if not math.isfinite(e)]
    if bad:
        reason = "no finite error at " + ", ".join(f"N={n} ({st})" for n, st in bad)
        return OrderFit(None, None, [math.nan] * (len(ns) - 1), None, ns, errors, False, reason)
    return fit_order(ns, errors, floor=max(float(r.get("floor", 0.0)) for r in rows), **fit_kw)


@dataclass
class OrderMeasurement:
    """A measured convergence order: the errors of one solver at sigma_min on nested grids `ns` of one
    (target, process, schedule), the counted NFE per grid, the meter (`metric`) and its stated error `floor`, and
    the windowed fit (`fit`: order, confidence interval, local slopes, or the reason there is no window), beside
    the `claimed` order it is judged against (harness.verdicts)."""

    solver: str
    claimed: float | None
    target: str
    process: str
    schedule: str
    ns: list[int]
    nfe: list[int]
    errors: list[float]
    metric: str
    floor: float
    fit: OrderFit

    @property
    def order(self) -> float | None:
        return self.fit.order

    @property
    def ci(self):
        return self.fit.ci

    @property
    def slopes(self) -> list[float]:
        return self.fit.slopes

    @property
    def ok(self) -> bool:
        """An asymptotic window was found (so `order` is a number)."""
        return self.fit.ok

    def agrees(self, tol: float = 0.2) -> bool:
        """The measured order is within `tol` of the claim."""
        return self.ok and self.claimed is not None and abs(self.order - self.claimed) <= tol

    def to_dict(self) -> dict:
        return dict(solver=self.solver, claimed=self.claimed, target=self.target, process=self.process,
                    schedule=self.schedule, ns=self.ns, nfe=self.nfe, errors=self.errors, metric=self.metric,
                    floor=self.floor, **{f"fit_{k}": v for k, v in self.fit.to_dict().items()})

    def __str__(self) -> str:
        claim = f"claimed {self.claimed:g}, " if self.claimed is not None else ""
        return f"{self.solver} on {self.target}/{self.process}/{self.schedule}: {claim}{self.fit}"


def measure_order(solver, target, process: str = "ve", schedule: str = "edm", ns=DEFAULT_NS,
                  sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, *, store: ResultStore | None = None,
                  solver_params: dict | None = None, schedule_params: dict | None = None,
                  claimed: float | None = None, progress: bool = False, **fit_kw) -> OrderMeasurement:
    """Measure the convergence order of `solver` on `target`.

    solver: a registered solver name (results are cached in `store`) or any callable solver(denoiser, x, sigmas).
    target: an embedded target name (sdm_verify.harness.targets) or an analytic.GaussianMixture.
    claimed: defaults to the solver's declared `order`. Extra keywords go to `orders.fit_order`.
    """
    ns = check_arguments(solver, target, process, schedule, ns, sigma_min, sigma_max, store, solver_params,
                         schedule_params, claimed, progress, fit_kw)
    if isinstance(solver, str) and isinstance(target, str):
        cells = [Cell(target, solver, schedule, n, process, sigma_min, sigma_max, False,
                      dict(solver_params or {}), dict(schedule_params or {})) for n in ns]
        rows = run_cells(cells, store, progress=progress, desc=f"{solver} {target}")
        name = solver
        if claimed is None:
            claimed = solver_for(cells[0].config()).order
    else:
        if isinstance(solver, str):
            solver = solvers.get(solver, **(solver_params or {}))
        name = getattr(solver, "name", getattr(solver, "__name__", type(solver).__name__))
        if claimed is None:
            claimed = getattr(solver, "order", None)
        rows = []
        meter = None if isinstance(target, str) else meter_for(target, sigma_max, sigma_min)
        for n in ns:
            cfg = Cell("-", name, schedule, n, process, sigma_min, sigma_max, False, {},
                       dict(schedule_params or {})).config()
            rows.append(measure_run(solver, target, grid_for(cfg), sigma_min, meter=meter))
    fit = fit_rows(ns, rows, **fit_kw)
    errors, floor = fit.errors, max(float(r["floor"]) for r in rows)
    tname = target if isinstance(target, str) else repr(target)
    return OrderMeasurement(name, claimed, tname, rows[0].get("process", process), schedule, ns,
                            [int(r["nfe"]) for r in rows], errors, rows[0]["metric"], floor, fit)


FIT_KEYWORDS = ("floor", "floor_factor", "slope_tol", "min_slopes")


def _number(value, name: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name}: must be a finite number, got {describe(value)}")
    if positive and value <= 0:
        raise InputError(f"{name}: must be > 0, got {value!r}")
    return float(value)


def check_arguments(solver, target, process, schedule, ns, sigma_min, sigma_max, store, solver_params,
                    schedule_params, claimed, progress, fit_kw) -> list[int]:
    """measure_order's arguments, each refused on one line naming it before any solver run; returns ns as ints."""
    if isinstance(solver, str):
        if solver not in solvers.available():
            raise InputError(f"solver: unknown solver {solver!r}; available: {', '.join(solvers.available())}")
    elif not callable(solver):
        raise InputError(f"solver: expected a registered name or a callable solver(denoiser, x, sigmas), got "
                         f"{describe(solver)}")
    if isinstance(target, str):
        if target not in targets.available():
            raise InputError(f"target: unknown target {target!r}; available: {', '.join(targets.available())}")
    elif not isinstance(target, GaussianMixture):
        raise InputError(f"target: expected a target name or an analytic.GaussianMixture, got {describe(target)}")
    if not isinstance(process, str) or process not in oracle_processes.available():
        raise InputError(f"process: unknown process {process!r}; available: {', '.join(oracle_processes.available())}")
    if not isinstance(schedule, str) or schedule not in schedules.available():
        raise InputError(f"schedule: unknown schedule {schedule!r}; available: {', '.join(schedules.available())}")
    if isinstance(ns, (str, bytes)) or not hasattr(ns, "__iter__"):
        raise InputError(f"ns: expected a sequence of step counts, got {describe(ns)}")
    ns = list(ns)
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise InputError(f"ns: step counts must be integers >= 1, got {n!r}")
    if len(ns) < 3:
        raise InputError(f"ns: need at least 3 step counts to fit an order, got {len(ns)}")
    if any(b <= a for a, b in zip(ns, ns[1:], strict=False)):
        raise InputError(f"ns: must be strictly increasing, got {ns}")
    lo, hi = _number(sigma_min, "sigma_min"), _number(sigma_max, "sigma_max")
    if lo >= hi:
        raise InputError(f"sigma_min: must be below sigma_max (got {lo!r} >= {hi!r})")
    if store is not None and not isinstance(store, ResultStore):
        raise InputError(f"store: expected a ResultStore or None, got {describe(store)}")
    for name, params in (("solver_params", solver_params), ("schedule_params", schedule_params)):
        if params is not None and not isinstance(params, dict):
            raise InputError(f"{name}: expected a dict of keyword arguments or None, got {describe(params)}")
    if solver_params and not isinstance(solver, str):
        raise InputError("solver_params: only for a registered solver name (build a callable solver yourself)")
    if claimed is not None:
        _number(claimed, "claimed")
    if not isinstance(progress, bool):
        raise InputError(f"progress: expected True or False, got {describe(progress)}")
    unknown = sorted(set(fit_kw) - set(FIT_KEYWORDS))
    if unknown:
        raise InputError(f"{unknown[0]}: not an argument of measure_order (fit keywords: {', '.join(FIT_KEYWORDS)})")
    return [int(n) for n in ns]
