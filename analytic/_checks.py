"""Input validation shared by the oracle. Every failure is a ValueError naming the argument and the rule.

Types: tensors, numpy arrays, numbers and (nested) sequences of numbers are read as float64; bool and complex values
are refused (True is not a noise level, and a complex array would lose its imaginary part), and so are strings,
None, objects and meta tensors. Integer values are accepted (they convert exactly up to 2^53).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

DTYPE = torch.float64


def _refuse_dtype(kind: str, name: str):
    raise ValueError(f"{name}: expected real numbers, got a {kind} value")


def as_tensor(value, name: str, *, ndim: int | None = None) -> torch.Tensor:
    """Convert to a float64 CPU-or-same-device tensor; reject bool, complex, non-numeric input and NaN/inf."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.dtype.is_complex:
            _refuse_dtype(str(value.dtype).replace("torch.", ""), name)
        if value.is_meta:
            raise ValueError(f"{name}: a meta tensor has no values")
        t = value.to(DTYPE)
    else:
        if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
            raise ValueError(f"{name}: expected a real number or array, got {type(value).__name__}")
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot be converted to a float64 tensor ({exc})") from None
        if arr.dtype.kind not in "iuf":
            if arr.dtype.kind in "bc":
                _refuse_dtype({"b": "bool", "c": "complex"}[arr.dtype.kind], name)
            raise ValueError(f"{name}: cannot be converted to a float64 tensor (got {arr.dtype} values)")
        try:
            t = torch.as_tensor(value, dtype=DTYPE) if arr is value else torch.as_tensor(arr, dtype=DTYPE)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name}: cannot be converted to a float64 tensor ({exc})") from None
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def _real_scalar(value, name: str) -> float | None:
    """value as a float if it is a real Python/numpy scalar (not bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a real number, got bool {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def check_sigma(sigma, name: str = "sigma", *, batch: int | None = None, scalar: bool = False) -> torch.Tensor:
    """A noise level: a finite float >= 0 or a (batch,) tensor of them (a float only, if scalar). Returned as a
    float64 tensor."""
    v = _real_scalar(sigma, name)
    if v is not None:
        if not math.isfinite(v):
            raise ValueError(f"{name}: must be finite, got {v}")
        if v < 0:
            raise ValueError(f"{name}: must be >= 0, got {v}")
        return torch.tensor(v, dtype=DTYPE)
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 0 and sigma.dtype == DTYPE and not sigma.is_meta:
        v = float(sigma)  # fast path: a 0-dim float64 tensor
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: must be finite and >= 0, got {v}")
        return sigma
    s = as_tensor(sigma, name)
    if scalar and s.numel() != 1:
        raise ValueError(f"{name}: expected one noise level (a float), got shape {tuple(s.shape)}")
    if scalar:
        s = s.reshape(())
    if s.ndim > 1 or (s.ndim == 1 and batch is not None and s.shape[0] != batch):
        want = f"a float or a ({batch},) tensor" if batch is not None else "a float or a 1-D tensor"
        raise ValueError(f"{name}: expected {want}, got shape {tuple(s.shape)}")
    if (s < 0).any():
        raise ValueError(f"{name}: must be >= 0, got min {s.min().item()}")
    return s


def check_points(x, d: int, name: str = "x") -> torch.Tensor:
    """A (batch, d) float64 tensor of finite points, batch >= 1."""
    t = as_tensor(x, name)
    if t.ndim != 2 or t.shape[1] != d:
        raise ValueError(f"{name}: expected shape (batch, {d}), got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one point, got shape {tuple(t.shape)}")
    return t


def check_int(n, name: str, *, low: int = 1, high: int | None = None) -> int:
    """An int (Python or numpy integer, not bool) in [low, high]."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{name}: must be an int, got {type(n).__name__} {n!r}")
    n = int(n)
    if n < low or (high is not None and n > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: must be an int {rng}, got {n}")
    return n


def check_float(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """A finite real number (not bool), optionally > 0 or >= 0."""
    v = _real_scalar(value, name)
    if v is None:
        raise ValueError(f"{name}: must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name}: must be > 0, got {v}")
    if nonneg and not v >= 0:
        raise ValueError(f"{name}: must be >= 0, got {v}")
    return v


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_generator(generator, name: str = "generator"):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name}: must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"{name}: must be a CPU generator (the oracle samples on the CPU), got {generator.device}")
    return generator


def check_spd(cov: torch.Tensor, name: str, *, rtol: float = 1e-10) -> None:
    """Symmetric (to rtol) with strictly positive eigenvalues, per matrix of a (..., d, d) stack."""
    if cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name}: matrices must be square, got shape {tuple(cov.shape)}")
    scale = cov.abs().amax(dim=(-1, -2)).clamp_min(np.finfo(np.float64).tiny)
    asym = (cov - cov.transpose(-1, -2)).abs().amax(dim=(-1, -2))
    if (asym > rtol * scale).any():
        raise ValueError(f"{name}: not symmetric (max |C - C^T| = {asym.max().item():.3g})")
    eig = torch.linalg.eigvalsh(0.5 * cov + 0.5 * cov.transpose(-1, -2))
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
