"""`load_denoiser(path)`: detect a checkpoint's format and load it behind the Denoiser interface.

Formats, detected from the path (never from its name alone):
    sdm-verify      a directory with config.json declaring "format": "sdm-verify-denoiser" (or that config.json, or
                    its weights file); a bare name (e.g. "digits-edm") also finds a checkpoint shipped in
                    sdm_verify/models/checkpoints/
    diffusers       a pipeline directory (model_index.json + unet/ + scheduler/) or a UNet2DModel directory
                    (config.json with `_class_name`) with a scheduler config beside it, or a file inside one
    nvlabs-pickle   an NVlabs EDM/EDM2 .pkl (torch_utils.persistence); runs embedded code only with trust_pickle
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .base import Denoiser, ModelError, check_device, check_dtype
from .diffusers_unet import is_diffusers_dir, load_diffusers
from .nvlabs import is_nvlabs_pickle, load_nvlabs
from .own import CONFIG, is_own_config, load_own

ACCEPTED = ("an sdm-verify checkpoint directory (config.json + model.safetensors), a diffusers pipeline or "
            "UNet2DModel directory, or an NVlabs EDM/EDM2 network pickle (.pkl)")
CHECKPOINTS = Path(__file__).parent / "checkpoints"


def shipped() -> dict[str, Path]:
    """The checkpoints shipped with the package, by directory name."""
    if not CHECKPOINTS.is_dir():
        return {}
    return {d.name: d for d in sorted(CHECKPOINTS.iterdir()) if is_own_config(d / CONFIG)}


def _resolve(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ModelError(f"path: expected a file or directory path, got {type(path).__name__}")
    if not os.fspath(path) or not str(os.fspath(path)).strip():
        raise ModelError("path: empty path; expected a checkpoint file or directory")
    p = Path(path).expanduser()
    if p.exists():
        return p
    name = str(path)
    ships = shipped()
    if name in ships and os.sep not in name:
        return ships[name]
    known = f"; shipped checkpoints: {', '.join(ships)}" if ships else ""
    raise ModelError(f"path: no such file or directory: {p}{known}")


def _check_json(path: Path) -> None:
    """A JSON file a checkpoint directory holds must parse: name the file, line and column where it does not (a
    truncated config.json is not "a directory this loader does not know")."""
    if not path.is_file():
        return
    try:
        json.loads(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"path: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"path: {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    except ValueError as exc:  # undecodable bytes
        raise ModelError(f"path: {path} is not valid JSON: {exc}") from None


def _dir_format(d: Path) -> str | None:
    if is_own_config(d / CONFIG):
        return "sdm-verify"
    if is_diffusers_dir(d):
        return "diffusers"
    for name in (CONFIG, "model_index.json"):
        _check_json(d / name)
    return None


def detect_format(path) -> str:
    """'sdm-verify', 'diffusers' or 'nvlabs-pickle' for `path`; ModelError naming the accepted formats otherwise."""
    p = _resolve(path)
    if p.is_dir():
        fmt = _dir_format(p)
        if fmt:
            return fmt
        pkls = sorted(q.name for q in p.glob("*.pkl"))
        hint = f" (it holds {', '.join(pkls[:3])}: pass the .pkl file itself)" if pkls else ""
        raise ModelError(f"path: {p} is not a checkpoint directory this loader knows{hint}; accepted: {ACCEPTED}")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ModelError(f"path: cannot read {p}: {exc.strerror or exc}") from None
    if is_nvlabs_pickle(p):
        return "nvlabs-pickle"
    fmt = _dir_format(p.parent) if p.suffix in (".json", ".safetensors", ".bin") else None
    if fmt:
        return fmt
    raise ModelError(f"path: {p} is not in a checkpoint format this loader knows; accepted: {ACCEPTED}")


def load_denoiser(path, trust_pickle: bool = False, device="cpu", dtype: torch.dtype = torch.float64) -> Denoiser:
    """Load the denoiser at `path` (format auto-detected) on `device` in `dtype` (float64 for measurement).

    trust_pickle: allow an NVlabs pickle to execute the Python source it embeds (off by default; only True trusts).
    Every argument is checked before a file is read."""
    if not isinstance(trust_pickle, bool):
        raise ModelError(f"trust_pickle: expected True or False, got {trust_pickle!r}")
    check_dtype(dtype)
    check_device(device)
    p = _resolve(path)
    fmt = detect_format(p)
    if fmt == "sdm-verify":
        return load_own(p, device=device, dtype=dtype)
    if fmt == "diffusers":
        return load_diffusers(p if p.is_dir() else p.parent, device=device, dtype=dtype)
    return load_nvlabs(p, trust_pickle=trust_pickle, device=device, dtype=dtype)
