"""Time-shifted DDIM (Li, van der Schaar et al. 2023, "Alleviating Exposure Bias in Diffusion Models through Sampling
with Shifted Time Steps", arXiv 2305.15583: TS-DDIM), in canonical variables.

Exposure bias: a trained network's x_t drifts from the training law p_t, and the paper finds the drifted x_t closer
in variance to a neighbouring time's marginal. At each step the sampler therefore evaluates the model at the time,
within a window around the scheduled one, whose marginal variance best matches the variance of the current sample.
In canonical variables the marginal of x_sigma has per-coordinate variance v(sigma) = var_data + sigma^2 (x = x0 +
sigma n), so the step i (sigma_i -> sigma_{i+1}) from x_i reads (docs/solvers_dc_timeshift.md §2):
    vhat    = the variance of x_i (statistic "batch": per coordinate over the batch, then averaged over coordinates;
              "sample": per sample over its coordinates, as the paper does for images, then averaged over the batch),
    sigma^  = argmin over sigma in W_i of |vhat - (data_var + sigma^2)|
            = clip(sqrt(max(vhat - data_var, 0)), W_i),   W_i = [max(sigma_i e^-window, sqrt(sigma_i sigma_{i+1})),
                                                                 sigma_i e^window]
    x_{i+1} = D^ + (sigma_{i+1}/sigma^) (x_i - D^),         D^ = D(x_i, sigma^)      (DDIM from sigma^, 1 NFE).
The paper searches a window of +-w/2 discrete timesteps; here the window is continuous, +-window in log sigma, and
the minimiser over it is the clip above (v is increasing in sigma). The lower edge never reaches sigma_{i+1} (the
step stays a step forward). One shift per step for the whole batch (the denoiser takes one sigma): the map depends
on the batch (data_dependent). The first step is unshifted (its x is the given start, drawn from the prior), and so
is every step with sigma_i < cutoff_sigma (the paper shifts only in the early steps; default 0: all). window = 0 is
DDIM (= Euler in sigma) to rounding. The step into 0 is x <- D(x_i, sigma^), 1 NFE. TS-DPM-Solver is not
implemented. No order claimed (a heuristic).
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .base import Solver, StepContext

STATISTICS = ("batch", "sample")


def _check_float(value, name: str, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InputError(f"{name}: must be a number in [{lo}, {hi}] (got {value!r})")
    return float(value)


def variance_estimate(x: torch.Tensor, statistic: str) -> float:
    """vhat of a batch x of shape (B, d): see the module docstring."""
    if statistic == "batch":
        return float(x.var(dim=0, unbiased=True).mean())
    return float(x.reshape(x.shape[0], -1).var(dim=1, unbiased=True).mean())


def shifted_sigma(vhat: float, data_var: float, sigma: float, sigma_next: float, window: float) -> float:
    """sigma^: the sigma in the window around `sigma` whose marginal variance data_var + sigma^2 is nearest vhat."""
    if window == 0.0:
        return sigma
    lo, hi = sigma * math.exp(-window), sigma * math.exp(window)
    if sigma_next > 0:
        lo = max(lo, math.sqrt(sigma * sigma_next))
    return min(max(math.sqrt(max(vhat - data_var, 0.0)), lo), hi)


class TimeShiftDDIM(Solver):
    """TS-DDIM: DDIM from the variance-matched sigma^ in a window of +-window (log sigma) around sigma_i."""

    name = "ts_ddim"
    order = None
    claim_source = ("no order claimed: heuristic; Li et al. 2023 (arXiv 2305.15583) motivate the shift by exposure "
                    "bias and report FID, no convergence order; an exact denoiser has no exposure bias "
                    "(docs/solvers_dc_timeshift.md §2-3: the shift is measured there, not assumed to help)")
    data_dependent = True
    final_step = "x <- D(x, sigma^) (the shifted sigma; sigma_i where no shift applies), 1 NFE"

    def __init__(self, window: float = 0.1, data_var: float = 0.25, statistic: str = "batch",
                 cutoff_sigma: float = 0.0):
        self.window = _check_float(window, "window", 0.0, 1.0)
        self.data_var = _check_float(data_var, "data_var", 0.0)
        if statistic not in STATISTICS:
            raise InputError(f"statistic: must be one of {STATISTICS} (got {statistic!r})")
        self.statistic = statistic
        self.cutoff_sigma = _check_float(cutoff_sigma, "cutoff_sigma", 0.0)
        self.equivalent = "ddim" if self.window == 0.0 else None
        self.point_mass_exact = self.window == 0.0
        self.point_mass_note = ("the shift evaluates D at sigma^ != sigma_i; on a point mass D is exact at any sigma, "
                                "but the step from sigma^ moves x along the ray of sigma^, not of sigma_i")
        self.notes = (
            "window continuous in log sigma (the paper: +-w/2 discrete timesteps); one shift per step for the batch",
            f"variance statistic {statistic!r}; the data variance data_var must be given (per coordinate)",
            "first step unshifted; TS-DPM-Solver not implemented",
        )

    def params(self) -> dict:
        return {"window": self.window, "data_var": self.data_var, "statistic": self.statistic,
                "cutoff_sigma": self.cutoff_sigma}

    def _check_run(self, x: torch.Tensor, ctx: StepContext) -> None:
        if self.window == 0.0:
            return
        if self.statistic == "batch" and x.shape[0] < 2:
            raise InputError(f"statistic: 'batch' needs a batch of at least 2 samples (got {x.shape[0]})")
        if self.statistic == "sample" and x[0].numel() < 2:
            raise InputError("statistic: 'sample' needs at least 2 coordinates per sample")

    def shift(self, x: torch.Tensor, i: int, sigmas: list[float]) -> float:
        """sigma^ of step i (sigma_i where no shift applies)."""
        s = sigmas[i]
        if self.window == 0.0 or i == 0 or s < self.cutoff_sigma:
            return s
        return shifted_sigma(variance_estimate(x, self.statistic), self.data_var, s, sigmas[i + 1], self.window)

    def step(self, denoiser, x, i, ctx: StepContext):
        t = ctx.sigmas[i + 1]
        s = self.shift(x, i, ctx.sigmas)
        d = denoiser(x, s)
        if t == 0:
            return d
        return torch.add(d, x - d, alpha=t / s)


# Not registered (yet): its shift depends on the batch's statistics, and the harness replays a data-dependent
# solver's decisions only in the form SDM's latch records them (harness.run.freeze_decisions); a generic replay of the
# shifted sigmas is the missing piece. Use TimeShiftDDIM(...) directly.
