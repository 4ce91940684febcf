"""`sdm-verify real`: the harness on a real model, its results kept in the theory part's store.

What a run measures (all of it in the store: rows for cells, a run record in the meta `real_run:<model>:<dtype>`):
  - the reference solution (DOP853, checked by a 100x finer run) and the precision floor of the model's dtype;
  - the measured order of every solver on EDM (and logSNR) grids, N = 8 .. 64 (quick) or 128;
  - SDM's pieces against the baselines: the adaptive solver (`sdm`) on the EDM grid and baselines on SDM's
    eta-bounded schedule, compared at equal NFE (`harness.error_at_nfe`);
  - for the digits model (1x8x8): sample quality of full samplers (into sigma = 0) on features of a classifier
    trained here (sdm_verify.real.quality), with bootstrap intervals, beside held-out real digits and a Gaussian fit.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import schedules, solvers
from ..harness.nfe import count_nfe
from ..models.digits import load_digits_images
from . import quality as q
from .distributed import Context, exact_precision
from .harness import (
    DEFAULT_NS,
    DEFAULT_SCHEDULES,
    QUICK_NS,
    QUICK_SCHEDULES,
    QUICK_SOLVERS,
    REAL_VERSION,
    RealHarness,
    RealSettings,
    check_ns,
    start_points,
)

RUNS_META = "real_runs"
#: baselines also run on SDM's eta-bounded schedule (built from the model on the decision batch)
SDM_SCHEDULE_SOLVERS = ("euler", "heun", "dpmpp_2m")
#: full samplers whose samples are scored: (solver, schedule, steps); the last step goes into sigma = 0
QUALITY_SAMPLERS = (("heun", "edm", 18), ("euler", "edm", 18), ("dpmpp_2m", "logsnr", 10), ("euler", "edm", 5))
GRID_SAMPLES = 100


def check_solvers(names, option: str = "solvers") -> list[str]:
    """Registered ODE solver names, each once (a ValueError naming `option` otherwise)."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise ValueError(f"{option}: expected a list of solver names (got {names!r})")
    names = list(names)
    if not names:
        raise ValueError(f"{option}: expected at least one solver name")
    known = solvers.available()
    for n in names:
        if not isinstance(n, str) or n not in known:
            raise ValueError(f"{option}: unknown solver {n!r}; available: {', '.join(known)}")
        if solvers.needs_process(n):
            raise ValueError(f"{option}: {n!r} integrates in a noise process's own time (it needs a process); a real "
                             f"model is measured with the PF-ODE solvers")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{option}: {', '.join(map(repr, dup))} named more than once")
    return names


def check_pairs(pairs) -> list[tuple[str, str]]:
    """(solver, schedule) pairs of registered names ("sdm": SDM's eta-bounded schedule)."""
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"pairs: expected (solver, schedule) pairs (got {pairs!r})")
    out = []
    known = schedules.available()
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs: expected (solver, schedule) pairs (got {pair!r})")
        a, b = pair
        check_solvers([a], "pairs")
        if not isinstance(b, str) or b not in known:
            raise ValueError(f"pairs: unknown schedule {b!r}; available: {', '.join(known)}")
        if schedules.uses_process(b):
            raise ValueError(f"pairs: schedule {b!r} needs a noise process; a real model has none")
        out.append((a, b))
    return out


def default_pairs(names=None, quick: bool = False) -> list[tuple[str, str]]:
    """(solver, schedule) pairs: the solvers on EDM (and logSNR) grids, baselines on SDM's schedule."""
    if names is not None:
        names = check_solvers(names)
    if names is None:
        names = list(QUICK_SOLVERS) if quick else [n for n in solvers.available() if not solvers.needs_process(n)]
    scheds = QUICK_SCHEDULES if quick else DEFAULT_SCHEDULES
    pairs = [(n, s) for s in scheds for n in names]
    pairs += [(n, "sdm") for n in SDM_SCHEDULE_SOLVERS if n in names]
    return pairs


def run_key(model_id: str, dtype: str) -> str:
    return f"real_run:{model_id}:{dtype}"


def _sample(harness: RealHarness, solver: str, schedule: str, steps: int, seeds) -> tuple[torch.Tensor, int]:
    """Full-sampler samples (last step into 0) for `seeds`, in the model's dtype; returns (samples, NFE)."""
    s = harness.s
    grid = schedules.get(schedule)(steps, s.sigma_min, s.sigma_max, zero=True)
    sol = solvers.get(solver)
    x = start_points(harness.shape, seeds, s.sigma_max)
    out, nfe = [], 0
    for xb in harness._batches(x):
        counted = count_nfe(harness._denoiser())
        out.append(sol(counted, xb.to(harness.device, harness.dtype), grid).double().cpu())
        nfe = counted.nfe
    return (torch.cat(out) if out else x[:0]), nfe


