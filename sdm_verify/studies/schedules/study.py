"""The schedule study: every scored schedule against the exact optimum, per (solver, target, N) (issue #16).

    rows        one per (solver, target, process, N, schedule): its grid and its exact error (the target's meter:
                Bures W2 on a Gaussian, quantile W2 in 1-D), with the optimum as schedule "optimal" (certified; a
                cell whose optimiser did not converge or whose certificate failed is kept, marked, never called
                optimal).
    efficiency  error(optimal) / error(schedule), <= 1 up to the optimiser's tolerance.

The quick matrix is the issue's: the 1-D Gaussian N(0, 0.5^2) (`gauss-1d`), VE from sigma 80 to 0.002, N in
{2, 3, 4, 8}. Published schedules that need the target and solver (SDM's eta-bounded schedule, studies/sdm; COS,
GITS, AYS, OSS: cos.py, gits.py, ays.py, oss.py) are computed on the same target; the fixed ones (EDM rho = 7,
logSNR, uniform t) need neither.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from analytic import Gaussian
from analytic import processes as oracle_processes

from ... import schedules
from ...errors import InputError
from ...harness import targets
from ...harness.progress import Progress
from .optimum import grid_error, optimal_grid

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
QUICK = dict(solvers=("euler", "heun", "dpmpp_2m"), targets=("gauss-1d",), ns=(2, 3, 4, 8))
FULL = dict(solvers=("euler", "heun", "dpmpp_2m", "unipc", "ipndm"), targets=("gauss-1d", "gauss-4d"),
            ns=(2, 3, 4, 5, 8, 10))
FIXED = ("edm", "logsnr", "uniform_t")


def target(name: str):
    """`gauss-1d` (N(0, 0.5^2), the issue's quick target) or an embedded target of the theory harness."""
    if name == "gauss-1d":
        return Gaussian([0.0], [[0.25]])
    return targets.get(name)


def _sdm(solver, tgt, n, sigma_min, sigma_max):
    """SDM's eta-bounded schedule (studies/sdm), built on 256 exact draws of p_sigma_max and resampled to n steps."""
    x = tgt.sample(256, sigma=sigma_max, generator=torch.Generator().manual_seed(0))
    return schedules.get("sdm")(n, sigma_min, sigma_max, denoiser=tgt.denoiser, x=x)


def published() -> dict:
    """name -> schedule(solver, target, n, sigma_min, sigma_max) of the published methods that are present."""
    out = {"sdm": _sdm}
    for module, name in (("cos", "cos"), ("gits", "gits"), ("ays", "ays"), ("oss", "oss")):
        try:
            mod = __import__(f"{__package__}.{module}", fromlist=[name])
        except ImportError:
            continue
        out[name] = getattr(mod, name)
    return out


@dataclass
class Row:
    solver: str
    target: str
    process: str
    N: int
    schedule: str
    grid: list
    error: float
    seconds: float
    status: str = "ok"  # ok / not converged / not certified / failed: <reason>

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error"] = self.error if math.isfinite(self.error) else None
        return d


def _fixed(name: str, n: int) -> torch.Tensor:
    fn = schedules.get(name)
    if schedules.uses_process(name):
        return fn(n, SIGMA_MIN, SIGMA_MAX, process=oracle_processes.get("ve"))
    return fn(n, SIGMA_MIN, SIGMA_MAX)


def run(quick: bool = True, solvers=None, target_names=None, ns=None, with_published: bool = True,
        progress: bool = True) -> list[Row]:
    """The study's rows (module docstring)."""
    plan = dict(QUICK if quick else FULL)
    solvers = tuple(solvers or plan["solvers"])
    target_names = tuple(target_names or plan["targets"])
    ns = tuple(ns or plan["ns"])
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in ns):
        raise InputError(f"ns: step counts must be integers >= 1 (got {list(ns)})")
    extra = published() if with_published else {}
    cells = [(s, t, n) for t in target_names for s in solvers for n in ns]
    rows: list[Row] = []
    with Progress(len(cells), "schedules", enabled=progress) as bar:
        for solver, tname, n in cells:
            tgt = target(tname)
            for name in FIXED:
                t0 = time.perf_counter()
                g = _fixed(name, n)
                rows.append(Row(solver, tname, "ve", n, name, g.tolist(), grid_error(solver, tgt, g),
                                time.perf_counter() - t0))
            for name, fn in extra.items():
                t0 = time.perf_counter()
                try:
                    g = fn(solver, tgt, n, SIGMA_MIN, SIGMA_MAX)
                    rows.append(Row(solver, tname, "ve", n, name, g.tolist(), grid_error(solver, tgt, g),
                                    time.perf_counter() - t0))
                except Exception as exc:  # noqa: BLE001  a method that cannot run on this cell is reported
                    rows.append(Row(solver, tname, "ve", n, name, [], math.inf, time.perf_counter() - t0,
                                    f"failed: {type(exc).__name__}: {exc}"))
            t0 = time.perf_counter()
            opt = optimal_grid(solver, tgt, n, SIGMA_MIN, SIGMA_MAX)
            status = "ok" if opt.optimal else ("not converged" if not opt.converged else "not certified")
            rows.append(Row(solver, tname, "ve", n, "optimal", opt.grid.tolist(), opt.error,
                            time.perf_counter() - t0, status))
            bar.update()
    return rows


def efficiency(rows: list[Row]) -> dict:
    """(solver, target, N, schedule) -> error(optimal) / error(schedule) (None where either is missing or 0/0)."""
    best = {(r.solver, r.target, r.N): r.error for r in rows if r.schedule == "optimal"}
    out = {}
    for r in rows:
        o = best.get((r.solver, r.target, r.N))
        if o is None or not math.isfinite(r.error) or r.error <= 0:
            out[(r.solver, r.target, r.N, r.schedule)] = None
        else:
            out[(r.solver, r.target, r.N, r.schedule)] = o / r.error
    return out
