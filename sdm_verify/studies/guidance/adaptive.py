"""SDM's adaptive solver and its eta-bounded schedule under guidance (docs/sdm.md; solvers/sdm.py).

Latch: `sdm` (default tau_k = 1e-4, step latch) is run on the meter's decision batch (exact draws of p_80(. | c), or
the 2-D meter's own points) on the EDM grid of N steps; the latch step is the first step with lambda = 0 (Heun from
there on), reported with its sigma; None: it never fired.
Schedule: the eta-bounded schedule schedules.get("sdm") built on the guided field and the same batch, resampled to
N steps. On it: the measured error of euler, heun and sdm (against the guided flow, the target's meter), the same
on the EDM grid of N steps, and the schedule's own error estimate B0 = sum_i eta_i (the Euler path's per-step
estimate summed, studies.sdm.schedule.estimate_etas, norm "rms"). "bounds" = B0 >= the measured Euler error: the
plain sum bounds the global error when the flow contracts (docs/theory.md §8), which guidance need not preserve.
"""

from __future__ import annotations

from ... import schedules
from ...harness.sweep import registered_solver
from ...solvers.sdm import run_with_trace
from ..sdm.schedule import estimate_etas
from .orders import edm_grid, run_once
from .targets import SIGMA_MAX, SIGMA_MIN

LATCH_NS = (10, 18, 32)
SCHEDULE_N = 18
SCHEDULE_SOLVERS = ("euler", "heun", "sdm")


def latch(meter, n: int) -> dict:
    """Where the kappa latch of `sdm` fires on the decision batch at N = n (EDM grid)."""
    sigmas = edm_grid(n)
    _, trace = run_with_trace(registered_solver("sdm"), meter.field, meter.decision_batch(), sigmas)
    step = next((r["i"] for r in trace if r.get("lambda") == 0.0), None)
    nfe = sum(int(r.get("nfe", 0)) for r in trace)
    return {"N": n, "step": step, "sigma": None if step is None else float(sigmas[step]), "nfe": nfe,
            "kappa_max": max(float(r.get("kappa", 0.0)) for r in trace)}


def schedule_check(meter, n: int = SCHEDULE_N) -> dict:
    """Errors on SDM's eta-bounded schedule and on EDM's at N = n, and the schedule's B0 estimate."""
    batch = meter.decision_batch()
    sig = schedules.get("sdm")(n, SIGMA_MIN, SIGMA_MAX, denoiser=meter.field, x=batch)
    b0 = float(estimate_etas(meter.field, batch, sig, "rms").sum())
    rows = {}
    for s in SCHEDULE_SOLVERS:
        rows[s] = {"sdm": run_once(s, meter, sig)["error"], "edm": run_once(s, meter, edm_grid(n))["error"]}
    euler = rows["euler"]["sdm"]
    return {"N": n, "grid": [float(v) for v in sig], "B0": b0, "errors": rows,
            "bounds": bool(b0 >= euler), "ratio": b0 / euler if euler > 0 else None}


def adaptive_study(meter, ns=LATCH_NS, n_schedule: int = SCHEDULE_N) -> dict:
    return {"target": meter.target, "w": meter.w, "latch": [latch(meter, n) for n in ns],
            "schedule": schedule_check(meter, n_schedule)}
