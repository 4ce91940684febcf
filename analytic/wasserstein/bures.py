"""W2 between two Gaussian laws in closed form (docs/theory.md §7 (a)).

    W2^2(N(m1, S1), N(m2, S2)) = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S2^{1/2} S1 S2^{1/2})^{1/2}      (trace form)
                               = ||m1 - m2||^2 + min_{U in O(r)} ||A1 - A2 U||_F^2,   S_i = A_i A_i^T   (Procrustes)

(Dowson & Landau 1982; Bhatia, Jain, Lim 2019, Thm. 1.) `bures_w2` evaluates the stable Procrustes form and is the
one to measure convergence with; `bures_w2_trace` is the textbook trace form, kept for comparison (it floors at
sqrt(eps tr S)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import as_tensor

__all__ = ["bures_w2", "bures_w2_trace"]

_SYM_RTOL = 1e-10  # symmetry and PSD tolerance, relative to the largest entry / eigenvalue (rounding level)


def _vector(m, name: str) -> torch.Tensor:
    m = as_tensor(m, name, ndim=1)
    if m.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one dimension, got shape {tuple(m.shape)}")
    return m


def _psd_eigh(S, name: str, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a symmetric PSD (singular allowed) (d, d) matrix; return eigh of its symmetric part."""
    S = as_tensor(S, name, ndim=2)
    if S.shape != (d, d):
        raise ValueError(f"{name}: expected shape {(d, d)}, got {tuple(S.shape)}")
    scale = max(float(S.abs().max()), np.finfo(np.float64).tiny)
    asym = float((S - S.T).abs().max())
    if asym > _SYM_RTOL * scale:
        raise ValueError(f"{name}: not symmetric (max |S - S^T| = {asym:.3g})")
    w, V = torch.linalg.eigh(0.5 * (S + S.T))
    if float(w.min()) < -_SYM_RTOL * max(float(w.abs().max()), np.finfo(np.float64).tiny):
        raise ValueError(f"{name}: not positive semidefinite (smallest eigenvalue {float(w.min()):.3g})")
    return w.clamp_min(0.0), V


def _sqrt_psd(w: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return (V * w.sqrt()) @ V.T


def _factor(A, name: str, d: int) -> torch.Tensor:
    A = as_tensor(A, name, ndim=2)
    if A.shape[0] != d:
        raise ValueError(f"{name}: expected {d} rows (S = A A^T is {d} x {d}), got shape {tuple(A.shape)}")
    return A


def bures_w2(m1, S1, m2, S2, factors=None) -> float:
    """W2 between N(m1, S1) and N(m2, S2), in the stable Procrustes form (Bhatia, Jain, Lim 2019, Thm. 1):

        W2^2 = ||m1 - m2||^2 + min_{U in O(r)} ||A1 - A2 U||_F^2,    S_i = A_i A_i^T,
        U* = P Q^T  from the SVD  A2^T A1 = P diag(s) Q^T.

    The residual A1 - A2 U* is formed elementwise and the objective is stationary in U, so the error is
    ~ eps ||A|| W2 (relative accuracy down to W2 ~ 1e-7 and below in float64), where the trace form floors at
    sqrt(eps tr S) (see `bures_w2_trace`). Default factors: symmetric PSD square roots from eigh (symmetrized,
    tiny negative eigenvalues clipped). `factors=(A1, A2)` skips forming S1, S2 (e.g. A1 = M C^{1/2} for an affine
    sampler x -> M x + c applied to N(m, C)); then pass S1 = S2 = None. A1 (d, r1) and A2 (d, r2) may have any
    number of columns (the narrower is padded with zeros, which leaves A A^T unchanged). Singular S is allowed.
    """
    m1, m2 = _vector(m1, "m1"), _vector(m2, "m2")
    d = m1.shape[0]
    if m2.shape[0] != d:
        raise ValueError(f"m2: expected shape {(d,)} (as m1), got {tuple(m2.shape)}")
    if factors is None:
        if S1 is None or S2 is None:
            raise ValueError("S1: covariances S1 and S2 are required unless factors=(A1, A2) is given")
        A1, A2 = _sqrt_psd(*_psd_eigh(S1, "S1", d)), _sqrt_psd(*_psd_eigh(S2, "S2", d))
    else:
        if S1 is not None or S2 is not None:
            raise ValueError("factors: give covariances (S1, S2) or factors (A1, A2), not both")
        if not isinstance(factors, (tuple, list)) or len(factors) != 2:
            raise ValueError("factors: expected a pair (A1, A2) with S_i = A_i A_i^T")
        A1, A2 = _factor(factors[0], "factors[0]", d), _factor(factors[1], "factors[1]", d)
        r = max(A1.shape[1], A2.shape[1])
        A1 = torch.nn.functional.pad(A1, (0, r - A1.shape[1]))
        A2 = torch.nn.functional.pad(A2, (0, r - A2.shape[1]))
    P, _, Qh = torch.linalg.svd(A2.T @ A1)
    residual = A1 - A2 @ (P @ Qh)
    return math.sqrt(float(((m1 - m2) ** 2).sum() + (residual**2).sum()))


def bures_w2_trace(m1, S1, m2, S2) -> float:
    """W2 between N(m1, S1) and N(m2, S2) by the textbook trace form (for comparison only):

        W2^2 = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S2^{1/2} S1 S2^{1/2})^{1/2}.

    It subtracts O(tr S) numbers, so it cannot resolve W2^2 below ~ eps tr S: its floor is W2 ~ sqrt(eps tr S)
    (~1e-8 in float64, ~1e-3 in float32; docs/theory.md §7 (a)). Use `bures_w2` to measure convergence.
    """
    m1, m2 = _vector(m1, "m1"), _vector(m2, "m2")
    d = m1.shape[0]
    if m2.shape[0] != d:
        raise ValueError(f"m2: expected shape {(d,)} (as m1), got {tuple(m2.shape)}")
    w1, V1 = _psd_eigh(S1, "S1", d)
    w2, V2 = _psd_eigh(S2, "S2", d)
    R2 = _sqrt_psd(w2, V2)
    C = R2 @ ((V1 * w1) @ V1.T) @ R2
    fidelity = torch.linalg.eigvalsh(0.5 * (C + C.T)).clamp_min(0.0).sqrt().sum()
    w2sq = ((m1 - m2) ** 2).sum() + w1.sum() + w2.sum() - 2.0 * fidelity
    return math.sqrt(max(float(w2sq), 0.0))

