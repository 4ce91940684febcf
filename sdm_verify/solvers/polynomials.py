"""Lagrange interpolation on the nodes of a multistep history, shared by DEIS, UniPC and iPNDM.

The current point and k previous ones sit at nodes c_0 = 0, c_j = -(r_0 + ... + r_{j-1}) in units of the current
step (r_j = size of the step j + 1 back / current step). The Lagrange basis on nodes c_0..c_k is
    l_j(u) = prod_{m != j} (u - c_m) / (c_j - c_m),
returned as monomial coefficients, so that integrals and order conditions are sums of a_k u^k (Zhang & Chen 2023,
DEIS, Eq. 14; Zhao et al. 2023, UniPC, Eq. 8). Only +, -, *, / are used: the helpers run on Python floats and on
sympy expressions alike.
"""

from __future__ import annotations

from ..errors import InputError

__all__ = ["lagrange_basis", "history_nodes"]


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
        raise InputError(f"ratios: need {k} step ratios, got {len(ratios)}")
    nodes, acc = [0], 0
    for r in ratios[:k]:
        acc = acc + r
        nodes.append(-acc)
    return nodes
