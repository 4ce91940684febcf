"""The conformance check on the classifier-free-guided field: `sdm-verify validate SPEC --guidance W`.

Convention (docs/guidance.md §1): D_w = D_u + w (D_c - D_u), w >= 0 finite; diffusers' `guidance_scale` and the
k-diffusion CFG wrappers' `cond_scale` are this w (Ho & Salimans' w is w - 1). The sampler starts from the exact
conditional noisy law p_sigma_max(x | c), as a guided sampling run does, and is measured against the exact output
law of the guided PF-ODE. Guidance targets (`TARGETS`):

  guided-gauss-4d  a joint Gaussian (analytic.guidance_joint): p(x) = gauss-4d, p(x | c) Gaussian with commuting
                   covariance. D_w is affine, so the sampler is affine (x -> M x + c, read off d + 1 probes) and its
                   error is the exact Bures W2 against JointGaussianGuidance.guided_flow_law; judged as the linear
                   Gaussian target (measured >= claimed - 0.2). At w = 1 the exact law is the conditional marginal
                   p_sigma_min(x | c) itself (what harness.meters.GaussianMeter measures on p(x | c)).
  guided-gmm-8d    gmm-8d with labels (0, 1, 1), c = 1 (analytic.guidance.LabelledMixture): the synchronous RMS error
                   over 64 draws against analytic.guidance.guided_reference_flow (DOP853, rtol = atol = 1e-12); its
                   floor MIXTURE_FLOOR = 1e-12 (measured: 7.6e-13 max-abs between rtol 1e-12 and 1e-13 at w = 7.5;
                   docs/guidance.md §4 measures <= 6.5e-13 against the closed form). At w = 1 the reference equals
                   reference_flow on p(x | c) bit for bit.

How the sampler receives the guidance (`applied`), one "model call" (NFE) = one batched call of both branches, as a
pipeline batches them (the conditional branch alone also counts one):
  - a registered solver or a callable: the guided denoiser D_w, evaluated as (1 - w) D_u + w D_c (bitwise D_c at
    w = 1, so --guidance 1 is exactly the conditional check);
  - a k-diffusion sampler: a CFGDenoiser wrapper (the user-code pattern; k-diffusion ships none): one inner call on
    cat([x, x]) with the (uncond, cond) branches, chunked and combined in the same form;
  - a diffusers scheduler: its fake network returns out_u + g (out_c - out_u) from the two branches' outputs, as
    pipeline_stable_diffusion does, and for g <= 1 the conditional branch alone (the effective scale is then 1).

Items on the guided field: order, nfe (the counted model calls), final_step (into 0 on the joint Gaussian, W2 to the
exact guided law) and `guidance` (the output law at the finest grid is nearer the guided law than the conditional
(w = 1) and unguided (w = 0) laws: a solver that forgets the guidance fails it). symbolic, point_mass, affine, float32
and determinism are properties of the update rule, not of the field: they run as in the unguided check.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cache, lru_cache

import torch

from analytic.guidance import LabelledMixture, guided_reference_flow
from analytic.guidance_joint import JointGaussianGuidance
from analytic.wasserstein import bures_w2

from ..errors import InputError, SolverDivergedError
from ..harness import cases as theory
from ..harness import targets as harness_targets
from ..harness import verdicts
from ..harness.meters import GaussianMeter, Meter, SyncMeter, _sqrtm
from ..harness.results import results_from, solver_family
from ..harness.run import decides_on_data, decision_batch, freeze_decisions
from . import declared
from .context import Context, Progress
from .items import CHECKS, ITEMS, affine, determinism, float32, point_mass, symbolic
from .items.final_step import FINAL_NS
from .probing import grid, sigma_bounds, unreadable_row
from .result import ConformanceResult, Item

CONVENTION = ("D_w = D_u + w (D_c - D_u) (docs/guidance.md §1): diffusers guidance_scale = k-diffusion cond_scale = w; "
              "Ho & Salimans' w = w - 1")
NFE_COUNTING = ("one model call = one batched call of both branches (unconditional, conditional), as pipelines batch "
                "them; the conditional branch alone (diffusers at guidance_scale <= 1) is one call too")
JOINT, MIXTURE = "guided-gauss-4d", "guided-gmm-8d"
BASE = {JOINT: "gauss-4d", MIXTURE: "gmm-8d"}
LABELS, LABEL = (0, 1, 1), 1
MIXTURE_FLOOR = 1e-12
TARGETS = {
    JOINT: dict(kind="joint Gaussian (gauss-4d and a conditional with commuting covariance)", metric="bures_w2",
                law="JointGaussianGuidance.guided_flow_law (closed form)", floor=GaussianMeter.floor),
    MIXTURE: dict(kind=f"labelled mixture (gmm-8d, labels {LABELS}, c = {LABEL})", metric="sync_rms",
                  law="guided_reference_flow (DOP853, rtol = atol = 1e-12)", floor=MIXTURE_FLOOR),
}
CONFIGS = ((JOINT, "edm"), (JOINT, "logsnr"), (MIXTURE, "edm"), (MIXTURE, "logsnr"))
QUICK_CONFIGS = ((JOINT, "edm"), (MIXTURE, "edm"))
GUIDED_ITEMS = ("order", "nfe", "final_step", "guidance")


def check_scale(w, name: str = "guidance") -> float:
    """A guidance scale: a finite real number >= 0 (bool, NaN, inf and negative refused, naming `name`)."""
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise InputError(f"{name}: the guidance scale must be a finite number >= 0 (got {w!r})")
    return float(w)


@cache
def joint_target() -> JointGaussianGuidance:
    """p(x) = gauss-4d; p(x | c): its eigenbasis, variances scaled by (0.5, 0.4, 0.3, 0.25), mean shifted."""
    g = harness_targets.get("gauss-4d")
    lam, U = g.eigvals[0], g.eigvecs[0]
    mean_c = g.means[0] + U @ torch.tensor([0.3, -0.5, 0.6, 0.8], dtype=torch.float64)
    return JointGaussianGuidance.commuting(g.means[0], lam, mean_c,
                                           lam * torch.tensor([0.5, 0.4, 0.3, 0.25], dtype=torch.float64), basis=U)


@cache
def labelled_target() -> LabelledMixture:
    return LabelledMixture(harness_targets.get("gmm-8d"), LABELS)


def _laws(target: str):
    """(unconditional, conditional) laws of a guidance target (analytic GaussianMixtures)."""
    if target == JOINT:
        jg = joint_target()
        return jg.unconditional, jg.conditional
    lm = labelled_target()
    return lm.mixture, lm.conditional(LABEL)


class Guided:
    """What the sampler is handed: the guided denoiser at scale `guidance_scale`, with its two branches (`branches`,
    `conditional`) for a diffusers scheduler (adapters.diffusers.solver.guidance_of). `nfe` counts model calls: one
    per batched call of both branches, one per call of the conditional branch alone. `cfg_denoiser=True` evaluates
    as a k-diffusion CFGDenoiser does: one inner call on cat([x, x]), chunked into (uncond, cond)."""

    def __init__(self, target: str, w: float, cfg_denoiser: bool = False):
        self.uncond, self.cond = (law.denoiser for law in _laws(target))
        self.guidance_scale, self.cfg_denoiser, self.nfe = float(w), cfg_denoiser, 0
        self.cfg_pair = self

    def branches(self, x, sigma):
        self.nfe += 1
        return self.uncond(x, sigma), self.cond(x, sigma)

    def conditional(self, x, sigma):
        self.nfe += 1
        return self.cond(x, sigma)

    def __call__(self, x, sigma):
        w = self.guidance_scale
        if self.cfg_denoiser:
            self.nfe += 1
            x_in, b = torch.cat([x, x]), x.shape[0]
            out = torch.cat([self.uncond(x_in[:b], sigma), self.cond(x_in[b:], sigma)])
            d_u, d_c = out.chunk(2)
        else:
            d_u, d_c = self.branches(x, sigma)
        return (1.0 - w) * d_u + w * d_c  # the oracle's form: exactly D_c at w = 1 (docs/guidance.md §1)


def applied(solver, w: float) -> tuple[str, float, str]:
    """(path, effective scale, how the guidance is applied) for `solver`."""
    from ..adapters.diffusers.solver import DiffusersSolver
    from ..adapters.kdiffusion import KDiffusionSolver

    if isinstance(solver, DiffusersSolver):
        if w <= 1:
            return "diffusers", 1.0, (f"diffusers pipeline rule: guidance_scale {w:g} <= 1 runs the conditional branch "
                                      "alone (effective scale 1: the conditional check)")
        return "diffusers", w, (f"diffusers pipeline: network output out_u + {w:g} (out_c - out_u), both branches "
                                "batched")
    if isinstance(solver, KDiffusionSolver):
        return "k-diffusion", w, f"k-diffusion CFGDenoiser wrapper: D_u + {w:g} (D_c - D_u) on one cat([x, x]) call"
    return "denoiser", w, f"the guided denoiser D_u + {w:g} (D_c - D_u)"


class _JointMeter(GaussianMeter):
    """Bures W2 of the affine sampler started from p_from(x | c) against the exact guided law at sigma_to."""

    def __init__(self, w: float, sigma_from: float, sigma_to: float):
        jg = joint_target()
        super().__init__(jg.conditional, sigma_from, sigma_to)
        self.mean_to = self.mean  # w = 1: the conditional marginal itself, as GaussianMeter on p(x | c)
        if w != 1.0:
            self.mean_to, cov = jg.guided_flow_law(w, self.sigma_from, self.sigma_to, "conditional")
            self._root_to = _sqrtm(cov)

    def bures(self, M, c) -> float:
        return bures_w2(M @ self.mean + c, None, self.mean_to, None, factors=(M @ self._root_from, self._root_to))


class _MixtureMeter(SyncMeter):
    """SyncMeter's 64 draws of p_from(x | c) (seed 0) against the guided DOP853 reference flow."""

    floor = MIXTURE_FLOOR

    def __init__(self, w: float, sigma_from: float, sigma_to: float, n: int = 64, seed: int = 0):
        Meter.__init__(self, labelled_target().conditional(LABEL), sigma_from, sigma_to)
        self.x = self.target.sample(n, sigma=self.sigma_from, generator=torch.Generator().manual_seed(seed))
        self.reference = guided_reference_flow(labelled_target(), LABEL, w, self.x, self.sigma_from, self.sigma_to)


