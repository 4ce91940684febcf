"""One cell of the schedule study: every scored schedule and the optimum for one (solver, target, N, endpoint).

A cell is what the results store keys (studies/schedules/study.py): its rows depend only on the cell's config and
on the code this module imports, whose fingerprint is part of the key (`code`), so a stored cell is never reused
for other code.

    targets   `gauss-1d` (N(0, 0.5^2), the issue's quick target), `gauss-spec16` (a 16-dimensional Gaussian with
              a power-law spectrum, eigenvalues log-spaced over [1e-4, 1], like an image's: a 1-D Gaussian has one
              variance to match, so most solvers reach zero error on a continuum of grids; 16 directions do not
              cancel so easily) and the embedded targets of the theory harness (`gauss-4d`, `gmm-1d`, `gmm-8d`).
    final     "sigma_min": N steps from sigma_max to sigma_min, measured against p_sigma_min; "zero": the full
              sampler, N steps with the last one into 0, measured against the data law (a schedule then gives
              N - 1 steps to sigma_min followed by 0, k-diffusion's convention).
    warm      a grid start interpolated from the optimum at a smaller N (its log sigma against the step fraction):
              the optimum's shape changes slowly with N, and this start saves most of the iterations at large N.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from analytic import Gaussian
from analytic import processes as oracle_processes

from ... import schedules
from ...harness import targets
from .curvature import allocation
from .match import grid_nfe, steps_to_match
from .optimum import grid_error, optimal_grid

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: errors at or below this are zero (the meters' floors are ~1e-13): no ratio to them and no step count to match them
ZERO = 1e-9
#: schedules whose steps-to-match are searched (cheap to rebuild at any N), up to MATCH_CAP_FACTOR * N steps
MATCHED = ("edm", "logsnr", "uniform_t", "sdm")
MATCH_CAP_FACTOR = 4
FIXED = ("edm", "logsnr", "uniform_t")
PUBLISHED = ("sdm", "cos", "gits", "ays", "oss")


def target(name: str):
    """A study target by name (module docstring)."""
    if name == "gauss-1d":
        return Gaussian([0.0], [[0.25]])
    if name == "gauss-spec16":
        lam = torch.logspace(-4, 0, 16, dtype=torch.float64)
        return Gaussian(torch.linspace(-0.5, 0.5, 16, dtype=torch.float64), torch.diag(lam))
    return targets.get(name)


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
    final: str = "sigma_min"
    nfe: int | None = None  # NFE of one run on this grid (counted)
    match_steps: int | None = None  # steps this schedule needs to reach the optimum's error (match.py), None: > cap
    match_nfe: int | None = None  # NFE of that run
    extra: dict = field(default_factory=dict)  # the optimum's allocation against curvature (curvature.py)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error"] = self.error if math.isfinite(self.error) else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = dict(d)
        d["error"] = math.inf if d.get("error") is None else float(d["error"])
        return cls(**d)


def _sdm(solver, tgt, n, sigma_min, sigma_max):
    """SDM's eta-bounded schedule (studies/sdm), built on 256 exact draws of p_sigma_max and resampled to n steps."""
    x = tgt.sample(256, sigma=sigma_max, generator=torch.Generator().manual_seed(0))
    return schedules.get("sdm")(n, sigma_min, sigma_max, denoiser=tgt.denoiser, x=x)


def published() -> dict:
    """name -> schedule(solver, target, n, sigma_min, sigma_max) of the published methods."""
    from . import ays, cos, gits, oss
    return {"sdm": _sdm, "cos": cos.cos, "gits": gits.gits, "ays": ays.ays, "oss": oss.oss}


def fixed(name: str, n: int) -> torch.Tensor:
    fn = schedules.get(name)
    if schedules.uses_process(name):
        return fn(n, SIGMA_MIN, SIGMA_MAX, process=oracle_processes.get("ve"))
    return fn(n, SIGMA_MIN, SIGMA_MAX)


