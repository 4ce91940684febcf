"""The solver registry. Family modules call `register` at import; `sdm_verify.solvers` imports every family."""

from __future__ import annotations

from .base import Solver

_REGISTRY: dict[str, tuple[type[Solver], dict]] = {}


def register(name: str, cls: type[Solver], **defaults) -> None:
    """Register `cls` configured with `defaults` under `name`."""
    if name in _REGISTRY:
        raise ValueError(f"name: solver {name!r} is already registered")
    _REGISTRY[name] = (cls, defaults)


def available() -> list[str]:
    """Names of the registered solvers, in registration order."""
    return list(_REGISTRY)


def get(name: str, **params) -> Solver:
    """A configured solver instance; unknown names and bad parameters raise ValueError."""
    try:
        cls, defaults = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"name: unknown solver {name!r}; available: {', '.join(available())}") from None
    try:
        solver = cls(**{**defaults, **params})
    except TypeError as exc:
        raise ValueError(f"params: bad parameters for solver {name!r}: {exc}") from None
    solver.name = name
    return solver


def needs_process(name: str) -> bool:
    """Whether solver `name` integrates in a process's own time and so must be given `process=`."""
    try:
        cls, _ = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"name: unknown solver {name!r}; available: {', '.join(available())}") from None
    return bool(getattr(cls, "needs_process", False))
