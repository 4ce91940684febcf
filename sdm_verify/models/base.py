"""One interface for real pretrained image denoisers: D(x; sigma) in EDM variables.

Every checkpoint format is mapped to the posterior mean D(x; sigma) = E[x0 | x], with x = x0 + sigma n, n ~ N(0, I)
(Karras et al. 2022, "Elucidating the design space...", Eq. 2-3), so a `Denoiser` is directly the `denoiser(x, sigma)`
callable the solvers and the harness take. The PF-ODE dx/dsigma = (x - D(x, sigma))/sigma of a model only exists on the
noise levels it was trained on, so sigma outside [sigma_min, sigma_max] is an error, not an extrapolation.

Measurement runs in float64. Networks that cast to float32 inside their forward (NVlabs EDM/EDM2 `x.to(torch.float32)`,
diffusers' timestep embedding `timesteps.float()`) are evaluated under `float64_compute()`, which turns every
float16/bfloat16/float32 dtype requested inside the call into float64; without it a float64 model is silently a
float32 one with an error floor of ~1e-6..1e-3 (docs/real-models.md §5 (a)).
"""

from __future__ import annotations

import contextlib
import json
import numbers
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

#: relative slack on the model's noise range (a grid built in float64 from the endpoints may round past them)
SIGMA_SLACK = 1e-6


class ModelError(ValueError):
    """A checkpoint that cannot be loaded, or a call the model cannot answer (shape, sigma range, labels)."""


# ------------------------------------------------------------------------------------------ argument checks


def check_device(device) -> torch.device:
    """`device` as a torch.device that exists here: 'cpu', 'cuda', 'cuda:K' (K < the number of CUDA devices),
    'mps', or a torch.device of those. Anything else, or an accelerator torch cannot see, is a one-line ModelError
    naming `device` (instead of torch's RuntimeError or an assertion deep inside Module.to)."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise ModelError(f"device: expected 'cpu', 'cuda', 'cuda:K' or a torch.device, got {type(device).__name__}")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"device: {device!r} is not a torch device (expected 'cpu', 'cuda', 'cuda:K' or 'mps')") \
            from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device: {device!r} asked for but torch sees no CUDA device (torch {torch.__version__})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelError(f"device: {device!r} does not exist: torch sees {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")
        return dev
    backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and available():
        return dev
    raise ModelError(f"device: {device!r} is not available here (use 'cpu', or 'cuda'/'cuda:K' with a CUDA device)")


def check_dtype(dtype) -> torch.dtype:
    """`dtype` if it is a floating torch dtype; a one-line ModelError naming `dtype` otherwise."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ModelError(f"dtype: expected a floating torch dtype (torch.float64, float32, float16), got {dtype!r}")
    return dtype


# --------------------------------------------------------------------------------------------- float64 evaluation

_LOW_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32})
_TO_DOUBLE = frozenset({torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16})


def _up(a):
    return torch.float64 if isinstance(a, torch.dtype) and a in _LOW_FLOATS else a


class _Float64Mode(TorchFunctionMode):
    """Rewrite float16/bfloat16/float32 dtype arguments of every torch call to float64 (bit views excepted)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TO_DOUBLE:
            return args[0].double()
        if func is not torch.Tensor.view:  # x.view(dtype) reinterprets bits: never rewrite it
            args = tuple(_up(a) for a in args)
            kwargs = {k: _up(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def float64_compute() -> Iterator[None]:
    """Evaluate a network in float64 even where its code asks for float32 (default dtype float64 too).

    Changes the process-wide default dtype while active: not for concurrent use from several threads."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with _Float64Mode():
            yield
    finally:
        torch.set_default_dtype(previous)


# ------------------------------------------------------------------------------------------------- the interface


