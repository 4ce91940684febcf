"""Dynamic thresholding (Imagen, Saharia et al. 2022 Sec. 2.3; as DPM-Solver++ applies it to the data prediction,
Lu et al. 2022 Sec. 3.3 and dpm_solver_pytorch.py `dynamic_thresholding_fn`) as a denoiser wrapper for any solver.

    x0 = D(x, sigma);  s = the p-th quantile of |x0| over each sample's coordinates (torch.quantile, linear);
    s <- max(s, max_value);  x0 <- clip(x0, -s, s) * (max_value / s).

At max_value = 1 (DPM-Solver's default `thresholding_max_val`) this is DPM-Solver++'s clip(x0, -s, s)/s with
s = max(s, 1); a general max_value states the data range [-max_value, max_value] (the same operation in units of
it). diffusers' `_threshold_sample` instead clamps s into [1, sample_max_value] (an upper bound on s). With p = 1 and
max_value >= max |x0| the wrapper is the identity bit for bit (s = max_value, the factor is exactly 1).

The measurement (`bias_study`): on the 1-D joint Gaussian `targets.joint_1d_clip` (data N(1.2, 0.3) under guidance,
range max_value = 1, where clipping bites), the thresholded sampler's error against the exact guided flow law
(closed form; Quad1DMeter: W2 exact for monotone maps) for euler, heun, dpmpp_2m and dpm_solver_3 at
w in {1, 3, 7.5}: as N grows it tends to the bias of the thresholded ODE, a nonzero constant (the clipped field is
not the guided field), which is reported as the error at the largest N and compared with the unthresholded error.
"""

from __future__ import annotations

import math
import numbers

import torch

from ...errors import InputError
from .orders import measure_curve
from .stability import stability
from .targets import SIGMA_MAX, SIGMA_MIN, Quad1DMeter, checked_w, joint_1d_clip

BIAS_SOLVERS = ("euler", "heun", "dpmpp_2m", "dpm_solver_3")
BIAS_WS = (1.0, 3.0, 7.5)
BIAS_NS = (4, 6, 8, 11, 16, 23, 32, 64, 128, 256, 512)


def thresholded(denoiser, p: float = 0.995, max_value: float = 1.0):
    """The denoiser with dynamic thresholding applied to its output (module docstring). p in (0, 1], max_value > 0."""
    if not callable(denoiser):
        raise InputError(f"denoiser: expected a callable D(x, sigma), got {type(denoiser).__name__}")
    for name, v in (("p", p), ("max_value", max_value)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise InputError(f"{name}: must be a finite real number (got {v!r})")
    p, max_value = float(p), float(max_value)
    if not 0.0 < p <= 1.0:
        raise InputError(f"p: must be in (0, 1] (got {p})")
    if not max_value > 0:
        raise InputError(f"max_value: must be > 0 (got {max_value})")

    def wrapped(x, sigma, *args, **kwargs):
        x0 = denoiser(x, sigma, *args, **kwargs)
        flat = x0.reshape(x0.shape[0], -1)
        s = torch.quantile(flat.abs(), p, dim=1).clamp_min(max_value)
        s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
        return torch.minimum(torch.maximum(x0, -s), s) * (max_value / s)

    wrapped.__name__ = f"thresholded(p={p}, max_value={max_value})"
    return wrapped


class ClipMeter(Quad1DMeter):
    """The exact meter of the thresholding target: Quad1DMeter against the closed-form guided flow map."""

    def __init__(self, w: float, panels: int = 256):
        jg = joint_1d_clip()
        self.jg, self.w = jg, checked_w(w)
        self.field = jg.guided_field(self.w)
        source = jg.conditional.marginal(SIGMA_MAX)

        def reference(x):
            M, v = jg.guided_flow_affine(self.w, SIGMA_MAX, SIGMA_MIN)
            return x @ M.T + v

        super().__init__(source, reference, "joint-1d-clip", panels=panels, floor=1e-13)


def bias_study(solvers=BIAS_SOLVERS, ws=BIAS_WS, ns=BIAS_NS, p: float = 0.995, max_value: float = 1.0) -> list[dict]:
    """Per (solver, w): the plain and thresholded error curves on the clipping target, their N* and the bias."""
    out = []
    for w in ws:
        meter = ClipMeter(w)
        for s in solvers:
            plain = measure_curve(s, meter, list(ns))
            thr = measure_curve(s, meter, list(ns), wrap=lambda d: thresholded(d, p, max_value),
                                variant="thresholded")
            out.append({"solver": s, "w": w, "plain": plain.to_dict(), "thresholded": thr.to_dict(),
                        "bias": thr.errors[-1], "n_star_plain": stability(plain)["n_star"],
                        "n_star_thresholded": _settle(thr.ns, thr.errors)})
    return out


def _settle(ns, errors, tol: float = 0.1) -> int | None:
    """For a curve that tends to a constant (the bias): the smallest N from which on every error is within
    (1 +- tol) of the last one."""
    last = errors[-1]
    if not math.isfinite(last) or last <= 0:
        return None
    best = None
    for n, e in sorted(zip(ns, errors, strict=True), reverse=True):
        if not (math.isfinite(e) and abs(e - last) <= tol * last):
            break
        best = n
    return best
