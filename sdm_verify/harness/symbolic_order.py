"""Symbolic order of a solver, derived from the coefficient functions its own `step` uses.

A solver that declares a `symbolic_form` exposes `update_rule(h, ratios, ops) -> (weights, nodes)` (the declared
interface, sdm_verify.solvers.interface); `analytic.symbolic` expands it against the exact variation-of-constants
solution, twice:
    general  step ratios r0, r1, ... left symbolic (any grid);
    uniform  all ratios 1 (constant step in the form's variable: lambda for *-lambda forms, sigma for noise-sigma).
A solver with an active corrector (UniPC) is judged by its `corrector_rule`: the corrected value is what the next
step starts from. For single-step methods (with `stage_rules`: the exponential and the classical Runge-Kutta
methods) only the quadrature part is analysed, with stage values taken on the exact solution; that is exact up to
order 2 and may overstate higher orders (the stage coupling conditions are not covered).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from analytic import symbolic

from ..errors import InputError
from ..solvers.interface import SolverInterface, has_coefficients
from . import fingerprint


@dataclass
class SymbolicOrder:
    form: str
    general: int
    uniform: int
    leading_general: str
    leading_uniform: str
    scope: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, doc) -> SymbolicOrder:
        """The inverse of to_dict; ValueError for anything else (a stale or damaged cache entry)."""
        types = {"general": int, "uniform": int}
        if not isinstance(doc, dict) or set(doc) != {f.name for f in fields(cls)} \
                or any(type(v) is not types.get(k, str) for k, v in doc.items()):
            raise ValueError("not a SymbolicOrder")
        return cls(**doc)


#: in-process results by fingerprint (the disk layer is analytic.symbolic.cached)
_CACHE: dict[str, SymbolicOrder] = {}


def has_rule(solver) -> bool:
    """Whether `solver` exposes coefficient functions the symbolic check can expand (a solver outside the declared
    interface, e.g. a plain callable, exposes none)."""
    return isinstance(solver, SolverInterface) and has_coefficients(solver)


def symbolic_order(solver) -> SymbolicOrder | None:
    """The symbolic global orders of `solver`, or None when it exposes no coefficient functions. For the
    registered families, whose class and parameters determine the coefficients, cached in process and on disk
    (analytic.symbolic.cached) under `rule_fingerprint` (the UniPC expansions take seconds); an adapter's rules
    (e.g. carried over from an outside object) are expanded each time."""
    if not has_rule(solver):
        return None
    key = rule_fingerprint(solver)
    if key is None:
        return _expand(solver)
    if key not in _CACHE:
        _CACHE[key] = symbolic.cached(key, lambda: _expand(solver), encode=SymbolicOrder.to_dict,
                                      decode=SymbolicOrder.from_dict)
    return _CACHE[key]


def rule_fingerprint(solver) -> str | None:
    """What the symbolic order of a registered family's solver depends on: its class, its parameters, the code of
    the class (harness.fingerprint.solver_part: its modules and their imports in sdm_verify.solvers, where the
    coefficient functions live) and of this module (the expansions it asks for). None outside the registered
    families, or where that code cannot be read (then nothing is cached)."""
    cls = type(solver)
    if not cls.__module__.startswith("sdm_verify.solvers."):
        return None
    try:
        code = fingerprint.solver_part(cls).digest
        own = fingerprint.file_digest(__file__)
    except (InputError, OSError):
        return None
    return json.dumps(["sdm_verify.symbolic_order", cls.__module__, cls.__qualname__, repr(solver.params()), code,
                       own])


def _expand(solver: SolverInterface) -> SymbolicOrder:
    form, rule = solver.symbolic_form, solver.update_rule
    weights, nodes = rule(symbolic.h, [1, 1, 1], symbolic.SYMPY_OPS)
    scope = "multistep (exact history)" if any(c != 0 for c in nodes[1:]) else "one step, one evaluation (exact)"
    if solver.corrector:
        rule, scope = solver.corrector_rule, "predictor-corrector: the corrected step (exact history)"
    elif solver.stage_rules(symbolic.h, symbolic.SYMPY_OPS):
        scope = "single-step: quadrature part only (stages on the exact solution)"
    general = symbolic.rule_error(rule, form)
    weights, nodes = rule(symbolic.h, [1, 1, 1], symbolic.SYMPY_OPS)  # the effective rule on equal steps
    uniform = symbolic.local_error(weights, nodes, form=form)
    # the leading terms are shown (report, validate): factored for the reader, the only sympy.factor calls
    return SymbolicOrder(form, general.global_order, uniform.global_order, str(general.leading_factored()),
                         str(uniform.leading_factored()), scope)
