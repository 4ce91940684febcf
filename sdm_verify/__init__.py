"""sdm-verify: the systems under test (solvers, schedules, SDM) and the harness that measures them."""

from .errors import GridError, SolverDivergedError
from .harness.nfe import CountedDenoiser, count_nfe

__version__ = "0.1.0"
__all__ = ["count_nfe", "CountedDenoiser", "SolverDivergedError", "GridError"]
# The "sdm" schedule registers itself when sdm_verify.schedules first looks it up; the package import stays light
# (no torch), so the pytest plugin it provides costs nothing in test runs that do not use it.
