"""Class conditioning for the "edm-unet" architecture: the null label, label dropout, classifier-free guidance.

The network is `edm_unet` unchanged (registered as "edm-unet" with label_dim = K > 0): a one-hot label row enters
through a bias-free linear map added to the noise embedding, emb = E_sigma + W onehot. So

    **the null label is the zero row** (W 0 = 0): D(x, sigma, 0) is the model's unconditional denoiser, with no extra
    parameter and no special case inside the network (EDM's own convention: its label dropout multiplies the one-hot
    rows by a Bernoulli mask).

Training with label dropout (`drop_labels`, p = 0.1: each row replaced by the null row with probability p) fits
both D_c(x, sigma) = E[x0 | x, c] and D_u(x, sigma) = E[x0 | x] with one network (Ho & Salimans 2022, Sec. 3.2 and
Algorithm 1). Classifier-free guidance at weight w (their Eq. 6, written for the x0-prediction):

    D_w(x, sigma) = D_u + w (D_c - D_u)        w = 0: unconditional, w = 1: conditional, w > 1: guided.

`guided(model, label, w)` returns D_w as a plain denoiser(x, sigma) for the solvers and the harness; at w = 1 (and
w = 0) it makes the one call D_w needs, otherwise one batched call of 2B rows. Labels are an int class (every row),
int class indices (B,) or float one-hot rows (B, K); `NULL` (-1) as a class index means the null label. A label
whose dimension does not match the model's label_dim is an InputError naming both.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import InputError

__all__ = ["NULL", "P_DROP", "label_rows", "drop_labels", "guided", "Guided"]

#: class index of the null label (the zero one-hot row)
NULL = -1
#: label dropout probability of the training recipe
P_DROP = 0.1


def model_label_dim(model) -> int:
    """The label dimension K of a loaded `Denoiser` or a bare EDMPrecond module; InputError when unconditional."""
    k = getattr(model, "label_dim", None)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputError(f"model: expected a class-conditional denoiser with an integer label_dim, got "
                         f"{type(model).__name__}")
    if k <= 0:
        raise InputError("model: the checkpoint is unconditional (label_dim = 0); guidance needs a class-conditional "
                         "model")
    return int(k)


def label_rows(labels, label_dim: int, batch: int | None = None, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Labels as (B, label_dim) rows: an int class (needs `batch`), int indices (B,) or float one-hot (B, K);
    class NULL (-1) gives the zero row. A width or class index that does not fit label_dim is an InputError."""
    k = int(label_dim)
    if isinstance(labels, bool) or labels is None or isinstance(labels, (str, bytes, float)):
        raise InputError(f"label: expected a class in [0, {k - 1}] or {NULL} (null), int indices (B,) or float "
                         f"one-hot rows (B, {k}), got {labels!r}")
    if isinstance(labels, numbers.Integral):
        if batch is None:
            raise InputError("label: a single class needs the batch size")
        labels = torch.full((batch,), int(labels), dtype=torch.long)
    try:
        t = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"label: expected int class indices or float one-hot rows, got {type(labels).__name__}") \
            from None
    if t.is_floating_point():
        if t.ndim != 2 or t.shape[1] != k:
            raise InputError(f"label: one-hot rows of width {t.shape[-1] if t.ndim else 0} (shape {tuple(t.shape)}) "
                             f"do not match the model's label_dim {k}")
        if not bool(torch.isfinite(t).all()):
            raise InputError("label: one-hot rows must be finite")
        rows = t
    elif t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if t.ndim != 1 or t.numel() == 0:
            raise InputError(f"label: expected class indices of shape (B,), got {tuple(t.shape)}")
        lo, hi = int(t.min()), int(t.max())
        if lo < NULL or hi >= k:
            raise InputError(f"label: class indices must lie in [0, {k - 1}] (or {NULL}: null) for the model's "
                             f"label_dim {k}, got [{lo}, {hi}]")
        rows = torch.zeros(t.shape[0], k, dtype=torch.float64)
        keep = t != NULL
        rows[keep] = torch.nn.functional.one_hot(t[keep].long(), k).double()
    else:
        raise InputError(f"label: expected int class indices or float one-hot rows, got {t.dtype}")
    if batch is not None and rows.shape[0] != batch:
        raise InputError(f"label: {rows.shape[0]} label rows for a batch of {batch}")
    return rows.to(device=device, dtype=dtype)


def drop_labels(rows: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Each row replaced by the null (zero) row with probability p (the Bernoulli draws come from `gen`, on CPU)."""
    if not (isinstance(p, numbers.Real) and 0.0 <= float(p) <= 1.0):
        raise InputError(f"p: label dropout probability must be in [0, 1], got {p!r}")
    keep = torch.rand(rows.shape[0], generator=gen, dtype=torch.float64) >= p
    return rows * keep.to(device=rows.device, dtype=rows.dtype)[:, None]


class Guided:
    """denoiser(x, sigma) = D_u + w (D_c - D_u) of a class-conditional model with its label fixed (see module doc)."""

    def __init__(self, model, label, w: float = 1.0):
        self.label_dim = model_label_dim(model)
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
            raise InputError(f"w: guidance weight must be a finite number, got {w!r}")
        self.model, self.w = model, float(w)
        self.label = label
        # checked now, not at the first call: a fixed batch of labels must fit label_dim already
        label_rows(label, self.label_dim, batch=1 if isinstance(label, numbers.Integral) else None)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        b = x.shape[0]
        cond = label_rows(self.label, self.label_dim, batch=b, dtype=x.dtype, device=x.device)
        if self.w == 1.0:
            return self.model(x, sigma, cond)
        null = torch.zeros_like(cond)
        if self.w == 0.0:
            return self.model(x, sigma, null)
        s = sigma
        if torch.is_tensor(sigma) and sigma.ndim == 1 and sigma.numel() == b:
            s = torch.cat([sigma, sigma])
        out = self.model(torch.cat([x, x]), s, torch.cat([cond, null]))
        d_c, d_u = out[:b], out[b:]
        return d_u + self.w * (d_c - d_u)

    def __getattr__(self, name):  # sigma_min, sigma_max, shape, dtype, ... of the wrapped model
        if name in ("model", "label", "w", "label_dim"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"Guided(w={self.w}, label_dim={self.label_dim}, model={self.model!r})"


def guided(model, label, w: float = 1.0) -> Guided:
    """The classifier-free-guided denoiser(x, sigma) of `model` for `label` at weight `w` (module docstring)."""
    return Guided(model, label, w)
