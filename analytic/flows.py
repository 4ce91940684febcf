"""PF-ODE flow maps in canonical variables: dx/dsigma = (x - D(x, sigma))/sigma.

gaussian_flow_map: closed form for a Gaussian target N(mu, U diag(l) U^T) (docs/theory.md §3):
    Phi_{sigma_from -> sigma_to}(x) = mu + U diag(sqrt((l + sigma_to^2)/(l + sigma_from^2))) U^T (x - mu).
reference_flow: any target, solved with scipy's DOP853 in lambda = -log sigma, where the ODE reads
    dx/dlambda = D(x, e^{-lambda}) - x,
whose Jacobian dD/dx - I has eigenvalues in [-1, 0) for a Gaussian (non-stiff on the whole range). The batch is one
system (one shared step-size sequence). Its error floor against the closed form is measured by
`reference_floor()` and tested (tests/test_flows.py): about 1e-13 max-abs at the default tolerances.
exact_flow: the best of the two for a given target: the closed form for a Gaussian, the reference otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ._checks import DTYPE, check_bool, check_float, check_points, check_sigma
from .gmm import Gaussian, GaussianMixture

__all__ = ["gaussian_flow_map", "gaussian_flow_affine", "reference_flow", "reference_floor", "exact_flow"]

#: a flow to or from sigma = 0 stops at sigma0 = ZERO_SIGMA_FACTOR * sqrt(smallest covariance eigenvalue); for a
#: non-degenerate target the remaining motion is O(sigma0^2 / sqrt(l_min)) = 1e-16 relative, below float64 resolution.
ZERO_SIGMA_FACTOR = 1e-8
#: scipy's DOP853 raises smaller relative tolerances to 100 eps (with a warning): refused instead
_MIN_RTOL = 100 * float(np.finfo(np.float64).eps)


def _require_gaussian(target) -> None:
    if not isinstance(target, GaussianMixture) or target.K != 1:
        raise ValueError("gaussian: the closed-form flow map needs a single Gaussian (K = 1)")


def _sigmas(sigma_from, sigma_to) -> tuple[float, float]:
    """The two noise levels of a flow map, each one finite float >= 0."""
    return (float(check_sigma(sigma_from, "sigma_from", scalar=True)),
            float(check_sigma(sigma_to, "sigma_to", scalar=True)))


def _ratios(gaussian, sf: float, st: float) -> torch.Tensor:
    lam = gaussian.eigvals[0]
    return torch.sqrt((lam + st**2) / (lam + sf**2))


def gaussian_flow_affine(gaussian: Gaussian, sigma_from, sigma_to) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, c) with Phi(x) = M x + c, the exact flow map from sigma_from to sigma_to of a Gaussian target."""
    _require_gaussian(gaussian)
    sf, st = _sigmas(sigma_from, sigma_to)
    r = _ratios(gaussian, sf, st)
    U = gaussian.eigvecs[0] if gaussian.eigvecs is not None else torch.eye(gaussian.d, dtype=DTYPE)
    M = (U * r) @ U.T
    mu = gaussian.means[0]
    return M, mu - M @ mu


def gaussian_flow_map(gaussian: Gaussian, x, sigma_from, sigma_to) -> torch.Tensor:
    """Exact PF-ODE flow map of a Gaussian target applied to x (B, d)."""
    _require_gaussian(gaussian)
    x = check_points(x, gaussian.d)
    if gaussian.is_diagonal:  # elementwise: no d x d matrix at large d
        sf, st = _sigmas(sigma_from, sigma_to)
        mu = gaussian.means[0]
        return mu + _ratios(gaussian, sf, st) * (x - mu)
    M, c = gaussian_flow_affine(gaussian, sigma_from, sigma_to)
    return x @ M.T + c


