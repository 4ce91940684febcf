"""Input validation shared by the oracle. Every failure is a ValueError naming the argument."""

from __future__ import annotations

import math

import numpy as np
import torch

DTYPE = torch.float64


def as_tensor(value, name: str, *, ndim: int | None = None) -> torch.Tensor:
    """Convert to a float64 CPU-or-same-device tensor and reject NaN/inf."""
    try:
        t = torch.as_tensor(value, dtype=DTYPE) if not isinstance(value, torch.Tensor) else value.to(DTYPE)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be converted to a float64 tensor ({exc})") from None
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def check_sigma(sigma, name: str = "sigma", *, batch: int | None = None) -> torch.Tensor:
    """A noise level: a finite float >= 0 or a (batch,) tensor of them. Returned as a float64 tensor."""
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not math.isfinite(sigma):
            raise ValueError(f"{name}: must be finite, got {sigma}")
        if sigma < 0:
            raise ValueError(f"{name}: must be >= 0, got {sigma}")
        return torch.tensor(float(sigma), dtype=DTYPE)
    s = as_tensor(sigma, name)
    if s.ndim > 1 or (s.ndim == 1 and batch is not None and s.shape[0] != batch):
        raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got shape {tuple(s.shape)}")
    if (s < 0).any():
        raise ValueError(f"{name}: must be >= 0, got min {s.min().item()}")
    return s


def check_points(x, d: int, name: str = "x") -> torch.Tensor:
    """A (batch, d) float64 tensor of finite points."""
    t = as_tensor(x, name)
    if t.ndim != 2 or t.shape[1] != d:
        raise ValueError(f"{name}: expected shape (batch, {d}), got {tuple(t.shape)}")
    return t


def check_spd(cov: torch.Tensor, name: str, *, rtol: float = 1e-10) -> None:
    """Symmetric (to rtol) with strictly positive eigenvalues, per matrix of a (..., d, d) stack."""
    if cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name}: matrices must be square, got shape {tuple(cov.shape)}")
    scale = cov.abs().amax(dim=(-1, -2)).clamp_min(np.finfo(np.float64).tiny)
    asym = (cov - cov.transpose(-1, -2)).abs().amax(dim=(-1, -2))
    if (asym > rtol * scale).any():
        raise ValueError(f"{name}: not symmetric (max |C - C^T| = {asym.max().item():.3g})")
    eig = torch.linalg.eigvalsh(0.5 * (cov + cov.transpose(-1, -2)))
    if (eig <= 0).any():
        raise ValueError(f"{name}: not positive definite (smallest eigenvalue {eig.min().item():.3g})")


WEIGHT_TOL = 1e-8  # |sum(weights) - 1|: normalized float64 weights sum to 1 within ~n eps


def check_weights(w, n: int | None, name: str) -> torch.Tensor:
    """Probability weights: (n,), finite, >= 0, summing to 1 within WEIGHT_TOL; None -> uniform over n."""
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=DTYPE)
    w = as_tensor(w, name, ndim=1)
    if n is not None and w.shape[0] != n:
        raise ValueError(f"{name}: expected {n} weights, got {w.shape[0]}")
    if (w < 0).any():
        raise ValueError(f"{name}: must be non-negative (got min {float(w.min()):.3g})")
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHT_TOL:
        raise ValueError(f"{name}: must sum to 1 (got {total!r})")
    return w
