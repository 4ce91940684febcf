"""DEIS tAB-r (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", arXiv
2204.13902), in canonical (VE/EDM) variables.

In VE the DEIS time t equals sigma, and the PF-ODE dx/dsigma = eps(x, sigma) = (x - D)/sigma has no linear
part (transition Psi = 1): tAB-r and rhoAB-r (rho = sigma/alpha = sigma) are the same method,
Adams-Bashforth in sigma. Extrapolate eps by the Lagrange polynomial of degree r in sigma through the current
and the r previous points and integrate it exactly over [sigma_i, sigma_{i+1}] (noise-sigma form):

    x_{i+1} = x_i + sum_j w_j eps(sigma_{i-j}),   w_j = H int_0^1 l_j(u) du,   H = sigma_{i+1} - sigma_i,

l_j the Lagrange basis on the nodes c_0 = 0, c_j = -(r_0 + ... + r_{j-1}) in units of H (r_j = previous step
sizes / H). tAB-0 is Euler (= DDIM). Warm-up: step i uses min(r, i) previous points (lower-order starts, as in
the paper's code). Claimed global order r + 1. The step into sigma = 0 is x <- D(x, sigma) (Euler there).

Also holds the polynomial helpers shared by the multistep families (UniPC, iPNDM). They use only +, -, *, /,
so they run on Python floats and on sympy expressions alike.
"""

from __future__ import annotations

import math

from .base import MATH_OPS, Solver, StepContext, combine
from .registry import register


def lagrange_basis(nodes) -> list[list]:
    """Monomial coefficients [a_0, a_1, ...] (a_k of u^k) of each Lagrange basis polynomial on `nodes`."""
    basis = []
    for j, cj in enumerate(nodes):
        coeffs, denom = [1], 1
        for m, cm in enumerate(nodes):
            if m == j:
                continue
            shifted = [0] + coeffs  # u * p(u)
            coeffs = [a - cm * b for a, b in zip(shifted, coeffs + [0], strict=True)]  # (u - c_m) p(u)
            denom = denom * (cj - cm)
        basis.append([a / denom for a in coeffs])
    return basis


def history_nodes(ratios, k: int) -> list:
    """Nodes [0, -r0, -(r0 + r1), ...] of the current and k previous points, in units of the current step."""
    if len(ratios) < k:
        raise ValueError(f"ratios: need {k} step ratios, got {len(ratios)}")
    nodes, acc = [0], 0
    for r in ratios[:k]:
        acc = acc + r
        nodes.append(-acc)
    return nodes


def step_ratios(values, i: int, k: int) -> list[float]:
    """r_j = (values[i-j] - values[i-j-1]) / (values[i+1] - values[i]), j < k: previous / current step."""
    cur = values[i + 1] - values[i]
    return [(values[i - j] - values[i - j - 1]) / cur for j in range(k)]


def lambda_ratios(sigmas, i: int, k: int) -> list[float]:
    """`step_ratios` in lambda = -log sigma (all sigmas involved are > 0)."""
    lo = max(i - k, 0)
    lam = {j: -math.log(sigmas[j]) for j in range(lo, i + 2)}
    return step_ratios(lam, i, k)


class DEIS(Solver):
    """DEIS tAB-r in sigma (= rhoAB-r in VE): Lagrange extrapolation of eps integrated exactly; order r+1."""

    name = "deis"
    symbolic_form = "noise-sigma"
    final_step = "x <- D(x, sigma) (the Euler step into sigma = 0), 1 NFE"

    def __init__(self, r: int = 3):
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 3:
            raise ValueError(f"r: DEIS tAB-r needs an integer r in 0..3, got {r!r}")
        self.r = r
        self.order = r + 1
        self.name = f"deis_tab{r}"

    def params(self) -> dict:
        return {"r": self.r}

    def update_rule(self, h, ratios, ops, r: int | None = None):
        """Weights H int_0^1 l_j(u) du on the nodes [0, -r0, -(r0 + r1), ...] (noise-sigma form, h = H)."""
        nodes = history_nodes(ratios, self.r if r is None else r)
        weights = [h * sum(a / (k + 1) for k, a in enumerate(c)) for c in lagrange_basis(nodes)]
        return weights, nodes

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        hist = ctx.state.setdefault("eps", [])
        hist.append((x - d) / s)
        del hist[: -(self.r + 1)]
        k = len(hist) - 1
        weights, _ = self.update_rule(t - s, step_ratios(ctx.sigmas, i, k), MATH_OPS, r=k)
        return combine(x, weights, hist[::-1])


for _r in (1, 2, 3):
    register(f"deis_tab{_r}", DEIS, r=_r)
