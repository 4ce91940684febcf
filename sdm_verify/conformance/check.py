"""The conformance check of one solver: `check(spec_or_solver, claimed_order=None, config=None, ...)`.

Used by `sdm-verify validate` and the pytest plugin. It resolves the solver (a SPEC, a LoadedSolver or a
callable), the order it is judged against and the plan of order measurements, runs those measurements, then every
item of conformance.items on the solver (each of its `processes` when it has them), and returns a
ConformanceResult. Its verdict is "pass" only if every judged item passes.

Bad arguments are refused (InputError, naming the argument) before the solver is loaded or run. A declaration the
check cannot read (declared.ClaimError: the declared order, nfe(n), equivalent, processes, sigma_range, ...) is not
an input error but a failed claim: the item that reads it fails with the reason, and the verdict is "fail".
"""

from __future__ import annotations

import math

from ..adapters import spec as specs
from ..errors import InputError
from ..harness.targets import available as available_targets
from . import declared, guided, stochastic
from .context import Context, Progress
from .items import CHECKS, ITEMS, RUN_ORDER, affine, determinism, final_step, float32, order, point_mass, symbolic
from .result import ConformanceResult, Item


def check(spec_or_solver, claimed_order: float | None = None, config: dict | None = None, *,
          claimed_nfe_per_step: float | None = None, targets=None, quick: bool = False,
          progress: bool = True, guidance: float | None = None) -> ConformanceResult:
    """Run every conformance item on a solver: a SPEC string (sdm_verify.adapters.spec), a LoadedSolver or a
    callable solver(denoiser, x, sigmas). `claimed_order` defaults to the solver's declared `order`; `targets`
    restricts the order measurements; `quick` measures orders on gmm-8d (EDM and logSNR grids) only. `guidance` (a
    finite scale w >= 0): the check on the classifier-free-guided field D_u + w (D_c - D_u) instead
    (conformance.guided; a GuidedResult)."""
    _check_options(spec_or_solver, config, targets, quick, progress)
    if guidance is not None:
        guidance = guided.check_scale(guidance)
    if claimed_order is not None:
        claimed_order = _positive(claimed_order, "claimed_order")
    if claimed_nfe_per_step is not None:
        _positive(claimed_nfe_per_step, "claimed_nfe_per_step")
    loaded = _resolve(spec_or_solver, config)
    solver = loaded.solver
    if getattr(solver, "needs_noise", False) and guidance is not None:
        raise InputError(f"guidance: {loaded.name} is a stochastic sampler; the check under guidance covers ODE "
                         "solvers only")
    if getattr(solver, "needs_noise", False):  # a stochastic sampler: conformance.stochastic
        return stochastic.check(loaded, claimed_order, config, quick=quick, progress=progress)
    unreadable = {}
    claimed = claimed_order
    if claimed is None:
        try:
            claimed = declared.order_claim(solver)
        except declared.ClaimError as exc:  # a claim that cannot be read fails the order item; the rest still run
            unreadable["order"], claimed = str(exc), math.nan
        if claimed is None:
            raise InputError("claimed_order: required, the solver declares no numeric `order`")
    ctx = Context(loaded.name, claimed, declared.variants(solver), claimed_nfe_per_step, unreadable=unreadable)
    if guidance is not None:  # the check on the guided field (its own plan, targets and items)
        return guided.check(loaded, ctx, guidance, config, targets=targets, quick=quick, progress=progress)
    planned = [] if unreadable else order.plan(loaded, ctx, targets, quick)
    if not planned and not unreadable:
        raise specs.SpecError(f"targets: no order configuration left for targets {list(targets or [])}")
    per_process = point_mass.RUNS + affine.RUNS + float32.RUNS + determinism.RUNS
    runs = sum(len(ns) for *_, ns in planned) + len(ctx.variants) * per_process + final_step.RUNS + symbolic.RUNS
    ctx.bar = Progress(runs, f"validate {loaded.name}", progress)
    try:
        ctx.measured = order.measure(loaded, planned, ctx)
        for name in RUN_ORDER:
            try:
                ctx.items[name] = CHECKS[name](solver, ctx)
            except declared.ClaimError as exc:  # a declaration the item reads cannot be read: the item fails
                ctx.items[name] = Item(name, "fail", "—", "a readable declaration", f"unreadable claim {exc}",
                                       dict(unreadable=str(exc)))
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


def _positive(value, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InputError(f"{argument}: must be a positive finite number (got {value!r})")
    return float(value)


def _check_options(spec_or_solver, config, targets, quick, progress) -> None:
    """The cheap arguments, before the solver is loaded: targets, quick, progress, and config only with a SPEC."""
    if config is not None and not isinstance(spec_or_solver, (str, specs.LoadedSolver)):
        raise InputError("config: only a diffusers: or kdiffusion: SPEC takes a config (got a solver object)")
    if targets is not None:
        known = available_targets()
        if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets:
            raise InputError(f"targets: expected a non-empty list of target names ({', '.join(known)}), got "
                             f"{targets!r}")
        unknown = [t for t in targets if not isinstance(t, str) or t not in known]
        if unknown:
            raise InputError(f"targets: unknown target(s) {unknown}; known: {', '.join(known)}")
    for flag, value in (("quick", quick), ("progress", progress)):
        if not isinstance(value, bool):
            raise InputError(f"{flag}: expected True or False (got {value!r})")
