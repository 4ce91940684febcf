"""diffusers schedulers as suite solvers: `scheduler_solver(cls_or_name, config, process, grid)`.

A scheduler is driven as a pipeline drives it, with the oracle behind a fake network (solver.py; stochastic.py for
the schedulers that draw noise, fed the harness's noise; factory.py picks one); the conventions
that map its sample and the network's input and output to canonical variables are in conventions.py, the imposed
and native grids in grids.py, and what the adapter knows about each scheduler class in profiles.py. diffusers is
imported only when a scheduler is built: this package imports without it, and a missing extra raises
`MissingDiffusersError` naming `INSTALL_HINT`.
"""

from .conventions import (
    PROCESSES,
    Process,
    denoised_from_output,
    flow_sigma,
    flow_time,
    get_process,
    input_scale,
    model_output,
    sample_scale,
)
from .dependency import INSTALL_HINT, MissingDiffusersError
from .factory import scheduler_solver
from .float64 import Float64Tensor
from .grids import GRIDS, NativeSchedule, TimestepLookup
from .profiles import PROFILES, supported
from .scheduler_profile import SchedulerProfile
from .solver import DiffusersSolver, native_run

__all__ = [
    "GRIDS", "INSTALL_HINT", "PROCESSES", "PROFILES", "DiffusersSolver", "Float64Tensor", "MissingDiffusersError",
    "NativeSchedule", "Process", "SchedulerProfile", "TimestepLookup", "denoised_from_output", "flow_sigma",
    "flow_time", "get_process", "input_scale", "model_output", "native_run", "sample_scale", "scheduler_solver",
    "supported",
]