@lru_cache(maxsize=32)
def meter(target: str, w: float, sigma_from: float, sigma_to: float) -> Meter:
    return (_JointMeter if target == JOINT else _MixtureMeter)(w, sigma_from, sigma_to)


def run_row(solver, target: str, w: float, sigmas: torch.Tensor, sigma_to: float) -> dict:
    """One guided run measured: {error, status, detail, nfe, runs, wall, metric, floor} (harness.run.measure_run's
    row). The meter is the one of the effective scale (`applied`); NFE = counted model calls per run."""
    path, w_eff, _ = applied(solver, w)
    m = meter(target, w_eff, float(sigmas[0]), float(sigma_to))
    field = Guided(target, w, cfg_denoiser=path == "k-diffusion")
    runs = [0]
    t0 = time.perf_counter()
    try:
        if decides_on_data(solver):  # freeze its decisions on exact draws of p(x | c), as harness.run does
            batch = decision_batch(_laws(target)[1], float(sigmas[0]))
            solver = freeze_decisions(solver, Guided(target, w, path == "k-diffusion"), batch, sigmas)[0]

        def run(x):
            runs[0] += 1
            return solver(field, x, sigmas)

        error, status, detail = m.measure(run), "ok", ""
    except SolverDivergedError as exc:
        error, status, detail = math.inf, "diverged", str(exc)
    except declared.ClaimError as exc:
        return unreadable_row(exc)
    except Exception as exc:  # an outside solver that raises: no error for this N, the reason kept
        error, status, detail = math.inf, "error", f"{type(exc).__name__}: {exc}"
    return dict(error=error, status=status, detail=detail, nfe=field.nfe // max(runs[0], 1), runs=runs[0],
                wall=time.perf_counter() - t0, metric=m.metric, floor=m.floor)