class Denoiser:
    """A pretrained denoiser D(x, sigma, labels) with its metadata.

    Wraps `module`, called as `module(x, sigma, labels)` (sigma a (B,) tensor, labels one-hot (B, label_dim) or
    omitted when unconditional) unless a subclass overrides `_forward`. The module runs in `dtype` on `device`; inputs
    are cast there and the output comes back in the input's dtype and device. Calls are not counted (the harness
    wraps the denoiser for that).
    """

    #: evaluate under float64_compute() when dtype is float64 (networks that cast to float32 inside)
    promote_float64: bool = False

    def __init__(self, module: torch.nn.Module, *, sigma_min: float, sigma_max: float, sigma_data: float, shape,
                 label_dim: int = 0, format: str = "module", source: str = "", description: str = "",
                 metadata: dict | None = None, device="cpu", dtype: torch.dtype = torch.float64):
        sigma_min, sigma_max, sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        if not 0.0 < sigma_min < sigma_max < float("inf"):
            raise ModelError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max < inf, got "
                             f"[{sigma_min:.6g}, {sigma_max:.6g}]")
        if not sigma_data > 0.0:
            raise ModelError(f"sigma_data: expected a positive number, got {sigma_data}")
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ModelError(f"shape: expected positive sizes (C, H, W), got {shape}")
        if int(label_dim) < 0:
            raise ModelError(f"label_dim: expected >= 0, got {label_dim}")
        self.module = module.eval().requires_grad_(False)
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
        self.shape, self.label_dim = shape, int(label_dim)
        self.format, self.source, self.description = format, str(source), description
        self.metadata = dict(metadata or {})
        self.dtype, self.device = None, None
        self.to(device=device, dtype=dtype)

    # -- placement

    def to(self, device=None, dtype: torch.dtype | None = None) -> Denoiser:
        """Move/cast the network (float64 for measurement; float32/float16 allowed); returns self."""
        device = check_device(device) if device is not None else self.device
        dtype = check_dtype(dtype) if dtype is not None else self.dtype
        self._check_dtype(dtype)
        # torch's own Module.to: a library's override (diffusers' ModelMixin.to) may warn about or refuse float64
        torch.nn.Module.to(self.module, device=device, dtype=dtype)
        self.module.eval()
        self.dtype, self.device = dtype, device
        return self

    def _check_dtype(self, dtype: torch.dtype) -> None:
        """Hook: adapters that support only some dtypes raise ModelError here."""

    # -- evaluation

    def D(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        """D(x; sigma) = E[x0 | x0 + sigma n = x]. x: (B, *shape); sigma: float, 0-d or (B,) tensor; labels: int
        class indices (B,) or one-hot (B, label_dim) for class-conditional models, None otherwise."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ModelError("x: expected a floating-point tensor")
        if tuple(x.shape[1:]) != self.shape or x.ndim != len(self.shape) + 1:
            raise ModelError(f"x: expected shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        batch = x.shape[0]
        sigmas = self._sigmas(sigma, batch)
        onehot = self._labels(labels, batch)
        xm = x.to(device=self.device, dtype=self.dtype)
        promote = self.promote_float64 and self.dtype == torch.float64
        with torch.no_grad(), float64_compute() if promote else contextlib.nullcontext():
            out = self._forward(xm, sigmas, onehot)
        return out.to(device=x.device, dtype=x.dtype)

    def __call__(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        return self.D(x, sigma, labels)

    def with_labels(self, labels) -> LabelledDenoiser:
        """The harness denoiser (x, sigma) -> D(x, sigma, labels) of a class-conditional model."""
        return LabelledDenoiser(self, labels)

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """x in the model's dtype/device; sigma (B,) float64 on the device; labels one-hot in the model's dtype."""
        s = sigma.to(self.dtype)
        return self.module(x, s) if labels is None else self.module(x, s, labels)

    # -- argument checks (cheap next to a network call: one reduction over B numbers)

    @property
    def sigma_range(self) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def _sigmas(self, sigma, batch: int) -> torch.Tensor:
        """sigma as a (B,) float64 tensor on the model's device, after the range check."""
        lo, hi = self.sigma_min * (1 - SIGMA_SLACK), self.sigma_max * (1 + SIGMA_SLACK)
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            vmin = vmax = float(sigma)
            s = torch.full((batch,), float(sigma), dtype=torch.float64, device=self.device)
        elif torch.is_tensor(sigma) and (sigma.ndim == 0 or (sigma.ndim == 1 and sigma.numel() in (1, batch))):
            s = sigma.detach().to(device=self.device, dtype=torch.float64).reshape(-1).expand(batch)
            vmin, vmax = (float(v) for v in torch.aminmax(s))
        else:
            got = tuple(sigma.shape) if torch.is_tensor(sigma) else type(sigma).__name__
            raise ModelError(f"sigma: expected a float, a 0-d tensor or a ({batch},) tensor, got {got}")
        if not lo <= vmin or not vmax <= hi:  # also catches NaN
            bad = vmin if not lo <= vmin else vmax
            raise ModelError(f"sigma: {bad:.6g} is outside the model's noise range [{self.sigma_min:.6g}, "
                             f"{self.sigma_max:.6g}] (the model's PF-ODE exists only where it was trained)")
        return s

    def _labels(self, labels, batch: int) -> torch.Tensor | None:
        """labels as one-hot (B, label_dim) in the model's dtype/device, or None for an unconditional model."""
        k = self.label_dim
        if k == 0:
            if labels is not None:
                raise ModelError("labels: this model is unconditional (label_dim = 0); pass labels=None")
            return None
        if labels is None:
            raise ModelError(f"labels: this model is class-conditional (label_dim = {k}); pass class indices "
                             f"(B,) or one-hot (B, {k})")
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((batch,), labels, dtype=torch.long)
        labels = torch.as_tensor(labels)
        if not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool:
            if tuple(labels.shape) != (batch,):
                raise ModelError(f"labels: expected class indices of shape ({batch},), got {tuple(labels.shape)}")
            lmin, lmax = (int(v) for v in torch.aminmax(labels))
            if lmin < 0 or lmax >= k:
                raise ModelError(f"labels: class indices must lie in [0, {k - 1}], got [{lmin}, {lmax}]")
            return torch.nn.functional.one_hot(labels.to(self.device, torch.long), k).to(self.dtype)
        if labels.is_floating_point():
            if tuple(labels.shape) != (batch, k):
                raise ModelError(f"labels: expected one-hot labels of shape ({batch}, {k}), got "
                                 f"{tuple(labels.shape)}")
            return labels.to(device=self.device, dtype=self.dtype)
        raise ModelError(f"labels: expected int class indices (B,) or float one-hot (B, {k}), got {labels.dtype}")

    def __repr__(self) -> str:
        cond = f", label_dim={self.label_dim}" if self.label_dim else ""
        return (f"Denoiser(format={self.format!r}, shape={self.shape}, sigma=[{self.sigma_min:.4g}, "
                f"{self.sigma_max:.4g}], sigma_data={self.sigma_data:.4g}{cond}, dtype={self.dtype}, "
                f"device={self.device}, source={self.source!r})")


def _check_fixed_labels(labels, k: int) -> None:
    """The labels of `with_labels`, checked when they are fixed (not at the first model call): a class index in
    [0, k), int class indices (B,) in that range, or finite float one-hot rows (B, k)."""
    if k == 0:
        raise ModelError("labels: this model is unconditional (label_dim = 0); it takes no labels")
    if isinstance(labels, bool) or labels is None or isinstance(labels, (str, bytes, float)):
        raise ModelError(f"labels: expected a class index in [0, {k - 1}], int class indices (B,) or float one-hot "
                         f"(B, {k}), got {labels!r}")
    if isinstance(labels, numbers.Integral):
        if not 0 <= int(labels) < k:
            raise ModelError(f"labels: class index must lie in [0, {k - 1}], got {int(labels)}")
        return
    try:
        t = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ModelError(f"labels: expected int class indices (B,) or float one-hot (B, {k}), got "
                         f"{type(labels).__name__}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ModelError(f"labels: expected int class indices (B,) or float one-hot (B, {k}), got {t.dtype}")
    if t.is_floating_point():
        if t.ndim != 2 or t.shape[1] != k or t.shape[0] == 0:
            raise ModelError(f"labels: expected one-hot labels of shape (B, {k}), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ModelError("labels: one-hot labels must be finite")
        return
    if t.ndim != 1 or t.shape[0] == 0:
        raise ModelError(f"labels: expected class indices of shape (B,), got {tuple(t.shape)}")
    lmin, lmax = (int(v) for v in torch.aminmax(t))
    if lmin < 0 or lmax >= k:
        raise ModelError(f"labels: class indices must lie in [0, {k - 1}], got [{lmin}, {lmax}]")


class LabelledDenoiser:
    """(x, sigma) -> D(x, sigma, labels): a class-conditional Denoiser with its labels fixed, for the harness."""

    def __init__(self, denoiser: Denoiser, labels):
        _check_fixed_labels(labels, int(getattr(denoiser, "label_dim", 0) or 0))
        self.denoiser, self.labels = denoiser, labels

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.denoiser.D(x, sigma, self.labels)

    def to(self, device=None, dtype: torch.dtype | None = None) -> LabelledDenoiser:
        """Move/cast the wrapped model; returns self (the labels stay fixed)."""
        self.denoiser.to(device=device, dtype=dtype)
        return self

    def __getattr__(self, name):  # sigma_min, shape, dtype, ... of the wrapped model
        if name in ("denoiser", "labels"):
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    def __repr__(self) -> str:
        return f"LabelledDenoiser({self.denoiser!r})"


def read_json_object(path) -> dict:
    """The JSON object in file `path`; unreadable files, invalid JSON and non-objects raise ModelError."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(f"path: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelError(f"path: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"path: {path} is not a JSON object")
    return data
