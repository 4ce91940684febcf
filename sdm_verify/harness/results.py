"""Measured cases judged: `results_from(rows_by_case)` -> `CaseResult`s (an order measurement, its verdict and the
reason), shared by the theory report and the conformance check."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import verdicts
from .convergence import OrderMeasurement, fit_rows

#: the verdict of one case: the order agrees with the claim, deviates from it, or no asymptotic window was found
VERDICTS = ("agree", "deviates", "no window")


@dataclass
class CaseResult:
    """One measured case with its verdict (verdicts.verdict) and what the report shows beside it."""

    measurement: OrderMeasurement
    verdict: str  # "agree" | "deviates" | "no window"
    reason: str
    family: str
    symbolic: dict | None = None

    @property
    def config(self) -> str:
        m = self.measurement
        return f"{m.target}/{m.process}/{m.schedule}"


def solver_family(solver) -> str:
    """The figure panel of a solver: its module in sdm_verify.solvers (UniPC split by whether it corrects)."""
    qualified = type(solver).__module__
    if not qualified.startswith("sdm_verify."):
        return "other"
    module = qualified.rsplit(".", 1)[-1]
    return "unip" if module == "unipc" and not getattr(solver, "corrector", True) else module


def _verdict(m: OrderMeasurement) -> tuple[str, str]:
    if any(not math.isfinite(e) for e in m.errors):
        return "no window", m.fit.reason
    ok, reason = verdicts.verdict(m, m.target)
    return ("agree" if ok else "no window" if not m.ok else "deviates"), reason


def results_from(rows_by_case: list[tuple[dict, list[dict]]], symbolic: dict | None = None) -> list[CaseResult]:
    """CaseResults from (case, its rows in N order); a case is {solver, target, process, schedule, claimed}."""
    symbolic = symbolic or {}
    out = []
    for case, rows in rows_by_case:
        ns = [int(r["n"]) for r in rows]
        fit = fit_rows(ns, rows)
        errors, floor = fit.errors, max(float(r.get("floor", 0.0)) for r in rows)
        m = OrderMeasurement(case["solver"], case["claimed"], case["target"], case["process"], case["schedule"],
                             ns, [int(r.get("nfe", 0)) for r in rows], errors, str(rows[0].get("metric", "?")),
                             floor, fit)
        verdict, reason = _verdict(m)
        out.append(CaseResult(m, verdict, reason, case.get("family", "other"), symbolic.get(case["solver"])))
    return out
