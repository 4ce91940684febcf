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

The Lagrange helpers are in solvers/polynomials.py, the history and step ratios in solvers/multistep.py.
"""

from __future__ import annotations

from ..errors import InputError
from .base import MATH_OPS
from .multistep import Multistep
from .polynomials import history_nodes, lagrange_basis
from .registry import register


class DEIS(Multistep):
    """DEIS tAB-r in sigma (= rhoAB-r in VE): Lagrange extrapolation of eps integrated exactly; order r+1."""

    name = "deis"
    symbolic_form = "noise-sigma"
    final_step = "x <- D(x, sigma) (the Euler step into sigma = 0), 1 NFE"

    def __init__(self, r: int = 3):
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 3:
            raise InputError(f"r: DEIS tAB-r needs an integer r in 0..3, got {r!r}")
        self.r = r
        self.order = self.history_size = r + 1
        self.name = f"deis_tab{r}"

    def params(self) -> dict:
        return {"r": self.r}

    def update_rule(self, h, ratios, ops, r: int | None = None):
        """Weights H int_0^1 l_j(u) du on the nodes [0, -r0, -(r0 + r1), ...] (noise-sigma form, h = H)."""
        nodes = history_nodes(ratios, self.r if r is None else r)
        weights = [h * sum(a / (k + 1) for k, a in enumerate(c)) for c in lagrange_basis(nodes)]
        return weights, nodes

    def weights(self, h, ratios, k):
        return self.update_rule(h, ratios, MATH_OPS, r=k - 1)[0]


for _r in (1, 2, 3):
    register(f"deis_tab{_r}", DEIS, r=_r)
