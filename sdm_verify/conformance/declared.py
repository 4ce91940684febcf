"""What a solver declares about itself, as the conformance check reads it.

Every capability is declared once, with its default, by the solver interface (`sdm_verify.solvers.interface`). A
registered solver or an adapter is already such a solver; anything else the check is handed (a plain callable
solver(denoiser, x, sigmas), an outside class) is seen through `adapters.spec.as_solver`, which carries over what
the object declares and leaves the interface's defaults for the rest. So these readers are plain attribute reads.

A declaration that cannot be read (reading it raises; an order that is NaN, a string, a bool or not positive; an
nfe(n) that raises or returns something other than a non-negative integer; an `equivalent` that is not a name; a
process whose solver cannot be built; ...) is not a missing one: the reader raises `ClaimError`, "<claim>: <reason>",
and the item that reads it fails with that message (conformance.check). A missing declaration keeps its meaning
(None / the interface's default).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from ..adapters.spec import as_solver
from ..solvers.interface import SolverInterface


class ClaimError(Exception):
    """A declared capability that cannot be read: the message names the claim and the reason. Caught by the check,
    which fails the item reading it (never an input error: the solver, not the user, is at fault)."""


def of(solver) -> SolverInterface:
    """`solver` behind the declared interface."""
    return as_solver(solver)


def _what(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _read(solver, claim: str):
    """`solver.<claim>` behind the interface; ClaimError when reading it raises (or it stands for such a read)."""
    try:
        value = getattr(of(solver), claim)
    except Exception as exc:
        raise ClaimError(f"{claim}: reading it raised {type(exc).__name__}: {exc}") from None
    reason = getattr(value, "unreadable_reason", None)
    if isinstance(reason, str):  # adapters.spec.Unreadable: the outside object's attribute raised when read
        raise ClaimError(f"{claim}: {reason}")
    return value


def _real(value) -> float | None:
    """value as a float when it is a real number (not a bool, not a string), else None."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except Exception:
        return None


def name(solver) -> str:
    try:
        value = of(solver).name
    except Exception:
        value = None
    return value if isinstance(value, str) and value else str(value or type(solver).__name__)


def order(solver):
    """The claimed global order, as declared (None when the solver declares none; checked by the caller)."""
    return of(solver).order


def order_claim(solver) -> float | None:
    """The declared order as a float; None when not declared; ClaimError unless a positive finite number."""
    value = _read(solver, "order")
    if value is None:
        return None
    x = _real(value)
    if x is None or not (math.isfinite(x) and x > 0):
        raise ClaimError(f"order: declared {_what(value)}, not a positive finite number")
    return x


def nfe(solver) -> Callable[[int], int] | None:
    """`nfe(n)`; None when not declared (a plain callable)."""
    return _read(solver, "nfe")


def nfe_to_zero(solver) -> Callable[[int], int] | None:
    """`nfe_to_zero(n)`; None when not declared (a plain callable)."""
    return _read(solver, "nfe_to_zero")


def count(fn, claim: str, n: int) -> int:
    """The declared count fn(n) (nfe or nfe_to_zero) as an int; ClaimError when it raises or returns anything but a
    non-negative integer (a bool, a float, None, ...)."""
    try:
        value = fn(n)
    except Exception as exc:
        raise ClaimError(f"{claim}({n}): raised {type(exc).__name__}: {exc}") from None
    try:
        k = None if isinstance(value, bool) else operator.index(value)
    except Exception:
        k = None
    if k is None or k < 0:
        raise ClaimError(f"{claim}({n}): returned {_what(value)}, not a non-negative integer")
    return k


class Unrunnable(SolverInterface):
    """Stands for the solver of a process that cannot be built: running it raises the ClaimError, so every item
    run on that process fails with the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        self.name = "unreadable"

    def __call__(self, denoiser, x, sigmas, callback=None):
        raise ClaimError(self.reason)


def variants(solver) -> list[tuple[str | None, object]]:
    """(process, solver) pairs: one per declared process, or (None, solver) for a solver in sigma space. A process
    list that is not a tuple of distinct names, or a process whose solver cannot be built, gives an Unrunnable."""
    s = of(solver)
    try:
        procs = _read(s, "processes")
    except ClaimError as exc:
        return [(None, Unrunnable(str(exc)))]
    if procs is None or (isinstance(procs, (tuple, list)) and not procs):
        return [(None, solver)]
    if not isinstance(procs, (tuple, list)) or not all(isinstance(p, str) and p for p in procs) or len(
            set(procs)) != len(procs):
        return [(None, Unrunnable(f"processes: declared {_what(procs)}, not a tuple of distinct process names"))]
    out = []
    for p in procs:
        try:
            built = s.with_process(p)
        except Exception as exc:
            built = Unrunnable(f"processes: with_process({p!r}) raised {type(exc).__name__}: {exc}")
        else:
            if not callable(built):
                built = Unrunnable(f"processes: with_process({p!r}) returned {_what(built)}, not a solver")
        out.append((p, built))
    return out


def sigma_range(solver) -> tuple[float, float] | None:
    """(lowest, highest) sigma, or None; ClaimError unless two numbers 0 <= lo < hi (hi may be inf)."""
    rng = _read(solver, "sigma_range")
    if rng is None:
        return None
    try:
        lo, hi = rng
    except Exception:
        raise ClaimError(f"sigma_range: declared {_what(rng)}, not a pair (lowest, highest)") from None
    lo_f, hi_f = _real(lo), _real(hi)
    if lo_f is None or hi_f is None or not (math.isfinite(lo_f) and 0 <= lo_f < hi_f and not math.isnan(hi_f)):
        raise ClaimError(f"sigma_range: declared {_what(rng)}, not (lowest, highest) with 0 <= lowest < highest")
    return lo_f, hi_f


def equivalent(solver) -> str | None:
    """The declared registered twin's name; None when not declared; ClaimError when not a string."""
    value = _read(solver, "equivalent")
    if value is None or (isinstance(value, str) and not value):
        return None
    if not isinstance(value, str):
        raise ClaimError(f"equivalent: declared {_what(value)}, not a registered solver's name")
    return value


def equivalent_twin(solver):
    """The registered equivalent, configured as the solver declares (`equivalent_solver()`)."""
    s = of(solver)
    try:
        twin = s.equivalent_solver()
    except Exception as exc:
        params = getattr(s, "equivalent_params", None)
        raise ClaimError(f"equivalent: the registered {getattr(s, 'equivalent', None)!r} cannot be built as declared "
                         f"(equivalent_params {params!r}): {type(exc).__name__}: {exc}") from None
    if not callable(twin):
        raise ClaimError(f"equivalent: equivalent_solver() returned {_what(twin)}, not a solver")
    return twin


def _flag(solver, claim: str) -> bool:
    value = _read(solver, claim)
    if not isinstance(value, bool):
        raise ClaimError(f"{claim}: declared {_what(value)}, not True or False")
    return value


def point_mass_exact(solver) -> bool:
    return _flag(solver, "point_mass_exact")


def point_mass_note(solver) -> str:
    return str(_read(solver, "point_mass_note"))


def steps_into_zero(solver) -> bool:
    return _flag(solver, "steps_into_zero")


def final_step(solver) -> str:
    return str(_read(solver, "final_step") or "")
