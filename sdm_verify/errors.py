"""Exceptions raised by the systems under test and the harness."""

from __future__ import annotations


class SolverDivergedError(RuntimeError):
    """A solver produced NaN or inf. Names the solver, the step index and the noise level it was stepping to."""

    def __init__(self, solver: str, step: int, sigma: float, detail: str = ""):
        self.solver, self.step, self.sigma = solver, step, sigma
        msg = f"solver {solver!r} diverged at step {step} (sigma -> {sigma:.6g}): non-finite values"
        super().__init__(msg + (f"; {detail}" if detail else ""))


class GridError(ValueError):
    """A sigma grid that is not a finite, strictly decreasing, non-negative 1-D sequence."""
