"""The certificate of an optimal grid: three checks that can fail (docs/schedules.md §2).

    gradient      max_i |d log(error) / d log sigma_i| over the free nodes <= grad_tol (default 1e-4: a first-order
                  gain of less than 1e-7 relative for a 1e-3 move of any node);
    perturbation  moving any free node by +-perturb in log sigma (kept inside its neighbours) does not lower the
                  error by more than rel (relative);
    rivals        no registered schedule (edm rho=7, logsnr, uniform_t and time_quadratic on the VE process by
                  default) and none of n_random random ordered grids beats it by more than rel.
An error at or below 100x the meter's floor is zero to rounding and so a global minimum: the certificate then passes
with at_floor=True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from analytic import processes as _processes

from ... import schedules as _schedules
from ...errors import InputError
from .objective import F64, FD_STEP, _error, _grid, _log_gradient, _moved, _solver, _target, zero_level

__all__ = ["RIVALS", "Certificate", "certify"]

#: registered schedules scored as rivals by `certify` (those that need a process get `process`, VE by default)
RIVALS = ("edm", "logsnr", "uniform_t", "time_quadratic")


# ------------------------------------------------------------------------------------------------- results
@dataclass
class Certificate:
    """The three optimality checks on a grid and their numbers; `ok` only if all pass."""
    error: float; grad_max: float; grad_tol: float; grad_ok: bool; perturb: float; rel: float  # noqa: E702
    perturbed: list = field(default_factory=list)  # (node, step in log sigma, error, relative change)
    perturb_ok: bool = True
    rivals: dict = field(default_factory=dict)  # name -> error
    best_rival: tuple = ("", math.inf)
    rivals_ok: bool = True
    #: the error is zero to rounding (<= 100x the meter's floor): a global minimum whatever the gradient says
    #: (|error| has a kink at 0), so every check passes
    at_floor: bool = False

    @property
    def ok(self) -> bool:
        return self.grad_ok and self.perturb_ok and self.rivals_ok



def certify(solver, target, grid, error=None, *, rel=1e-3, perturb=1e-3, grad_tol=1e-4, rivals=RIVALS,
            n_random=16, seed=0, process=None, sigma_min=None) -> Certificate:
    """Check that `grid` is a local and, against the rivals, a global optimum of the exact error (module docstring).
    error: the grid's error (recomputed when None). Each check's numbers are in the returned Certificate. A grid into
    0 (the full sampler) is compared with the rivals' n - 1 steps to sigma_min (default: its last positive node)
    followed by 0, and with random grids whose last positive node lies above sigma_min / 100."""
    solver, target, grid = _solver(solver), _target(target), _grid(grid)
    for name, v in (("rel", rel), ("perturb", perturb), ("grad_tol", grad_tol)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            raise InputError(f"{name}: must be a number > 0 (got {v!r})")
    process = _processes.get("ve") if process is None else process
    n, smin, smax = grid.numel() - 1, float(grid[-1]), float(grid[0])
    zero = smin == 0
    if zero:
        smin = float(grid[-2]) if sigma_min is None else float(sigma_min)
        if not 0 < smin < smax:
            raise InputError(f"sigma_min: must be in (0, {smax:g}) for a grid into 0 (got {smin!r})")
    gl, e = _log_gradient(solver, target, grid, FD_STEP)
    e = e if error is None else float(error)
    gmax = float(np.abs(gl).max()) if gl.size else 0.0
    at_floor = e <= zero_level(target, grid)
    cert = Certificate(e, gmax, grad_tol, bool(gmax <= grad_tol or at_floor), perturb, rel, at_floor=at_floor)
    lg = grid.log()
    for i in range(1, n):
        for s in (perturb, -perturb):
            gap = float(lg[i - 1] - lg[i]) if s > 0 else float(lg[i] - lg[i + 1])
            step = math.copysign(min(abs(s), 0.5 * gap), s)
            ep = _error(solver, target, _moved(grid, i, step))
            cert.perturbed.append((i, step, ep, ep / e - 1))
            if ep < e * (1 - rel) and not at_floor:
                cert.perturb_ok = False
    rng = np.random.default_rng(seed)
    cands = []
    for name in rivals:
        fn = _schedules.get(name)
        kw = {"process": process} if _schedules.uses_process(name) else {}
        g = fn(n - 1, smin, smax, **kw).to(F64) if zero else fn(n, smin, smax, **kw).to(F64)
        cands.append((name, torch.cat([g, torch.zeros(1, dtype=F64)]) if zero else g))
    lmin, lmax = math.log(smin / 100 if zero else smin), math.log(smax)
    for k in range(n_random):
        inner = np.sort(rng.uniform(lmin, lmax, n - 1))[::-1]
        cands.append((f"random{k}", torch.from_numpy(np.exp(np.concatenate([[lmax], inner, [lmin]])))))
    for name, g in cands:
        g[0], g[-1] = smax, (0.0 if zero else smin)
        if not bool((g[1:] < g[:-1]).all()):
            continue
        cert.rivals[name] = _error(solver, target, g)
    if cert.rivals:
        cert.best_rival = min(cert.rivals.items(), key=lambda kv: kv[1])
        cert.rivals_ok = bool(cert.best_rival[1] >= e * (1 - rel) or at_floor)
    return cert
