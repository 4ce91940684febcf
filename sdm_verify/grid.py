"""The sigma grid every solver and schedule works on: float64, 1-D, finite, >= 0, strictly decreasing."""

from __future__ import annotations

import torch

from .errors import GridError

__all__ = ["check_grid"]


def check_grid(sigmas) -> torch.Tensor:
    """Validate a sigma grid: 1-D, float64-convertible, finite, >= 0, strictly decreasing, at least 2 points."""
    # a Python list would default to float32 in torch.as_tensor: read every grid in float64
    s = sigmas if torch.is_tensor(sigmas) else torch.as_tensor(sigmas, dtype=torch.float64)
    if s.ndim != 1 or s.numel() < 2:
        raise GridError(f"sigmas: expected a 1-D grid of at least 2 noise levels, got shape {tuple(s.shape)}")
    s = s.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(s).all():
        raise GridError("sigmas: contains NaN or inf")
    if (s < 0).any():
        raise GridError(f"sigmas: negative noise level {s.min().item():.6g}")
    diffs = s[1:] - s[:-1]
    if not (diffs < 0).all():
        i = int(torch.nonzero(diffs >= 0)[0])
        raise GridError(
            f"sigmas: not strictly decreasing at index {i} ({s[i].item():.6g} -> {s[i + 1].item():.6g})"
        )
    return s
