"""The reference solution on a real model: an adaptive high-order integrator independent of the solvers under test.

A real network has no closed-form flow, so every sampler on it is judged against a high-NFE reference solution of
the same PF-ODE from the same start points. The reference must not be one of the solvers it judges: it is scipy's
DOP853 (Hairer, Norsett & Wanner, *Solving ODEs I*, II.5; 8th order, embedded 5th/3rd order error control) on

    dx/dlambda = D(x, e^-lambda) - x,       lambda = -log sigma,

the form in which the linear part of the PF-ODE is harmless (the same form as `analytic.reference_flow` uses on exact
targets). Its accuracy is checked, not assumed: the run at tolerance `rtol` is compared with a run at `rtol / 100`
(`check_reference`). For a tolerance-proportional integrator err(tol) ~ c tol, so the difference of the two runs
estimates the coarser run's error to within 1% (a Richardson argument on the tolerance, exact in the limit); the
finer run is kept as the reference, and its error is then bounded by that estimate / 100 in the same limit. The
estimate is reported as the reference's floor: measured errors must lie 100x above it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference per coordinate over a batch: sqrt(mean over samples and pixels of (a - b)^2),
    the pixel-RMS error the real-model tables use (per sample it is ||a - b|| / sqrt(dim))."""
    return float(((a.double() - b.double()) ** 2).mean().sqrt())


def reference_solution(denoiser, x: torch.Tensor, sigma_from: float, sigma_to: float, *, rtol: float = 1e-9,
                       atol: float | None = None) -> tuple[torch.Tensor, dict]:
    """DOP853 in lambda from sigma_from to sigma_to (> 0) for the batch x; returns (x_end, info) with nfev and
    steps. The model is evaluated in x's dtype and device; the integrator state is float64 (numpy)."""
    sf, st = float(sigma_from), float(sigma_to)
    if not (math.isfinite(sf) and math.isfinite(st) and sf > st > 0):
        raise ValueError(f"sigma_from, sigma_to: need sigma_from > sigma_to > 0 (got {sf}, {st})")
    if not rtol > 0:
        raise ValueError(f"rtol: must be positive (got {rtol})")
    atol = rtol if atol is None else atol
    shape, dtype, device = x.shape, x.dtype, x.device
    calls = [0]

    def rhs(lam, y):
        calls[0] += 1
        xs = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        out = denoiser(xs, math.exp(-lam)) - xs
        return out.reshape(-1).double().cpu().numpy()

    t0 = time.perf_counter()
    y0 = x.detach().double().cpu().reshape(-1).numpy()
    sol = solve_ivp(rhs, (-math.log(sf), -math.log(st)), y0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference_solution: DOP853 failed: {sol.message}")
    if not np.all(np.isfinite(sol.y[:, -1])):
        raise RuntimeError("reference_solution: non-finite solution (the model produced NaN/inf)")
    out = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape).to(torch.float64)
    return out, dict(nfev=int(sol.nfev), steps=int(sol.t.size - 1), rtol=rtol, atol=atol,
                     wall=time.perf_counter() - t0)


@dataclass
class Reference:
    """The reference end points of a batch (float64, CPU) and their checked accuracy."""

    x: torch.Tensor            # the finer run: the reference
    estimate: float            # RMS |coarse - fine|: the coarse run's error estimate; the reference's stated floor
    rtol: float                # the finer run's tolerance
    nfev: int
    wall: float

    @property
    def floor(self) -> float:
        """The error floor the harness states for this reference: the tolerance-Richardson estimate of the coarser
        run (conservative by ~100x for the finer run, which is what is used)."""
        return self.estimate


def check_reference(denoiser, x, sigma_from, sigma_to, *, rtol: float = 1e-9) -> Reference:
    """Reference at rtol / 100, checked against the run at rtol (see the module docstring)."""
    coarse, i1 = reference_solution(denoiser, x, sigma_from, sigma_to, rtol=rtol)
    fine, i2 = reference_solution(denoiser, x, sigma_from, sigma_to, rtol=rtol / 100)
    return Reference(fine, rms(coarse, fine), rtol / 100, i1["nfev"] + i2["nfev"], i1["wall"] + i2["wall"])
