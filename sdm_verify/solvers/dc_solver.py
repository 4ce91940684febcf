"""DC-Solver (Zhao, Wang, Zhou & Lu 2024, "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic
Compensation", arXiv 2409.03755, ECCV 2024) on UniPC (solvers/unipc.py), in canonical variables.

The misalignment: UniPC evaluates D_i = D(x_i^pred, sigma_i) at the *predicted* x_i, uses it to correct x_i, and then
steps on from the *corrected* x_i with D_i, a value taken at another point. DC replaces D_i, before the predictor of
step i (and for the rest of the run: it enters the history), by the Lagrange interpolant of the dc_order + 1 newest
values D_i, D_{i-1}, ..., D_{i-dc_order} evaluated at the compensated time
    tau_i = rho_i lambda_i + (1 - rho_i) lambda_{i-1},        lambda = -log sigma    (docs/solvers_dc_timeshift.md §1),
so rho_i = 1 leaves D_i unchanged (the run is then UniPC to rounding: the step skips the interpolation, as the
authors' code does). The authors interpolate in their model's time t (VP); canonical variables have no t, so the
interpolation variable here is lambda, the variable UniPC steps in (a deviation, stated in `notes`).
rho_i applies at step i when the history holds dc_order + 1 values (i >= dc_order) and the step ends above 0;
elsewhere it must be 1. The step into sigma = 0 is UniPC's: x <- D(x, sigma) at the predicted point, 1 NFE.

The ratios are found by `search_ratios`: step by step (greedy, as the authors' `search_dc`), rho_i minimises the
mean squared distance between the corrected x_{i+1} (the predicted one on the last step) and a reference trajectory
at sigma_{i+1} (the authors: a 999-step DDIM; the tests: the oracle's exact flow), by golden-section search in a
bracket. The authors' cascade polynomial regression (ratios predicted for other NFE / guidance scales) is not
implemented. No order is claimed by the paper; fixed rho != 1 makes D~_i - D_i = O(h) and the method first order
(docs §1), rho = 1 is UniPC (claimed order p + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from . import forms
from .base import MATH_OPS, StepContext
from .registry import register
from .unipc import VARIANTS, UniPC, UniPCState

_FORM = "data-lambda"
_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class DCState(UniPCState):
    """UniPC's state (history newest first, the step awaiting its corrector); `ratios` overrides the configured
    ratios for one run (used by the search)."""

    ratios: list[float] = field(default_factory=list)


def compensation_weights(lambdas: list[float], tau: float) -> list[float]:
    """Lagrange basis on `lambdas` (newest first) evaluated at tau: the weights of D~ = sum_k w_k D_k."""
    w = []
    for k, lk in enumerate(lambdas):
        c = 1.0
        for j, lj in enumerate(lambdas):
            if j != k:
                c *= (tau - lj) / (lk - lj)
        w.append(c)
    return w


def _check_ratios(ratios):
    if ratios is None:
        return None
    if isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__iter__"):
        raise InputError(f"ratios: must be None or a sequence of finite numbers, one per step (got {ratios!r})")
    out = tuple(ratios)
    for r in out:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise InputError(f"ratios: must be finite numbers (got {r!r} in {out!r})")
    return tuple(float(r) for r in out)


class DCSolver(UniPC):
    """UniPC (UniP-p + UniC-p) with dynamic compensation of order dc_order and per-step ratios rho_i."""

    name = "dc_solver"
    final_step = "x <- D(x, sigma) at the predicted point (UniPC's; no compensation into sigma = 0), 1 NFE"

    def __init__(self, ratios=None, dc_order: int = 2, variant: str = "bh2", order: int = 2,
                 lower_order_final: bool = False):
        super().__init__(variant=variant, order=order, corrector=True, lower_order_final=lower_order_final)
        if isinstance(dc_order, bool) or not isinstance(dc_order, int) or not 1 <= dc_order <= 3:
            raise InputError(f"dc_order: must be an integer in 1..3 (got {dc_order!r})")
        self.dc_order = dc_order
        self.dc_ratios = _check_ratios(ratios)
        self.history_size = max(order, dc_order + 1)
        self.name = "dc_solver" if (variant, order) == ("bh2", 2) else f"dc_solver_{variant}_p{order}"
        base = f"unipc_{variant}_p{order}"
        self.claim_source = (
            "no order claimed: Zhao et al. 2024 (arXiv 2409.03755) state none for DC-Solver; with all ratios 1 it is "
            f"{base} (UniPC, Zhao et al. 2023, order p + 1); fixed ratios != 1 are first order "
            "(docs/solvers_dc_timeshift.md §1)")
        trivial = self.dc_ratios is None or all(r == 1.0 for r in self.dc_ratios)
        self.order = order + 1 if trivial else None
        self.equivalent = base if trivial else None
        if not trivial:
            self.symbolic_form = None  # the compensated update is not UniPC's coefficient functions
        self.notes = (
            "compensation interpolated in lambda = -log sigma (the authors: in their VP model time t)",
            "rho_i applies at step i >= dc_order ending above 0; elsewhere it must be 1",
            "cascade polynomial regression (ratios for unseen NFE / guidance) not implemented",
        )

    def params(self) -> dict:
        return {"ratios": self.dc_ratios, "dc_order": self.dc_order, "variant": self.variant,
                "order": self.predictor_order, "lower_order_final": self.lower_order_final}

    def step_order(self, i: int, n_steps: int) -> int:
        """UniPC's order of step i (the history may hold more values than the predictor uses)."""
        k = min(self.predictor_order, i + 1)
        return min(k, n_steps - i) if self.lower_order_final else k

    def ratios(self, sigmas: list[float], i: int, k: int) -> list[float]:
        """Step ratios in lambda (Multistep's, with the form fixed: symbolic_form is None when rho != 1)."""
        h = forms.step_size(_FORM, sigmas[i], sigmas[i + 1])
        return [forms.step_size(_FORM, sigmas[i - 1 - j], sigmas[i - j]) / h for j in range(k)]

    def update(self, x: torch.Tensor, sigmas: list[float], i: int, history: list, k: int) -> torch.Tensor:
        s, t = sigmas[i], sigmas[i + 1]
        w = self.weights(forms.step_size(_FORM, s, t), self.ratios(sigmas, i, k - 1), k)
        return forms.apply(_FORM, x, s, t / s, w, history[: len(w)])

    def init_state(self) -> DCState:
        return DCState(ratios=list(self.dc_ratios) if self.dc_ratios is not None else [])

    def _check_run(self, x, ctx: StepContext) -> None:
        if self.dc_ratios is None:
            return
        n = len(ctx.sigmas) - 1
        if len(self.dc_ratios) != n:
            raise InputError(f"ratios: need one ratio per step, {n} for this grid (got {len(self.dc_ratios)})")
        for i, r in enumerate(self.dc_ratios):
            if r != 1.0 and (i < self.dc_order or ctx.sigmas[i + 1] == 0):
                raise InputError(f"ratios: ratios[{i}] = {r} applies to a step without compensation (warm-up "
                                 f"i < dc_order = {self.dc_order}, or the step into 0): it must be 1")

    # ----------------------------------------------------------------------------------- stepping
    def correct(self, x_pred, d, i: int, st: DCState, sig: list[float]) -> torch.Tensor:
        """UniC of the step i - 1 -> i: the corrected x_i from D at the predicted x_i (x_pred when i == 0)."""
        if i == 0:
            return x_pred
        p, r, s = st.order, sig[i - 1], sig[i]
        w, _ = self.corrector_rule(forms.step_size(_FORM, r, s), self.ratios(sig, i - 1, p - 1), MATH_OPS, order=p)
        return forms.apply(_FORM, st.x, r, s / r, w, st.history[:p] + [d])

    def compensate(self, st: DCState, sig: list[float], i: int, rho: float) -> None:
        """Replace the newest history value D_i by its interpolant at tau_i (a no-op for rho = 1 or in warm-up)."""
        if rho == 1.0 or len(st.history) <= self.dc_order:
            return
        lams = [-math.log(sig[i - k]) for k in range(self.dc_order + 1)]
        w = compensation_weights(lams, rho * lams[0] + (1.0 - rho) * lams[1])
        comp = st.history[0] * w[0]
        for wk, v in zip(w[1:], st.history[1 : self.dc_order + 1], strict=True):
            comp = torch.add(comp, v, alpha=wk)
        st.history[0] = comp

    def predict(self, x, i: int, st: DCState, sig: list[float]) -> torch.Tensor:
        """The compensated UniP step from the corrected x_i (history already holds D_i)."""
        rho = st.ratios[i] if st.ratios else 1.0
        self.compensate(st, sig, i, rho)
        p = self.step_order(i, len(sig) - 1)
        st.x, st.order = x, p
        return self.update(x, sig, i, st.history, p)

    def step(self, denoiser, x, i, ctx: StepContext):
        st, sig = ctx.state, ctx.sigmas
        d = denoiser(x, sig[i])
        if sig[i + 1] == 0:
            return d
        x = self.correct(x, d, i, st, sig)
        self.remember(st, d)
        return self.predict(x, i, st, sig)


