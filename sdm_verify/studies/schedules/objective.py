"""The exact error of a grid and its gradient in the grid's nodes (the objective of studies/schedules/optimum).

    grid_error     the harness's exact error of a solver on a grid: the solver runs from the exact law p_{grid[0]}
                   to grid[-1] (or sigma_to) and is measured there (Bures W2 on a Gaussian, quantile W2 in 1-D, the
                   synchronous bound against the DOP853 reference in d > 1); +inf if the solver diverges.
    grid_of_theta  theta in R^N -> a strictly decreasing grid with fixed endpoints (softmax increments of log sigma);
                   with zero=True the last node is replaced by 0 (the full sampler into 0: nodes 1..N-1 are free,
                   sigma_min is then only the floor of the last positive node).
    log_gradient   d log(error) / d log sigma_i over the free nodes, by central differences (docs/schedules.md §2).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

from analytic import GaussianMixture

from ... import solvers as _solvers
from ...errors import GridError, InputError, SolverDivergedError
from ...grid import check_grid
from ...harness.meters import meter_for

__all__ = ["FD_STEP", "MIN_GAP", "grid_error", "grid_of_theta", "theta_of_grid", "log_gradient", "zero_level"]

F64 = torch.float64
#: central finite-difference step in log sigma (module docstring: gradient of log(error) good to ~1e-9)
FD_STEP = 1e-5
MIN_GAP = 1e-7  #: the smallest step in log sigma the optimiser may take (a smaller one the FD cannot resolve)
_MAX_METERS = 32
_METERS: OrderedDict = OrderedDict()


# ------------------------------------------------------------------------------------------------ input checks
def _solver(solver):
    if isinstance(solver, str):
        try:
            solver = _solvers.get(solver)
        except InputError as exc:
            raise InputError(f"solver: {exc}") from None
    elif not callable(solver):
        raise InputError(f"solver: expected a registered solver name or a solver, got {type(solver).__name__}")
    if getattr(solver, "needs_noise", False):
        raise InputError(f"solver: {getattr(solver, 'name', solver)!r} is stochastic; the optimum is defined here for "
                         "deterministic (ODE) solvers only")
    return solver


def _target(target) -> GaussianMixture:
    if not isinstance(target, GaussianMixture):
        raise InputError(f"target: expected an analytic.GaussianMixture (or Gaussian), got {type(target).__name__}")
    return target


def _endpoints(n, sigma_min, sigma_max) -> tuple[int, float, float]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"n: expected an int number of steps, got {n!r}")
    if n < 1:
        raise InputError(f"n: must be >= 1 (got {n})")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise InputError(f"{name}: expected a finite real number, got {v!r}")
    if sigma_min <= 0:
        raise InputError(f"sigma_min: must be > 0 (got {sigma_min})")
    if sigma_min >= sigma_max:
        raise InputError(f"sigma_min: must be < sigma_max (got {sigma_min} >= {sigma_max})")
    return int(n), float(sigma_min), float(sigma_max)


def _grid(grid) -> torch.Tensor:
    try:
        g = check_grid(grid).to(F64)
    except InputError as exc:
        raise InputError(f"grid: {exc}") from None
    if g.numel() < 2 or not (float(g[-1]) > 0 or (float(g[-1]) == 0 and g.numel() > 2)):
        raise InputError(f"grid: needs at least 2 nodes ending above 0, or 3 ending in 0 (got {g.numel()} nodes, last "
                         f"{float(g[-1])})")
    return g


# ---------------------------------------------------------------------------------------------------- the error
def _meter(target: GaussianMixture, sigma_from: float, sigma_to: float):
    """The meter of (target, endpoints), built once (a mixture meter in d > 1 solves a reference flow)."""
    key = (id(target), sigma_from, sigma_to)
    hit = _METERS.get(key)
    if hit is not None and hit[0] is target:
        _METERS.move_to_end(key)
        return hit[1]
    meter = meter_for(target, sigma_from, sigma_to)
    _METERS[key] = (target, meter)  # the target is held, so its id cannot be reused while the entry lives
    while len(_METERS) > _MAX_METERS:
        _METERS.popitem(last=False)
    return meter


def _error(solver, target, grid: torch.Tensor, sigma_to: float | None = None) -> float:
    meter = _meter(target, float(grid[0]), float(grid[-1]) if sigma_to is None else float(sigma_to))
    try:
        err = meter.measure(lambda x: solver(target.denoiser, x, grid))
    except (SolverDivergedError, GridError):  # diverged, or nodes merged in float64
        return math.inf
    return float(err) if math.isfinite(err) else math.inf


def grid_error(solver, target, grid, sigma_to=None) -> float:
    """Exact error of `solver` (a registered name or a solver) on `grid` from p_{grid[0]} to p_{sigma_to} (default
    grid[-1]); +inf if the solver diverges."""
    return _error(_solver(solver), _target(target), _grid(grid), sigma_to)


# ------------------------------------------------------------------------------------------- parametrisation
def _softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max())
    return z / z.sum()


def grid_of_theta(theta, sigma_min: float, sigma_max: float, zero: bool = False) -> torch.Tensor:
    """The grid of theta: log sigma_max minus the cumulated increments softmax(theta) (log sigma_max - log sigma_min),
    endpoints set exactly. (A theta so extreme that an increment underflows gives a repeated node: not a grid.)"""
    p = _softmax(np.asarray(theta, dtype=np.float64))
    lmax, span = math.log(sigma_max), math.log(sigma_max) - math.log(sigma_min)
    g = torch.from_numpy(np.exp(lmax - span * np.concatenate([[0.0], np.cumsum(p)])))
    g[0], g[-1] = sigma_max, (0.0 if zero else sigma_min)
    return g


def theta_of_grid(grid, floor: float | None = None) -> np.ndarray:
    """A theta (the one with mean 0) whose grid is `grid` (strictly decreasing, > 0). A grid ending in 0 is read with
    its last node replaced by `floor` (the parametrisation's floor, below its last positive node)."""
    g = np.asarray(grid, dtype=np.float64).copy()
    if g[-1] == 0:
        if floor is None or not 0 < floor < g[-2]:
            raise InputError(f"floor: a grid into 0 needs a floor in (0, {g[-2]:g}) (got {floor!r})")
        g[-1] = floor
    d = -np.diff(np.log(g))
    t = np.log(d / d.sum())
    return t - t.mean()


def _jacobian(theta: np.ndarray, sigma_min: float, sigma_max: float) -> np.ndarray:
    """d l_k / d theta_m for the interior log sigmas l_k, k = 1..N-1: -span p_m ([m < k] - P_k), P_k = sum_{j<k} p_j."""
    p = _softmax(theta)
    n, span = p.size, math.log(sigma_max / sigma_min)
    P = np.cumsum(p)[:-1]  # P_k, k = 1..N-1
    below = (np.arange(n)[None, :] < np.arange(1, n)[:, None]).astype(float)
    return -span * p[None, :] * (below - P[:, None])


def _moved(grid: torch.Tensor, i: int, step: float) -> torch.Tensor:
    """grid with node i moved by `step` in log sigma, the other nodes untouched (bit for bit)."""
    g = grid.clone()
    g[i] = float(grid[i]) * math.exp(step)
    return g


def log_gradient(solver, target, grid, h: float = FD_STEP, sigma_to=None) -> tuple[np.ndarray, float]:
    """(d log(error) / d log sigma_i over the interior nodes by central differences, error at grid)."""
    return _log_gradient(_solver(solver), _target(target), _grid(grid), h, sigma_to)


def _log_gradient(solver, target, grid, h, sigma_to=None) -> tuple[np.ndarray, float]:
    e0 = _error(solver, target, grid, sigma_to)
    lg = grid.log()  # only to size the steps; the moved grids keep every other node bit for bit
    out = np.zeros(grid.numel() - 2)
    for i in range(1, grid.numel() - 1):
        hi = min(h, 0.25 * float(min(lg[i - 1] - lg[i], lg[i] - lg[i + 1])))
        f = [math.log(_error(solver, target, _moved(grid, i, s), sigma_to) or math.inf) for s in (hi, -hi)]
        out[i - 1] = (f[0] - f[1]) / (2 * hi) if all(map(math.isfinite, f)) else math.nan
    return out, e0


def zero_level(target, grid) -> float:
    """Errors at or below this are zero to rounding: 100x the meter's floor (as the harness's order fits use)."""
    return 100 * _meter(target, float(grid[0]), float(grid[-1])).floor

