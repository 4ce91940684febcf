"""Diffusion ODE solvers behind one declared interface: `get(name, **params)`, `available()`.

`interface.SolverInterface` lists every capability a solver declares; `base.Solver` adds the grid loop that the
registered solvers share. Importing this package imports every solver family, each of which registers its solvers.
"""

from __future__ import annotations

from ..grid import check_grid
from . import (  # noqa: F401  (registration side effects)
           ancestral,
           bdia,
           dc_solver,
           deis,
           dpm,
           dpm_v3,
           dpmpp_sde,
           ipndm,
           momentum,
           native,
           pndm,
           restart,
           rk,
           sa_solver,
           sde,
           sdm,
           time_shift,
           unipc,
)
from .base import Solver, StepContext, ode_derivative
from .interface import SolverInterface, has_coefficients
from .registry import available, get, needs_process, register

__all__ = ["Solver", "SolverInterface", "StepContext", "has_coefficients", "check_grid", "ode_derivative", "get",
           "available", "register", "needs_process"]
