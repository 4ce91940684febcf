"""The PF-ODE's exact derivatives on a Gaussian-mixture target (docs/theory.md §2, docs/sdm.md §5).

In canonical (EDM) variables the probability-flow ODE is dx/dsigma = x' = (x - D(x, sigma))/sigma (Karras et al.
2022, Eq. 3), with D the closed-form denoiser of `analytic.gmm`. Differentiating along a trajectory:
    x'  = (x - D)/sigma =: eps                                                       `velocity`
    dD/dsigma at fixed x, by forward-mode automatic differentiation of the closed form   `denoiser_dsigma`
    x'' = (x' - J_D x' - dD/dsigma)/sigma - x'/sigma = -(J_D eps + dD/dsigma)/sigma    `second_derivative`
(J_D = dD/dx = Cov[x0 | x]/sigma^2, second-order Tweedie: `GaussianMixture.denoiser_jacobian`). Two trajectories
delta apart obey the variational equation delta' = (I - J_D) delta / sigma, so run towards lower sigma they separate
at most at the rate mu = (lambda_max(sym J_D) - 1)/sigma: `expansion_rate` returns max over a batch of
lambda_max(sym J_D). On a Gaussian N(m, S): D = m + S (S + sigma^2 I)^{-1} (x - m), J_D = S (S + sigma^2 I)^{-1},
dD/dsigma = -2 sigma S (S + sigma^2 I)^{-2} (x - m) (tests/test_calculus.py checks these, finite differences
of the exact flow, and automatic differentiation through the denoiser).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad

from ._checks import DTYPE, check_points, check_sigma
from .gmm import GaussianMixture


def _check(target, x, sigma, *, scalar: bool):
    """target a GaussianMixture, x (B, d) finite points, sigma > 0 finite (one float if scalar, else per row)."""
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target: expected an analytic.GaussianMixture, got {type(target).__name__}")
    x = check_points(x, target.d)
    s = check_sigma(sigma, batch=x.shape[0], scalar=scalar)
    if (s.detach() <= 0).any():
        raise ValueError("sigma: must be > 0 (the PF-ODE's derivatives divide by sigma), got 0")
    return x

__all__ = ["velocity", "denoiser_dsigma", "second_derivative", "expansion_rate"]


def velocity(target: GaussianMixture, x: torch.Tensor, sigma) -> torch.Tensor:
    """x' = dx/dsigma = (x - D(x, sigma))/sigma, shape (B, d)."""
    x = _check(target, x, sigma, scalar=False)
    return (x - target.denoiser(x, sigma)) / sigma


def denoiser_dsigma(target: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """dD/dsigma at fixed x, shape (B, d), by forward-mode automatic differentiation through the closed-form
    denoiser (exact to rounding: no step size)."""
    x = _check(target, x, sigma, scalar=True)
    s0 = torch.tensor(float(sigma), dtype=DTYPE)
    with fwad.dual_level():
        out = target.denoiser(x, fwad.make_dual(s0, torch.ones_like(s0)))
        return fwad.unpack_dual(out).tangent.clone()


def second_derivative(target: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x'' = d^2x/dsigma^2 along the PF-ODE: -(J_D eps + dD/dsigma)/sigma, eps = (x - D)/sigma (docs/sdm.md §5)."""
    x = _check(target, x, sigma, scalar=True)
    eps = velocity(target, x, sigma)
    jac = target.denoiser_jacobian(x, sigma)
    return -(torch.einsum("bij,bj->bi", jac, eps) + denoiser_dsigma(target, x, sigma)) / sigma


def expansion_rate(target: GaussianMixture, x: torch.Tensor, sigma: float) -> float:
    """max_b lambda_max(sym J_D(x_b, sigma)): mu = (this - 1)/sigma is the one-sided Lipschitz rate of the flow
    run towards lower sigma (the variational equation is delta' = (I - J_D) delta / sigma)."""
    x = _check(target, x, sigma, scalar=False)
    jac = target.denoiser_jacobian(x, sigma)
    return float(torch.linalg.eigvalsh(0.5 * (jac + jac.transpose(1, 2)))[:, -1].max())
