"""A theory run compared with a baseline store, and the refresh of that baseline.

The committed store (reports/theory/results.sqlite) is a baseline to compare with, not a cache: `sdm-verify theory`
computes into its own working store, then `compare` matches each of its cells with the baseline row of the same
configuration (`identity`: the config without its code fingerprint) and each case with the baseline's case:

    cells     an error that moved by more than CELL_RTOL * max(|a|, |b|) + FLOOR_FACTOR * floor, a status that
              changed (ok / diverged) or a counted NFE that changed;
    orders    a fitted order that moved by more than ORDER_TOL, or was found in one run and not in the other;
    verdicts  every case whose verdict (agree / deviates / no window) changed: a changed finding.

Tolerances. float64 runs of the same code on two machines differ only by rounding (BLAS kernels, libm, summation
order). A whole run's round-off stays below its meter's stated floor (meters.ROUNDOFF_FLOOR: N eps |x| ~ 1e-13), and
errors within 100x the floor are not used to fit orders (meters, orders): FLOOR_FACTOR = 100 treats that band as
noise. Above it the loosest stated accuracy of a meter is the 1-D quantile meter's adaptive quadrature (W2 to ~5e-7
relative: Quantile1DMeter.RTOL = 1e-6 on W2^2), one of whose refinement decisions a rounding difference may flip:
CELL_RTOL = 1e-6. An order is a least-squares slope of log error over >= 3 nested grids spanning a factor >= 4 in
N, so errors moved by 1e-6 relative move it by ~1e-6: ORDER_TOL = 0.01 is far above rounding and far below the
verdict tolerance (verdicts.TOL = 0.2).

`write_baseline` makes a run the new baseline: its rows and theory sections, with the old baseline's other rows
(real-model runs), their meta and blobs carried over unchanged.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import InputError, StoreError
from .results import CaseResult
from .store import ResultStore, check_store_path, config_key
from .sweep import CODE_META, Cell

__all__ = ["CELL_RTOL", "FLOOR_FACTOR", "ORDER_TOL", "CaseChange", "CellChange", "Comparison", "compare",
           "identity", "is_sweep_cell", "write_baseline"]

CELL_RTOL = 1e-6
FLOOR_FACTOR = 100.0
ORDER_TOL = 0.01
PARTS = ("solver", "schedule", "harness", "oracle")
_CELL_FIELDS = frozenset(f.name for f in fields(Cell))


def identity(config: dict) -> str:
    """The key of a configuration with its code fingerprint left out: the same cell computed by any code."""
    return config_key({k: v for k, v in config.items() if k != "code"})


def is_sweep_cell(config: dict) -> bool:
    """Whether a stored config is a theory sweep cell (sweep.Cell), not e.g. a real-model row."""
    return _CELL_FIELDS <= set(config)


def _label(cfg: dict) -> str:
    extra = " final" if cfg.get("final") else ""
    params = {**(cfg.get("solver_params") or {}), **(cfg.get("schedule_params") or {})}
    if params:
        extra += " " + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{cfg['solver']} {cfg['target']}/{cfg['process']}/{cfg['schedule']} N={cfg['n']}{extra}"


def _case_label(r: CaseResult) -> str:
    m = r.measurement
    return f"{m.solver} {m.target}/{m.process}/{m.schedule}"


@dataclass(frozen=True)
class CellChange:
    """A cell whose error, status or counted NFE moved beyond tolerance; `code`: the fingerprint parts that differ
    from the baseline row's ("unrecorded" when that row carries no fingerprint)."""

    label: str
    before: float
    after: float
    status: tuple[str, str]
    nfe: tuple[int | None, int | None]
    code: tuple[str, ...]

    def line(self) -> str:
        text = f"{self.label}: error {self.before:.3e} -> {self.after:.3e}"
        if self.status[0] != self.status[1]:
            text += f", status {self.status[0]} -> {self.status[1]}"
        if self.nfe[0] != self.nfe[1]:
            text += f", NFE {self.nfe[0]} -> {self.nfe[1]}"
        return text + (f" (code: {', '.join(self.code)})" if self.code else " (same code)")


@dataclass(frozen=True)
class CaseChange:
    """A case whose order moved beyond ORDER_TOL or whose verdict changed."""

    label: str
    order: tuple[float | None, float | None]
    verdict: tuple[str, str]

    def line(self) -> str:
        a, b = (f"{o:.2f}" if o is not None else "none" for o in self.order)
        text = f"{self.label}: order {a} -> {b}"
        return text + (f", {self.verdict[0]} -> {self.verdict[1]}" if self.verdict[0] != self.verdict[1] else "")


