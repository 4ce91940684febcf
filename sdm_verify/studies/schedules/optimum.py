"""The exactly optimal N-step grid of a solver on an exact target, and a certificate that it is optimal (issue 16).

The error of a grid is the harness's exact error (`sdm_verify.harness.meters`): the solver runs from the exact law
p_{sigma_max} to sigma_min and is measured against p_{sigma_min} by
    Gaussian target   the exact Bures W2 of the solver's affine map;
    1-D mixture       the exact 1-D W2 (quantiles, adaptive Gauss-Legendre to ~5e-7 relative);
    d > 1 mixture     the synchronous error against the DOP853 reference flow (an upper bound on W2).

Parametrisation. theta in R^N -> increments of log sigma, softmax(theta) * (log sigma_max - log sigma_min): every
theta gives a strictly decreasing grid with the fixed endpoints (theta + c 1 is the same grid).

Gradients. The registered solvers compute their coefficients in Python floats from the grid (`grid.tolist()` in the
solver loop, by design: the coefficients are exact float64 closed forms), so torch autograd cannot see the grid.
The gradient of f = log(error) is taken by central finite differences in the interior nodes' log sigma, step
FD_STEP = 1e-5, then mapped to theta by the exact Jacobian of the parametrisation. Accuracy: the measured error is
smooth in the grid to rounding (relative noise ~1e-15 on these meters, also the 1-D quantile meter, whose panels do
not move under so small a step), and |f'''| <~ 1 in log sigma, so the truncation error h^2 |f'''| / 6 ~ 2e-11 and
the rounding error ~1e-15 / h = 1e-10: the gradient of log(error) is good to ~1e-9 absolute. The step is shrunk to
a quarter of the smaller neighbouring gap where the grid is finer than that.

Optimiser. scipy L-BFGS-B on theta, minimising log(error) (a relative scale: errors span decades across N), from
several starts (registered schedules, random theta from a seed); the best final error wins. A start whose
optimiser does not report convergence (status != 0) is kept and labelled; the result's `converged` is the winning
start's status, and `require_converged=True` raises OptimisationError instead of returning an unconverged grid.

Certificate (`certify`), three checks that can fail:
    gradient      max_i |d log(error) / d log sigma_i| over interior nodes <= grad_tol (default 1e-4: a first-order
                  gain of less than 1e-7 relative for a 1e-3 move of any node);
    perturbation  moving any interior node by +-perturb in log sigma (kept inside its neighbours) does not lower
                  the error by more than rel (relative);
    rivals        no registered schedule (edm rho=7, logsnr, uniform_t and time_quadratic on the VE process by
                  default) and none of n_random random ordered grids beats it by more than rel.
An error at or below 100x the meter's floor is zero to rounding and so a global minimum: the optimiser stops there
(converged) and the certificate passes with at_floor=True. This happens: on a 1-D Gaussian, dpmpp_2m's output
variance is a continuous function of the grid that crosses the exact one, so from N = 3 on a continuum of grids
has error 0 (the optimum is then not unique, and reproducibility across starts is not expected).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize

from analytic import GaussianMixture
from analytic import processes as _processes

from ... import schedules as _schedules
from ... import solvers as _solvers
from ...errors import GridError, InputError, SolverDivergedError
from ...grid import check_grid
from ...harness.meters import meter_for

__all__ = ["OptimisationError", "OptimalGrid", "StartResult", "Certificate", "grid_error", "optimal_grid", "certify",
           "grid_of_theta", "theta_of_grid", "log_gradient", "FD_STEP", "RIVALS"]

F64 = torch.float64
#: central finite-difference step in log sigma (module docstring: gradient of log(error) good to ~1e-9)
FD_STEP = 1e-5
#: registered schedules scored as rivals by `certify` (those that need a process get `process`, VE by default)
RIVALS = ("edm", "logsnr", "uniform_t", "time_quadratic")
MIN_GAP = 1e-7  #: the smallest step in log sigma the optimiser may take (a smaller one the FD cannot resolve)
_MAX_METERS = 32
_METERS: OrderedDict = OrderedDict()


class OptimisationError(RuntimeError):
    """The optimiser did not report convergence and the caller asked for a converged optimum (require_converged)."""


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
    if g.numel() < 2 or not float(g[-1]) > 0:
        raise InputError(f"grid: needs at least 2 nodes ending above 0 (got {g.numel()} nodes, last {float(g[-1])})")
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


def grid_of_theta(theta, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The grid of theta: log sigma_max minus the cumulated increments softmax(theta) (log sigma_max - log sigma_min),
    endpoints set exactly. (A theta so extreme that an increment underflows gives a repeated node: not a grid.)"""
    p = _softmax(np.asarray(theta, dtype=np.float64))
    lmax, span = math.log(sigma_max), math.log(sigma_max) - math.log(sigma_min)
    g = torch.from_numpy(np.exp(lmax - span * np.concatenate([[0.0], np.cumsum(p)])))
    g[0], g[-1] = sigma_max, sigma_min
    return g


