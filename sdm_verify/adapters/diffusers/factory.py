"""`scheduler_solver`: a diffusers scheduler class (or its name) and config -> the suite solver that drives it: the
deterministic `DiffusersSolver` (solver.py), or `StochasticDiffusersSolver` (stochastic.py) for a scheduler, or a
configuration of one, that draws noise (profiles.py decides which)."""

from __future__ import annotations

from .dependency import load_diffusers
from .profiles import PROFILES, supported
from .solver import DiffusersSolver
from .stochastic import StochasticDiffusersSolver


def scheduler_solver(cls_or_name, config: dict | None = None, process: str | None = None, grid: str = "harness",
                     keep_float64: bool = True) -> DiffusersSolver:
    """A diffusers scheduler as a solver(denoiser, x, sigmas) -> x in EDM variables (module docstring).

    cls_or_name: a scheduler class or its name in `diffusers` (e.g. "DPMSolverMultistepScheduler"); config: its
    constructor keywords (JSON config); process: the network's parameterization (None: from the config); grid:
    "harness" (impose the given sigma grid) or "native" (the scheduler's own timesteps).
    """
    diffusers = load_diffusers()
    cls = cls_or_name
    if isinstance(cls_or_name, str):
        cls = getattr(diffusers, cls_or_name, None)
        if cls is None:
            raise ValueError(f"cls_or_name: diffusers has no scheduler named {cls_or_name!r}; supported: "
                             f"{', '.join(supported())}")
    profile = PROFILES.get(getattr(cls, "__name__", None))
    is_stochastic = getattr(profile, "is_stochastic", None)
    if getattr(profile, "stochastic", False) or (is_stochastic is not None and isinstance(config, dict)
                                                 and is_stochastic(config)):
        return StochasticDiffusersSolver(cls, config, process, grid, keep_float64)
    return DiffusersSolver(cls, config, process, grid, keep_float64)