@dataclass
class Comparison:
    """A run against its baseline: what was compared, and what moved."""

    baseline: str
    cells: int = 0  # cells of the run with a baseline row of the same configuration
    unmatched: int = 0  # cells of the run without one
    moved: list[CellChange] = field(default_factory=list)
    cases: int = 0
    new_cases: int = 0  # cases of the run the baseline does not have
    orders: list[CaseChange] = field(default_factory=list)
    verdicts: list[CaseChange] = field(default_factory=list)
    code: dict[str, list[str] | None] = field(default_factory=dict)  # "solver heun" -> files that differ
    note: str = ""

    @property
    def changed_verdicts(self) -> int:
        return len(self.verdicts)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self, limit: int = 10) -> list[str]:
        out = [f"baseline {self.baseline}: {self.cells} cells compared ({self.unmatched} without a baseline row), "
               f"{self.cases} cases ({self.new_cases} new)"]
        if self.note:
            out.append(f"  {self.note}")
        if self.code:
            out.append("  code that differs from the baseline's (cells computed by it):")
            out += [f"    {what}" + (": files not recorded" if files is None else f": {', '.join(files)}" * bool(files))
                    for what, files in self.code.items()]
        for title, items in ((f"cells moved (beyond {CELL_RTOL:g} relative + {FLOOR_FACTOR:g}x floor)", self.moved),
                             (f"orders moved (beyond {ORDER_TOL:g})", self.orders),
                             ("verdicts changed", self.verdicts)):
            out.append(f"  {title}: {len(items)}")
            out += [f"    {c.line()}" for c in items[:limit]]
            if len(items) > limit:
                out.append(f"    ... and {len(items) - limit} more")
        return out


def _moved(a: dict, b: dict) -> bool:
    if a.get("status") != b.get("status") or a.get("nfe") != b.get("nfe"):
        return True
    x, y = float(a.get("error", math.nan)), float(b.get("error", math.nan))
    if not (math.isfinite(x) and math.isfinite(y)):
        return not (x == y or (math.isnan(x) and math.isnan(y)))
    floor = max(float(a.get("floor", 0.0)), float(b.get("floor", 0.0)))
    return abs(x - y) > CELL_RTOL * max(abs(x), abs(y)) + FLOOR_FACTOR * floor


def _code_parts(cfg: dict, base_cfg: dict) -> tuple[str, ...]:
    now, then = cfg.get("code") or {}, base_cfg.get("code")
    if then is None:
        return ("unrecorded",) if now else ()
    return tuple(k for k in dict.fromkeys([*now, *then]) if now.get(k) != then.get(k))


def _part_name(part: str, cfg: dict) -> str:
    return {"solver": f"solver {cfg['solver']}", "schedule": f"schedule {cfg['schedule']}"}.get(part, part)


def _files(now: dict, then: dict, a: str | None, b: str | None) -> list[str] | None:
    """Paths whose file digest differs between the manifests of part digests a (run) and b (baseline); None when
    either manifest is not recorded."""
    fa, fb = (now.get(a) or {}).get("files"), (then.get(b) or {}).get("files")
    if fa is None or fb is None:
        return None
    return sorted(p for p in set(fa) | set(fb) if fa.get(p) != fb.get(p))


