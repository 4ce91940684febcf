"""The conformance check of one solver (`sdm-verify validate`, the pytest plugin): `check(spec_or_solver, ...)`.

For the solver (each of its `processes` when it has them; otherwise the canonical sigma-space solver on the VE and
VP configurations of harness.cases.validation_configs) it measures, reports and judges one item per module of
conformance.items, each returning an `Item`:

  order        measured order per case against the claim (items/order.py)
  symbolic     the symbolic order of its update_rule, or of its declared equivalent (items/symbolic.py)
  nfe          counted denoiser calls against the declared nfe(n) / nfe_to_zero(n) (items/nfe.py)
  point_mass   the exact point-mass flow reproduced to rounding (items/point_mass.py)
  affine       an affine map on a Gaussian target, to rounding (items/affine.py)
  float32      float32 - float64 drift within rounding (items/float32.py)
  final_step   a finite run into sigma = 0, reported (items/final_step.py)
  determinism  bitwise identical runs, input unmodified (items/determinism.py)

Verdict "pass" only if every pass/fail item passes.
"""

from .check import check
from .context import Context
from .items import ITEMS
from .items.final_step import FINAL_NS
from .items.float32 import F32_LIMIT, F32_NS
from .items.point_mass import IDENTITY_RTOL
from .items.symbolic import EQUIVALENCE_GRIDS, EQUIVALENCE_RTOL
from .result import ConformanceResult, Item

__all__ = ["check", "ConformanceResult", "Item", "Context", "ITEMS", "EQUIVALENCE_RTOL", "EQUIVALENCE_GRIDS",
           "IDENTITY_RTOL", "F32_LIMIT", "F32_NS", "FINAL_NS"]
