"""The conformance items, one module each, every one a function `item(solver, ctx) -> Item` (conformance.context).

ITEMS lists them in the order of the verdict table and the JSON; `check` runs them in RUN_ORDER (the order runs are
measured before any item and judged last, once the symbolic item has annotated the cases; the nfe item reads the
final_step item's runs into sigma = 0).
"""

from __future__ import annotations

from collections.abc import Callable

from ..context import Context
from ..result import Item
from . import affine, determinism, final_step, float32, nfe, order, point_mass, symbolic

#: item name -> its check, in the order of the verdict table
CHECKS: dict[str, Callable[[object, Context], Item]] = {
    "order": order.item, "symbolic": symbolic.item, "nfe": nfe.item, "point_mass": point_mass.item,
    "affine": affine.item, "float32": float32.item, "final_step": final_step.item, "determinism": determinism.item,
}
ITEMS = tuple(CHECKS)
RUN_ORDER = ("symbolic", "final_step", "nfe", "point_mass", "affine", "float32", "determinism", "order")