def plan(ctx: Context, targets=None, quick: bool = False, native: bool = False) -> list[tuple]:
    """(process label, solver, target, schedule, grid sizes) per variant and guided configuration; `targets` keeps
    the configurations whose base target (gauss-4d, gmm-8d) is listed."""
    out = []
    for process, solver in ctx.variants:
        for target, schedule in QUICK_CONFIGS if quick else CONFIGS:
            if targets and BASE[target] not in targets:
                continue
            ns = theory.grid_sizes(BASE[target], ctx.claimed_order, native=native)
            out.append((process or "ve", solver, target, schedule, ns))
    return out


def measure(name: str, planned, ctx: Context, w: float) -> list[tuple[dict, list[dict]]]:
    pairs = []
    for label, solver, target, schedule, ns in planned:
        rows = []
        for n in ns:
            try:
                lo, hi = sigma_bounds(solver)
                row = run_row(solver, target, w, grid(schedule, n, label, lo, hi), lo)
            except declared.ClaimError as exc:
                row = unreadable_row(exc)
            rows.append({"n": n, **row})
            ctx.step()
        pairs.append((dict(solver=name, target=target, process=label, schedule=schedule, claimed=ctx.claimed_order,
                           family=solver_family(solver)), rows))
    return pairs


def judge(measured, symbolic) -> list:
    """harness.results.results_from, with the joint-Gaussian target judged by the linear rule (verdicts.verdict on a
    Gaussian target: measured >= claimed - 0.2)."""
    out = results_from(measured, symbolic)
    for r in out:
        m = r.measurement
        if m.target == JOINT and m.ok and all(math.isfinite(e) for e in m.errors):
            ok, r.reason = verdicts.verdict(m, next(iter(verdicts.GAUSSIAN_TARGETS)))
            r.verdict = "agree" if ok else "deviates"
    return out


