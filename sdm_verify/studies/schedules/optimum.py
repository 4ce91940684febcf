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
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from analytic import processes as _processes

from ... import schedules as _schedules
from ...errors import InputError
from .certify import RIVALS, Certificate, certify
from .objective import (
    F64,
    FD_STEP,
    MIN_GAP,
    _endpoints,
    _error,
    _grid,
    _jacobian,
    _log_gradient,
    _solver,
    _target,
    grid_error,
    grid_of_theta,
    log_gradient,
    theta_of_grid,
    zero_level,
)

__all__ = ["OptimisationError", "OptimalGrid", "StartResult", "Certificate", "grid_error", "optimal_grid", "certify",
           "grid_of_theta", "theta_of_grid", "log_gradient", "FD_STEP", "RIVALS"]


class OptimisationError(RuntimeError):
    """The optimiser did not report convergence and the caller asked for a converged optimum (require_converged)."""


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
def _start_grid(start, n, sigma_min, sigma_max, rng, process, floor=None):
    """(name, grid) of one start: a registered schedule name, "random" (theta ~ N(0, 1)), or a grid. floor set: the
    full sampler into 0 (a schedule's n - 1 steps to sigma_min, then 0; random nodes above floor)."""
    zero = floor is not None
    if isinstance(start, str):
        if start == "random":
            return "random", grid_of_theta(rng.standard_normal(n), floor or sigma_min, sigma_max, zero)
        try:
            fn = _schedules.get(start)
            kw = {"process": process} if _schedules.uses_process(start) else {}
        except InputError as exc:
            raise InputError(f"starts: {exc}") from None
        if zero:
            return start, torch.cat([fn(n - 1, sigma_min, sigma_max, **kw).to(F64), torch.zeros(1, dtype=F64)])
        return start, fn(n, sigma_min, sigma_max, **kw).to(F64)
    g = _grid(start)
    last = 0.0 if zero else sigma_min
    if g.numel() != n + 1 or not (math.isclose(float(g[0]), sigma_max) and float(g[-1]) == last
                                  or not zero and math.isclose(float(g[-1]), sigma_min)):
        raise InputError(f"starts: a start grid must have n + 1 = {n + 1} nodes from sigma_max to {last:g}")
    if zero and not float(g[-2]) > floor:
        raise InputError(f"starts: a start grid's last positive node must be above the floor {floor:g}")
    return "grid", g


#: the full sampler into 0: the last positive node is free above ZERO_FLOOR * sigma_min
ZERO_FLOOR = 1e-2


class _AtFloor(Exception):
    """Raised by the objective when the error is zero to rounding; args[0] is theta."""


def _run_start(solver, target, theta0, n, sigma_min, sigma_max, tol, maxiter, zero=False):
    """(theta, status, message, iterations, nfev) of one L-BFGS-B run; status 0 also when the error reaches the
    zero level (a global minimum, since error >= 0: log(error) has no stationary point there)."""
    level = zero_level(target, grid_of_theta(theta0, sigma_min, sigma_max, zero))
    calls = [0]

    def fun(theta):
        calls[0] += 1
        g = grid_of_theta(theta, sigma_min, sigma_max, zero)
        pos = g.numpy()[:-1] if zero else g.numpy()
        if float(np.diff(-np.log(pos)).min(initial=np.inf)) < MIN_GAP:  # merged nodes: outside the grids measured
            return 1e3, np.zeros_like(theta)
        gl, e = _log_gradient(solver, target, g, FD_STEP)
        if e <= level:
            raise _AtFloor(theta.copy())
        if not (math.isfinite(e) and np.isfinite(gl).all()):
            return 1e3, np.zeros_like(theta)
        return math.log(e), _jacobian(theta, sigma_min, sigma_max).T @ gl

    try:
        res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                       options={"gtol": tol, "ftol": 1e-15, "maxiter": maxiter, "maxls": 40})
    except _AtFloor as hit:
        return hit.args[0], 0, f"CONVERGENCE: error <= {level:.0e}, zero to rounding (a global minimum)", -1, calls[0]
    msg = res.message.decode() if isinstance(res.message, bytes) else str(res.message)
    return res.x, int(res.status), msg, int(res.nit), int(res.nfev)


def optimal_grid(solver, target, n, sigma_min, sigma_max, *, starts=("edm", "logsnr", "random"), seed=0,
                 tol=1e-7, maxiter=200, process=None, certify_result=True, require_converged=False,
                 final_zero=False, **certify_kw) -> OptimalGrid:
    """The grid of n steps from sigma_max to sigma_min minimising the exact error of `solver` on `target`.

    final_zero: the full sampler into 0 instead: n steps from sigma_max, the last one into 0, measured against the
    data law p_0; nodes 1..n-1 are free above ZERO_FLOOR * sigma_min, and the schedule starts are a schedule's n - 1
    steps from sigma_max to sigma_min followed by 0 (k-diffusion's convention).
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
    final_zero = bool(final_zero)
    if final_zero and n < 2:
        raise InputError("n: the full sampler into 0 needs n >= 2 (n = 1 is one step into 0: nothing to optimise)")
    floor = ZERO_FLOOR * sigma_min if final_zero else None
    lo = floor if final_zero else sigma_min
    plan = [_start_grid(s, n, sigma_min, sigma_max, rng, process, floor) for s in starts]
    results, thetas = [], []
    for name, g in plan:
        e0 = _error(solver, target, g)
        if n == 1:  # no interior node: the grid is fixed
            results.append(StartResult(name, e0, g, e0, 0, "n = 1: no interior node to optimise", 0, 1))
            thetas.append(np.zeros(1))
            continue
        theta, status, msg, nit, nfev = _run_start(solver, target, theta_of_grid(g, floor), n, lo, sigma_max, tol,
                                                   maxiter, final_zero)
        gf = grid_of_theta(theta, lo, sigma_max, final_zero)
        results.append(StartResult(name, e0, gf, _error(solver, target, gf), status, msg, nit, nfev))
        thetas.append(theta - theta.mean())
    best = min(range(len(results)), key=lambda i: results[i].error)
    win = results[best]
    if final_zero:
        certify_kw.setdefault("sigma_min", sigma_min)
    cert = certify(solver, target, win.grid, win.error, process=process, **certify_kw) if certify_result else None
    out = OptimalGrid(getattr(solver, "name", str(solver)), n, sigma_min, sigma_max, win.grid, win.error,
                      thetas[best], results, win.status, win.message, win.iterations, cert,
                      time.perf_counter() - t0)
    if require_converged and not out.converged:
        raise OptimisationError(f"optimal_grid: the optimiser did not converge for {out.solver} at n = {n} "
                                f"(start {win.name!r}, status {win.status}: {win.message})")
    return out


