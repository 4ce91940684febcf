"""Exact empirical model statistics (EMS) of DPM-Solver-v3 for a Gaussian-mixture target (docs/dpm_solver_v3.md §2).

Canonical variables x = x0 + sigma n, lambda = -log sigma (alpha = 1; for x_t = alpha x0 + sigma_t n the statistics
are the same functions of lambda, see the doc). With J = grad_x D = Cov[x0 | x]/sigma^2 (second-order Tweedie),
sigma grad_x eps = I - J = I - e^{2 lambda} Cov[x0 | x], and along the PF-ODE dx/dlambda = D - x:
    l(lambda)  = 1 - E diag J                                       (E over x ~ p_sigma, the noisy marginal)
    f          = (1 - l) x - D
    f'         = -l' x + (1 - l)(D - x) - J (D - x) + sigma dD/dsigma      (dD/dlambda = J x' - sigma dD/dsigma)
    s          = Cov(f, f')/Var(f),  b = E f' - s E f                (per coordinate)
Expectations are Gauss-Hermite quadrature over each component of p_sigma = sum_k pi_k N(m_k, S_k + sigma^2 I)
(`nodes` points per dimension: exact for polynomials of degree < 2 nodes, so exact to rounding for a single Gaussian,
where f and f' are affine in x; for a mixture the integrand is analytic and the error is checked by doubling
`nodes`, see tests/test_dpm_solver_v3.py). l' is a 4-point central difference of the quadrature l with step 1e-3
in lambda (truncation ~1e-13 |l^(5)|, rounding ~1e-13). Where Var(f) <= 1e-10 (E f^2 + E f'^2 + Var x) s is 0/0 (f is
deterministic, e.g. every coordinate of a Gaussian with diagonal covariance): s = 0, b = E f' there, flagged in
`degenerate`. Returns plain tensors. Never imports sdm_verify.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .calculus import denoiser_dsigma
from .gmm import GaussianMixture

__all__ = ["marginal_quadrature", "exact_l", "exact_f", "exact_ems", "DEGENERATE_RTOL"]

DTYPE = torch.float64
DEGENERATE_RTOL = 1e-10
_FD_STEP = 1e-3


def _check(target, lambdas, nodes):
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target: expected an analytic.GaussianMixture, got {type(target).__name__}")
    lam = torch.as_tensor(lambdas, dtype=DTYPE).reshape(-1)
    if lam.numel() == 0 or not bool(torch.isfinite(lam).all()):
        raise ValueError("lambdas: expected finite half log-SNRs lambda = -log sigma")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 2 <= nodes <= 200:
        raise ValueError(f"nodes: must be an integer in 2..200 (got {nodes!r})")
    if nodes ** target.d * target.K > 5_000_000:
        raise ValueError(f"nodes: {nodes}^{target.d} x {target.K} quadrature points is too many (d too large)")
    return lam


def marginal_quadrature(target: GaussianMixture, sigma: float, nodes: int = 24):
    """(points (Q, d), weights (Q,)) with sum w h(x) = E h(x), x ~ p_sigma, by tensor Gauss-Hermite per component."""
    z, w = np.polynomial.hermite.hermgauss(nodes)
    z, w = torch.tensor(z * math.sqrt(2.0), dtype=DTYPE), torch.tensor(w / math.sqrt(math.pi), dtype=DTYPE)
    d = target.d
    grids = torch.meshgrid(*([z] * d), indexing="ij")
    pts = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (n^d, d)
    wts = torch.ones(pts.shape[0], dtype=DTYPE)
    for g in torch.meshgrid(*([w] * d), indexing="ij"):
        wts = wts * g.reshape(-1)
    eye = torch.eye(d, dtype=DTYPE)
    out_x, out_w = [], []
    for k in range(target.K):
        chol = torch.linalg.cholesky(target.covariances[k] + sigma**2 * eye)
        out_x.append(target.means[k] + pts @ chol.T)
        out_w.append(target.weights[k] * wts)
    return torch.cat(out_x), torch.cat(out_w)


def _l_at(target, lam: float, nodes: int) -> torch.Tensor:
    sigma = math.exp(-lam)
    x, w = marginal_quadrature(target, sigma, nodes)
    jac = target.denoiser_jacobian(x, sigma)
    return 1.0 - (w[:, None] * torch.diagonal(jac, dim1=1, dim2=2)).sum(0)


def exact_l(target: GaussianMixture, lambdas, nodes: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """(l, l') at each lambda, shapes (G, d): l = 1 - E diag J by quadrature, l' by central differences of it."""
    lam = _check(target, lambdas, nodes)
    ls, lps = [], []
    for v in lam.tolist():
        ls.append(_l_at(target, v, nodes))
        e = _FD_STEP
        f = [_l_at(target, v + k * e, nodes) for k in (-2, -1, 1, 2)]
        lps.append((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * e))
    return torch.stack(ls), torch.stack(lps)


def exact_f(target: GaussianMixture, x: torch.Tensor, lam: float, l: torch.Tensor, l_prime: torch.Tensor):
    """(f, f') at the points x (B, d) and half log-SNR lam, given l and l' there (each (d,))."""
    sigma = math.exp(-lam)
    x = torch.as_tensor(x, dtype=DTYPE)
    d = target.denoiser(x, sigma)
    jac = target.denoiser_jacobian(x, sigma)
    v = d - x  # dx/dlambda
    dd = torch.einsum("bij,bj->bi", jac, v) - sigma * denoiser_dsigma(target, x, sigma)
    return (1 - l) * x - d, -l_prime * x + (1 - l) * v - dd


def exact_ems(target: GaussianMixture, lambdas, nodes: int = 24) -> dict:
    """The EMS on the grid `lambdas` (G,): a dict of plain float64 tensors "lambdas" (G,), "l", "l_prime", "s",
    "b", "var_f" (each (G, d)) and "degenerate" (bool (G, d): Var(f) ~ 0, s set to 0 and b to E f')."""
    lam = _check(target, lambdas, nodes)
    l, lp = exact_l(target, lam, nodes)
    rows = {"s": [], "b": [], "var_f": [], "degenerate": []}
    for i, v in enumerate(lam.tolist()):
        x, w = marginal_quadrature(target, math.exp(-v), nodes)
        f, fp = exact_f(target, x, v, l[i], lp[i])
        w = w[:, None]
        mf, mp = (w * f).sum(0), (w * fp).sum(0)
        var = (w * (f - mf) ** 2).sum(0)
        cov = (w * (f - mf) * (fp - mp)).sum(0)
        mx = (w * x).sum(0)
        scale = (w * f**2).sum(0) + (w * fp**2).sum(0) + (w * (x - mx) ** 2).sum(0)
        deg = var <= DEGENERATE_RTOL * scale
        s = torch.where(deg, torch.zeros_like(var), cov / torch.where(deg, torch.ones_like(var), var))
        rows["s"].append(s)
        rows["b"].append(mp - s * mf)
        rows["var_f"].append(var)
        rows["degenerate"].append(deg)
    out = {k: torch.stack(v) for k, v in rows.items()}
    return {"lambdas": lam.clone(), "l": l, "l_prime": lp, **out}