def compare(run: list[tuple[dict, dict]], results: list[CaseResult], baseline: ResultStore,
            baseline_results: list[CaseResult] | None, code_files: dict | None = None,
            note: str = "") -> Comparison:
    """The run's (config, row) cells and case results against `baseline` and its case results (None when they
    could not be read: cells are still compared). code_files: the run store's CODE_META."""
    if not isinstance(baseline, ResultStore):
        raise InputError(f"baseline: must be an open ResultStore (got {type(baseline).__name__})")
    if not isinstance(run, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], dict) and isinstance(p[1], dict | None)
            for p in run):
        raise InputError("run: must be a list of (config, row) pairs of dicts")
    if baseline_results is not None and not isinstance(baseline_results, (list, tuple)):
        raise InputError("baseline_results: must be a list of CaseResult or None (got "
                         f"{type(baseline_results).__name__})")
    if code_files is not None and not isinstance(code_files, dict):
        raise InputError(f"code_files: must be a dict or None (got {type(code_files).__name__})")
    out = Comparison(str(baseline.path), note=note)
    base: dict[str, tuple[dict, dict]] = {}
    for _, cfg, row in baseline.records():  # the latest row of an identity wins
        if is_sweep_cell(cfg):
            base[identity(cfg)] = (cfg, row)
    now_files, then_files = code_files or {}, baseline.get_meta(CODE_META, {})
    seen = set()
    for cfg, row in run:
        ident = identity(cfg)
        if ident in seen:
            continue
        seen.add(ident)
        if ident not in base:
            out.unmatched += 1
            continue
        out.cells += 1
        bcfg, brow = base[ident]
        parts = _code_parts(cfg, bcfg)
        for part in parts:
            if part in PARTS:
                a, b = cfg["code"].get(part), bcfg["code"].get(part)
                out.code.setdefault(_part_name(part, cfg), _files(now_files, then_files, a, b))
            elif part == "unrecorded":
                out.code.setdefault("unrecorded (baseline rows carry no code fingerprint)", [])
            else:  # a version
                out.code.setdefault(f"{part} {bcfg['code'].get(part)} -> {cfg['code'].get(part)}", [])
        if _moved(row, brow):
            out.moved.append(CellChange(_label(cfg), float(brow.get("error", math.nan)),
                                        float(row.get("error", math.nan)), (brow.get("status"), row.get("status")),
                                        (brow.get("nfe"), row.get("nfe")), parts))
    if baseline_results is None:
        return out
    before = {_case_label(r): r for r in baseline_results}
    for r in results:
        label = _case_label(r)
        if label not in before:
            out.new_cases += 1
            continue
        out.cases += 1
        b = before[label]
        o = (b.measurement.order if b.measurement.ok else None, r.measurement.order if r.measurement.ok else None)
        change = CaseChange(label, o, (b.verdict, r.verdict))
        if (o[0] is None) != (o[1] is None) or (o[0] is not None and abs(o[0] - o[1]) > ORDER_TOL):
            out.orders.append(change)
        if b.verdict != r.verdict:
            out.verdicts.append(change)
    return out


def write_baseline(working: ResultStore, keys, path, *, theory_meta) -> int:
    """Make the store at `path` the baseline of a run: the working store's rows `keys`, its meta `theory_meta` (the
    run record and sections) and CODE_META, with the old baseline's rows that are not sweep cells (real-model runs)
    and its other meta and blobs carried over. Written beside `path` and moved into place, so a failure leaves the
    old baseline whole. Returns the number of rows written."""
    if not isinstance(working, ResultStore):
        raise InputError(f"working: must be an open ResultStore (got {type(working).__name__})")
    path = check_store_path(path, name="path", writable=True)
    if path.resolve() == working.path.resolve():
        raise InputError(f"path: {path} is the working store itself: the baseline is another file")
    if isinstance(keys, (str, bytes)) or isinstance(theory_meta, (str, bytes)):
        raise InputError("keys, theory_meta: must be collections of strings, not one string")
    keys, theory_meta = set(keys), set(theory_meta) | {CODE_META}
    if not all(isinstance(k, str) for k in keys | theory_meta):
        raise InputError("keys, theory_meta: must be collections of strings")
    if path.is_file():  # the old baseline is read below: refuse a damaged one before the new file is started
        ResultStore(path, readonly=True, name="path").close()
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise StoreError(f"path: {path} is open for writing elsewhere ({wal.name} beside it); close that process")
    tmp = path.with_name(f".{path.stem}.new{path.suffix}")
    tmp.unlink(missing_ok=True)
    n = 0
    with ResultStore(tmp) as new:
        for key, cfg, row in working.records():
            if key in keys:
                new.put(cfg, row)
                n += 1
        for k in working.meta_keys():
            if k in theory_meta:
                new.set_meta(k, working.get_meta(k))
        if path.is_file():
            with ResultStore(path, readonly=True) as old:
                for _, cfg, row in old.records():
                    if not is_sweep_cell(cfg):
                        new.put(cfg, row)
                        n += 1
                for k in old.meta_keys():
                    if k not in theory_meta:
                        new.set_meta(k, old.get_meta(k))
                for name in old.blob_names():
                    new.put_blob(name, old.get_blob(name))
    os.replace(tmp, path)
    for stale in (wal, Path(f"{path}-shm")):  # an old journal must never be read against the new file
        stale.unlink(missing_ok=True)
    return n
