"""A float64 tensor that stays float64 through diffusers' "upcast" to float32.

DPMSolverMultistep, EulerDiscrete, FlowMatchEulerDiscrete and EDMEuler cast the sample to float32 inside `step`
("upcast to avoid precision issues"), which for a float64 run is a downcast: their output then carries float32
round-off (~1e-7 relative) and no order above ~2 can be measured. With keep_float64=True (the solver's default) the
adapter hands `step` a `Float64Tensor`, whose `.to(<lower float>)` keeps float64; no other arithmetic is touched.
keep_float64=False runs the schedulers exactly as shipped.
"""

from __future__ import annotations

import torch

F64 = torch.float64


class Float64Tensor(torch.Tensor):
    """A float64 tensor whose `.to(<lower float dtype>)` keeps float64 (module docstring)."""

    def to(self, *args, **kwargs):
        if self.dtype != F64:
            return super().to(*args, **kwargs)
        args = list(args)
        for j, a in enumerate(args):
            if isinstance(a, torch.dtype) and a.is_floating_point:
                args[j] = F64
            elif torch.is_tensor(a) and a.is_floating_point():
                args[j] = a.device  # x.to(other) takes other's dtype and device: keep the device only
        if isinstance(kwargs.get("dtype"), torch.dtype) and kwargs["dtype"].is_floating_point:
            kwargs["dtype"] = F64
        return super().to(*args, **kwargs)


def guard(t: torch.Tensor) -> torch.Tensor:
    """t as a Float64Tensor when it is float64 (any other dtype: t itself)."""
    return t.as_subclass(Float64Tensor) if t.dtype == F64 else t


def plain(t: torch.Tensor) -> torch.Tensor:
    """A Float64Tensor back as a plain torch.Tensor (any other tensor: itself)."""
    return t.as_subclass(torch.Tensor) if isinstance(t, Float64Tensor) else t
