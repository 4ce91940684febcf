"""The conformance check of one solver: `check(spec_or_solver, claimed_order=None, config=None, ...)`.

Used by `sdm-verify validate` and the pytest plugin (issue #8). For the solver (each of its `processes` when it has
them; otherwise the canonical sigma-space solver on the VE and VP configurations of theory.validation_configs) it
measures, reports and judges:

  order        measured order per case (theory's nested grids, windowed fit, verdicts.verdict rules): the claim
               passes only if every case agrees; overall measured order = median over the cases with a window.
  symbolic     crosscheck.symbolic_order of the solver's own `update_rule`; else, when it declares `equivalent`
               (a registered solver with the same update), both are run on the same grids and, when they agree to
               EQUIVALENCE_RTOL, the equivalent's symbolic order is reported. Fails when the declared equivalence
               does not hold or the symbolic order is below the claim.
  nfe          counted denoiser calls (harness.nfe) at every N against the declared `nfe(n)` / `nfe_to_zero(n)`
               or --claimed-nfe-per-step K (K N): exact match.
  point_mass   D(x, sigma) = x0 (a point-mass target): the exact flow is x(sigma') = x0 + (sigma'/sigma)(x - x0).
               Along it dx/dsigma = (x - x0)/sigma = c is constant (x - x0 = sigma c), so every stage of a
               consistent solver sees the same derivative c and the same denoised value x0: an RK step with
               sum b = 1 gives x + (sigma' - sigma) c; a linear multistep step whose weights sum to sigma' - sigma
               gives the same; an exponential integrator x' = (sigma'/sigma) x + sum_j w_j D_j with
               sum_j w_j = 1 - sigma'/sigma gives (sigma'/sigma) x + (1 - sigma'/sigma) x0. All equal the exact
               x0 + sigma' c, so the whole run reproduces the flow up to rounding on any grid: relative error
               (to the largest magnitude carried, max |x|) < IDENTITY_RTOL. A solver stepping in another time
               variable is exact only where the trajectory is affine in it (native time t: s(t)(x0 + sigma(t) c) is
               affine in t for VE and FM, not VP); it may declare `point_mass_exact = False` (with
               `point_mass_note`), and the number is then reported, not judged.
  affine       Gaussian target: D(x, sigma) is affine in x, every stage is an affine combination of affine maps,
               so the solver's map f is affine: f(a x1 + (1 - a) x2) = a f(x1) + (1 - a) f(x2) to rounding.
  float32      the same inputs in float32 and float64 (the denoiser computed in float64 and rounded to the run's
               dtype, so only the solver's arithmetic differs): RMS relative drift at N = 32 and 128 <= F32_LIMIT.
  final_step   a grid ending in 0 (EDM, N = 16 and 64): output finite, counted NFE, W2 to the exact p_0 (exact
               Bures on gauss-4d). Reported; it fails only on non-finite output (its error does not shrink with N:
               the last step has a fixed size).
  determinism  two runs on the same input are bitwise identical, and the input is left unmodified.

Verdict "pass" only if every pass/fail item passes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

#: a declared equivalence holds when the outputs agree to this relative difference (max-abs over max-abs): two
#: implementations of one update differ only by rounding, ~N * 1e-16 for N <= 32 steps; a different coefficient
#: shows at the size of the local error, >= 1e-8 on these grids (k-diffusion 3M-SDE vs dpmpp_3m: 1e-5)
EQUIVALENCE_RTOL = 1e-10
#: exactness identities: float64 rounding of a run relative to the largest magnitude carried is ~ (steps x
#: operations per step) x 1.1e-16 <= 16 x 20 x 1.1e-16 = 4e-14; 1e-12 leaves 25x room and catches a 1e-6 x^2 term
IDENTITY_RTOL = 1e-12
#: float32 drift: unit roundoff 6e-8 per operation; the PF-ODE flow contracts an error made at sigma by about
#: sqrt(lambda + sigma_min^2)/sqrt(lambda + sigma^2) (the Gaussian flow-map Jacobian), so each step's rounding
#: reaches the output at about its own relative size: ~N x 6e-8 = 8e-6 at N = 128, and 1e-4 allows a growth of 10
F32_LIMIT = 1e-4
F32_NS = (32, 128)
FINAL_NS = (16, 64)
EQUIVALENCE_GRIDS = (("edm", 8), ("edm", 16), ("edm", 32), ("logsnr", 16))
ITEMS = ("order", "symbolic", "nfe", "point_mass", "affine", "float32", "final_step", "determinism")
#: configurations per process for solvers that expose `processes` (sigma-defined grids: any process can use them)
PROCESS_CONFIGS = (("gauss-4d", "edm"), ("gmm-8d", "edm"), ("gmm-8d", "logsnr"))
QUICK_CONFIGS = (("gmm-8d", "edm"), ("gmm-8d", "logsnr"))


@dataclass
class Item:
    """One conformance item: status "pass" / "fail" (judged), "info" (reported only) or "n/a"."""

    name: str
    status: str
    value: str
    limit: str
    detail: str
    data: dict = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.status in ("pass", "fail")

    def to_dict(self) -> dict:
        return dict(name=self.name, status=self.status, value=self.value, limit=self.limit, detail=self.detail)


@dataclass
class ConformanceResult:
    spec: str
    name: str
    claimed_order: float
    claimed_nfe_per_step: float | None
    items: dict[str, Item]
    cases: list  # harness.results.CaseResult, one per (process, target, schedule)
    config: dict | None = None

    @property
    def failed(self) -> list[str]:
        return [n for n, it in self.items.items() if it.status == "fail"]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"

    def measured_orders(self) -> dict:
        return self.items["order"].data["measured_order"]

    def to_json(self) -> dict:
        """The JSON document of `sdm-verify validate --json`."""
        it = self.items
        per_step = sorted({c["nfe_per_step"][-1] for c in _case_dicts(self.cases)})
        return dict(
            solver=self.name, spec=self.spec, config=self.config, claimed_order=self.claimed_order,
            claimed_nfe_per_step=self.claimed_nfe_per_step, measured_order=self.measured_orders(),
            nfe=it["nfe"].data, nfe_per_step=per_step[0] if len(per_step) == 1 else per_step,
            symbolic=it["symbolic"].data or None,
            identities={"point_mass": it["point_mass"].data, "affine": it["affine"].data},
            float32_drift=it["float32"].data, final_step=it["final_step"].data,
            determinism=it["determinism"].data, items=[i.to_dict() for i in it.values()], failed=self.failed,
            verdict=self.verdict, cases=_case_dicts(self.cases))

    def case_table(self) -> str:
        header = ["process/target/schedule", "N", "NFE/step", "measured [CI]", "verdict", "reason"]
        rows = []
        for r, c in zip(self.cases, _case_dicts(self.cases), strict=True):
            m = r.measurement
            rows.append([f"{m.process}/{m.target}/{m.schedule}", f"{m.ns[0]}..{m.ns[-1]}",
                         f"{c['nfe_per_step'][-1]:g}",
                         f"{m.order:.2f} [{m.ci[0]:.2f}, {m.ci[1]:.2f}]" if m.ok else "no window", r.verdict,
                         r.reason])
        return _format(header, rows)

    def item_table(self) -> str:
        rows = [[i.name, i.status, i.value, i.limit, i.detail] for i in self.items.values()]
        return _format(["item", "status", "value", "limit", "detail"], rows)

    def table(self) -> str:
        """The verdict table printed by the CLI: per-case orders, then one row per item, then the verdict."""
        head = f"solver {self.name}: claimed order {self.claimed_order:g}"
        tail = (f"VERDICT: {self.verdict.upper()}" + (f" (failed: {', '.join(self.failed)})" if self.failed else ""))
        return "\n".join([head, "", self.case_table(), "", self.item_table(), "", tail])


def _format(header, rows) -> str:
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False)) + "  " + str(row[-1])
                     for row in [header, *rows])


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _case_dicts(results) -> list[dict]:
    out = []
    for r in results:
        m = r.measurement
        out.append(dict(target=m.target, process=m.process, schedule=m.schedule, ns=m.ns, nfe=m.nfe,
                        nfe_per_step=[nf / n for nf, n in zip(m.nfe, m.ns, strict=True)], metric=m.metric,
                        errors=[_finite(e) for e in m.errors], floor=m.floor, measured_order=m.order,
                        ci=list(m.ci) if m.ci else None, window=list(m.fit.window) if m.fit.window else None,
                        slopes=[_finite(s) for s in m.slopes], verdict=r.verdict, agrees=r.verdict == "agree",
                        reason=r.reason))
    return out


# ------------------------------------------------------------------------------------------- the check


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False)

    def step(self, k: int = 1) -> None:
        self.bar.update(k)

    def close(self) -> None:
        self.bar.close()


def check(spec_or_solver, claimed_order: float | None = None, config: dict | None = None, *,
          claimed_nfe_per_step: float | None = None, targets=None, quick: bool = False,
          progress: bool = True) -> ConformanceResult:
    """Run every conformance item on a solver: a SPEC string (sdm_verify.adapters.spec), a LoadedSolver or a
    callable solver(denoiser, x, sigmas). `claimed_order` defaults to the solver's declared `order`; `targets`
    restricts the order measurements; `quick` measures orders on gmm-8d (EDM and logSNR grids) only."""
    from .adapters import spec as specs

    loaded = _resolve(spec_or_solver, config)
    solver = loaded.solver
    claimed = _claimed_order(solver, claimed_order)
    if claimed_nfe_per_step is not None and (isinstance(claimed_nfe_per_step, bool) or not isinstance(
            claimed_nfe_per_step, (int, float)) or not claimed_nfe_per_step > 0):
        raise ValueError(f"claimed_nfe_per_step: must be a positive number (got {claimed_nfe_per_step!r})")
    variants = _variants(solver)
    plan = _order_plan(loaded, variants, claimed, targets, quick)
    if not plan:
        raise specs.SpecError(f"targets: no order configuration left for targets {list(targets or [])}")
    n_other = len(variants) * (2 + 2 + len(F32_NS) * 2 + 1) + len(FINAL_NS) + len(EQUIVALENCE_GRIDS) * 2
    bar = _Progress(sum(len(ns) for *_, ns in plan) + n_other, f"validate {loaded.name}", progress)
    try:
        pairs = _measure_orders(loaded, plan, claimed, bar)
        items = {"symbolic": symbolic_check(solver, claimed, bar)}
        final = final_step_check(solver, bar)
        items["nfe"] = _nfe_item(pairs, variants, solver, claimed_nfe_per_step, final.data)
        items["point_mass"] = _per_variant("point_mass", variants, point_mass_check, bar)
        items["affine"] = _per_variant("affine", variants, affine_check, bar)
        items["float32"] = _per_variant("float32", variants, float32_check, bar)
        items["final_step"] = final
        items["determinism"] = _per_variant("determinism", variants, determinism_check, bar)
    finally:
        bar.close()
    from .harness.results import results_from

    results = results_from(pairs, {loaded.name: items["symbolic"].data or None})
    raised = next((r["detail"] for _, rows in pairs for r in rows if r.get("status") == "error"), None)
    items = {"order": _order_item(results, claimed, raised), **items}
    items = {name: items[name] for name in ITEMS}
    return ConformanceResult(loaded.spec, loaded.name, claimed, claimed_nfe_per_step, items, results, config)


def _resolve(spec_or_solver, config):
    from .adapters import spec as specs

    if isinstance(spec_or_solver, specs.LoadedSolver):
        return spec_or_solver
    if isinstance(spec_or_solver, str):
        return specs.load(spec_or_solver, config)
    name = str(getattr(spec_or_solver, "name", None) or getattr(spec_or_solver, "__name__", None)
               or type(spec_or_solver).__name__)
    specs.check_callable(spec_or_solver, name)
    return specs.LoadedSolver(name, name, spec_or_solver)


def _claimed_order(solver, claimed_order) -> float:
    if claimed_order is None:
        claimed_order = getattr(solver, "order", None)
        if claimed_order is None or isinstance(claimed_order, bool) or not isinstance(claimed_order, (int, float)):
            raise ValueError("claimed_order: required, the solver declares no numeric `order`")
    if isinstance(claimed_order, bool) or not isinstance(claimed_order, (int, float)) or not (
            math.isfinite(claimed_order) and claimed_order > 0):
        raise ValueError(f"claimed_order: must be a positive number (got {claimed_order!r})")
    return float(claimed_order)


def _variants(solver) -> list[tuple[str | None, object]]:
    """(process, solver) pairs: one per declared process, or (None, solver) for a canonical solver."""
    processes = getattr(solver, "processes", None)
    if processes and callable(getattr(solver, "with_process", None)):
        return [(p, solver.with_process(p)) for p in processes]
    return [(None, solver)]


def _sigma_range(solver) -> tuple[float, float]:
    from .harness.sweep import SIGMA_MAX, SIGMA_MIN

    rng = getattr(solver, "sigma_range", None)
    if not rng:
        return SIGMA_MIN, SIGMA_MAX
    lo, hi = float(rng[0]), float(rng[1])
    return max(lo, SIGMA_MIN), min(hi, SIGMA_MAX)


def _grid(schedule: str, n: int, process: str | None, lo: float, hi: float, zero: bool = False) -> torch.Tensor:
    from analytic import processes as oracle_processes

    from . import schedules

    params = {}
    if schedules.uses_process(schedule):
        params["process"] = oracle_processes.get(process or "ve")
    return schedules.get(schedule)(n, lo, hi, zero=zero, **params)


# ------------------------------------------------------------------------------------------- 1. orders


def _order_plan(loaded, variants, claimed, targets, quick):
    """[(process label, solver, target, grid process, schedule, ns)] of the order measurements."""
    from . import solvers
    from .harness import cases as theory

    native = loaded.registered is not None and solvers.needs_process(loaded.registered)
    plan = []
    for process, solver in variants:
        if process is None:
            configs = [(t, p, s) for t, p, s in theory.validation_configs(claimed)
                       if not quick or (t, s) in QUICK_CONFIGS]
        else:
            configs = [(t, process, s) for t, s in (QUICK_CONFIGS if quick else PROCESS_CONFIGS)]
        for target, proc, schedule in configs:
            if targets and target not in targets:
                continue
            plan.append((proc, solver, target, proc if process is not None else None, schedule,
                         theory.grid_sizes(target, claimed, native=native)))
    return plan


def _run_row(solver, target, sigmas, sigma_to) -> dict:
    from .harness.run import measure_run

    try:
        return measure_run(solver, target, sigmas, sigma_to)
    except Exception as exc:  # an outside solver that raises: no error for this N, the reason kept
        return dict(error=math.inf, status="error", detail=f"{type(exc).__name__}: {exc}", nfe=0, runs=0, wall=0.0,
                    metric="?", floor=0.0)


def _measure_orders(loaded, plan, claimed, bar) -> list[tuple[dict, list[dict]]]:
    from . import schedules
    from .harness.results import solver_family

    family = solver_family(loaded.solver)
    cache: dict[tuple, dict] = {}  # a canonical solver on sigma-defined grids: VE and VP share cells
    pairs = []
    for label, solver, target, grid_process, schedule, ns in plan:
        lo, hi = _sigma_range(solver)
        key_process = grid_process if grid_process is not None else (
            label if schedules.uses_process(schedule) else "any")
        rows = []
        for n in ns:
            key = (target, key_process, schedule, n, lo, hi)
            if key not in cache:
                cache[key] = _run_row(solver, target, _grid(schedule, n, label, lo, hi), lo)
            rows.append({"n": n, **cache[key]})
            _step(bar)
        pairs.append((dict(solver=loaded.name, target=target, process=label, schedule=schedule, claimed=claimed,
                           family=family), rows))
    return pairs


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _order_item(results, claimed, raised: str | None = None) -> Item:
    ok = [r for r in results if r.measurement.ok]
    by_process, by_schedule = {}, {}
    for r in ok:
        by_process.setdefault(r.measurement.process, []).append(r.measurement.order)
        by_schedule.setdefault(r.measurement.schedule, []).append(r.measurement.order)
    measured = dict(overall=_median([r.measurement.order for r in ok]),
                    per_process={p: _median(v) for p, v in by_process.items()},
                    per_schedule={s: _median(v) for s, v in by_schedule.items()},
                    rule="median over the cases with an asymptotic window")
    n_agree = sum(r.verdict == "agree" for r in results)
    bad = [f"{r.measurement.process}/{r.measurement.target}/{r.measurement.schedule}: {r.reason}"
           for r in results if r.verdict != "agree"]
    fmt = lambda d: ", ".join(f"{k} {v:.2f}" for k, v in d.items() if v is not None) or "—"  # noqa: E731
    detail = (f"{n_agree}/{len(results)} cases agree; per process {fmt(measured['per_process'])}; per schedule "
              f"{fmt(measured['per_schedule'])}" + ("; " + "; ".join(bad) if bad else "")
              + (f"; the solver raised {raised}" if raised else ""))
    overall = measured["overall"]
    return Item("order", "pass" if n_agree == len(results) else "fail",
                "—" if overall is None else f"{overall:.2f}", f"claimed {claimed:g} (verdicts.verdict)", detail,
                dict(measured_order=measured, agree=n_agree, cases=len(results)))


# ------------------------------------------------------------------------------------------- 2. symbolic


def symbolic_check(solver, claimed: float, bar=None) -> Item:
    """Item 2: the symbolic order of the solver's own update_rule, or of its declared equivalent once both give the
    same outputs (to EQUIVALENCE_RTOL) on EQUIVALENCE_GRIDS; fails if the equivalence does not hold or the symbolic
    order (general grids) is below `claimed`."""
    from . import solvers
    from .harness.symbolic_order import has_rule, symbolic_order

    if has_rule(solver):
        _step(bar, len(EQUIVALENCE_GRIDS) * 2)
        try:
            sym = symbolic_order(solver)
        except Exception as exc:
            return Item("symbolic", "fail", "—", "", f"the update_rule cannot be expanded ({type(exc).__name__}: "
                        f"{exc})", dict(source="update_rule", error=str(exc)))
        return _judge_symbolic(sym, claimed, dict(source="update_rule"), "its own update_rule")
    equivalent = getattr(solver, "equivalent", None)
    if not equivalent:
        _step(bar, len(EQUIVALENCE_GRIDS) * 2)
        return Item("symbolic", "n/a", "—", "", "no update_rule and no declared equivalent")
    if equivalent not in solvers.available():
        _step(bar, len(EQUIVALENCE_GRIDS) * 2)
        return Item("symbolic", "fail", "—", "", f"declared equivalent {equivalent!r} is not a registered solver",
                    dict(source="equivalent", equivalent=equivalent))
    twin = _twin(solver, equivalent)
    rel, where = _max_difference(solver, twin, bar)
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
    return _judge_symbolic(sym, claimed, data, f"same update as {equivalent} (max relative difference {rel:.1e})")


def _twin(solver, equivalent: str):
    """The registered solver `equivalent` names, configured as the adapter says (`equivalent_solver()` or
    `equivalent_params`, e.g. diffusers' lower_order_final), else with its defaults."""
    from . import solvers

    make = getattr(solver, "equivalent_solver", None)
    if callable(make):
        twin = make()
        if twin is not None:
            return twin
    return solvers.get(equivalent, **dict(getattr(solver, "equivalent_params", None) or {}))


def _judge_symbolic(sym, claimed, data, source) -> Item:
    data.update(sym.to_dict())
    ok = sym.general >= claimed - 1e-9
    return Item("symbolic", "pass" if ok else "fail", str(sym.general), f">= claimed {claimed:g}",
                f"{source}: symbolic order {sym.general} on general grids, {sym.uniform} on uniform steps "
                f"({sym.scope}); leading error {sym.leading_general}", data)


def _max_difference(solver, twin, bar) -> tuple[float, str]:
    from .harness import targets

    target = targets.get("gmm-8d")
    lo, hi = _sigma_range(solver)
    x = target.sample(16, sigma=hi, generator=torch.Generator().manual_seed(1))
    worst, where = 0.0, ""
    for schedule, n in EQUIVALENCE_GRIDS:
        sigmas = _grid(schedule, n, None, lo, hi)
        try:
            a = solver(target.denoiser, x.clone(), sigmas)
        except Exception as exc:
            _step(bar, 2)
            return math.inf, f"{schedule} N={n}: the solver raised {type(exc).__name__}: {exc}"
        _step(bar)
        b = twin(target.denoiser, x.clone(), sigmas)
        _step(bar)
        rel = float((a.to(torch.float64) - b).abs().max() / b.abs().max())
        if not math.isfinite(rel):
            return math.inf, f"{schedule} N={n}: non-finite output"
        if rel >= worst:
            worst, where = rel, f"{schedule} N={n}"
    return worst, where


# ------------------------------------------------------------------------------------------- 3. NFE


def _nfe_item(pairs, variants, base, claimed_k, final: dict) -> Item:
    counted = {}
    for case, rows in pairs:
        for r in rows:
            if r.get("status") != "error":
                counted.setdefault(case["process"], {})[int(r["n"])] = int(r["nfe"])
    solvers_by_process = dict(variants)
    mismatches, declared = [], None
    expected_all = {}
    for process, by_n in counted.items():
        solver = solvers_by_process.get(process, variants[0][1])
        fn = getattr(solver, "nfe", None)
        for n, nfe in sorted(by_n.items()):
            if claimed_k is not None:
                expected, declared = claimed_k * n, f"--claimed-nfe-per-step {claimed_k:g}"
            elif callable(fn):
                try:
                    expected, declared = fn(n), "nfe(n)"
                except Exception:
                    expected = None
            else:
                expected = None
            if expected is not None:
                expected_all.setdefault(process, {})[n] = expected
                if expected != nfe:
                    mismatches.append(f"{process}: N={n} counted {nfe}, declared {expected:g}")
    to_zero = final.get("runs", [])
    fz = getattr(base, "nfe_to_zero", None)
    for run in to_zero:
        if callable(fz) and run.get("nfe") is not None:
            declared = declared or "nfe_to_zero(n)"
            run["declared_nfe"] = fz(run["n"])
            if run["declared_nfe"] != run["nfe"]:
                mismatches.append(f"grid into 0, N={run['n']}: counted {run['nfe']}, declared {run['declared_nfe']}")
    per_step = sorted({nfe / n for by_n in counted.values() for n, nfe in by_n.items()})
    data = dict(counted={str(p): {str(n): v for n, v in by_n.items()} for p, by_n in counted.items()},
                declared={str(p): {str(n): v for n, v in by_n.items()} for p, by_n in expected_all.items()},
                source=declared, per_step=per_step, mismatches=mismatches)
    value = "/".join(f"{k:g}" for k in per_step) + " per step" if per_step else "—"
    if declared is None:
        return Item("nfe", "info", value, "none declared", "counted only (declare nfe(n) or pass "
                    "--claimed-nfe-per-step to check it)", data)
    return Item("nfe", "fail" if mismatches else "pass", value, f"= {declared} exactly",
                "; ".join(mismatches) if mismatches else f"counted = {declared} at every N", data)


# ------------------------------------------------------------------------------------------- 4-7


def _per_variant(name, variants, fn, bar) -> Item:
    """Run check `fn(solver, bar) -> (ok, value, detail, data)` for every process; the item fails if any does."""
    results = {}
    for process, solver in variants:
        try:
            results[process] = fn(solver, bar)
        except Exception as exc:  # the solver raised on a plain input: that is the finding
            results[process] = (False, math.inf, f"raised {type(exc).__name__}: {exc}", {"error": str(exc)})
    limit = {"point_mass": f"< {IDENTITY_RTOL:.0e}", "affine": f"< {IDENTITY_RTOL:.0e}",
             "float32": f"<= {F32_LIMIT:.0e}", "determinism": "bitwise"}[name]
    ok = all(r[0] for r in results.values())
    if len(results) == 1:
        (process, (_, value, detail, data)), = results.items()
        detail = detail if process is None else f"{process}: {detail}"
    else:
        judged = {p: r for p, r in results.items() if r[3].get("judged", True)} or results
        values = [r[1] for r in judged.values()]
        numeric = all(isinstance(v, (int, float)) for v in values)
        value = max(values) if numeric else next((v for v in values if v != "identical"), "identical")
        worst = max(judged, key=lambda p: judged[p][1]) if numeric else next(iter(judged))
        detail = ("per process " + ", ".join(f"{p} {('ok' if r[0] else 'FAILED') if p in judged else 'not judged'} "
                                             f"{r[1] if isinstance(r[1], str) else format(r[1], '.1e')}"
                                             for p, r in results.items()) + f"; worst ({worst}): {results[worst][2]}"
                  + "".join(f"; {p}: {r[2]}" for p, r in results.items() if p not in judged))
        data = {str(p): r[3] for p, r in results.items()}
    shown = value if isinstance(value, str) else f"{value:.1e}"
    return Item(name, "pass" if ok else "fail", shown, limit, detail, data)


def _step(bar, k: int = 1) -> None:
    if bar is not None:
        bar.step(k)


def _relative(a: torch.Tensor, b: torch.Tensor, *scales: torch.Tensor) -> float:
    a, b = a.to(torch.float64), b.to(torch.float64)
    scale = max(float(s.abs().max()) for s in (b, *scales))
    err = float((a - b).abs().max())
    return err / scale if math.isfinite(err) else math.inf


def _irregular_grid(lo: float, hi: float, n: int = 11, seed: int = 3) -> torch.Tensor:
    """A strictly decreasing grid from hi to lo with random interior points in log sigma (non-uniform steps)."""
    g = torch.Generator().manual_seed(seed)
    inner = torch.sort(torch.rand(n - 1, dtype=torch.float64, generator=g), descending=True).values
    logs = math.log(lo) + inner * (math.log(hi) - math.log(lo))
    return torch.cat([torch.tensor([hi], dtype=torch.float64), logs.exp(), torch.tensor([lo], dtype=torch.float64)])


def point_mass_check(solver, bar=None):
    """Item 4a (see the module docstring) -> (ok, worst relative error, detail, data)."""
    lo, hi = _sigma_range(solver)
    x0 = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64)
    x = x0 + hi * torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def denoiser(y, sigma):
        return x0.to(y.dtype).expand_as(y).clone()

    worst, parts = 0.0, []
    for label, sigmas in (("edm N=12", _grid("edm", 12, None, lo, hi)), ("irregular N=11", _irregular_grid(lo, hi))):
        out = solver(denoiser, x.clone(), sigmas)
        exact = x0 + (float(sigmas[-1]) / float(sigmas[0])) * (x - x0)
        rel = _relative(out, exact, x)
        worst = max(worst, rel)
        parts.append(f"{label} {rel:.1e}")
        _step(bar)
    detail = "relative error to the exact flow: " + ", ".join(parts)
    data = dict(relative_error=worst, limit=IDENTITY_RTOL, grids=parts, judged=True)
    if getattr(solver, "point_mass_exact", True) is False:  # declared: steps in a variable the flow is not affine in
        data["judged"] = False
        note = getattr(solver, "point_mass_note", "the solver declares point_mass_exact = False")
        return True, worst, f"{detail} (reported, not judged: {note})", data
    return worst < IDENTITY_RTOL, worst, detail, data


