"""SDM's adaptive solvers (Jo & Choi, arXiv 2602.12624; official code aiimaginglab/sdm, `modules/sampler.py`
`ablation_sampler_adaptive_solver` and `ablation_sampler_adaptive_dpmsolver`; docs/sdm.md §3).

Each step blends a first-order and a second-order update, x' = lam x_lo + (1 - lam) x_hi:
    sdm        x_lo = Euler,             x_hi = EDM Heun (2nd evaluation at (x + h d, sigma'))      claimed order 2
    sdm_dpmpp  x_lo = DPM-Solver++(1M),  x_hi = DPM-Solver++(2M) (multistep, no extra evaluation)   claimed order 2
lam = 1 costs 1 NFE; lam < 1 costs 2 NFE for `sdm` and still 1 NFE for `sdm_dpmpp` (the official counter says 2).

The blend weight comes from a curvature proxy that costs no evaluation (one-step-lagged backward difference):
    kappa_i = mean_b ||d_i^b - d_{i-1}^b|| / ((|sigma_i - sigma_{i-1}| + 1e-12) ||d_{i-1}^b||),   kappa_0 = 0,
d = (x - D(x, sigma))/sigma, per-sample flattened L2 norms averaged over the batch: ONE decision for the whole
batch, as in the official code. lambda_schedule:
    "step"    latch: lam = 1 until kappa_i >= tau_k fires, then lam = 0 for every later step (default);
    "linear"  lam_i = 1 - i/(N-1);   "cosine"  lam_i = (1 + cos(pi i/(N-1)))/2     (kappa is only reported).
With euler_last (default, as the code) the last step has lam = 1. A step into sigma = 0 always has lam = 1
(x <- D(x, sigma)): the second-order stage would need D at sigma = 0.
`sdm_dpmpp` forces lam = 1 while it has no history (step 0); its latch is first tested at step 1, as in the code.
The pure steps (lam = 1 or 0) are the registered baseline steps themselves (`euler`/`heun`, `ddim`/`dpmpp_2m`),
fed the evaluation D(x, sigma) already made for kappa: tau_k = 0 / inf reproduce them bit for bit by construction.
Samples with d_{i-1} = 0 exactly are left out of kappa's mean (see `batch_kappa`).

Batch dependence. Because kappa is a batch mean, the map x_T -> x_0 depends on the batch it runs in (not affine on
a Gaussian target, not the same for a point run alone). `lambdas=` (a fixed per-step sequence) bypasses kappa:
record the decisions on a realistic batch with `run_with_trace`, then replay them on other points (the harness's
Gaussian meter needs one affine map). Replayed lambdas are used as given (euler_last is not applied again).

NFE. With the step latch the count depends on the data: with j the first Heun step (the last step being Euler),
the counted NFE is 2N - 1 - j. `nfe(n)` / `nfe_to_zero(n)` of `sdm` therefore return the WORST case (2n - 1 with
euler_last or into 0, else 2n), exact only where no data decides (tau_k = 0 or inf, linear/cosine, replayed
lambdas); `nfe_exact` and `data_dependent` say which. Per-step decisions and counts are in the callback info
("kappa", "lambda", "solver", "nfe") and in `run_with_trace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..grid import check_callback
from .base import MATH_OPS, Solver, StepContext, combine, ode_derivative
from .dpm import DDIM, DPMSolverPP2M, dpmpp_2m_rule
from .registry import register
from .rk import Euler, Heun

LAMBDA_SCHEDULES = ("step", "linear", "cosine")
#: the baseline steps the blends are made of (Euler, Heun and DDIM keep no per-run state; the 2M update is given
#: its history explicitly)
_EULER, _HEUN, _DDIM, _PP2M = Euler(), Heun(), DDIM(), DPMSolverPP2M()
KAPPA_EPS = 1e-12  # the official code's guard in the denominator of kappa


@dataclass
class SDMState:
    """Per-run state of an SDM solver: the previous step's d = (x - D)/sigma (for kappa) and D (for 2M), and
    whether the step latch has fired."""

    d_prev: torch.Tensor | None = None
    den_prev: torch.Tensor | None = None
    latched: bool = False


def _iter_or_empty(value):
    """The items of `value` when it is a sized iterable (to look for bools among lambdas), else nothing."""
    return value if isinstance(value, (list, tuple)) else ()


def batch_kappa(d: torch.Tensor, d_prev: torch.Tensor, dsigma: float) -> float:
    """The code's relative curvature proxy: mean_b ||d - d_prev|| / ((|dsigma| + 1e-12) ||d_prev||).

    Samples with d_prev = 0 exactly (a point at a fixed point of the denoiser, e.g. the mean of a Gaussian target,
    as the harness's probe batches contain) have no relative curvature and are left out of the mean (0 if none
    is left). The official code would return NaN (never latching) or inf (latching at once) there."""
    b = d.shape[0] if d.ndim > 1 else 1
    diff = (d - d_prev).reshape(b, -1).to(torch.float64).norm(dim=1)
    ref = d_prev.reshape(b, -1).to(torch.float64).norm(dim=1)
    keep = ref > 0
    if not bool(keep.any()):
        return 0.0
    return float((diff[keep] / ((abs(dsigma) + KAPPA_EPS) * ref[keep])).mean())


class _AdaptiveBlend(Solver):
    """Shared configuration, lambda rule, kappa bookkeeping and trace of the two SDM solvers."""

    order = 2
    #: trace labels of a pure low / pure high / blended step
    labels = ("euler", "heun", "mix")

    def __init__(self, tau_k: float = 1e-4, lambda_schedule: str = "step", euler_last: bool = True,
                 lambdas=None):
        if isinstance(tau_k, bool) or not isinstance(tau_k, (int, float)) or math.isnan(tau_k) or tau_k < 0:
            raise InputError(f"tau_k: must be a number >= 0 (inf allowed), got {tau_k!r}")
        if lambda_schedule not in LAMBDA_SCHEDULES:
            raise InputError(f"lambda_schedule: must be one of {LAMBDA_SCHEDULES}, got {lambda_schedule!r}")
        if not isinstance(euler_last, bool):
            raise InputError(f"euler_last: must be a bool, got {euler_last!r}")
        if lambdas is not None:
            if isinstance(lambdas, (str, bytes)) or any(isinstance(v, bool) for v in _iter_or_empty(lambdas)):
                raise InputError(f"lambdas: expected a sequence of numbers, got {lambdas!r}")
            try:
                lambdas = tuple(float(v) for v in lambdas)
            except (TypeError, ValueError):
                raise InputError(f"lambdas: expected a sequence of numbers, got {lambdas!r}") from None
            if not lambdas or not all(0.0 <= v <= 1.0 for v in lambdas):
                raise InputError(f"lambdas: expected a non-empty sequence of numbers in [0, 1], got {lambdas!r}")
        self.tau_k, self.lambda_schedule, self.euler_last = float(tau_k), lambda_schedule, euler_last
        self.lambdas = lambdas
        self._records: list | None = None

    @property
    def data_dependent(self) -> bool:
        """Whether the per-step lambdas depend on the batch (step latch with 0 < tau_k < inf, nothing replayed):
        then the sampler is not one fixed map (not affine on a Gaussian target) and the NFE count varies."""
        return self.lambdas is None and self.lambda_schedule == "step" and 0.0 < self.tau_k < math.inf

    def params(self):
        return {"tau_k": self.tau_k, "lambda_schedule": self.lambda_schedule, "euler_last": self.euler_last,
                "lambdas": None if self.lambdas is None else list(self.lambdas)}

    # ---------------------------------------------------------------------------------------- the lambda rule
    def init_state(self) -> SDMState:
        return SDMState()

    def _lambda(self, i: int, n: int, kappa: float, state: SDMState, has_history: bool = True) -> float:
        if self.lambdas is not None:
            if len(self.lambdas) != n:
                raise InputError(f"lambdas: {len(self.lambdas)} values for a grid of {n} steps")
            return self.lambdas[i] if has_history else 1.0
        if self.lambda_schedule == "step":
            if has_history and not state.latched and kappa >= self.tau_k:
                state.latched = True
            lam = 0.0 if state.latched else 1.0
        else:
            u = i / max(n - 1, 1)
            lam = 1.0 - u if self.lambda_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
        if not has_history or (self.euler_last and i == n - 1):
            lam = 1.0
        return lam

    def _check_run(self, x: torch.Tensor, ctx: StepContext) -> None:
        """Replayed lambdas must fit the grid: refused before the first denoiser call, not at step 0."""
        n = len(ctx.sigmas) - 1
        if self.lambdas is not None and len(self.lambdas) != n:
            raise InputError(f"lambdas: {len(self.lambdas)} values for a grid of {n} steps")

    def _kappa(self, d: torch.Tensor, i: int, ctx: StepContext) -> float:
        prev = ctx.state.d_prev
        kappa = 0.0 if prev is None else batch_kappa(d, prev, ctx.sigmas[i] - ctx.sigmas[i - 1])
        ctx.state.d_prev = d
        return kappa

    def _record(self, kappa: float, lam: float, nfe: int) -> None:
        if self._records is not None:
            label = self.labels[0] if lam == 1.0 else self.labels[1] if lam == 0.0 else self.labels[2]
            self._records.append({"kappa": kappa, "lambda": lam, "solver": label, "nfe": nfe})

    # ------------------------------------------------------------------------------------------- the loop
    def __call__(self, denoiser, x, sigmas, callback=None):
        """The base loop, with each step's {"kappa", "lambda", "solver", "nfe"} merged into the callback info."""
        records: list[dict] = []

        def merged(info):
            if callback is not None:
                callback({**info, **records[info["i"]]})

        check_callback(callback)  # `merged` below is always callable: check the caller's own before any work
        outer, self._records = self._records, records  # nested runs keep their own trace
        try:
            return super().__call__(denoiser, x, sigmas, callback=merged)
        finally:
            self._records = outer

    @staticmethod
    def _counting(denoiser, x, s):
        """(D, calls, value): D counts its real calls and answers D(x, s) from `value` once computed, so the
        baseline steps this solver delegates to reuse the evaluation that kappa needed (no extra NFE)."""
        calls, memo = [0], {}

        def counted(y, sigma):
            if y is x and sigma == s and "v" in memo:
                return memo["v"]
            calls[0] += 1
            out = denoiser(y, sigma)
            if y is x and sigma == s:
                memo["v"] = out
            return out

        return counted, calls


