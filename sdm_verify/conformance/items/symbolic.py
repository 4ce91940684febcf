"""Item `symbolic`: the symbolic order of the solver's update, against the claim.

The solver's own coefficient functions (`update_rule`, expanded by harness.symbolic_order against the exact
variation-of-constants solution); else, when it declares `equivalent` (a registered solver with the same update),
both are run on EQUIVALENCE_GRIDS from the same input and, when their outputs agree to EQUIVALENCE_RTOL, the
equivalent's symbolic order is reported. Fails when the declared equivalence does not hold or the symbolic order on
general grids is below the claim. n/a without an update_rule or a declared equivalent.
"""

from __future__ import annotations

import math

import torch

from ... import solvers
from ...harness import targets
from ...harness.symbolic_order import SymbolicOrder, has_rule, symbolic_order
from .. import declared
from ..context import Context
from ..probing import grid, sigma_bounds
from ..result import Item

#: a declared equivalence holds when the outputs agree to this relative difference (max-abs over max-abs): two
#: implementations of one update differ only by rounding, ~N * 1e-16 for N <= 32 steps; a different coefficient
#: shows at the size of the local error, >= 1e-8 on these grids (k-diffusion 3M-SDE vs dpmpp_3m: 1e-5)
EQUIVALENCE_RTOL = 1e-10
EQUIVALENCE_GRIDS = (("edm", 8), ("edm", 16), ("edm", 32), ("logsnr", 16))
#: solver runs of the equivalence comparison (the solver and its twin on each grid), for the progress bar
RUNS = len(EQUIVALENCE_GRIDS) * 2


def item(solver, ctx: Context) -> Item:
    """The symbolic order of the solver's own update_rule, or of its declared equivalent once both give the same
    outputs (to EQUIVALENCE_RTOL) on EQUIVALENCE_GRIDS; fails if the equivalence does not hold or the symbolic order
    (general grids) is below ctx.claimed_order."""
    claimed = ctx.claimed_order
    if has_rule(solver):
        ctx.step(RUNS)
        try:
            sym = symbolic_order(solver)
        except Exception as exc:
            return Item("symbolic", "fail", "—", "", f"the update_rule cannot be expanded ({type(exc).__name__}: "
                        f"{exc})", dict(source="update_rule", error=str(exc)))
        return _judge(sym, claimed, dict(source="update_rule"), "its own update_rule")
    equivalent = declared.equivalent(solver)
    if not equivalent:
        ctx.step(RUNS)
        return Item("symbolic", "n/a", "—", "", "no update_rule and no declared equivalent")
    if equivalent not in solvers.available():
        ctx.step(RUNS)
        return Item("symbolic", "fail", "—", "", f"declared equivalent {equivalent!r} is not a registered solver",
                    dict(source="equivalent", equivalent=equivalent))
    twin = _twin(solver, equivalent)
    rel, where = _max_difference(solver, twin, ctx)
    data = dict(source="equivalent", equivalent=equivalent, max_relative_difference=rel, worst_grid=where,
                rtol=EQUIVALENCE_RTOL)
    if not rel <= EQUIVALENCE_RTOL:
        return Item("symbolic", "fail", f"{rel:.1e}", f"<= {EQUIVALENCE_RTOL:.0e}",
                    f"declared equivalent {equivalent} is NOT the same update: max relative difference {rel:.2e} "
                    f"({where})", data)
    sym = symbolic_order(twin)
    if sym is None:
        return Item("symbolic", "pass", "—", f"<= {EQUIVALENCE_RTOL:.0e}",
                    f"same update as {equivalent} (max relative difference {rel:.1e}); {equivalent} exposes no "
                    "update_rule: no symbolic order", data)
    return _judge(sym, claimed, data, f"same update as {equivalent} (max relative difference {rel:.1e})")


def _twin(solver, equivalent: str):
    """The registered solver `equivalent` names, configured as the solver declares (`equivalent_solver()`, by
    default `equivalent_params`, e.g. diffusers' lower_order_final)."""
    return declared.equivalent_twin(solver)


def _judge(sym: SymbolicOrder, claimed: float, data: dict, source: str) -> Item:
    data.update(sym.to_dict())
    if not math.isfinite(claimed):  # the declared order cannot be read (the order item fails): reported only
        return Item("symbolic", "info", str(sym.general), "no readable claimed order",
                    f"{source}: symbolic order {sym.general} on general grids, {sym.uniform} on uniform steps "
                    f"({sym.scope}); leading error {sym.leading_general}", data)
    ok = sym.general >= claimed - 1e-9
    return Item("symbolic", "pass" if ok else "fail", str(sym.general), f">= claimed {claimed:g}",
                f"{source}: symbolic order {sym.general} on general grids, {sym.uniform} on uniform steps "
                f"({sym.scope}); leading error {sym.leading_general}", data)


def _max_difference(solver, twin, ctx: Context) -> tuple[float, str]:
    """The largest max-abs relative difference of the two outputs over EQUIVALENCE_GRIDS (gmm-8d, 16 draws)."""
    target = targets.get("gmm-8d")
    lo, hi = sigma_bounds(solver)
    x = target.sample(16, sigma=hi, generator=torch.Generator().manual_seed(1))
    worst, where = 0.0, ""
    for schedule, n in EQUIVALENCE_GRIDS:
        sigmas = grid(schedule, n, None, lo, hi)
        try:
            a = solver(target.denoiser, x.clone(), sigmas)
        except Exception as exc:
            ctx.step(2)
            return math.inf, f"{schedule} N={n}: the solver raised {type(exc).__name__}: {exc}"
        ctx.step()
        b = twin(target.denoiser, x.clone(), sigmas)
        ctx.step()
        rel = float((a.to(torch.float64) - b).abs().max() / b.abs().max())
        if not math.isfinite(rel):
            return math.inf, f"{schedule} N={n}: non-finite output"
        if rel >= worst:
            worst, where = rel, f"{schedule} N={n}"
    return worst, where