def reference_flow(
    target: GaussianMixture,
    x,
    sigma_from,
    sigma_to,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    return_info: bool = False,
):
    """High-accuracy PF-ODE solution from sigma_from to sigma_to for any GaussianMixture, x of shape (B, d).

    DOP853 (Hairer-Norsett-Wanner) on dx/dlambda = D(x, e^-lambda) - x. Steps to or from sigma = 0 stop at
    ZERO_SIGMA_FACTOR * sqrt(l_min) (see the module constant). With return_info, also returns a dict with
    the solver's nfev and number of steps.
    """
    if not isinstance(target, GaussianMixture):
        raise ValueError("target: expected an analytic.GaussianMixture")
    x = check_points(x, target.d)
    sf, st = _sigmas(sigma_from, sigma_to)
    return dop853_flow(target.denoiser, x, sf, st, float(target.eigvals.min()), rtol, atol, return_info,
                       "reference_flow")


def dop853_flow(field, x: torch.Tensor, sf: float, st: float, l_min: float, rtol, atol, return_info,
                who: str = "dop853_flow"):
    """DOP853 on dx/dlambda = field(x, e^-lambda) - x from sigma sf to st for checked points x (B, d), one system for
    the batch; a flow to or from sigma = 0 stops at ZERO_SIGMA_FACTOR * sqrt(l_min) (l_min: the smallest covariance
    eigenvalue of the law). The shared core of reference_flow and guidance.guided_reference_flow."""
    rtol, atol = check_float(rtol, "rtol", positive=True), check_float(atol, "atol", positive=True)
    if rtol < _MIN_RTOL:
        raise ValueError(f"rtol: must be >= {_MIN_RTOL:g} (DOP853's floor, 100 eps), got {rtol!r}")
    return_info = check_bool(return_info, "return_info")
    tiny = ZERO_SIGMA_FACTOR * math.sqrt(l_min)
    lam_from, lam_to = -math.log(max(sf, tiny)), -math.log(max(st, tiny))
    shape = x.shape
    if lam_from == lam_to:
        out = x.clone()
        return (out, {"nfev": 0, "steps": 0}) if return_info else out

    def rhs(lam, y):
        xs = torch.from_numpy(y).reshape(shape)
        return (field(xs, math.exp(-lam)) - xs).reshape(-1).numpy()

    sol = solve_ivp(rhs, (lam_from, lam_to), x.reshape(-1).numpy().astype(np.float64), method="DOP853",
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"{who}: DOP853 failed: {sol.message}")
    out = torch.from_numpy(sol.y[:, -1].copy()).to(DTYPE).reshape(shape)
    return (out, {"nfev": int(sol.nfev), "steps": int(sol.t.size - 1)}) if return_info else out


def exact_flow(target: GaussianMixture, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """Phi_{sigma_from -> sigma_to}(x): closed form for a Gaussian, DOP853 reference (rtol 1e-12) otherwise."""
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target: expected an analytic.GaussianMixture, got {type(target).__name__}")
    x = check_points(x, target.d)
    _sigmas(sigma_from, sigma_to)
    if sigma_from == sigma_to:
        return x.clone()
    if target.K == 1:
        return gaussian_flow_map(target, x, sigma_from, sigma_to)
    return reference_flow(target, x, sigma_from, sigma_to)


def reference_floor(d: int = 4, n: int = 64, sigma_from: float = 80.0, sigma_to: float = 0.002,
                    seed: int = 0, **tol) -> float:
    """Measured error floor of reference_flow: max-abs error against the closed form on a random anisotropic
    Gaussian (eigenvalues log-spaced in [1e-3, 2]) for n points drawn from p_{sigma_from}."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=DTYPE, generator=g))
    lam = torch.logspace(-3, math.log10(2.0), d, dtype=DTYPE)
    target = Gaussian(torch.randn(d, dtype=DTYPE, generator=g), (q * lam) @ q.T)
    x = target.sample(n, sigma=sigma_from, generator=g)
    ref = reference_flow(target, x, sigma_from, sigma_to, **tol)
    return float((ref - gaussian_flow_map(target, x, sigma_from, sigma_to)).abs().max())
