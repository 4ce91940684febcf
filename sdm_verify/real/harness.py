"""The theory harness on a real denoiser: measured orders against a checked reference solution, resumable.

On an exact target the oracle gives the law at sigma_min; on a trained network nothing is exact, so every sampler
is compared, start point by start point, with the reference solution of the same PF-ODE (`reference.py`: DOP853 at
a tight tolerance, its accuracy checked by a finer run). The error of a run is the pixel RMS over the batch,
    e = ( mean_{seeds, pixels} (x_N - x_ref)^2 )^{1/2},
the synchronous error of the theory part's SyncMeter (an upper bound on W2 per coordinate), measured at sigma_min
(no final step: it would add a fixed error that does not shrink with N). Orders are fitted on the asymptotic window
of nested grids (sdm_verify.harness.orders) above 100x the stated floor: the reference's tolerance estimate, or the
precision floor of the model's dtype when it is larger.

Start points are x = sigma_max * n, n ~ N(0, I) drawn per seed from its own generator, so a seed's point does not
depend on how seeds are batched or sharded across processes (`distributed.py`). Data-dependent solvers and
schedules (SDM's kappa latch, SDM's eta-bounded schedule) decide on a fixed batch of the first seeds and replay those
decisions on every batch and shard, so a measured run is one deterministic solver.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import schedules, solvers
from ..errors import SolverDivergedError
from ..harness import fingerprint
from ..harness.convergence import fit_rows
from ..harness.nfe import count_nfe
from ..harness.orders import OrderFit
from ..harness.run import decides_on_data, freeze_decisions
from ..harness.store import ResultStore, config_key
from .reference import Reference, check_reference, reference_solution, rms

#: bump when a change alters the numbers a real cell produces
REAL_VERSION = 2
QUICK_SOLVERS = ("euler", "heun", "dpm_solver_2", "dpmpp_2m", "dpmpp_3m", "dpmpp_3m_lagrange", "unipc",
                 "deis_tab3", "ipndm", "sdm")
QUICK_NS = (8, 16, 32, 64)
DEFAULT_NS = (8, 16, 32, 64, 128)
QUICK_SCHEDULES = ("edm",)
DEFAULT_SCHEDULES = ("edm", "logsnr")
#: NFE budgets of the equal-NFE comparison (interpolated in log-log between measured points)
BUDGETS = (10, 20, 40, 80)
#: seeds whose start points make the decisions of data-dependent solvers and schedules
DECISION_SEEDS = 8
META = "real_runs"


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_ns(ns, option: str = "ns") -> list[int]:
    """Step counts the order fit can use: at least 3 positive integers, strictly increasing (a ValueError naming
    `option` otherwise); checked before the reference solve, which is the expensive part of a run."""
    if isinstance(ns, (str, bytes)) or not hasattr(ns, "__iter__"):
        raise ValueError(f"{option}: expected a sequence of step counts (got {ns!r})")
    ns = list(ns)
    bad = [n for n in ns if not _is_int(n) or n < 1]
    if bad:
        raise ValueError(f"{option}: step counts must be positive integers (got {bad[0]!r})")
    if len(ns) < 3:
        raise ValueError(f"{option}: need at least 3 step counts to fit an order (got {len(ns)}: {ns})")
    if any(b <= a for a, b in zip(ns, ns[1:], strict=False)):
        raise ValueError(f"{option}: step counts must be strictly increasing (got {ns})")
    return [int(n) for n in ns]


def model_id(denoiser) -> str:
    """A short content id of a model: its source name and a hash of its weight files (or its parameters)."""
    h = hashlib.sha256()
    src = getattr(denoiser, "source", None)
    files: list[Path] = []
    if src:
        p = Path(src)
        files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    if not files:
        module = getattr(denoiser, "module", None)
        for t in (module.state_dict().values() if module is not None else []):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    name = Path(src).name if src else type(denoiser).__name__
    labels = getattr(denoiser, "labels", None)  # a LabelledDenoiser: the fixed class keys its cells
    if labels is not None:
        labels = labels if isinstance(labels, int) else hashlib.sha256(
            torch.as_tensor(labels).cpu().numpy().tobytes()).hexdigest()[:8]
    return f"{name}@{h.hexdigest()[:12]}" + ("" if labels is None else f"#class{labels}")


def start_points(shape, seeds, sigma_max: float) -> torch.Tensor:
    """x = sigma_max * n with n ~ N(0, I) from generator(seed), one row per seed: float64, CPU."""
    return torch.stack([sigma_max * torch.randn(tuple(shape), dtype=torch.float64,
                                                generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@dataclass
class RealSettings:
    """What a real-model measurement depends on (all of it keys the stored rows)."""

    seeds: int = 16
    seed0: int = 0
    sigma_min: float | None = None      # default: max(model.sigma_min, 0.002)
    sigma_max: float | None = None      # default: min(model.sigma_max, 80)
    dtype: str = "float64"
    rtol: float = 1e-9
    batch: int = 64

    def resolve(self, model) -> RealSettings:
        """The settings with the model's defaults filled in; every field checked (a ValueError naming it)."""
        for name in ("sigma_min", "sigma_max"):
            v = getattr(self, name)
            if v is not None and not (_is_real(v) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a finite positive number (got {v!r})")
        lo = max(float(getattr(model, "sigma_min", 0.002)), 0.002) if self.sigma_min is None else self.sigma_min
        hi = min(float(getattr(model, "sigma_max", 80.0)), 80.0) if self.sigma_max is None else self.sigma_max
        if not (0 < lo < hi):
            raise ValueError(f"sigma range: need 0 < sigma_min < sigma_max (got {lo}, {hi})")
        for name, least in (("seeds", 1), ("seed0", 0), ("batch", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < least:
                raise ValueError(f"{name}: must be an integer >= {least} (got {v!r})")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype: float64 or float32 (got {self.dtype!r})")
        if not (_is_real(self.rtol) and math.isfinite(self.rtol) and 0 < self.rtol < 1):
            raise ValueError(f"rtol: must be a number in (0, 1) (got {self.rtol!r})")
        return RealSettings(self.seeds, self.seed0, float(lo), float(hi), self.dtype, self.rtol, self.batch)

    def seed_list(self) -> list[int]:
        return list(range(self.seed0, self.seed0 + self.seeds))


@dataclass
class RealCase:
    solver: str
    schedule: str
    ns: list[int]
    rows: list[dict]
    claimed: float | None
    fit: object = None
    nfe: list[int] = field(default_factory=list)
    fit_rms: object = None

    @property
    def errors(self) -> list[float]:
        """Pixel RMS over all seeds (the synchronous W2 bound per coordinate)."""
        return [float(r["error"]) for r in self.rows]

    @property
    def median_errors(self) -> list[float]:
        return [float(r.get("error_median", r["error"])) for r in self.rows]


class RealHarness:
    """Measures solvers on one model. `shard`: the seeds this process handles (all of them without torch.distributed;
    see distributed.py); `reduce`: sums a float64 vector across processes, `gather`: concatenates every process's
    vector on rank 0 (None elsewhere); both identities in one process."""

    def __init__(self, model, settings: RealSettings, *, store: ResultStore | None = None, device="cpu",
                 shard=None, reduce=None, gather=None, progress: bool = True, is_main: bool = True):
        self.model, self.device, self.store, self.progress = model, torch.device(device), store, progress
        self.is_main = is_main
        self.s = settings.resolve(model)
        self.dtype = getattr(torch, self.s.dtype)
        self.id = model_id(model)
        self.seeds = self.s.seed_list() if shard is None else list(shard)
        self.reduce = reduce or (lambda v: v)
        self.gather = gather or (lambda v: v)
        self.shape = tuple(model.shape)
        self._x = start_points(self.shape, self.seeds, self.s.sigma_max)
        self._decision_x = start_points(self.shape, range(self.s.seed0, self.s.seed0 + DECISION_SEEDS),
                                        self.s.sigma_max)
        self._ref: Reference | None = None
        self._copies: dict = {}
        self.floor_precision = 0.0

    # ------------------------------------------------------------------ configuration and the reference

    def base_config(self) -> dict:
        s = self.s
        return dict(kind="real", model=self.id, sigma_min=s.sigma_min, sigma_max=s.sigma_max, dtype=s.dtype,
                    seeds=[s.seed0, s.seeds], rtol=s.rtol, version=REAL_VERSION, code=self.code())

    def code(self) -> dict:
        """The fingerprint (harness.fingerprint) of the code behind every row: this harness and its reference, the
        model's class and the versions; a cell adds its solver and schedule (cell_config)."""
        starts = (__name__, "sdm_verify.real.reference", "sdm_verify.harness.run", "sdm_verify.harness.nfe")
        real = fingerprint.modules_part("real", starts, ("sdm_verify.real",) + fingerprint.BASE_MODULES)
        return dict(real=real.digest, model=fingerprint.class_part("model", type(self.model)).digest,
                    **fingerprint.versions())

    def _model_in(self, dtype):
        """The model computing in `dtype`: the measured model itself, or (for the float64 reference, decisions and
        floor of a float32 run) a float64 copy; a float32 network fed float64 inputs would still compute in float32,
        and DOP853 at a tight tolerance on a float32 right-hand side takes thousands of rejected steps."""
        if dtype == self.dtype or not hasattr(self.model, "to") or getattr(self.model, "dtype", dtype) == dtype:
            return self.model
        if dtype not in self._copies:
            self._copies[dtype] = copy.deepcopy(self.model).to(dtype=dtype)
        return self._copies[dtype]

    def _denoiser(self, dtype=None):
        dtype = dtype or self.dtype
        model, dev = self._model_in(dtype), self.device

        def D(x, sigma):
            return model(x.to(device=dev, dtype=dtype), sigma)

        return D

    def _batches(self, x: torch.Tensor):
        for i in range(0, x.shape[0], self.s.batch):
            yield x[i:i + self.s.batch]

    def reference(self) -> Reference:
        """The reference end points of this process's seeds (float64 model; kept in the store as a blob)."""
        if self._ref is not None:
            return self._ref
        shard = hashlib.sha256(",".join(map(str, self.seeds)).encode()).hexdigest()[:16]
        cfg = {**self.base_config(), "what": "reference", "shard": shard}
        name = "ref-" + config_key(cfg)
        blob = self.store.get_blob(name) if self.store is not None else None
        meta = self.store.get(cfg) if self.store is not None else None
        if blob is not None and meta is not None:
            self._ref = Reference(torch.from_numpy(blob).reshape(self._x.shape), meta["estimate"], meta["rtol"],
                                  meta["nfev"], meta["wall"])
            return self._ref
        D = self._denoiser(torch.float64)
        parts, sse, nfev, wall = [], 0.0, 0, 0.0
        for xb in self._batches(self._x):
            r = check_reference(D, xb.to(self.device), self.s.sigma_max, self.s.sigma_min, rtol=self.s.rtol)
            parts.append(r.x)
            sse += r.estimate ** 2 * xb.numel()
            nfev, wall = nfev + r.nfev, wall + r.wall
        total = self.reduce(torch.tensor([sse, float(self._x.numel())], dtype=torch.float64))
        estimate = math.sqrt(float(total[0]) / max(float(total[1]), 1.0))
        ref = torch.cat(parts) if parts else self._x.clone()
        self._ref = Reference(ref, estimate, self.s.rtol / 100, nfev, wall)
        if self.store is not None:
            self.store.put_blob(name, ref.numpy())
            self.store.put(cfg, dict(estimate=estimate, rtol=self.s.rtol / 100, nfev=nfev, wall=wall))
        return self._ref

    def precision_floor(self, solver: str = "heun", n: int = 256) -> float:
        """RMS difference between a fine run in the model's dtype and the same run in float64: the error floor the
        dtype imposes (0 for float64, where the reference's estimate is the floor)."""
        if self.dtype == torch.float64:
            return 0.0
        grid = schedules.get("edm")(n, self.s.sigma_min, self.s.sigma_max)
        sol = solvers.get(solver)
        sse = 0.0
        for xb in self._batches(self._x):
            a = sol(self._denoiser(torch.float64), xb.to(self.device, torch.float64), grid)
            b = sol(self._denoiser(self.dtype), xb.to(self.device, self.dtype), grid)
            sse += float(((a.double() - b.double()) ** 2).sum())
        total = self.reduce(torch.tensor([sse, float(self._x.numel())], dtype=torch.float64))
        self.floor_precision = math.sqrt(float(total[0]) / max(float(total[1]), 1.0))
        return self.floor_precision

    def floor(self) -> float:
        return max(self.reference().floor, self.floor_precision)

    # ------------------------------------------------------------------ cells

    def grid(self, schedule: str, n: int) -> torch.Tensor:
        if schedule == "sdm":
            return schedules.get("sdm")(n, self.s.sigma_min, self.s.sigma_max,
                                        denoiser=self._denoiser(torch.float64), x=self._decision_x.to(self.device))
        return schedules.get(schedule)(n, self.s.sigma_min, self.s.sigma_max)

    def solver(self, name: str, grid: torch.Tensor):
        sol = solvers.get(name)
        if decides_on_data(sol):  # decide on the fixed decision batch (float64 model), replay everywhere
            sol, _ = freeze_decisions(sol, self._denoiser(torch.float64), self._decision_x.to(self.device), grid)
        return sol

    def cell_config(self, solver: str, schedule: str, n: int) -> dict:
        base = self.base_config()
        code = dict(base["code"], solver=fingerprint.solver_part(type(solvers.get(solver))).digest,
                    schedule=fingerprint.schedule_part(schedules.get(schedule).__module__).digest)
        return {**base, "what": "cell", "solver": solver, "schedule": schedule, "n": int(n), "code": code}

    def store_key(self, solver: str, schedule: str, n: int) -> str:
        return config_key(self.cell_config(solver, schedule, n))

    def measure(self, solver: str, schedule: str, n: int) -> dict:
        """One cell: every seed's run against the reference. The row: error (pixel RMS over all seeds),
        error_median (the median over seeds of each trajectory's pixel RMS error), per_seed, nfe, wall, status,
        floor. Orders are fitted on error_median (see `case_from_rows`)."""
        ref = self.reference()
        grid = self.grid(schedule, n)
        sol = self.solver(solver, grid)
        per_seed, nfe, status, detail = [], 0, "ok", ""
        t0 = time.perf_counter()
        offset = 0
        for xb in self._batches(self._x):
            counted = count_nfe(self._denoiser())
            try:
                out = sol(counted, xb.to(self.device, self.dtype), grid)
            except SolverDivergedError as exc:
                status, detail = "diverged", str(exc)
                break
            rb = ref.x[offset:offset + xb.shape[0]]
            offset += xb.shape[0]
            per_seed.append(((out.double().cpu() - rb) ** 2).flatten(1).mean(1))
            nfe = counted.nfe
        if status != "ok":
            per_seed = [torch.full((len(self.seeds),), math.inf, dtype=torch.float64)]
        msq = self.gather(torch.cat(per_seed) if per_seed else torch.zeros(0, dtype=torch.float64))
        row = dict(status=status, detail=detail, nfe=int(nfe), wall=time.perf_counter() - t0, metric="sync_rms",
                   floor=self.floor(), grid=[float(g) for g in grid])
        if msq is None:  # a non-zero rank: rank 0 holds the gathered errors and writes the row
            return dict(row, error=math.nan, error_median=math.nan, per_seed=[])
        if not bool(torch.isfinite(msq).all()):
            row["status"] = "diverged"
            return dict(row, error=math.inf, error_median=math.inf, per_seed=[])
        per = [float(v) for v in msq.sqrt()]
        return dict(row, error=float(msq.mean().sqrt()), error_median=statistics.median(per),
                    per_seed=per)

    def run(self, pairs, ns, *, pending_filter=None) -> list[RealCase]:
        """Measure every (solver, schedule) pair at every N; rows already in the store are reused (an interrupted
        run resumes where it stopped). pending_filter: maps the list of cells to compute (rank 0's list under
        torch.distributed, so every rank runs the same cells)."""
        ns = [int(n) for n in ns]
        pairs = [(str(a), str(b)) for a, b in pairs]
        cells = [(a, b, n) for a, b in pairs for n in ns]
        self.reference()
        todo = [c for c in cells if self.store is None or not self.store.has(self.cell_config(*c))]
        if pending_filter is not None:
            todo = pending_filter(todo)
        rows: dict[tuple, dict] = {}
        bar = tqdm(todo, desc=f"real cells ({len(cells)}, {len(todo)} to compute)",
                   disable=None if (self.progress and self.is_main) else True, leave=False)
        for c in bar:
            bar.set_postfix_str(f"{c[0]} {c[1]} N={c[2]}")
            row = self.measure(*c)
            rows[c] = row
            if self.store is not None and self.is_main:
                self.store.put(self.cell_config(*c), row)
        out = []
        for a, b in pairs:
            rs = [rows.get((a, b, n)) or (self.store.get(self.cell_config(a, b, n)) if self.store else None)
                  for n in ns]
            if any(r is None for r in rs):
                continue
            out.append(case_from_rows(a, b, ns, rs))
        return out


def _fit(ns, rows, key: str) -> OrderFit:
    try:
        return fit_rows(ns, [dict(r, error=r[key]) for r in rows])
    except ValueError as exc:  # too few step counts to fit
        return OrderFit(None, None, [], None, list(ns), [float(r[key]) for r in rows], False, str(exc))


def case_from_rows(solver: str, schedule: str, ns, rows) -> RealCase:
    """A case's two fits: `fit` on the median trajectory's error (the verdict) and `fit_rms` on the pixel RMS over
    all seeds. Each trajectory is its own initial value problem, so each converges at the solver's order once N
    resolves it; the RMS over a few seeds is dominated by the slowest to get there (a trajectory that Euler sends
    across the boundary between two digits at coarse N), and the median of C_i N^-p over seeds is
    median(C_i) N^-p as soon as most of them are asymptotic."""
    claimed = getattr(solvers.get(solver), "order", None)
    return RealCase(solver, schedule, list(ns), list(rows), claimed, _fit(ns, rows, "error_median"),
                    [int(r["nfe"]) for r in rows], _fit(ns, rows, "error"))


# ------------------------------------------------------------------ equal-NFE comparison


def error_at_nfe(case: RealCase, budget: float) -> float | None:
    """Error at `budget` NFE, interpolated linearly in (log NFE, log error) between the measured points; None
    outside the measured range."""
    pts = sorted((n, e) for n, e in zip(case.nfe, case.errors, strict=True) if n > 0 and 0 < e < math.inf)
    for (n0, e0), (n1, e1) in zip(pts, pts[1:], strict=False):
        if n0 <= budget <= n1:
            if n1 == n0:
                return e0
            w = (math.log(budget) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return math.exp((1 - w) * math.log(e0) + w * math.log(e1))
    return None


__all__ = ["RealHarness", "RealSettings", "RealCase", "error_at_nfe", "model_id", "start_points",
           "reference_solution", "rms"]