def theta_of_grid(grid) -> np.ndarray:
    """A theta (the one with mean 0) whose grid is `grid` (strictly decreasing, > 0)."""
    d = -np.diff(np.log(np.asarray(grid, dtype=np.float64)))
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


@dataclass
class StartResult:
    """One start: its name and error, then the grid it ended on, that grid's error, L-BFGS-B's status/message, the
    iterations (-1: stopped at the zero level) and objective calls (each 2(N-1) + 1 solver runs)."""
    name: str; start_error: float; grid: torch.Tensor; error: float  # noqa: E702
    status: int; message: str; iterations: int; nfev: int  # noqa: E702

    @property
    def converged(self) -> bool:
        return self.status == 0


@dataclass
class OptimalGrid:
    """The best grid over all starts, with how it was found. `converged`: its optimiser reported convergence;
    `optimal`: converged and certified."""
    solver: str; n: int; sigma_min: float; sigma_max: float  # noqa: E702
    grid: torch.Tensor; error: float; theta: np.ndarray; starts: list  # noqa: E702
    status: int; message: str; iterations: int; certificate: Certificate | None; seconds: float  # noqa: E702

    @property
    def converged(self) -> bool:
        return self.status == 0

    @property
    def optimal(self) -> bool:
        return self.converged and self.certificate is not None and self.certificate.ok


# ---------------------------------------------------------------------------------------------- optimiser
def _start_grid(start, n, sigma_min, sigma_max, rng, process):
    """(name, grid) of one start: a registered schedule name, "random" (theta ~ N(0, 1)), or a grid."""
    if isinstance(start, str):
        if start == "random":
            return "random", grid_of_theta(rng.standard_normal(n), sigma_min, sigma_max)
        try:
            fn = _schedules.get(start)
            kw = {"process": process} if _schedules.uses_process(start) else {}
        except InputError as exc:
            raise InputError(f"starts: {exc}") from None
        return start, fn(n, sigma_min, sigma_max, **kw).to(F64)
    g = _grid(start)
    if g.numel() != n + 1 or not (math.isclose(float(g[0]), sigma_max) and math.isclose(float(g[-1]), sigma_min)):
        raise InputError(f"starts: a start grid must have n + 1 = {n + 1} nodes from sigma_max to sigma_min")
    return "grid", g


class _AtFloor(Exception):
    """Raised by the objective when the error is zero to rounding; args[0] is theta."""


def _zero_level(target, grid) -> float:
    """Errors at or below this are zero to rounding: 100x the meter's floor (as the harness's order fits use)."""
    return 100 * _meter(target, float(grid[0]), float(grid[-1])).floor


def _run_start(solver, target, theta0, n, sigma_min, sigma_max, tol, maxiter):
    """(theta, status, message, iterations, nfev) of one L-BFGS-B run; status 0 also when the error reaches the
    zero level (a global minimum, since error >= 0: log(error) has no stationary point there)."""
    zero = _zero_level(target, grid_of_theta(theta0, sigma_min, sigma_max))
    calls = [0]

    def fun(theta):
        calls[0] += 1
        g = grid_of_theta(theta, sigma_min, sigma_max)
        if float(np.diff(-np.log(g.numpy())).min()) < MIN_GAP:  # merged nodes: outside the grids measured
            return 1e3, np.zeros_like(theta)
        gl, e = _log_gradient(solver, target, g, FD_STEP)
        if e <= zero:
            raise _AtFloor(theta.copy())
        if not (math.isfinite(e) and np.isfinite(gl).all()):
            return 1e3, np.zeros_like(theta)
        return math.log(e), _jacobian(theta, sigma_min, sigma_max).T @ gl

    try:
        res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                       options={"gtol": tol, "ftol": 1e-15, "maxiter": maxiter, "maxls": 40})
    except _AtFloor as hit:
        return hit.args[0], 0, f"CONVERGENCE: error <= {zero:.0e}, zero to rounding (a global minimum)", -1, calls[0]
    msg = res.message.decode() if isinstance(res.message, bytes) else str(res.message)
    return res.x, int(res.status), msg, int(res.nit), int(res.nfev)


