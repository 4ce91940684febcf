"""The sigma grid every solver and schedule works on: float64, 1-D, finite, >= 0, strictly decreasing.

Also the other checks the solver loop makes on its arguments (x, the callback) and on every denoiser output, shared
by `solvers.base.Solver.__call__` and `harness.nfe.CountedDenoiser`: each refusal is one line naming the argument
(errors.InputError and its subclasses).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch

from .errors import DenoiserOutputError, GridError, InputError

__all__ = ["check_grid", "check_x", "check_callback", "check_denoiser", "denoiser_output_problem", "describe"]


def describe(value) -> str:
    """A short description of a value for an error message: its type, and its repr when short."""
    if value is None:
        return "None"
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a numpy.ndarray of shape {value.shape} and dtype {value.dtype}"
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = repr(value)
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} ({text})" if len(text) <= 40 else f"{article} {name}"


def _grid_tensor(sigmas) -> torch.Tensor:
    """sigmas as a tensor (not yet checked for shape or values); GridError for what is not a sequence of reals."""
    if torch.is_tensor(sigmas):
        if sigmas.is_complex():
            raise GridError(f"sigmas: expected real noise levels, got a complex tensor ({sigmas.dtype})")
        if not sigmas.is_floating_point():
            raise GridError(f"sigmas: expected floating-point noise levels, got a tensor of dtype {sigmas.dtype} "
                            "(integer timesteps are not noise levels: pass float sigmas)")
        if sigmas.device.type == "meta":
            raise GridError("sigmas: a meta tensor has no values")
        return sigmas
    if isinstance(sigmas, np.ndarray):
        if sigmas.dtype.kind != "f":
            raise GridError(f"sigmas: expected floating-point noise levels, got a numpy array of dtype {sigmas.dtype}")
        return torch.as_tensor(sigmas, dtype=torch.float64)
    if not isinstance(sigmas, (list, tuple)):
        raise GridError(f"sigmas: expected a 1-D sequence of noise levels (list, tuple, numpy array or float "
                        f"tensor), got {describe(sigmas)}")
    for i, v in enumerate(sigmas):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (Real, list, tuple, torch.Tensor, np.ndarray)) or (
                torch.is_tensor(v) and (v.is_complex() or not v.is_floating_point())):
            raise GridError(f"sigmas: entry {i} is {describe(v)}, not a real noise level")
    try:
        # a Python list would default to float32 in torch.as_tensor: read every grid in float64
        return torch.as_tensor(sigmas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise GridError(f"sigmas: cannot read as a 1-D grid of noise levels ({exc})") from None


def check_grid(sigmas) -> torch.Tensor:
    """Validate a sigma grid: 1-D, float64-convertible, finite, >= 0, strictly decreasing, at least 2 points.
    Refused with GridError: strings, generators, sets, dicts, None, bools, integer or complex tensors/arrays."""
    s = _grid_tensor(sigmas)
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


def check_x(x, finite=None) -> torch.Tensor:
    """The state x a solver starts from: a non-empty floating-point tensor of at least one dimension, with values
    (not a meta tensor), finite. Any floating dtype (float16/bfloat16 models included); requires_grad is allowed
    (differentiating through a sampler is a use). `finite`: the finiteness test to use (default isfinite)."""
    if not torch.is_tensor(x):
        raise InputError(f"x: expected a floating-point tensor, got {describe(x)}")
    if not x.is_floating_point():
        raise InputError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise InputError("x: expected a tensor of shape (B, ...) with a leading batch dimension, got a 0-dim tensor")
    if x.numel() == 0:
        raise InputError(f"x: empty tensor of shape {tuple(x.shape)}: nothing to integrate")
    if x.device.type == "meta":
        raise InputError("x: a meta tensor has no values")
    if not (finite(x) if finite is not None else bool(torch.isfinite(x).all())):
        raise InputError("x: contains NaN or inf")
    return x


def check_callback(callback) -> None:
    """callback: None or a callable taking one dict."""
    if callback is not None and not callable(callback):
        raise InputError(f"callback: must be callable as callback(info) or None, got {describe(callback)}")


def check_denoiser(denoiser) -> None:
    """denoiser: a callable D(x, sigma)."""
    if not callable(denoiser):
        raise InputError(f"denoiser: must be callable as denoiser(x, sigma), got {describe(denoiser)}")


def denoiser_output_problem(out, x) -> str | None:
    """Why `out` is not a valid denoiser output for input `x` (None if it is): it must be a floating-point tensor of
    x's shape on x's device. A floating dtype other than x's is accepted (a float32 model fed float64 x, a float16
    model returning float32): the solvers' arithmetic promotes, as before. Broadcastable shapes are refused."""
    if not torch.is_tensor(out):
        return f"returned {describe(out)}, not a tensor"
    if torch.is_tensor(x) and out.shape != x.shape:
        return (f"returned a tensor of shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; it must return "
                "x's shape (refused, not broadcast)")
    if not out.is_floating_point():
        return f"returned a tensor of dtype {out.dtype}; expected a floating-point tensor"
    if torch.is_tensor(x) and out.device != x.device:
        return f"returned a tensor on {out.device} for x on {x.device}"
    return None


def bad_output(out, x) -> bool:
    """The fast test behind denoiser_output_problem: a tuple compare and two attribute reads per call."""
    if not torch.is_tensor(out) or not out.is_floating_point():
        return True
    return torch.is_tensor(x) and (out.shape != x.shape or out.device != x.device)


def denoiser_output_error(out, x, where: str) -> DenoiserOutputError:
    """The one-line refusal of a bad denoiser output; `where` says which call (solver, step, sigma)."""
    return DenoiserOutputError(f"denoiser: {denoiser_output_problem(out, x)} ({where})")


def checked_denoiser(denoiser, solver: str):
    """denoiser wrapped so that every output is checked as in the solver loop (for the adapters that run their own
    loop: an outside callable, a diffusers scheduler, a k-diffusion sampler). Names the solver, the call and sigma."""
    check_denoiser(denoiser)
    calls = 0

    def checked(y, sigma, *args, **kwargs):
        nonlocal calls
        calls += 1
        out = denoiser(y, sigma, *args, **kwargs)
        if bad_output(out, y):
            sig = float(sigma) if not torch.is_tensor(sigma) or sigma.numel() == 1 else float(sigma.flatten()[0])
            raise denoiser_output_error(out, y, f"solver {solver!r}, call {calls}, sigma {sig:.6g}")
        return out

    return checked
