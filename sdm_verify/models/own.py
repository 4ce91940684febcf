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

import inspect
import json
import math
import numbers
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from . import architectures
from .base import Denoiser, ModelError, check_device, check_dtype, read_json_object

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
    _check_config_types(cfg, path)
    return cfg


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_config_types(cfg: dict, path: Path) -> None:
    """The config's own fields, typed and in range (one line naming the file and the key)."""
    arch = cfg["architecture"]
    if not isinstance(arch, str) or not arch:
        raise ModelError(f"path: {path}: \"architecture\" must be a registered architecture name, got {arch!r}")
    for key in ("sigma_min", "sigma_max", "sigma_data"):
        v = cfg[key]
        if not _is_number(v) or not math.isfinite(v) or not v > 0:
            raise ModelError(f"path: {path}: \"{key}\" must be a finite positive number, got {v!r}")
    if not cfg["sigma_min"] < cfg["sigma_max"]:
        raise ModelError(f"path: {path}: \"sigma_min\" must be below \"sigma_max\", got {cfg['sigma_min']!r} >= "
                         f"{cfg['sigma_max']!r}")
    shape = cfg["shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
        raise ModelError(f"path: {path}: \"shape\" must be [C, H, W] of positive integers, got {shape!r}")
    label_dim = cfg.get("label_dim", 0)
    if not _is_int(label_dim) or label_dim < 0:
        raise ModelError(f"path: {path}: \"label_dim\" must be an integer >= 0, got {label_dim!r}")
    weights = cfg["weights"]
    if not isinstance(weights, str) or not weights.strip() or any(
            w.is_absolute() or ".." in w.parts for w in (PurePosixPath(weights), PureWindowsPath(weights))):
        raise ModelError(f"path: {path}: \"weights\" must be the name of a file in the checkpoint directory, got "
                         f"{weights!r}")
    if not isinstance(cfg.get("description", ""), str):
        raise ModelError(f"path: {path}: \"description\" must be a string, got {cfg['description']!r}")


def _check_kwargs(architecture: str, kwargs: dict, path: Path) -> None:
    """The builder's kwargs against its signature: known names, and for parameters whose default (or annotation) is
    an int, float or sequence, a JSON value of that kind (a string where a channel count belongs is named here, not
    as whatever the builder's first arithmetic on it raises)."""
    try:
        builder = architectures.builder(architecture)
    except ValueError as exc:
        raise ModelError(f"path: {path}: \"architecture\": {exc}") from None
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ModelError(f"path: {path}: \"kwargs\" has {', '.join(map(repr, unknown))}, which architecture "
                             f"{architecture!r} does not take (it takes: {', '.join(params)})")
    for name, value in kwargs.items():
        p = params.get(name)
        if p is None:
            continue
        default = p.default
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if isinstance(default, bool) or ann == "bool":
            ok, kind = isinstance(value, bool), "true or false"
        elif _is_int(default) or ann == "int":
            ok, kind = _is_int(value), "an integer"
        elif _is_number(default) or ann == "float":
            ok, kind = _is_number(value) and math.isfinite(value), "a finite number"
        elif isinstance(default, (tuple, list)):
            ok, kind = isinstance(value, list), "a list"
        else:
            continue
        if not ok:
            raise ModelError(f"path: {path}: \"kwargs\".{name} must be {kind} for architecture {architecture!r}, "
                             f"got {value!r}")


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


class _Shape:
    """A tensor's shape as the safetensors header states it (what _state_mismatch reads of a tensor)."""

    def __init__(self, shape):
        self.shape = tuple(int(s) for s in shape)


def _one_line(exc: BaseException) -> str:
    return "; ".join(ln.strip() for ln in (str(exc) or type(exc).__name__).splitlines() if ln.strip())


def _check_weights(expected: dict, state: dict, weights: Path) -> None:
    """Floating tensors where the architecture has floating ones (integer buffers likewise), all finite."""
    for k, t in state.items():
        want = expected[k]
        if t.is_floating_point() != want.is_floating_point() or t.is_complex() or (
                t.dtype == torch.bool and want.dtype != torch.bool):
            raise ModelError(f"path: weights {weights}: tensor {k} has dtype {t.dtype}, the architecture's is "
                             f"{want.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"path: weights {weights}: tensor {k} holds NaN or inf")


def load_own(path, device="cpu", dtype: torch.dtype = torch.float64) -> Denoiser:
    """Load an own-format checkpoint: its directory, its config.json or its weights file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise ModelError(f"path: expected a checkpoint directory, its config.json or its weights file, got {path!r}")
    check_dtype(dtype)
    check_device(device)
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    cfg = read_config(directory)
    config = directory / CONFIG
    _check_kwargs(cfg["architecture"], cfg["kwargs"], config)
    weights = directory / cfg["weights"]
    if not weights.is_file():
        raise ModelError(f"path: weights file not found: {weights} (named by {config})")
    # the architecture on the meta device (no memory, no initialisation) against the weights file's header (no
    # tensor read): wrong kwargs and mismatching weights are refused before anything is allocated or read
    try:
        with torch.device("meta"):
            shell = architectures.build(cfg["architecture"], **cfg["kwargs"])
    except (ValueError, TypeError, RuntimeError, ArithmeticError) as exc:  # kwargs the builder refuses
        raise ModelError(f"path: {config}: cannot build architecture {cfg['architecture']!r} from \"kwargs\" "
                         f"{json.dumps(cfg['kwargs'])}: {_one_line(exc)}") from None
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            header = {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"path: cannot read safetensors weights {weights}: {_one_line(exc)}") from None
    bad = _state_mismatch(shell.state_dict(), header)
    if bad:
        raise ModelError(f"path: weights {weights} do not fit architecture {cfg['architecture']!r}: {bad}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"path: cannot read safetensors weights {weights}: {_one_line(exc)}") from None
    _check_weights(shell.state_dict(), state, weights)
    try:
        module = architectures.build(cfg["architecture"], **cfg["kwargs"])
    except (ValueError, TypeError) as exc:  # unknown name, or kwargs the builder does not take
        raise ModelError(f"path: {config}: cannot build the architecture: {exc}") from None
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