def final_step_item(solver, ctx: Context, w: float) -> Item:
    """EDM grids into 0 at FINAL_NS on the joint Gaussian: finite output, counted NFE, exact W2 to the guided law."""
    if not declared.steps_into_zero(solver):
        why = declared.final_step(solver) or "declared steps_into_zero = False"
        return Item("final_step", "n/a", "—", "finite", f"the solver takes no step into sigma = 0 ({why})",
                    dict(runs=[], finite=None, target=JOINT, schedule="edm"))
    lo, hi = sigma_bounds(solver)
    runs = []
    for n in FINAL_NS:
        row = run_row(solver, JOINT, w, grid("edm", n, None, lo, hi, zero=True), 0.0)
        ctx.step()
        ok = row["status"] == "ok" and math.isfinite(row["error"])
        runs.append(dict(n=n, nfe=int(row["nfe"]) if ok else None, w2_to_p0=row["error"] if ok else None,
                         status=row["status"], detail=row["detail"]))
    finite = all(r["w2_to_p0"] is not None for r in runs)
    detail = f"W2 to the exact guided law at 0 ({JOINT}, EDM grid into 0): " + ", ".join(
        f"N={r['n']} {r['w2_to_p0']:.2e} ({r['nfe']} NFE)" if r["w2_to_p0"] is not None
        else f"N={r['n']} non-finite ({r['status']}: {r['detail']})" for r in runs)
    return Item("final_step", "info" if finite else "fail", "finite" if finite else "NON-FINITE", "finite", detail,
                dict(runs=runs, finite=finite, target=JOINT, schedule="edm"))


def guidance_item(solver, ctx: Context, w: float) -> Item:
    """At the finest grid of the joint target (EDM): the output law's W2 to the guided law (scale w_eff), to the
    conditional law (w = 1) and to the unguided flow's law (w = 0). Fails when the guided one is not the nearest."""
    path, w_eff, _how = applied(solver, w)
    ns = theory.grid_sizes("gauss-4d", ctx.claimed_order)
    n = ns[-1]
    lo, hi = sigma_bounds(solver)
    sigmas = grid("edm", n, None, lo, hi)
    field = Guided(JOINT, w, cfg_denoiser=path == "k-diffusion")
    try:
        M, c = meter(JOINT, w_eff, hi, lo).affine(lambda x: solver(field, x, sigmas))
    except Exception as exc:
        return Item("guidance", "fail", "—", "nearest the guided law", f"the solver raised {type(exc).__name__}: "
                    f"{exc}", dict(error=str(exc)))
    finally:
        ctx.step()
    dist = {s: meter(JOINT, s, hi, lo).bures(M, c) for s in dict.fromkeys((w_eff, 1.0, 0.0))}
    guided = dist[w_eff]
    nearest = min(dist, key=dist.get)
    data = dict(n=n, target=JOINT, schedule="edm", effective_scale=w_eff,
                w2={f"{s:g}": (v if math.isfinite(v) else None) for s, v in dist.items()})
    shown = ", ".join(f"w = {s:g} {v:.2e}" for s, v in dist.items())
    detail = f"N={n} ({JOINT}, EDM): W2 of the output law to the exact law at {shown}"
    if math.isfinite(guided) and dist[nearest] >= guided:
        return Item("guidance", "pass", f"{guided:.1e}", "nearest the guided law", detail, data)
    which = {1.0: "the conditional law (w = 1)", 0.0: "the unguided flow's law (w = 0)"}.get(nearest, "another law")
    return Item("guidance", "fail", f"{guided:.1e}", "nearest the guided law",
                f"its output law is {which}, not the guided law at w = {w_eff:g} (W2 {dist[nearest]:.1e} vs "
                f"{guided:.1e}): the solver does not apply the guidance; {detail}", data)


