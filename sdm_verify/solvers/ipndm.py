"""iPNDM (Zhang & Chen 2023, arXiv 2204.13902; as zju-pi/diff-sampler `ipndm` and `ipndm_v`).

Adams-Bashforth on dx/dsigma = eps(x, sigma) = (x - D)/sigma in sigma, lower-order starts: step i uses
k = min(max_order, i + 1) values of eps, newest first (noise-sigma form, H = sigma_{i+1} - sigma_i).

ipndm: x_{i+1} = x_i + H sum_j c_j eps_{i-j} with the FIXED uniform-step coefficients [1], [3, -1]/2,
    [23, -16, 5]/12, [55, -59, 37, -9]/24. Claimed order 4 = the uniform-grid claim. On a non-uniform grid
    these weights (blind to the step ratios) integrate only constants exactly: formally inconsistent with
    order 4. That is what the harness measures; do not "fix" it.
ipndm_v: diff-sampler's "variable-step Adams-Bashforth" weights, rewritten here in the step ratios
    r_j = (step j + 1 back)/H. Claimed order 4. It is NOT Lagrange Adams-Bashforth (deis_tab3):
    - 2 points: variable-step AB2 (exact).
    - 3 points: its correction factor (1 - 1/(3 r0 (r0 + r1)))/2 differs from AB3's
      (1/3 + r0/2)/(r0 (r0 + r1)) unless r0 (r0 + r1) = 1 + r0: order 2 in general, AB3 on uniform steps.
    - 4 points: on uniform steps the weights are [57, -65, 43, -11]/24, not AB4's [55, -59, 37, -9]/24
      (exact to degree 2 only), and in general they sum to H only if r0 r2 = r1^2 (inconsistent otherwise).
The step into sigma = 0 is x <- D(x, sigma) (Euler there), 1 NFE.
"""

from __future__ import annotations

from ..errors import InputError
from .base import MATH_OPS
from .multistep import Multistep
from .polynomials import history_nodes
from .registry import register

#: fixed Adams-Bashforth coefficients (numerators, denominator) for k = 1..4 values of eps, newest first
AB_COEFFICIENTS = (((1,), 1), ((3, -1), 2), ((23, -16, 5), 12), ((55, -59, 37, -9), 24))


class IPNDM(Multistep):
    """Fixed-coefficient Adams-Bashforth in sigma (iPNDM). Claimed order `max_order` (4), on uniform grids."""

    name = "ipndm"
    symbolic_form = "noise-sigma"
    #: the fixed Adams-Bashforth weights are the ones of uniform steps (Zhang & Chen 2023, iPNDM)
    order_conditions = "uniform steps"
    final_step = "x <- D(x, sigma) (the Euler step into sigma = 0), 1 NFE"

    def __init__(self, max_order: int = 4):
        if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= 4:
            raise InputError(f"max_order: must be an integer in 1..4, got {max_order!r}")
        self.max_order = max_order
        self.order = self.history_size = max_order

    def params(self) -> dict:
        return {"max_order": self.max_order}

    def coefficients(self, ratios, k: int) -> list:
        """c_j (weights / H) for k values of eps; fixed: independent of the ratios."""
        nums, den = AB_COEFFICIENTS[k - 1]
        return [c / den for c in nums]

    def update_rule(self, h, ratios, ops, k: int | None = None):
        """Weights H c_j on the actual nodes [0, -r0, -(r0 + r1), ...] (noise-sigma form, h = H)."""
        k = self.max_order if k is None else k
        return [h * c for c in self.coefficients(ratios, k)], history_nodes(ratios, k - 1)

    def weights(self, h, ratios, k):
        return self.update_rule(h, ratios, MATH_OPS, k=k)[0]


class IPNDMVariable(IPNDM):
    """diff-sampler's variable-step iPNDM (`ipndm_v`). Claimed order 4; see the module docstring."""

    name = "ipndm_v"
    #: diff-sampler states no condition for its variable-step weights: the claim is the iPNDM paper's, on uniform
    #: steps (where these weights are not AB4's either, see the module docstring)
    order_conditions = "uniform steps"

    def coefficients(self, ratios, k: int) -> list:
        if k == 1:
            return [1]
        r0 = ratios[0]
        c2 = [1 + 1 / (2 * r0), -1 / (2 * r0)]  # AB2 with variable step
        if k == 2:
            return c2
        r1 = ratios[1]
        t1 = (1 - 1 / (3 * r0 * (r0 + r1))) / 2
        if k == 3:
            return [c2[0] + t1, c2[1] - (1 + r0 / r1) * t1, t1 * r0 / r1]
        r2 = ratios[2]
        q = r0 * (r0 + r1) / (r1 * (r1 + r2))
        t2 = ((1 - 1 / (3 * (1 + r0))) / 2 + (1 - 1 / (2 * (1 + r0))) / (6 * (1 + r0 + r1))) * (
            (1 + r0) * (1 + r0 + r1) / (r0 * (r0 + r1) * (r0 + r1 + r2))
        )
        return [
            c2[0] + t1 + t2,
            c2[1] - (1 + r0 / r1) * t1 - (1 + r0 / r1 + q) * t2,
            t1 * r0 / r1 + (r0 / r1 + q * (1 + r1 / r2)) * t2,
            -t2 * q * r0 / r1,
        ]


register("ipndm", IPNDM)
register("ipndm_v", IPNDMVariable)
