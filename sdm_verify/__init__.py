"""sdm-verify: the systems under test (solvers, schedules, SDM) and the harness that measures them."""

from .errors import GridError, SolverDivergedError
from .nfe import CountedDenoiser, count_nfe

__version__ = "0.1.0"
__all__ = ["count_nfe", "CountedDenoiser", "SolverDivergedError", "GridError"]

from . import sdm_schedule  # noqa: E402,F401  (registers the "sdm" schedule; imports schedules and solvers)
