"""What the items of one conformance check share: the `Context` every item receives, and the progress bar.

Every item is a function `item(solver, ctx) -> Item` (conformance.items); the context carries what they have in
common: the claimed order, the solver per process, the order rows measured before the items run, the items judged
so far and the progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..harness.results import CaseResult, results_from
from . import declared
from .result import Item


class Progress:
    """A tqdm bar over the solver runs of one check (hidden when disabled or when not on a terminal)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False)

    def step(self, k: int = 1) -> None:
        self.bar.update(k)

    def close(self) -> None:
        self.bar.close()


def tick(bar: Progress | None, k: int = 1) -> None:
    """Advance `bar` by k solver runs (no bar: nothing)."""
    if bar is not None:
        bar.step(k)


@dataclass
class Context:
    """What the items of one check share.

    name                  the solver's name (the key of its symbolic order in the judged cases)
    claimed_order         the order the solver is judged against
    variants              (process, solver) pairs: one per declared process, or (None, solver) (declared.variants)
    claimed_nfe_per_step  K of --claimed-nfe-per-step (counted NFE must equal K N), or None
    measured              the order runs, measured before the items: (case, its rows in N order) per case
    items                 the items judged so far, in the order the check runs them (the nfe item reads the
                          final_step item's runs into sigma = 0)
    bar                   the progress bar, or None
    unreadable            claim -> reason for a declaration read before the items that cannot be read (the declared
                          `order`, when no claimed order is given); the item reading it fails
    judge                 how the measured cases are judged: harness.results.results_from (default), or the
                          guided check's (conformance.guided: its joint-Gaussian target is judged as a linear one)
    """

    name: str
    claimed_order: float
    variants: list[tuple[str | None, object]]
    claimed_nfe_per_step: float | None = None
    measured: list[tuple[dict, list[dict]]] = field(default_factory=list)
    items: dict[str, Item] = field(default_factory=dict)
    bar: Progress | None = None
    unreadable: dict[str, str] = field(default_factory=dict)
    judge: Callable[[list, dict], list[CaseResult]] | None = None
    _cases: list[CaseResult] | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, solver, claimed_order: float = 1.0, **kwargs) -> Context:
        """A context for running single items on `solver` outside `check` (nothing measured, no bar)."""
        return cls(declared.name(solver), float(claimed_order), declared.variants(solver), **kwargs)

    def step(self, k: int = 1) -> None:
        tick(self.bar, k)

    def cases(self) -> list[CaseResult]:
        """The measured order cases judged (harness.results.results_from), each annotated with the symbolic item's
        data; computed once, so call it after the symbolic item has run."""
        if self._cases is None:
            symbolic = self.items.get("symbolic")
            judge = self.judge or results_from
            self._cases = judge(self.measured, {self.name: (symbolic.data if symbolic else None) or None})
        return self._cases