def affine_check(solver, bar=None):
    """Item 4b: affinity on the Gaussian target gauss-4d -> (ok, worst relative error, detail, data)."""
    from .harness import targets

    target = targets.get("gauss-4d")
    lo, hi = _sigma_range(solver)
    g = torch.Generator().manual_seed(4)
    x1, x2 = target.sample(16, sigma=hi, generator=g), target.sample(16, sigma=hi, generator=g)
    worst, parts = 0.0, []
    for a, sigmas in ((0.3, _grid("edm", 16, None, lo, hi)), (-1.5, _irregular_grid(lo, hi, seed=5))):
        f1, f2 = solver(target.denoiser, x1.clone(), sigmas), solver(target.denoiser, x2.clone(), sigmas)
        fm = solver(target.denoiser, a * x1 + (1 - a) * x2, sigmas)
        rel = _relative(fm, a * f1.to(torch.float64) + (1 - a) * f2.to(torch.float64), x1, x2, f1, f2)
        worst = max(worst, rel)
        parts.append(f"a={a:g} {rel:.1e}")
        _step(bar)
    return worst < IDENTITY_RTOL, worst, "f(a x1 + (1-a) x2) vs a f(x1) + (1-a) f(x2), relative: " + ", ".join(
        parts), dict(relative_error=worst, limit=IDENTITY_RTOL, cases=parts)


