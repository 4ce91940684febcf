"""The conformance check of one solver: `check(spec_or_solver, claimed_order=None, config=None, ...)`.

Used by `sdm-verify validate` and the pytest plugin. It resolves the solver (a SPEC, a LoadedSolver or a
callable), the order it is judged against and the plan of order measurements, runs those measurements, then every
item of conformance.items on the solver (each of its `processes` when it has them), and returns a
ConformanceResult. Its verdict is "pass" only if every judged item passes.
"""

from __future__ import annotations

import math

from ..adapters import spec as specs
from . import declared
from .context import Context, Progress
from .items import CHECKS, ITEMS, RUN_ORDER, affine, determinism, final_step, float32, order, point_mass, symbolic
from .result import ConformanceResult


def check(spec_or_solver, claimed_order: float | None = None, config: dict | None = None, *,
          claimed_nfe_per_step: float | None = None, targets=None, quick: bool = False,
          progress: bool = True) -> ConformanceResult:
    """Run every conformance item on a solver: a SPEC string (sdm_verify.adapters.spec), a LoadedSolver or a
    callable solver(denoiser, x, sigmas). `claimed_order` defaults to the solver's declared `order`; `targets`
    restricts the order measurements; `quick` measures orders on gmm-8d (EDM and logSNR grids) only."""
    loaded = _resolve(spec_or_solver, config)
    solver = loaded.solver
    claimed = _claimed_order(solver, claimed_order)
    if claimed_nfe_per_step is not None and (isinstance(claimed_nfe_per_step, bool) or not isinstance(
            claimed_nfe_per_step, (int, float)) or not claimed_nfe_per_step > 0):
        raise ValueError(f"claimed_nfe_per_step: must be a positive number (got {claimed_nfe_per_step!r})")
    ctx = Context(loaded.name, claimed, declared.variants(solver), claimed_nfe_per_step)
    planned = order.plan(loaded, ctx, targets, quick)
    if not planned:
        raise specs.SpecError(f"targets: no order configuration left for targets {list(targets or [])}")
    per_process = point_mass.RUNS + affine.RUNS + float32.RUNS + determinism.RUNS
    runs = sum(len(ns) for *_, ns in planned) + len(ctx.variants) * per_process + final_step.RUNS + symbolic.RUNS
    ctx.bar = Progress(runs, f"validate {loaded.name}", progress)
    try:
        ctx.measured = order.measure(loaded, planned, ctx)
        for name in RUN_ORDER:
            ctx.items[name] = CHECKS[name](solver, ctx)
    finally:
        ctx.bar.close()
    items = {name: ctx.items[name] for name in ITEMS}
    return ConformanceResult(loaded.spec, loaded.name, claimed, claimed_nfe_per_step, items, ctx.cases(), config)


def _resolve(spec_or_solver, config) -> specs.LoadedSolver:
    if isinstance(spec_or_solver, specs.LoadedSolver):
        return spec_or_solver
    if isinstance(spec_or_solver, str):
        return specs.load(spec_or_solver, config)
    name = declared.name(spec_or_solver)
    specs.check_callable(spec_or_solver, name)
    return specs.LoadedSolver(name, name, spec_or_solver)


def _claimed_order(solver, claimed_order) -> float:
    if claimed_order is None:
        claimed_order = declared.order(solver)
        if claimed_order is None or isinstance(claimed_order, bool) or not isinstance(claimed_order, (int, float)):
            raise ValueError("claimed_order: required, the solver declares no numeric `order`")
    if isinstance(claimed_order, bool) or not isinstance(claimed_order, (int, float)) or not (
            math.isfinite(claimed_order) and claimed_order > 0):
        raise ValueError(f"claimed_order: must be a positive number (got {claimed_order!r})")
    return float(claimed_order)
