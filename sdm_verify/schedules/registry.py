"""The schedule registry: `register(name, fn)`, `get(name)`, `available()`, `uses_process(name)`.

A schedule is `fn(n, sigma_min, sigma_max, *, zero=False, **params) -> float64 tensor` (conventions in
`sdm_verify.schedules.grids`). The built-in grids register below. Schedules that live in a higher layer of this
package (SDM's eta-bounded schedule, `sdm_verify.studies.sdm`) or in another package are found through the public
hook, the entry-point group `sdm_verify.schedules` (name = schedule name, object = the schedule function), loaded on
the first lookup of a name not registered yet: the registry never imports the code that plugs into it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

import torch

from ..errors import InputError
from .grids import edm, logsnr, time_quadratic, uniform_t

Schedule = Callable[..., torch.Tensor]
ENTRY_POINT_GROUP = "sdm_verify.schedules"

_REGISTRY: dict[str, Schedule] = {}
_PROCESS: set[str] = set()
_plugins_loaded = False


def register(name: str, schedule: Schedule, *, uses_process: bool = False) -> None:
    """Register `schedule(n, sigma_min, sigma_max, *, zero=False, **params)` under `name`; `uses_process`: its grid
    depends on the noise process (it then needs `process=`)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"name: must be a non-empty string (got {name!r})")
    if not callable(schedule):
        raise InputError(f"schedule: must be callable as schedule(n, sigma_min, sigma_max, zero=..., ...), got "
                         f"{type(schedule).__name__}")
    if not isinstance(uses_process, bool):
        raise InputError(f"uses_process: must be a bool, got {uses_process!r}")
    if name in _REGISTRY:
        raise InputError(f"name: schedule {name!r} is already registered")
    _REGISTRY[name] = schedule
    if uses_process:
        _PROCESS.add(name)


def _load_plugins() -> None:
    """Register every schedule advertised in the `sdm_verify.schedules` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            register(ep.name, ep.load())


def uses_process(name: str) -> bool:
    """Whether the grid of schedule `name` depends on the process."""
    get(name)
    return name in _PROCESS


def available() -> list[str]:
    """Names of the registered schedules (aliases included), built-ins first, then plugins."""
    _load_plugins()
    return list(_REGISTRY)


def get(name: str) -> Schedule:
    """The schedule function registered under `name`."""
    if not isinstance(name, str):
        raise InputError(f"name: expected a schedule name (a string), got {type(name).__name__} ({name!r:.40}); "
                         f"available: {', '.join(available())}")
    if name not in _REGISTRY:
        _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"name: unknown schedule {name!r}; available: {', '.join(available())}") from None


register("edm", edm)
register("logsnr", logsnr)
register("loglinear", logsnr)
register("uniform_t", uniform_t, uses_process=True)
register("time_quadratic", time_quadratic, uses_process=True)