class SDMSolver(_AdaptiveBlend):
    """SDM adaptive Euler/Heun: x' = lam x_E + (1 - lam) x_H with x_E = x + h d, x_H = x + h (d + d')/2,
    d' = d(x_E, sigma'), h = sigma' - sigma (EDM Heun, Karras et al. 2022 Alg. 1). Claimed order 2.
    tau_k = 0 reproduces `heun` and tau_k = inf `euler`, bit for bit, on a grid ending at 0."""

    name = "sdm"
    final_step = "Euler (x <- D(x, sigma)), 1 NFE; with euler_last every grid's last step is Euler"

    @property
    def nfe_exact(self) -> bool:
        """Whether nfe()/nfe_to_zero() are the exact counts (no data-dependent decision)."""
        return not self.data_dependent

    def _count(self, n: int, to_zero: bool) -> int:
        if n < 1:
            return 0
        last_forced = self.euler_last or to_zero
        if self.lambdas is not None:
            lams = list(self.lambdas[:n]) + [1.0] * max(0, n - len(self.lambdas))
            if to_zero:
                lams[-1] = 1.0
            return sum(1 if v == 1.0 else 2 for v in lams)
        if self.lambda_schedule == "step":
            if self.tau_k == math.inf:
                return n
            return 2 * n - 1 if last_forced else 2 * n  # worst case: the latch fires at step 0
        if n == 1:
            return 1
        return 2 * n - 2 if last_forced else 2 * n - 1  # lam_0 = 1 (Euler); lam_{N-1} = 1 or 0

    def nfe(self, n_steps: int) -> int:
        """Worst case for the step latch (exact for tau_k in {0, inf}, linear/cosine, or replayed lambdas)."""
        return self._count(n_steps, to_zero=False)

    def nfe_to_zero(self, n_steps: int) -> int:
        return self._count(n_steps, to_zero=True)

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        n = len(ctx.sigmas) - 1
        D, calls = self._counting(denoiser, x, s)
        kappa = self._kappa(ode_derivative(x, D(x, s), s), i, ctx)
        lam = self._lambda(i, n, kappa, ctx.state)
        # the pure steps ARE the baseline steps (`euler`, `heun`), fed the cached D(x, s): the identities with
        # tau_k = 0 / inf hold by construction, whatever arithmetic those steps use
        if t == 0:  # into sigma = 0: Heun's own final Euler step once latched, else Euler
            lam = 1.0
            out = (_HEUN if ctx.state.latched else _EULER).step(D, x, i, ctx)
        elif lam == 1.0:
            out = _EULER.step(D, x, i, ctx)
        elif lam == 0.0:
            out = _HEUN.step(D, x, i, ctx)
        else:
            out = torch.add(lam * _EULER.step(D, x, i, ctx), _HEUN.step(D, x, i, ctx), alpha=1.0 - lam)
        self._record(kappa, lam, calls[0])
        return out