def warm_start(grid, n: int, final: str = "sigma_min") -> torch.Tensor:
    """The grid of n steps whose log sigma, against the step fraction, interpolates `grid`'s (linearly)."""
    g = np.asarray(grid, dtype=np.float64)
    pos = g[:-1] if final == "zero" else g
    m = n - 1 if final == "zero" else n
    u = np.linspace(0.0, 1.0, pos.size)
    out = np.exp(np.interp(np.linspace(0.0, 1.0, m + 1), u, np.log(pos)))
    out[0], out[-1] = pos[0], pos[-1]
    if final == "zero":
        out = np.concatenate([out, [0.0]])
    return torch.from_numpy(out)


def _with_zero(g: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.to(torch.float64), torch.zeros(1, dtype=torch.float64)])


def compute(solver: str, tname: str, n: int, final: str = "sigma_min", with_published: bool = True,
            warm=None, starts=("edm", "logsnr", "random")) -> list[Row]:
    """Rows of one cell: the fixed schedules, the published ones (a method that cannot run is a `failed` row) and the
    certified optimum. warm: a grid (the optimum at a smaller N) to add as a start."""
    tgt = target(tname)
    zero = final == "zero"
    steps = n - 1 if zero else n  # a schedule's steps to sigma_min (then one more into 0)
    rows: list[Row] = []

    def scored(name, make):
        t0 = time.perf_counter()
        try:
            g = make()
            g = _with_zero(g) if zero else g
            rows.append(Row(solver, tname, "ve", n, name, g.tolist(), grid_error(solver, tgt, g),
                            time.perf_counter() - t0, final=final))
        except Exception as exc:  # noqa: BLE001  a method that cannot run on this cell is reported
            rows.append(Row(solver, tname, "ve", n, name, [], math.inf, time.perf_counter() - t0,
                            f"failed: {type(exc).__name__}: {exc}", final=final))

    for name in FIXED:
        scored(name, lambda name=name: fixed(name, steps))
    if with_published:
        for name, fn in published().items():
            scored(name, lambda fn=fn: fn(solver, tgt, steps, SIGMA_MIN, SIGMA_MAX))
    t0 = time.perf_counter()
    plan = list(starts) + ([warm_start(warm, n, final)] if warm is not None else [])
    opt = optimal_grid(solver, tgt, n, SIGMA_MIN, SIGMA_MAX, starts=plan, final_zero=zero)
    status = "ok" if opt.optimal else ("not converged" if not opt.converged else "not certified")
    best = Row(solver, tname, "ve", n, "optimal", opt.grid.tolist(), opt.error, time.perf_counter() - t0, status,
               final=final, nfe=grid_nfe(solver, tgt, opt.grid))
    best.extra = {"allocation": {k: v for k, v in vars(allocation(opt.grid, tgt)).items()}}
    _match(rows, best, tgt, zero)
    rows.append(best)
    return rows


def _match(rows: list[Row], best: Row, tgt, zero: bool) -> None:
    """Fill nfe, match_steps and match_nfe of the scored rows (module docstring of match.py)."""
    makers = {name: (lambda m, name=name: fixed(name, m)) for name in FIXED}
    makers["sdm"] = lambda m: _sdm(best.solver, tgt, m, SIGMA_MIN, SIGMA_MAX)
    for r in rows:
        if not r.grid:
            continue
        r.nfe = grid_nfe(best.solver, tgt, r.grid)
        if r.schedule not in MATCHED or best.error <= ZERO or not math.isfinite(best.error):
            continue
        make = makers[r.schedule]
        make_n = (lambda m, make=make: _with_zero(make(m - 1))) if zero else make
        if r.error <= best.error * (1 + 1e-6):
            r.match_steps = best.N
        else:
            r.match_steps = steps_to_match(best.solver, tgt, make_n, float(best.error), best.N,
                                           MATCH_CAP_FACTOR * best.N)
        if r.match_steps is not None:
            r.match_nfe = grid_nfe(best.solver, tgt, make_n(r.match_steps))
