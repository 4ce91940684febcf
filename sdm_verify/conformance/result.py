"""What the conformance check returns: one `Item` per check item and the `ConformanceResult` that holds them.

An item is judged ("pass" / "fail"), reported only ("info") or does not apply ("n/a"); the check's verdict is "pass"
only if no item failed. The result prints as the verdict table of `sdm-verify validate` (`table()`) and serializes
as its --json document (`to_json()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..harness.results import CaseResult


@dataclass
class Item:
    """One conformance item's outcome, the same type for every item.

    name    the item (one of conformance.ITEMS)
    status  "pass" / "fail" (judged), "info" (reported only) or "n/a" (does not apply to this solver)
    value   the measured value as shown in the table (e.g. "1.98", "3.2e-15", "identical")
    limit   what the value is judged against, as shown (e.g. "< 1e-12", "claimed 2 (verdicts.verdict)")
    detail  one line: the numbers behind the value and, when failed, what failed
    data    the numbers themselves, for the --json document
    """

    name: str
    status: str
    value: str
    limit: str
    detail: str
    data: dict = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.status in ("pass", "fail")

    def to_dict(self) -> dict:
        return dict(name=self.name, status=self.status, value=self.value, limit=self.limit, detail=self.detail)


class Judged:
    """The verdict of a check whose `items` (name -> Item) are judged: "pass" only if no item failed."""

    items: dict

    @property
    def failed(self) -> list[str]:
        return [n for n, it in self.items.items() if it.status == "fail"]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"


@dataclass
class ConformanceResult(Judged):
    """The conformance check of one solver: its items (in conformance.ITEMS order) and the order cases measured.

    spec                  the SPEC as given (or the callable's name)
    name                  the solver's name in tables and JSON
    claimed_order         the order judged against (given, or the solver's declared `order`; NaN when the declared
                          order cannot be read, and the order item then fails)
    claimed_nfe_per_step  K of --claimed-nfe-per-step, or None
    items                 item name -> Item
    cases                 one harness.results.CaseResult per measured (process, target, schedule)
    config                the diffusers / k-diffusion config the solver was loaded with
    """

    spec: str
    name: str
    claimed_order: float
    claimed_nfe_per_step: float | None
    items: dict[str, Item]
    cases: list[CaseResult]
    config: dict | None = None


    def measured_orders(self) -> dict:
        return self.items["order"].data["measured_order"]

    def to_json(self) -> dict:
        """The JSON document of `sdm-verify validate --json`."""
        it = self.items
        per_step = sorted({c["nfe_per_step"][-1] for c in _case_dicts(self.cases)})
        return dict(
            solver=self.name, spec=self.spec, config=self.config, claimed_order=_finite(self.claimed_order),
            claimed_nfe_per_step=self.claimed_nfe_per_step, measured_order=self.measured_orders(),
            nfe=it["nfe"].data, nfe_per_step=per_step[0] if len(per_step) == 1 else per_step,
            symbolic=it["symbolic"].data or None,
            identities={"point_mass": it["point_mass"].data, "affine": it["affine"].data},
            float32_drift=it["float32"].data, final_step=it["final_step"].data,
            determinism=it["determinism"].data, items=[i.to_dict() for i in it.values()], failed=self.failed,
            verdict=self.verdict, cases=_case_dicts(self.cases))

    def case_table(self) -> str:
        header = ["process/target/schedule", "N", "NFE/step", "measured [CI]", "verdict", "reason"]
        rows = []
        for r, c in zip(self.cases, _case_dicts(self.cases), strict=True):
            m = r.measurement
            rows.append([f"{m.process}/{m.target}/{m.schedule}", f"{m.ns[0]}..{m.ns[-1]}",
                         f"{c['nfe_per_step'][-1]:g}",
                         f"{m.order:.2f} [{m.ci[0]:.2f}, {m.ci[1]:.2f}]" if m.ok else "no window", r.verdict,
                         r.reason])
        return _format(header, rows)

    def item_table(self) -> str:
        rows = [[i.name, i.status, i.value, i.limit, i.detail] for i in self.items.values()]
        return _format(["item", "status", "value", "limit", "detail"], rows)

    def table(self) -> str:
        """The verdict table printed by the CLI: per-case orders, then one row per item, then the verdict."""
        claimed = (f"{self.claimed_order:g}" if math.isfinite(self.claimed_order)
                   else "unreadable (the declared order is not a positive number)")
        head = f"solver {self.name}: claimed order {claimed}"
        tail = (f"VERDICT: {self.verdict.upper()}" + (f" (failed: {', '.join(self.failed)})" if self.failed else ""))
        return "\n".join([head, "", self.case_table(), "", self.item_table(), "", tail])


def _format(header, rows) -> str:
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False)) + "  " + str(row[-1])
                     for row in [header, *rows])


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _case_dicts(results: list[CaseResult]) -> list[dict]:
    out = []
    for r in results:
        m = r.measurement
        out.append(dict(target=m.target, process=m.process, schedule=m.schedule, ns=m.ns, nfe=m.nfe,
                        nfe_per_step=[nf / n for nf, n in zip(m.nfe, m.ns, strict=True)], metric=m.metric,
                        errors=[_finite(e) for e in m.errors], floor=m.floor, measured_order=m.order,
                        ci=list(m.ci) if m.ci else None, window=list(m.fit.window) if m.fit.window else None,
                        slopes=[_finite(s) for s in m.slopes], verdict=r.verdict, agrees=r.verdict == "agree",
                        reason=r.reason))
    return out
