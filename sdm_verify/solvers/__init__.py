"""Diffusion ODE solvers behind one interface: `get(name, **params)`, `available()`.

Importing this package imports every solver family, each of which registers its solvers.
"""

from __future__ import annotations

from . import deis, dpm, ipndm, native, rk, sdm, unipc  # noqa: F401  (registration side effects)
from .base import Solver, StepContext, check_grid, ode_derivative
from .registry import available, get, needs_process, register

__all__ = ["Solver", "StepContext", "check_grid", "ode_derivative", "get", "available", "register", "needs_process"]
