"""The three normalized update forms, as a step applies them (the same forms analytic/symbolic.py expands).

With weights w_j on the values v_j at nodes c_j (multiples of the step in the form's variable), one step
sigma_s -> sigma_u is
    data-lambda   x_u = (sigma_u/sigma_s) x_s + sum_j w_j D_j          v = D(x, sigma), step in lambda = -log sigma
    noise-lambda  x_u = x_s - sigma_s sum_j w_j eps_j                   v = eps = (x - D)/sigma, step in lambda
    noise-sigma   x_u = x_s + sum_j w_j eps_j                           v = eps, step in sigma (H = sigma_u - sigma_s)
(variation of constants: Lu et al. 2022, DPM-Solver Eq. 3.4 and DPM-Solver++ Eq. 9; plain quadrature of
dx/dsigma = eps for noise-sigma). `value` is what a step evaluates, `apply` the update, `step_size` the step h.
"""

from __future__ import annotations

import math

import torch

from .base import combine

FORMS = ("data-lambda", "noise-lambda", "noise-sigma")


def value(form: str, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """The value a step of `form` combines: D itself (data-lambda) or eps = (x - D)/sigma (noise forms)."""
    return denoised if form == "data-lambda" else (x - denoised) / sigma


def apply(form: str, x: torch.Tensor, sigma: float, scale: float, weights, values) -> torch.Tensor:
    """The update of `form` from x at sigma; `scale` = sigma_u/sigma_s, the linear part (used by data-lambda)."""
    if form == "data-lambda":
        return combine(scale * x, weights, values)
    if form == "noise-lambda":
        return combine(x, [-sigma * w for w in weights], values)
    return combine(x, weights, values)


def step_size(form: str, sigma: float, sigma_next: float) -> float:
    """h of one step in the form's variable: log(sigma/sigma_next) (lambda; inf into 0) or sigma_next - sigma."""
    if form == "noise-sigma":
        return sigma_next - sigma
    return math.inf if sigma_next == 0 else math.log(sigma / sigma_next)
