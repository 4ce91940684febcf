"""The built-in noise-level (sigma) schedules, each `fn(n, sigma_min, sigma_max, *, zero=False, **params) -> tensor`.

Convention: `n` is always the number of steps of the returned grid.
    zero=False  n + 1 strictly decreasing float64 sigmas, sigmas[0] = sigma_max and sigmas[n] = sigma_min exactly.
    zero=True   the same family with n - 1 intervals (n points from sigma_max to sigma_min), then 0: still n steps,
                the last one into sigma = 0 (EDM's "N steps" with sigma_N = 0). n = 1 gives [sigma_max, 0].
Every schedule is a fixed smooth decreasing map u in [0, 1] -> sigma(u), sigma(0) = sigma_max, sigma(1) = sigma_min,
evaluated at u_i = i/n. Since i/n and 2i/(2n) are the same float, zero=False grids are nested under doubling n
(grid(2n)[::2] == grid(n)), as order fitting on N = 2^j requires.

    edm             (smax^(1/rho) + u (smin^(1/rho) - smax^(1/rho)))^rho, rho = 7 (Karras et al. 2022, Eq. 5).
                    rho = 1 is uniform in sigma; rho -> inf tends to logsnr (crowsonkb/k-diffusion#85): by Hoeffding's
                    lemma 0 <= log sigma_edm - log sigma_logsnr <= log(smax/smin)^2 / (8 rho).
    logsnr          uniform in lambda = -log sigma (half log-SNR), i.e. log-linear in sigma. Alias "loglinear".
    uniform_t       uniform in the process time t between t(sigma_max) and t(sigma_min); needs process=.
    time_quadratic  uniform in sqrt(t), so t_i is quadratic in i: DDIM's "quad" time spacing (Song, Meng & Ermon
                    2021); needs process=.
`process` is duck-typed: any object with sigma(t) and sigma_inv(sigma) returning float64 tensors (and, optionally,
sigma_range() -> (lowest, highest) reachable sigma). The sigma-defined schedules accept and ignore it, so a sweep
can pass it to every schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch

from ..errors import GridError, InputError
from ..grid import check_grid as check
from ..grid import describe

__all__ = ["check", "grid_from_map", "edm", "logsnr", "uniform_t", "time_quadratic"]

DTYPE = torch.float64
#: the most steps a schedule makes (a grid of 8 MB): more is a typo (an allocation of terabytes), not a schedule
MAX_STEPS = 10**6
Schedule = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------------------- validation
def _real(name: str, value) -> float:
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise InputError(f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name}: must be finite (got {value})")
    return value


def _check_args(n, sigma_min, sigma_max, zero, unknown) -> tuple[int, float, float]:
    if unknown:
        raise InputError(f"params: unknown schedule parameter(s) {sorted(unknown)}")
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise InputError(f"n: expected an int number of steps, got {n!r}")
    if n < 1:
        raise InputError(f"n: must be >= 1 (got {n})")
    if n > MAX_STEPS:
        raise InputError(f"n: at most {MAX_STEPS} steps (got {n})")
    if not isinstance(zero, bool):
        raise InputError(f"zero: expected a bool, got {zero!r}")
    sigma_min, sigma_max = _real("sigma_min", sigma_min), _real("sigma_max", sigma_max)
    if sigma_min <= 0:
        raise InputError(f"sigma_min: must be > 0 (got {sigma_min}); use zero=True for a final step to 0")
    if sigma_min >= sigma_max:
        raise InputError(f"sigma_min: must be < sigma_max (got {sigma_min} >= {sigma_max})")
    return int(n), sigma_min, sigma_max


def _real_array(value) -> bool:
    """A real (not complex, not bool) floating or integer tensor or numpy array."""
    if torch.is_tensor(value):
        return not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, np.ndarray) and value.dtype.kind in "fiu"


def grid_from_map(sigma_of_u: Callable[[torch.Tensor], torch.Tensor], n, sigma_min, sigma_max, zero) -> torch.Tensor:
    """Evaluate sigma(u) at u = i/n (or i/(n-1) then 0 when zero=True), endpoints set exactly, then validate."""
    if not callable(sigma_of_u):
        raise InputError(f"sigma_of_u: must be callable as sigma_of_u(u) -> tensor, got {type(sigma_of_u).__name__}")
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, zero, ())
    m = n - 1 if zero else n
    if m == 0:  # zero=True with n = 1: the single step sigma_max -> 0
        sig = torch.tensor([sigma_max], dtype=DTYPE)
    else:
        u = torch.arange(m + 1, dtype=DTYPE) / m
        out = sigma_of_u(u)
        if not _real_array(out) or tuple(out.shape) != tuple(u.shape):
            raise InputError(f"sigma_of_u: must return a real tensor of u's shape {tuple(u.shape)}, got "
                             f"{describe(out)}")
        sig = torch.as_tensor(out, dtype=DTYPE).clone()
        sig[0], sig[-1] = sigma_max, sigma_min
    if zero:
        sig = torch.cat([sig, sig.new_zeros(1)])
    try:
        return check(sig)
    except GridError as exc:
        raise InputError(f"n: the {n}-step grid is not strictly decreasing/finite in float64 ({exc})") from None


# ------------------------------------------------------------------------------------------------ schedules
def edm(n, sigma_min, sigma_max, *, zero=False, rho=7.0, process=None, **unknown) -> torch.Tensor:
    """Karras et al. (2022) Eq. 5: sigma(u) = (smax^(1/rho) + u (smin^(1/rho) - smax^(1/rho)))^rho.

    Evaluated as smax exp(rho log1p(u expm1(log(smin/smax)/rho))): the same number, accurate to a few rho eps
    relative for every rho (the plain power loses ~rho eps for large rho, the base being then ~1).
    """
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, zero, unknown)
    rho = _real("rho", rho)
    if rho <= 0:
        raise InputError(f"rho: must be > 0 (got {rho})")
    em = math.expm1(math.log(sigma_min / sigma_max) / rho)  # (smin/smax)^(1/rho) - 1, in (-1, 0)
    return grid_from_map(lambda u: sigma_max * torch.exp(rho * torch.log1p(u * em)), n, sigma_min, sigma_max, zero)


def logsnr(n, sigma_min, sigma_max, *, zero=False, process=None, **unknown) -> torch.Tensor:
    """Uniform in lambda = -log sigma: sigma(u) = exp(log smax + u (log smin - log smax)) (log-linear in sigma)."""
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, zero, unknown)
    la, lb = math.log(sigma_max), math.log(sigma_min)
    return grid_from_map(lambda u: torch.exp(la + u * (lb - la)), n, sigma_min, sigma_max, zero)


def _process_times(schedule: str, process, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """t(sigma_min), t(sigma_max) of a duck-typed process, after checking both sigmas are in its range."""
    if process is None:
        raise InputError(f"process: schedule {schedule!r} is uniform in a process's time and needs process=")
    if isinstance(process, str):
        raise InputError(f"process: expected a process object with sigma(t) and sigma_inv(sigma), got the name "
                         f"{process!r} (pass the object, e.g. analytic.processes.get({process!r}))")
    for attr in ("sigma", "sigma_inv"):
        if not callable(getattr(process, attr, None)):
            raise InputError(f"process: expected an object with sigma(t) and sigma_inv(sigma); no {attr}()")
    if callable(getattr(process, "sigma_range", None)):
        lo, hi = (float(v) for v in process.sigma_range())
        slack = 1e-12  # relative: sigma(t_min) is itself computed in floating point
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if not lo * (1 - slack) <= value <= hi * (1 + slack):
                raise InputError(f"{name}: {value} is outside the process's sigma range [{lo:.6g}, {hi:.6g}]")
    times = []
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        t = float(process.sigma_inv(torch.tensor(value, dtype=DTYPE)))
        back = float(process.sigma(torch.tensor(t, dtype=DTYPE))) if math.isfinite(t) else math.nan
        if not abs(back - value) <= 1e-9 * value:  # round trip exact up to a few ulps per operation
            raise InputError(f"{name}: {value} is outside the process's range (t = {t}, sigma(t) = {back})")
        times.append(t)
    return times[0], times[1]


def uniform_t(n, sigma_min, sigma_max, *, zero=False, process=None, **unknown) -> torch.Tensor:
    """Uniform in the process time: sigma(u) = process.sigma(t_max + u (t_min - t_max)), t_* = sigma_inv(sigma_*)."""
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, zero, unknown)
    t_min, t_max = _process_times("uniform_t", process, sigma_min, sigma_max)
    return grid_from_map(lambda u: process.sigma(t_max + u * (t_min - t_max)), n, sigma_min, sigma_max, zero)


def time_quadratic(n, sigma_min, sigma_max, *, zero=False, process=None, **unknown) -> torch.Tensor:
    """Uniform in sqrt(t) (DDIM's "quad" spacing): sigma(u) = process.sigma(r(u)^2), r linear from sqrt(t_max)."""
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, zero, unknown)
    t_min, t_max = _process_times("time_quadratic", process, sigma_min, sigma_max)
    if t_min < 0 or t_max < 0:
        raise InputError(f"process: time_quadratic needs non-negative times (got t in [{t_min}, {t_max}])")
    ra, rb = math.sqrt(t_max), math.sqrt(t_min)
    return grid_from_map(lambda u: process.sigma((ra + u * (rb - ra)) ** 2), n, sigma_min, sigma_max, zero)