def float32_check(solver, bar=None):
    """Item 5: RMS relative float32 - float64 drift at F32_NS on gmm-8d -> (ok, worst drift, detail, data)."""
    from .harness import targets

    target = targets.get("gmm-8d")
    lo, hi = _sigma_range(solver)
    x = target.sample(64, sigma=hi, generator=torch.Generator().manual_seed(6))

    def denoiser(y, sigma):
        return target.denoiser(y, sigma).to(y.dtype)

    drift, parts = {}, []
    for n in F32_NS:
        sigmas = _grid("edm", n, None, lo, hi)
        y64 = solver(denoiser, x.clone(), sigmas)
        _step(bar)
        y32 = solver(denoiser, x.to(torch.float32), sigmas)
        _step(bar)
        if y32.dtype != torch.float32:
            return False, math.inf, f"a float32 input came back as {y32.dtype}", dict(dtype=str(y32.dtype))
        diff = (y32.to(torch.float64) - y64.to(torch.float64)).pow(2).sum(-1).mean().sqrt()
        value = float(diff / y64.to(torch.float64).pow(2).sum(-1).mean().sqrt())
        drift[str(n)] = value if math.isfinite(value) else None
        parts.append(f"N={n} {value:.1e}")
    worst = max(v if v is not None else math.inf for v in drift.values())
    return worst <= F32_LIMIT, worst, "RMS relative float32 - float64 drift: " + ", ".join(parts), dict(
        drift=drift, limit=F32_LIMIT)