def _golden(f, lo: float, hi: float, xatol: float) -> float:
    """argmin of a unimodal f on [lo, hi] by golden-section search (ties: the smaller loss of the two ends)."""
    a, b = lo, hi
    c, e = b - _GOLD * (b - a), a + _GOLD * (b - a)
    fc, fe = f(c), f(e)
    while b - a > xatol:
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - _GOLD * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, e, fe
            e = a + _GOLD * (b - a)
            fe = f(e)
    return 0.5 * (a + b)


def search_ratios(solver: DCSolver, denoiser, x: torch.Tensor, sigmas, reference, bounds=(0.5, 1.5),
                  xatol: float = 1e-7) -> list[float]:
    """Per-step ratios (greedy, step by step) minimising the mean squared distance of the corrected x_{i+1} to
    reference(i + 1), the reference trajectory at sigmas[i + 1] for the same batch x (a callable of the grid index).
    Ratios of steps without compensation are 1. Costs about 2 + log(1/xatol)/0.48 denoiser calls per step searched."""
    if not isinstance(solver, DCSolver):
        raise InputError(f"solver: must be a DCSolver (got {type(solver).__name__})")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 1.0 < hi):
        raise InputError(f"bounds: must be finite with lo < 1 < hi (got {bounds!r})")
    if not (isinstance(xatol, float) and 0 < xatol < hi - lo):
        raise InputError(f"xatol: must be a float in (0, hi - lo) (got {xatol!r})")
    if not callable(reference):
        raise InputError(f"reference: must be a callable of the grid index (got {type(reference).__name__})")
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64)]
    n = len(sig) - 1
    st = solver.init_state()
    st.ratios = [1.0] * n

    def run(rho: float, i: int, x_i, state: DCState):
        """(x_{i+1} predicted, the state after step i) for ratio rho at step i, on a copy of the state."""
        trial = DCState(history=list(state.history), x=state.x, order=state.order, ratios=list(state.ratios))
        trial.ratios[i] = rho
        return solver.predict(x_i, i, trial, sig), trial

    def loss(rho: float, i: int, x_i, state: DCState) -> float:
        x_pred, trial = run(rho, i, x_i, state)
        x_next = x_pred
        if i + 1 < n:  # the corrected point (the authors' search compares the corrector's output)
            x_next = solver.correct(x_pred, denoiser(x_pred, sig[i + 1]), i + 1, trial, sig)
        return float((x_next - reference(i + 1)).pow(2).mean())

    for i in range(n):
        d = denoiser(x, sig[i])
        if sig[i + 1] == 0:
            break
        x_i = solver.correct(x, d, i, st, sig)
        solver.remember(st, d)
        if i >= solver.dc_order:
            st.ratios[i] = _golden(lambda r, i=i, x_i=x_i, st=st: loss(r, i, x_i, st), lo, hi, xatol)
        x, st = run(st.ratios[i], i, x_i, st)
    return st.ratios


for _v in VARIANTS:
    for _p in (1, 2, 3):
        register("dc_solver" if (_v, _p) == ("bh2", 2) else f"dc_solver_{_v}_p{_p}", DCSolver, variant=_v, order=_p)
