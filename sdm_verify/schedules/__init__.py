"""Noise-level (sigma) schedules: `get(name)(n, sigma_min, sigma_max, *, zero=False, **params) -> tensor`.

The grids and their conventions are in `sdm_verify.schedules.grids`, the registry and its plug-in hook in
`sdm_verify.schedules.registry`.
"""

from __future__ import annotations

from .grids import check, edm, grid_from_map, logsnr, time_quadratic, uniform_t
from .registry import ENTRY_POINT_GROUP, available, get, register, uses_process

__all__ = ["get", "available", "uses_process", "register", "check", "grid_from_map", "edm", "logsnr", "uniform_t",
           "time_quadratic", "ENTRY_POINT_GROUP"]