def final_step_check(solver, bar=None) -> Item:
    """Item 6: EDM grids into 0 at FINAL_NS on gauss-4d: finite output, counted NFE, exact Bures W2 to p_0."""
    if getattr(solver, "steps_into_zero", True) is False:  # a method defined only above sigma = 0 (diffusers DEIS)
        why = getattr(solver, "final_step", "") or "declared steps_into_zero = False"
        return Item("final_step", "n/a", "—", "finite", f"the solver takes no step into sigma = 0 ({why})",
                    dict(runs=[], finite=None, target="gauss-4d", schedule="edm"))
    lo, hi = _sigma_range(solver)
    runs, finite = [], True
    for n in FINAL_NS:
        sigmas = _grid("edm", n, None, lo, hi, zero=True)
        row = _run_row(solver, "gauss-4d", sigmas, 0.0)
        _step(bar)
        err = float(row["error"])
        ok = row["status"] == "ok" and math.isfinite(err)
        finite = finite and ok
        runs.append(dict(n=n, nfe=int(row["nfe"]) if ok else None, w2_to_p0=err if math.isfinite(err) else None,
                         status=row["status"], detail=row.get("detail", "")))
    detail = "W2 to the exact p_0 (gauss-4d, EDM grid into 0): " + ", ".join(
        f"N={r['n']} {r['w2_to_p0']:.2e} ({r['nfe']} NFE)" if r["w2_to_p0"] is not None
        else f"N={r['n']} non-finite ({r['status']}: {r['detail']})" for r in runs)
    value = "finite" if finite else "NON-FINITE"
    return Item("final_step", "info" if finite else "fail", value, "finite", detail,
                dict(runs=runs, finite=finite, target="gauss-4d", schedule="edm"))


def determinism_check(solver, bar=None):
    """Item 7: two runs bitwise identical, input unmodified -> (ok, "identical" / "differs", detail, data)."""
    from .harness import targets

    target = targets.get("gmm-8d")
    lo, hi = _sigma_range(solver)
    x = target.sample(16, sigma=hi, generator=torch.Generator().manual_seed(7))
    sigmas = _grid("edm", 16, None, lo, hi)
    given = x.clone()
    y1 = solver(target.denoiser, given, sigmas)
    y2 = solver(target.denoiser, x.clone(), sigmas)
    _step(bar)
    same = y1.shape == y2.shape and y1.dtype == y2.dtype and torch.equal(_bits(y1), _bits(y2))
    untouched = torch.equal(given, x)
    detail = ("two runs bitwise identical" if same else "two runs on the same input DIFFER") + (
        "; input unmodified" if untouched else "; the solver MODIFIED its input x in place")
    return same and untouched, "identical" if same and untouched else "differs", detail, dict(
        identical=bool(same), input_unmodified=bool(untouched))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (NaN payloads compare equal to themselves)."""
    t = t.contiguous()
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])