class SDMDPMSolverPP(_AdaptiveBlend):
    """SDM adaptive DPM-Solver++: x' = lam x_1M + (1 - lam) x_2M (Lu et al. 2022, DPM-Solver++ Alg. 2), r0 =
    h_prev/h in lambda = -log sigma; both from the same evaluation D(x, sigma): 1 NFE per step whatever lam.
    In data-lambda form the blend is one update: weights lam [1 - e^{-h}, 0] + (1 - lam) w_2M (`update_rule`).
    tau_k = 0 reproduces `dpmpp_2m` and tau_k = inf `ddim`, bit for bit, on a grid ending at 0."""

    name, nfe_per_step = "sdm_dpmpp", 1
    symbolic_form = "data-lambda"
    labels = ("1m", "2m", "mix")
    final_step = "x <- D(x, sigma) (DPM-Solver++(1) into sigma = 0), 1 NFE; with euler_last the last step is 1M"
    nfe_exact = True

    def update_rule(self, h, ratios, ops, lam: float = 0.0):
        """(weights, nodes) of the blended step, nodes [0, -r0]; lam = 0 (the default) is DPM-Solver++(2M)."""
        w2, nodes = dpmpp_2m_rule(h, ratios[0], ops)
        p1 = -ops.expm1(-h)
        return [lam * p1 + (1 - lam) * w2[0], (1 - lam) * w2[1]], nodes

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        n = len(ctx.sigmas) - 1
        D, calls = self._counting(denoiser, x, s)
        den = D(x, s)
        kappa = self._kappa(ode_derivative(x, den, s), i, ctx)
        prev = ctx.state.den_prev
        ctx.state.den_prev = den
        lam = self._lambda(i, n, kappa, ctx.state, has_history=prev is not None)
        if t == 0:  # x <- D(x, sigma), as `ddim` and `dpmpp_2m`
            self._record(kappa, 1.0, calls[0])
            return den
        if lam == 1.0:  # DPM-Solver++(1M): the `ddim` step itself
            out = _DDIM.step(D, x, i, ctx)
        elif lam == 0.0:  # DPM-Solver++(2M): the `dpmpp_2m` update itself, given the history (D, D_prev)
            out = _PP2M.update(x, ctx.sigmas, i, [den, prev], 2)
        else:
            weights, _ = self.update_rule(ctx.h(i), _PP2M.ratios(ctx.sigmas, i, 1), MATH_OPS, lam=lam)
            out = combine((t / s) * x, weights, [den, prev])
        self._record(kappa, lam, calls[0])
        return out


def run_with_trace(solver, denoiser, x, sigmas) -> tuple[torch.Tensor, list[dict]]:
    """Run `solver` and return (x, per-step info dicts without the state x): i, sigma, sigma_next and, for the SDM
    solvers, kappa, lambda, solver and nfe (the denoiser calls that step made)."""
    trace: list[dict] = []
    out = solver(denoiser, x, sigmas, callback=lambda info: trace.append({k: v for k, v in info.items() if k != "x"}))
    return out, trace


def replay_lambdas(trace: list[dict]) -> list[float]:
    """The per-step lambdas of a trace, to pass as `lambdas=` and replay the same decisions on other points."""
    return [float(r["lambda"]) for r in trace]


register("sdm", SDMSolver)
register("sdm_dpmpp", SDMDPMSolverPP)