@dataclass
class GuidedResult(ConformanceResult):
    """A ConformanceResult of the check on the guided field; `guidance` states the scale, the convention, how it was
    applied, the NFE counting and the targets (also in to_json()['guidance'])."""

    guidance: dict | None = None

    def to_json(self) -> dict:
        return {**super().to_json(), "guidance": self.guidance}

    def table(self) -> str:
        g = self.guidance
        lines = [f"guidance: w = {g['scale']:g} (effective {g['effective_scale']:g}); {g['convention']}",
                 f"  applied as: {g['applied_as']}", f"  NFE: {g['nfe_counting']}",
                 *(f"  target {t['name']}: {t['kind']}; {t['metric']} against {t['law']}, floor {t['floor']:g}"
                   for t in g["targets"]),
                 f"  items on the guided field: {', '.join(g['items_on_guided_field'])}; on the unguided targets: "
                 f"{', '.join(g['items_unguided'])}"]
        return "\n".join(lines) + "\n\n" + super().table()


def check(loaded, ctx: Context, w: float, config=None, *, targets=None, quick: bool = False,
          progress: bool = True) -> GuidedResult:
    """The conformance check of `loaded` (adapters.spec.LoadedSolver) on the guided field at scale w; `ctx` from
    conformance.check (claimed order, variants). Raises InputError when no configuration is left for `targets`."""
    from .. import solvers

    solver = loaded.solver
    native = loaded.registered is not None and solvers.needs_process(loaded.registered)
    ctx.judge = judge
    planned = [] if ctx.unreadable else plan(ctx, targets, quick, native)
    if not planned and not ctx.unreadable:
        raise InputError(f"targets: no guided configuration left for targets {list(targets or [])} (guidance "
                         f"targets: {', '.join(f'{t} (--targets {b})' for t, b in BASE.items())})")
    runs = (sum(len(p[-1]) for p in planned) + len(FINAL_NS) + 1 + symbolic.RUNS
            + len(ctx.variants) * (point_mass.RUNS + affine.RUNS + float32.RUNS + determinism.RUNS))
    ctx.bar = Progress(runs, f"validate {loaded.name} --guidance {w:g}", progress)
    own = {"final_step": final_step_item, "guidance": guidance_item}
    try:
        ctx.measured = measure(loaded.name, planned, ctx, w)
        for name in ("symbolic", "final_step", "nfe", "point_mass", "affine", "float32", "determinism", "guidance",
                     "order"):
            try:
                ctx.items[name] = own[name](solver, ctx, w) if name in own else CHECKS[name](solver, ctx)
            except declared.ClaimError as exc:
                ctx.items[name] = Item(name, "fail", "—", "a readable declaration", f"unreadable claim {exc}",
                                       dict(unreadable=str(exc)))
    finally:
        ctx.bar.close()
    _, w_eff, how = applied(solver, w)
    used = sorted({t for _, _, t, _, _ in planned} | {JOINT})
    guidance = dict(scale=w, effective_scale=w_eff, convention=CONVENTION, applied_as=how, nfe_counting=NFE_COUNTING,
                    start="the exact conditional noisy law p_sigma_max(x | c)",
                    targets=[dict(name=t, **TARGETS[t]) for t in used], items_on_guided_field=list(GUIDED_ITEMS),
                    items_unguided=[i for i in ITEMS if i not in GUIDED_ITEMS])
    items = {name: ctx.items[name] for name in (*ITEMS, "guidance")}
    return GuidedResult(loaded.spec, loaded.name, ctx.claimed_order, ctx.claimed_nfe_per_step, items, ctx.cases(),
                        config, guidance=guidance)
