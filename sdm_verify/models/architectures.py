"""Registry of the network architectures the project's own checkpoint format can rebuild (no pickle).

An architecture is a builder `build(**kwargs) -> torch.nn.Module` whose module computes the preconditioned denoiser
D(x, sigma, labels) directly (EDM-style preconditioning inside). The own format stores the builder's name and kwargs
in JSON beside safetensors weights, so loading a checkpoint never executes code from the file.
"""

from __future__ import annotations

from collections.abc import Callable

_BUILDERS: dict[str, Callable] = {}


def register(name: str):
    """Decorator: register a builder under `name`."""

    def deco(builder):
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"architecture {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return deco


def available() -> list[str]:
    _load_builtin()
    return sorted(_BUILDERS)


def builder(name: str) -> Callable:
    """The builder registered under `name`; unknown names (and non-strings) raise ValueError."""
    _load_builtin()
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name (a JSON list or object)
        known = ", ".join(sorted(_BUILDERS)) or "none"
        raise ValueError(f"unknown architecture {name!r}; registered: {known}") from None


def build(name: str, **kwargs):
    """The module of architecture `name` built with `kwargs`; unknown names raise ValueError."""
    return builder(name)(**kwargs)


def _load_builtin() -> None:
    """Import the modules that register the built-in architectures."""
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


#: modules whose import registers built-in architectures
_BUILTIN_MODULES: list[str] = ["sdm_verify.models.edm_unet"]