def optimal_grid(solver, target, n, sigma_min, sigma_max, *, starts=("edm", "logsnr", "random"), seed=0,
                 tol=1e-7, maxiter=200, process=None, certify_result=True, require_converged=False,
                 **certify_kw) -> OptimalGrid:
    """The grid of n steps from sigma_max to sigma_min minimising the exact error of `solver` on `target`.

    starts: registered schedule names, "random" (theta ~ N(0, I) from `seed`; repeat it for several) or grids.
    tol: L-BFGS-B's gtol on the projected gradient of log(error) in theta. Each start's result is in `starts`; the
    best error wins. process: for starts/rivals that need one (default VE). The winner is certified (`certify`,
    keywords passed on) unless certify_result=False. require_converged: raise OptimisationError if the winner's
    optimiser did not report convergence.
    """
    t0 = time.perf_counter()
    solver, target = _solver(solver), _target(target)
    n, sigma_min, sigma_max = _endpoints(n, sigma_min, sigma_max)
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise InputError(f"maxiter: must be an int >= 1 (got {maxiter!r})")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise InputError(f"tol: must be > 0 (got {tol!r})")
    if isinstance(starts, str) or not starts:
        raise InputError(f"starts: expected a non-empty sequence of starts, got {starts!r}")
    process = _processes.get("ve") if process is None else process
    rng = np.random.default_rng(seed)
    plan = [_start_grid(s, n, sigma_min, sigma_max, rng, process) for s in starts]
    results, thetas = [], []
    for name, g in plan:
        e0 = _error(solver, target, g)
        if n == 1:  # no interior node: the grid is fixed
            results.append(StartResult(name, e0, g, e0, 0, "n = 1: no interior node to optimise", 0, 1))
            thetas.append(np.zeros(1))
            continue
        theta, status, msg, nit, nfev = _run_start(solver, target, theta_of_grid(g), n, sigma_min, sigma_max, tol,
                                                   maxiter)
        gf = grid_of_theta(theta, sigma_min, sigma_max)
        results.append(StartResult(name, e0, gf, _error(solver, target, gf), status, msg, nit, nfev))
        thetas.append(theta - theta.mean())
    best = min(range(len(results)), key=lambda i: results[i].error)
    win = results[best]
    cert = certify(solver, target, win.grid, win.error, process=process, **certify_kw) if certify_result else None
    out = OptimalGrid(getattr(solver, "name", str(solver)), n, sigma_min, sigma_max, win.grid, win.error,
                      thetas[best], results, win.status, win.message, win.iterations, cert,
                      time.perf_counter() - t0)
    if require_converged and not out.converged:
        raise OptimisationError(f"optimal_grid: the optimiser did not converge for {out.solver} at n = {n} "
                                f"(start {win.name!r}, status {win.status}: {win.message})")
    return out


# --------------------------------------------------------------------------------------------- certificate
def certify(solver, target, grid, error=None, *, rel=1e-3, perturb=1e-3, grad_tol=1e-4, rivals=RIVALS,
            n_random=16, seed=0, process=None) -> Certificate:
    """Check that `grid` is a local and, against the rivals, a global optimum of the exact error (module docstring).
    error: the grid's error (recomputed when None). Each check's numbers are in the returned Certificate."""
    solver, target, grid = _solver(solver), _target(target), _grid(grid)
    for name, v in (("rel", rel), ("perturb", perturb), ("grad_tol", grad_tol)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            raise InputError(f"{name}: must be a number > 0 (got {v!r})")
    process = _processes.get("ve") if process is None else process
    n, smin, smax = grid.numel() - 1, float(grid[-1]), float(grid[0])
    gl, e = _log_gradient(solver, target, grid, FD_STEP)
    e = e if error is None else float(error)
    gmax = float(np.abs(gl).max()) if gl.size else 0.0
    at_floor = e <= _zero_level(target, grid)
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
        cands.append((name, fn(n, smin, smax, **kw).to(F64)))
    lmin, lmax = math.log(smin), math.log(smax)
    for k in range(n_random):
        inner = np.sort(rng.uniform(lmin, lmax, n - 1))[::-1]
        cands.append((f"random{k}", torch.from_numpy(np.exp(np.concatenate([[lmax], inner, [lmin]])))))
    for name, g in cands:
        g[0], g[-1] = smax, smin
        if not bool((g[1:] < g[:-1]).all()):
            continue
        cert.rivals[name] = _error(solver, target, g)
    if cert.rivals:
        cert.best_rival = min(cert.rivals.items(), key=lambda kv: kv[1])
        cert.rivals_ok = bool(cert.best_rival[1] >= e * (1 - rel) or at_floor)
    return cert