def quality(harness: RealHarness, ctx: Context, n_samples: int, boot: int, progress: bool = True) -> dict | None:
    """Sample-quality table of the full samplers (digits-shaped models only: the feature network is the digits
    classifier); None for other models."""
    if tuple(harness.shape) != (1, 8, 8):
        return None
    seeds = ctx.shard(list(range(10_000, 10_000 + n_samples)))  # disjoint from the order seeds
    rows, grid_samples = [], None
    for solver, schedule, steps in tqdm(QUALITY_SAMPLERS, desc="sample quality", leave=False,
                                        disable=None if progress and ctx.is_main else True):
        x, nfe = _sample(harness, solver, schedule, steps, seeds)
        x = ctx.gather(x)
        if ctx.is_main:
            if grid_samples is None:
                grid_samples = x[:GRID_SAMPLES]
            rows.append(dict(sampler=f"{solver} / {schedule}, {steps} steps", nfe=nfe, n=int(x.shape[0]),
                             **q.sample_quality(x.double(), reference="train", n_boot=boot)))
    if not ctx.is_main:
        return None
    real = load_digits_images("test", dtype=torch.float64)[0]
    rows.append(dict(sampler="held-out real digits (test split, other writers)", nfe=0, n=int(real.shape[0]),
                     **q.sample_quality(real, reference="train", n_boot=boot)))
    fit = q.gaussian_fit_samples(n_samples, seed=0)
    rows.append(dict(sampler="Gaussian fit of the training digits", nfe=0, n=int(fit.shape[0]),
                     **q.sample_quality(fit, reference="train", n_boot=boot)))
    return dict(rows=rows, grid=grid_samples)


def _plain(obj):
    """JSON-safe copy of a quality row (numpy scalars and arrays to Python numbers and lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def run_real(model, store, *, settings: RealSettings, device: str = "cpu", pairs=None, ns=None, quick: bool = False,
             samples: int | None = None, boot: int = 200, ctx: Context | None = None, progress: bool = True) -> dict:
    """Measure `model` (a sdm_verify.models.Denoiser) and record the run in `store`; returns the run record."""
    ctx = ctx or Context()
    t0 = time.perf_counter()
    # every argument checked before the reference solve (the expensive part: minutes on a real model)
    pairs = check_pairs(pairs) if pairs else default_pairs(quick=quick)
    ns = check_ns(list(ns) if ns else list(QUICK_NS if quick else DEFAULT_NS))
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, numbers.Integral)
                                or samples < 0):
        raise ValueError(f"samples: must be an integer >= 0 (got {samples!r})")
    if isinstance(boot, bool) or not isinstance(boot, numbers.Integral) or boot < 1:
        raise ValueError(f"boot: must be an integer >= 1 (got {boot!r})")
    precision = exact_precision()
    harness = RealHarness(model, settings, store=store, device=device, shard=ctx.shard(settings.seed_list()),
                          reduce=ctx.reduce, gather=ctx.gather, progress=progress, is_main=ctx.is_main)
    ref = harness.reference()
    floor_p = harness.precision_floor()
    cases = harness.run(pairs, ns, pending_filter=ctx.broadcast)
    n_samples = samples if samples is not None else (512 if quick else 2048)
    qual = quality(harness, ctx, n_samples, boot, progress) if n_samples > 0 else None
    if not ctx.is_main:
        return {}
    s = harness.s
    record = dict(
        model=harness.id, source=str(getattr(model, "source", "")), format=getattr(model, "format", ""),
        description=getattr(model, "description", ""), shape=list(harness.shape),
        settings=dict(seeds=s.seeds, seed0=s.seed0, sigma_min=s.sigma_min, sigma_max=s.sigma_max, dtype=s.dtype,
                      rtol=s.rtol, batch=s.batch), device=str(device), world=ctx.world, precision=precision,
        reference=dict(estimate=ref.estimate, rtol=ref.rtol, nfev=ref.nfev, wall=ref.wall),
        floor_precision=floor_p, floor=harness.floor(), ns=ns, quick=quick, version=REAL_VERSION,
        cases=[dict(solver=c.solver, schedule=c.schedule, claimed=c.claimed,
                    keys=[harness.store_key(c.solver, c.schedule, n) for n in ns]) for c in cases],
        quality=[_plain(r) for r in qual["rows"]] if qual else None,
        wall=time.perf_counter() - t0,
    )
    key = run_key(harness.id, s.dtype)
    if qual and qual.get("grid") is not None:
        store.put_blob(key + ":samples", qual["grid"].numpy())
        record["samples_blob"] = key + ":samples"
    store.set_meta(key, record)
    runs = [k for k in store.get_meta(RUNS_META, []) if k != key] + [key]
    store.set_meta(RUNS_META, runs)
    return record
