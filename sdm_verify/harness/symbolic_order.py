"""Symbolic order of a solver, derived from the coefficient functions its own `step` uses.

A solver that exposes `update_rule(h, ratios, ops) -> (weights, nodes)` and `symbolic_form` is expanded by
`analytic.symbolic` against the exact variation-of-constants solution, twice:
    general  step ratios r0, r1, ... left symbolic (any grid);
    uniform  all ratios 1 (constant step in the form's variable: lambda for *-lambda forms, sigma for noise-sigma).
A solver with an active corrector (UniPC) is judged by its `corrector_rule`: the corrected value is what the next
step starts from. For single-step methods (with `stage_rules`) only the quadrature part is analysed, with stage
values taken on the exact solution; that is exact up to order 2 and may overstate higher orders.
"""

from __future__ import annotations

from dataclasses import dataclass

from analytic import symbolic


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


_CACHE: dict[tuple, SymbolicOrder] = {}


def has_rule(solver) -> bool:
    """Whether `solver` exposes coefficient functions the symbolic check can expand."""
    return getattr(solver, "symbolic_form", None) is not None and getattr(solver, "update_rule", None) is not None


def symbolic_order(solver) -> SymbolicOrder | None:
    """The symbolic global orders of `solver`, or None when it exposes no coefficient functions. Cached per solver
    class and parameters (the UniPC expansions take seconds)."""
    if not has_rule(solver):
        return None
    params = getattr(solver, "params", None)
    key = (type(solver).__module__, type(solver).__qualname__, repr(params())) if callable(params) else None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    result = _expand(solver)
    if key is not None:
        _CACHE[key] = result
    return result


def _expand(solver) -> SymbolicOrder:
    form, rule = solver.symbolic_form, solver.update_rule
    scope = "multistep (exact history)"
    if getattr(solver, "corrector", False) and hasattr(solver, "corrector_rule"):
        rule, scope = solver.corrector_rule, "predictor-corrector: the corrected step (exact history)"
    elif getattr(solver, "stage_rules", None) is not None and solver.stage_rules(symbolic.h, symbolic.SYMPY_OPS):
        scope = "single-step: quadrature part only (stages on the exact solution)"
    general = symbolic.rule_error(rule, form)
    weights, nodes = rule(symbolic.h, [1, 1, 1], symbolic.SYMPY_OPS)
    uniform = symbolic.local_error(weights, nodes, form=form)
    return SymbolicOrder(form, general.global_order, uniform.global_order, str(general.leading),
                         str(uniform.leading), scope)
