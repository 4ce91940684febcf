"""The project's own checkpoint format: a JSON config naming a registered architecture, plus safetensors weights.

A directory holds
    config.json        {"format": "sdm-verify-denoiser", "format_version": 1, "architecture": <registered name>,
                        "kwargs": {builder kwargs}, "sigma_min", "sigma_max", "sigma_data", "shape": [C, H, W],
                        "label_dim", "weights": "model.safetensors", "description", "training": {...}}
    model.safetensors  the module's state_dict (any float dtype; cast on load)
The module is `architectures.build(architecture, **kwargs)`; its forward(x, sigma, labels=None) returns D (EDM
preconditioning inside). Loading never unpickles and never executes code from the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import architectures
from .base import Denoiser, ModelError, read_json_object

FORMAT = "sdm-verify-denoiser"
FORMAT_VERSION = 1
CONFIG = "config.json"
_REQUIRED = ("architecture", "kwargs", "sigma_min", "sigma_max", "sigma_data", "shape", "weights")


def is_own_config(path: Path) -> bool:
    """Whether `path` is a JSON file declaring this format (unreadable or other JSON: False)."""
    try:
        return json.loads(Path(path).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_config(directory: Path) -> dict:
    """The validated config.json of an own-format checkpoint directory."""
    path = Path(directory) / CONFIG
    cfg = read_json_object(path)
    if cfg.get("format") != FORMAT:
        raise ModelError(f"path: {path} does not declare \"format\": \"{FORMAT}\"")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"path: {path} has format_version {cfg.get('format_version')!r}; this sdm-verify reads "
                         f"version {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ModelError(f"path: {path} lacks the key(s) {', '.join(missing)}")
    if not isinstance(cfg["kwargs"], dict):
        raise ModelError(f"path: {path}: \"kwargs\" must be a JSON object")
    return cfg


def _state_mismatch(expected: dict, got: dict) -> str:
    """'' when `got` has exactly the keys and shapes of `expected`, else a one-line description."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(got[k].shape)}"
              for k in sorted(set(expected) & set(got)) if tuple(expected[k].shape) != tuple(got[k].shape)]
    parts = []
    for name, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if items:
            parts.append(f"{name}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
    return "; ".join(parts)


def load_own(path, device="cpu", dtype: torch.dtype = torch.float64) -> Denoiser:
    """Load an own-format checkpoint: its directory, its config.json or its weights file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    cfg = read_config(directory)
    weights = directory / cfg["weights"]
    if not weights.is_file():
        raise ModelError(f"path: weights file not found: {weights} (named by {directory / CONFIG})")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"path: cannot read safetensors weights {weights}: {exc}") from None
    try:
        module = architectures.build(cfg["architecture"], **cfg["kwargs"])
    except (ValueError, TypeError) as exc:  # unknown name, or kwargs the builder does not take
        raise ModelError(f"path: {directory / CONFIG}: cannot build the architecture: {exc}") from None
    bad = _state_mismatch(module.state_dict(), state)
    if bad:
        raise ModelError(f"path: weights {weights} do not fit architecture {cfg['architecture']!r}: {bad}")
    module.load_state_dict(state, strict=True)
    return Denoiser(module, sigma_min=cfg["sigma_min"], sigma_max=cfg["sigma_max"], sigma_data=cfg["sigma_data"],
                    shape=cfg["shape"], label_dim=cfg.get("label_dim", 0), format="sdm-verify",
                    source=str(directory), description=cfg.get("description", ""), metadata=cfg, device=device,
                    dtype=dtype)


def save_denoiser(module: torch.nn.Module, directory, architecture: str, kwargs: dict, *, sigma_min: float,
                  sigma_max: float, sigma_data: float, shape, label_dim: int = 0, description: str = "",
                  training: dict | None = None, weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write `module` as an own-format checkpoint in `directory` (created if needed); returns the directory.

    Floating tensors are stored in `weights_dtype`, others as they are. The architecture is rebuilt from
    (architecture, kwargs) first, so a checkpoint that could not be loaded back is never written."""
    from safetensors.torch import save_file

    if not isinstance(kwargs, dict):
        raise ModelError(f"kwargs: expected a dict of builder keyword arguments, got {type(kwargs).__name__}")
    if not isinstance(weights_dtype, torch.dtype) or not weights_dtype.is_floating_point:
        raise ModelError(f"weights_dtype: expected a floating torch dtype, got {weights_dtype!r}")
    shape = [int(s) for s in shape]
    if len(shape) != 3 or min(shape) <= 0:
        raise ModelError(f"shape: expected (C, H, W) with positive sizes, got {tuple(shape)}")
    if not 0 < float(sigma_min) < float(sigma_max) < float("inf") or not float(sigma_data) > 0:
        raise ModelError(f"sigma_min, sigma_max, sigma_data: expected 0 < sigma_min < sigma_max < inf and "
                         f"sigma_data > 0, got {sigma_min}, {sigma_max}, {sigma_data}")
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": architecture, "kwargs": kwargs,
           "sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "sigma_data": float(sigma_data),
           "shape": shape, "label_dim": int(label_dim), "weights": "model.safetensors",
           "description": description, "training": training or {}}
    try:
        text = json.dumps(cfg, indent=2)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"kwargs, training: must be JSON-serialisable: {exc}") from None
    state = {k: (v.detach().to(weights_dtype) if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
             for k, v in module.state_dict().items()}
    bad = _state_mismatch(architectures.build(architecture, **kwargs).state_dict(), state)
    if bad:
        raise ModelError(f"module: its state_dict does not fit architecture {architecture!r} built with "
                         f"{kwargs}: {bad}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / cfg["weights"]), metadata={"format": FORMAT})
    (directory / CONFIG).write_text(text + "\n")
    return directory
