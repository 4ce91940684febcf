"""What a solver declares about itself, as the conformance check reads it.

Every capability is declared once, with its default, by the solver interface (`sdm_verify.solvers.interface`). A
registered solver or an adapter is already such a solver; anything else the check is handed (a plain callable
solver(denoiser, x, sigmas), an outside class) is seen through `adapters.spec.as_solver`, which carries over what
the object declares and leaves the interface's defaults for the rest. So these readers are plain attribute reads.
"""

from __future__ import annotations

from collections.abc import Callable

from ..adapters.spec import as_solver
from ..solvers.interface import SolverInterface


def of(solver) -> SolverInterface:
    """`solver` behind the declared interface."""
    return as_solver(solver)


def name(solver) -> str:
    return of(solver).name


def order(solver):
    """The claimed global order, as declared (None when the solver declares none; checked by the caller)."""
    return of(solver).order


def nfe(solver) -> Callable[[int], int] | None:
    """`nfe(n)`; None when not declared (a plain callable)."""
    return of(solver).nfe


def nfe_to_zero(solver) -> Callable[[int], int] | None:
    """`nfe_to_zero(n)`; None when not declared (a plain callable)."""
    return of(solver).nfe_to_zero


def variants(solver) -> list[tuple[str | None, object]]:
    """(process, solver) pairs: one per declared process, or (None, solver) for a solver in sigma space."""
    s = of(solver)
    if s.processes:
        return [(p, s.with_process(p)) for p in s.processes]
    return [(None, solver)]


def sigma_range(solver) -> tuple[float, float] | None:
    rng = of(solver).sigma_range
    return (float(rng[0]), float(rng[1])) if rng else None


def equivalent(solver) -> str | None:
    return of(solver).equivalent or None


def equivalent_twin(solver):
    """The registered equivalent, configured as the solver declares (`equivalent_solver()`)."""
    return of(solver).equivalent_solver()


def point_mass_exact(solver) -> bool:
    return of(solver).point_mass_exact is not False


def point_mass_note(solver) -> str:
    return of(solver).point_mass_note


def steps_into_zero(solver) -> bool:
    return of(solver).steps_into_zero is not False


def final_step(solver) -> str:
    return of(solver).final_step or ""
