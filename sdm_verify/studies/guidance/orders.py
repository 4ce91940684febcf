"""Error curves of one solver on one guided target at one w: errors against N and counted NFE, the order fit.

Grids: EDM rho = 7 from sigma 80 to 0.002 (VE, canonical variables). N runs over the half-octave sequence
round(2^(k/2)) (2, 3, 4, 6, 8, 11, 16, ...; up to 512 for claimed order <= 2 and 2048 above, as the theory matrix's
grids) joined with every N whose NFE lies in 5..25 (the few-step regime). The order is fitted by
harness.orders.fit_order on the doubling subset (N = 2^j, the theory matrix's convention) above the meter's floor.
A run diverges when a state is non-finite (SolverDivergedError) or exceeds DIVERGE_FACTOR x the data scale
(DivergedRun): its error is inf and the step is recorded. A solver that decides on the data (SDM's latch) decides on
the meter's decision batch and replays those decisions on the measured points (harness.run.freeze_decisions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ... import schedules
from ...errors import SolverDivergedError
from ...harness.nfe import count_nfe
from ...harness.orders import fit_order
from ...harness.run import decides_on_data, freeze_decisions
from ...harness.sweep import registered_solver
from .targets import SIGMA_MAX, SIGMA_MIN

DIVERGE_FACTOR = 1e6
TOL = 0.25
FEW_NFE = (5, 25)


class DivergedRun(RuntimeError):
    def __init__(self, step: int):
        super().__init__(f"diverged at step {step}")
        self.step = step


def half_octaves(top: int, bottom: int = 2) -> list[int]:
    out, k = [], 2
    while True:
        n = int(round(2 ** (k / 2)))
        if n > top:
            return out
        if n >= bottom and n not in out:
            out.append(n)
        k += 1


def claimed_order(solver: str) -> float | None:
    order = registered_solver(solver).order
    return None if order is None else float(order)


def grid_ns(solver: str, quick: bool = False) -> list[int]:
    claimed = claimed_order(solver) or 1.0
    top = (512 if claimed >= 3 else 256) if quick else (2048 if claimed >= 3 else 512)
    s = registered_solver(solver)
    few = [n for n in range(1, 30) if FEW_NFE[0] <= s.nfe(n) <= FEW_NFE[1]]
    return sorted(set(half_octaves(top)) | set(few))


def edm_grid(n: int) -> torch.Tensor:
    return schedules.get("edm")(n, SIGMA_MIN, SIGMA_MAX)


def run_once(solver_name: str, meter, sigmas: torch.Tensor, wrap=None, params: dict | None = None) -> dict:
    """One measured run: {error, exact, nfe, status, step}. wrap: a denoiser wrapper (e.g. thresholding)."""
    field_ = meter.field if wrap is None else wrap(meter.field)
    solver = registered_solver(solver_name, params=params)
    if decides_on_data(solver):
        solver = freeze_decisions(solver, field_, meter.decision_batch(), sigmas)[0]
    counted = count_nfe(field_)
    limit = DIVERGE_FACTOR * max(meter.scale, 1.0)

    def guard(info):
        if float(info["x"].abs().max()) > limit:
            raise DivergedRun(info["i"])

    try:
        got = meter.measure(lambda x: solver(counted, x, sigmas, callback=guard))
    except DivergedRun as exc:
        return {"error": math.inf, "exact": False, "nfe": None, "status": "diverged", "step": exc.step}
    except SolverDivergedError as exc:
        return {"error": math.inf, "exact": False, "nfe": None, "status": "diverged", "step": exc.step}
    return {**got, "nfe": counted.nfe, "status": "ok", "step": None}


@dataclass
class Curve:
    solver: str
    target: str
    w: float
    claimed: float | None
    ns: list
    errors: list
    nfe: list
    exact: list
    status: list
    steps: list
    floor: float
    metric: str
    variant: str = "plain"  # "plain" or "thresholded"
    fit: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = [e if math.isfinite(e) else None for e in self.errors]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Curve:
        d = dict(d)
        d["errors"] = [math.inf if e is None else float(e) for e in d["errors"]]
        return cls(**d)

    @property
    def order(self) -> float | None:
        return self.fit.get("order")

    def agrees(self) -> bool | None:
        """The claimed order holds: |p - claimed| <= TOL on mixtures, p >= claimed - TOL on the joint Gaussian
        (a linear problem may converge faster than claimed: docs/theory.md §6)."""
        if self.claimed is None or self.order is None:
            return None
        if self.target.startswith("joint"):
            return self.order >= self.claimed - TOL
        return abs(self.order - self.claimed) <= TOL


def fit_curve(ns, errors, floor: float) -> dict:
    """fit_order on the doubling subset of the finite errors after the last divergence (dict form)."""
    pts = [(n, e) for n, e in zip(ns, errors, strict=True) if n & (n - 1) == 0]
    last_bad = max((i for i, (_, e) in enumerate(pts) if not math.isfinite(e)), default=-1)
    pts = pts[last_bad + 1:]
    if len(pts) < 3:
        return {"order": None, "ok": False, "reason": "fewer than 3 finite doubling points", "window": None}
    fit = fit_order([n for n, _ in pts], [e for _, e in pts], floor=floor)
    return fit.to_dict()


def measure_curve(solver: str, meter, ns, wrap=None, variant: str = "plain") -> Curve:
    rows = [run_once(solver, meter, edm_grid(n), wrap) for n in ns]
    errors = [r["error"] for r in rows]
    c = Curve(solver, meter.target, meter.w, claimed_order(solver), list(ns), errors, [r["nfe"] for r in rows],
              [bool(r["exact"]) for r in rows], [r["status"] for r in rows], [r["step"] for r in rows],
              meter.floor, meter.metric, variant)
    c.fit = fit_curve(c.ns, c.errors, meter.floor)
    return c
