"""The optimal grid (sdm_verify.studies.schedules.optimum) against an independent brute force, its certificate, its
reproducibility across starts, and its refusals.

The independent oracle for Euler on the 1-D Gaussian N(0, v), v = 0.5^2, VE from 80 to 0.002, written here from the
step formula: x' = x + (t' - t)(x - D(x, t))/t with D(x, t) = v/(v + t^2) x, so x - D = t^2/(v + t^2) x and one step
multiplies x by 1 + (t' - t) t/(v + t^2). The run is x -> a x with a the product of the factors; from p_80 =
N(0, v + 80^2) the output law is N(0, a^2 (v + 80^2)) and its W2 to p_0.002 = N(0, v + 0.002^2) is
|a| sqrt(v + 80^2) - sqrt(v + 0.002^2) in absolute value (1-D Gaussians with equal means).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

from analytic import Gaussian
from sdm_verify import schedules
from sdm_verify.errors import InputError
from sdm_verify.harness import targets
from sdm_verify.studies.schedules.optimum import (
    OptimisationError,
    certify,
    grid_error,
    grid_of_theta,
    optimal_grid,
    theta_of_grid,
)

V, SMIN, SMAX = 0.25, 0.002, 80.0
GAUSS_1D = Gaussian([0.0], [[V]])


def euler_w2(log_interior) -> float:
    """The closed-form W2 of Euler on N(0, v) over the grid (80, exp(log_interior)..., 0.002)."""
    t = [SMAX, *np.exp(np.asarray(log_interior, dtype=float)).tolist(), SMIN]
    a = 1.0
    for tk, tn in zip(t[:-1], t[1:], strict=True):
        a *= 1.0 + (tn - tk) * tk / (V + tk * tk)
    return abs(abs(a) * math.sqrt(V + SMAX**2) - math.sqrt(V + SMIN**2))


def brute_force(n: int) -> tuple[np.ndarray, float]:
    """Minimise euler_w2 over the n - 1 interior log sigmas: dense search, then refinement (n = 2 or 3)."""
    lo, hi = math.log(SMIN), math.log(SMAX)
    if n == 2:
        u = np.linspace(lo, hi, 4001)[1:-1]
        k = int(np.argmin([euler_w2([x]) for x in u]))
        res = minimize_scalar(lambda x: euler_w2([x]), bounds=(u[max(k - 1, 0)], u[min(k + 1, len(u) - 1)]),
                              method="bounded", options={"xatol": 1e-12})
        return np.array([res.x]), float(res.fun)
    u = np.linspace(lo, hi, 401)[1:-1]
    best = min(((euler_w2([a, b]), a, b) for i, a in enumerate(u) for b in u[:i]), key=lambda r: r[0])

    def f(z):
        return euler_w2(z) if z[0] > z[1] else math.inf

    res = minimize(f, np.array(best[1:]), method="Nelder-Mead",
                   options={"xatol": 1e-11, "fatol": 1e-16, "maxiter": 20000})
    return res.x, float(res.fun)


# -------------------------------------------------------------------------------------------- the oracle
def test_grid_error_matches_the_closed_form_on_random_grids():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 9):
        inner = np.sort(rng.uniform(math.log(SMIN), math.log(SMAX), n - 1))[::-1]
        grid = torch.tensor([SMAX, *np.exp(inner), SMIN], dtype=torch.float64)
        assert grid_error("euler", GAUSS_1D, grid) == pytest.approx(euler_w2(inner), rel=1e-9, abs=1e-13)


def test_parametrisation_is_ordered_and_invertible():
    rng = np.random.default_rng(2)
    for n in (1, 3, 17):
        theta = 3 * rng.standard_normal(n)
        g = grid_of_theta(theta, SMIN, SMAX)
        assert g[0] == SMAX and g[-1] == SMIN and bool((g[1:] < g[:-1]).all())
        back = grid_of_theta(theta_of_grid(g), SMIN, SMAX)
        assert torch.allclose(back, g, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [2, 3])
def test_euler_optimum_matches_brute_force(n):
    """Tolerances: at a smooth minimum the error is flat to second order, so errors agree far better (1e-9
    relative) than nodes. The nodes: L-BFGS-B stops at a gradient ~1e-7 in log(error), Nelder-Mead at xatol 1e-11,
    and the curvature in log sigma is O(0.1-1), so the nodes agree to ~1e-6; 1e-5 in log sigma leaves margin."""
    nodes, err = brute_force(n)
    opt = optimal_grid("euler", GAUSS_1D, n, SMIN, SMAX, starts=("edm", "logsnr"))
    assert opt.converged and opt.certificate.ok
    assert opt.error == pytest.approx(err, rel=1e-9)
    assert np.abs(opt.grid[1:-1].log().numpy() - nodes).max() < 1e-5
    assert opt.error == pytest.approx(euler_w2(opt.grid[1:-1].log().numpy()), rel=1e-9)


# ------------------------------------------------------------------------------------------ certification
def _cell(solver, target, n):
    opt = optimal_grid(solver, target, n, SMIN, SMAX, starts=("edm", "logsnr"), n_random=8)
    cert = opt.certificate
    assert opt.converged, opt.message
    assert cert.ok, (cert.grad_max, cert.perturb_ok, cert.best_rival, opt.error)
    assert opt.error <= min(cert.rivals.values()) * (1 + 1e-12)  # no rival is better at all, not just by rel
    return opt


@pytest.mark.parametrize("solver,n", [("euler", 2), ("euler", 3), ("euler", 4), ("heun", 2), ("heun", 3),
                                      ("dpmpp_2m", 2), ("dpmpp_2m", 3)])
def test_certificate_passes_on_the_optimum_gauss_1d(solver, n):
    _cell(solver, GAUSS_1D, n)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["gauss-1d", "gauss-4d"])
@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m"])
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_certificate_passes_on_the_quick_matrix(target, solver, n):
    known = {("gauss-4d", "dpmpp_2m", 8): "stalls at error ~1e-6, gradient ~1e4",
             ("gauss-1d", "dpmpp_2m", 4): "stalls at error 1.4e-10 (> the 1e-11 zero level), gradient ~60",
             ("gauss-4d", "heun", 8): "L-BFGS-B ends ABNORMAL (line search), reported as not converged"}
    if (target, solver, n) in known:  # open: the result is flagged (not converged / not certified), never optimal
        pytest.xfail(f"{known[target, solver, n]}: near a zero-error set log(error) has a kink that L-BFGS-B "
                     "does not cross; the flags catch it")
    _cell(solver, GAUSS_1D if target == "gauss-1d" else targets.get(target), n)


def test_certificate_fails_on_non_optimised_grids():
    edm = schedules.get("edm")(8, SMIN, SMAX)
    cert = certify("euler", GAUSS_1D, edm)
    assert not cert.ok and not cert.grad_ok and cert.grad_max > 1e-2
    assert not cert.rivals_ok  # the optimum is not among the rivals, but a rival still beats EDM here
    # the perturbation check: a move of 0.1 in log sigma of some node lowers EDM's error by more than 0.1%
    assert not certify("euler", GAUSS_1D, edm, perturb=0.1).perturb_ok
    # the rivals check on its own: a grid crowded near sigma_max is beaten by logsnr
    crowded = torch.tensor([SMAX, 79.0, 78.0, 77.0, SMIN], dtype=torch.float64)
    cert = certify("euler", GAUSS_1D, crowded)
    assert not cert.rivals_ok and cert.rivals["logsnr"] < cert.error


# ------------------------------------------------------------------------------------------ reproducibility
def test_two_starts_reproduce_the_optimal_grid():
    """Euler's optimum on the 1-D Gaussian is isolated (unlike dpmpp_2m's, see optimum's docstring): from EDM and
    from a random theta, the grids agree to 1e-5 in log sigma (the stopping accuracy, see the brute-force test)."""
    a = optimal_grid("euler", GAUSS_1D, 5, SMIN, SMAX, starts=("edm",), certify_result=False)
    b = optimal_grid("euler", GAUSS_1D, 5, SMIN, SMAX, starts=("random",), seed=3, certify_result=False)
    assert a.converged and b.converged
    assert a.starts[0].start_error != b.starts[0].start_error  # really two different starts
    assert float((a.grid.log() - b.grid.log()).abs().max()) < 1e-5
    assert a.error == pytest.approx(b.error, rel=1e-9)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw,name", [
    ({"n": 0}, "n"), ({"n": 2.5}, "n"), ({"sigma_min": 80.0}, "sigma_min"), ({"sigma_min": 100.0}, "sigma_min"),
    ({"sigma_min": 0.0}, "sigma_min"), ({"sigma_min": -1.0}, "sigma_min"), ({"solver": "nope"}, "solver"),
    ({"target": "gauss-4d"}, "target"), ({"maxiter": 0}, "maxiter"), ({"starts": ()}, "starts"),
    ({"starts": ("nope",)}, "starts"), ({"solver": "euler_maruyama"}, "solver"),
])
def test_bad_inputs_name_the_argument(kw, name):
    args = {"solver": "euler", "target": GAUSS_1D, "n": 3, "sigma_min": SMIN, "sigma_max": SMAX, **kw}
    with pytest.raises(InputError, match=rf"^{name}:"):
        optimal_grid(args.pop("solver"), args.pop("target"), args.pop("n"), args.pop("sigma_min"),
                     args.pop("sigma_max"), **args)


def test_bad_grid_and_target_for_grid_error():
    with pytest.raises(InputError, match="^grid:"):
        grid_error("euler", GAUSS_1D, torch.tensor([1.0, 2.0], dtype=torch.float64))
    with pytest.raises(InputError, match="^grid:"):
        grid_error("euler", GAUSS_1D, torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(InputError, match="^target:"):
        grid_error("euler", object(), torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_non_convergence_is_reported_and_can_raise():
    opt = optimal_grid("euler", GAUSS_1D, 6, SMIN, SMAX, starts=("edm",), maxiter=1, certify_result=False)
    assert not opt.converged and not opt.optimal and opt.status != 0
    assert "ITERATIONS" in opt.message.upper()
    with pytest.raises(OptimisationError, match="did not converge"):
        optimal_grid("euler", GAUSS_1D, 6, SMIN, SMAX, starts=("edm",), maxiter=1, require_converged=True)
