"""Exceptions raised by the systems under test and the harness.

Every refusal of bad input is an `InputError` (a ValueError): one line naming the argument and the rule it broke,
raised before any expensive work. The command line maps it to exit status 2 (sdm_verify/cli/main.py). The oracle
(`analytic/`) raises plain ValueErrors of the same form, since it never imports this package.
"""

from __future__ import annotations


class SolverDivergedError(RuntimeError):
    """A solver produced NaN or inf. Names the solver, the step index and the noise level it was stepping to."""

    def __init__(self, solver: str, step: int, sigma: float, detail: str = ""):
        self.solver, self.step, self.sigma = solver, step, sigma
        msg = f"solver {solver!r} diverged at step {step} (sigma -> {sigma:.6g}): non-finite values"
        super().__init__(msg + (f"; {detail}" if detail else ""))


class InputError(ValueError):
    """Bad input to a public entry point: the message names the argument and the rule (exit status 2)."""


class GridError(InputError):
    """A sigma grid that is not a finite, strictly decreasing, non-negative 1-D sequence."""


class DenoiserOutputError(InputError):
    """A denoiser returned something other than a tensor of its input's shape (None, a list, a broadcastable
    shape such as (B, 1) for x of shape (B, d)). Refused instead of broadcast."""


class StoreError(InputError):
    """A results store that cannot be opened, read or written as one (missing, corrupted, read-only for a
    command that writes, wrong tables). The message says how to recover."""


class OutputPathError(InputError):
    """An output path that cannot be written (a directory where a file is wanted, a file where a directory is
    wanted, a read-only location). Checked before the run, so no work is lost."""
