"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework", arXiv 2302.04867).

Data prediction, multistep exponential integrator in lambda = -log sigma (data-lambda form). A step
sigma_s -> sigma_t, h = lambda_t - lambda_s, hh = -h, previous points at lambda_s + rk_m h
(rk_m = -r0, -(r0 + r1), ...):

    x_t = (sigma_t/sigma_s) x_s - expm1(hh) D_0 - B(h) sum_m rho_m (D_m - D_0)/rk_m,
    B(h) = hh (bh1) or expm1(hh) (bh2),

rho solving the order conditions sum_m rho_m rk_m^(k-1) = k! hh phi_(k+1)(hh)/B(h) (phi_k as in DPM-Solver).
UniP-p (predictor, order p) uses the p - 1 previous points (k = 1..p-1); UniC-p (corrector, order p + 1)
adds the new point rk = 1 with D(x_t^pred) (k = 1..p). As in the authors' code (and diffusers) UniP-2 and
UniC-1 take rho = [1/2] instead of solving (that order condition then holds to O(h), which keeps the order):
UniP-2 bh2 is DPM-Solver++(2M), UniP-1 is DDIM. Where rho is solved, B(h) cancels: bh1 and bh2 differ only
through rho = 1/2.

The corrector costs no NFE: D at the predicted x_t is evaluated anyway for the next step; it corrects x_t
and is kept (uncorrected) in the history. Hence no corrector after the last step (there is no next
evaluation), as in the paper's `sample` loop and diffusers: a grid ending above 0 returns the last predictor
output (one step with local error O(h^(p+1)), within the claimed global order p + 1). Warm-up: step i
uses order min(p, i + 1); the corrector of a step uses that step's order. `lower_order_final` (default off):
order min(p, steps left), as in the paper's code. A step into sigma = 0 is x <- D(x, sigma) at the predicted
point, 1 NFE (the pending correction would be multiplied by sigma_t/sigma_s = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from . import forms
from .base import MATH_OPS, StepContext
from .multistep import Multistep, MultistepState
from .polynomials import history_nodes, lagrange_basis
from .registry import register

VARIANTS = ("bh1", "bh2")


@dataclass
class UniPCState(MultistepState):
    """The history (D at the uncorrected grid points, newest first) and the step awaiting its corrector: its
    (corrected) input x and its order."""

    x: torch.Tensor | None = None
    order: int = 0


class UniPC(Multistep):
    """UniP-p predictor with optional UniC-p corrector (claimed global order p + 1 with it, p without)."""

    name = "unipc"
    symbolic_form = "data-lambda"
    final_step = "x <- D(x, sigma) at the predicted point (no corrector into sigma = 0), 1 NFE"

    def __init__(
        self,
        variant: str = "bh2",
        order: int = 2,
        corrector: bool = True,
        lower_order_final: bool = False,
        disable_corrector_steps=(),
    ):
        if variant not in VARIANTS:
            raise InputError(f"variant: must be one of {VARIANTS}, got {variant!r}")
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 3:
            raise InputError(f"order: the predictor order must be an integer in 1..3, got {order!r}")
        if not isinstance(corrector, bool):
            raise InputError(f"corrector: must be a bool, got {corrector!r}")
        if not isinstance(lower_order_final, bool):
            raise InputError(f"lower_order_final: must be a bool, got {lower_order_final!r}")
        if isinstance(disable_corrector_steps, (str, bytes)) or not hasattr(disable_corrector_steps, "__iter__"):
            raise InputError(f"disable_corrector_steps: must be a sequence of non-negative step indices, got "
                             f"{disable_corrector_steps!r}")
        steps = tuple(disable_corrector_steps)
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in steps):
            raise InputError(f"disable_corrector_steps: must be non-negative step indices, got {steps!r}")
        self.variant, self.predictor_order, self.corrector = variant, order, corrector
        self.history_size = order
        self.lower_order_final = bool(lower_order_final)
        self.disable_corrector_steps = tuple(sorted(set(steps)))
        self.order = order + 1 if corrector else order  # the claimed global order
        self.name = f"unipc_{variant}_p{order}" if corrector else f"unip_{variant}_p{order}"

    def params(self) -> dict:
        return {
            "variant": self.variant,
            "order": self.predictor_order,
            "corrector": self.corrector,
            "lower_order_final": self.lower_order_final,
            "disable_corrector_steps": self.disable_corrector_steps,
        }

    # ----------------------------------------------------------------------------------- coefficients
    def _weights(self, h, rks, n_conditions: int, ops, shortcut: bool):
        """Weights on [0] + rks of the update with rho from the first `n_conditions` order conditions."""
        hh = -h
        h_phi_1 = ops.expm1(hh)
        big_b = hh if self.variant == "bh1" else ops.expm1(hh)
        if shortcut:
            rhos = [1 / 2]
        else:
            b, h_phi_k, fact = [], h_phi_1 / hh - 1, 1  # h_phi_k = hh phi_(k+1)(hh), fact = k!
            for k in range(1, n_conditions + 1):
                b.append(h_phi_k * fact / big_b)
                fact = fact * (k + 1)
                h_phi_k = h_phi_k / hh - 1 / fact
            rhos = [sum(a * bk for a, bk in zip(c, b, strict=True)) for c in lagrange_basis(rks)]
        w0, rest = -h_phi_1, []
        for rk, rho in zip(rks, rhos, strict=True):
            c = big_b * rho / rk
            w0 = w0 + c
            rest.append(-c)
        return [w0] + rest

    def update_rule(self, h, ratios, ops, order: int | None = None):
        """UniP-p: weights on the nodes [0, -r0, -(r0 + r1), ...] (data-lambda form)."""
        p = self.predictor_order if order is None else order
        nodes = history_nodes(ratios, p - 1)
        return self._weights(h, nodes[1:], p - 1, ops, shortcut=p == 2), nodes

    def corrector_rule(self, h, ratios, ops, order: int | None = None):
        """UniC-p: weights on the nodes [0, -r0, ..., 1] (1 = the new point, D at the predicted x_t)."""
        p = self.predictor_order if order is None else order
        nodes = history_nodes(ratios, p - 1) + [1]
        return self._weights(h, nodes[1:], p, ops, shortcut=p == 1), nodes

    # ----------------------------------------------------------------------------------- stepping
    def init_state(self) -> UniPCState:
        return UniPCState()

    def weights(self, h, ratios, k):
        return self.update_rule(h, ratios, MATH_OPS, order=k)[0]

    def step(self, denoiser, x, i, ctx: StepContext):
        st, sig = ctx.state, ctx.sigmas
        s, t = sig[i], sig[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        if self.corrector and i > 0 and (i - 1) not in self.disable_corrector_steps:
            p, r = st.order, sig[i - 1]
            h = forms.step_size(self.symbolic_form, r, s)
            w, _ = self.corrector_rule(h, self.ratios(sig, i - 1, p - 1), MATH_OPS, order=p)
            x = forms.apply(self.symbolic_form, st.x, r, s / r, w, st.history[:p] + [d])
        self.remember(st, d)
        p = self.step_order(i, len(sig) - 1)
        st.x, st.order = x, p
        return self.update(x, sig, i, st.history, p)


register("unipc", UniPC, variant="bh2", order=2, corrector=True)
for _v in VARIANTS:
    for _p in (1, 2, 3):
        register(f"unipc_{_v}_p{_p}", UniPC, variant=_v, order=_p, corrector=True)
for _v in VARIANTS:
    for _p in (1, 2, 3):
        register(f"unip_{_v}_p{_p}", UniPC, variant=_v, order=_p, corrector=False)
