"""The table of outside samplers (issue 17): one row per diffusers `*Scheduler` class and per k-diffusion `sample_*`
function in its default config: claimed order, measured order, as-shipped W2 at N = 10 and 25, verdict.

    plan(quick)     the entries: every class of adapters.diffusers.coverage() and every function of
                    adapters.kdiffusion_coverage.coverage(), with its status; quick: QUICK (a stated subset)
    compute(entry)  one row. Driven (ODE or stochastic): the conformance check in quick mode (conformance.check:
                    the order on gmm-8d, EDM and logSNR grids; a stochastic sampler's weak-order items) and the
                    as-shipped pass (conformance.shipped for diffusers, conformance.shipped_kdiffusion for
                    k-diffusion) at NS (quick: QUICK_NS). sample_dpm_fast (no harness grid): the as-shipped pass and
                    its float64 order on its own grid (shipped_kdiffusion.fast_order). Refused: the reason only.
    run(...)        every row, each cached in a results store (harness.store) keyed by the entry, the step counts and
                    the fingerprint of the code that computes a row (this module and everything it imports in
                    sdm_verify and analytic) with the versions of torch, numpy, scipy, diffusers and k-diffusion: a
                    rerun of the same code reuses the rows, a change recomputes them. A row whose computation raised is
                    kept as "error" and not stored.
    write(rows)     OUT/index.md and OUT/rows.json.

Verdict: PASS when every judged item of the check passes and the as-shipped pass passes (a k-diffusion ODE's
measured order judged by the check itself; dpm_fast's measured order >= claimed - 0.2, the theory rule on a
Gaussian); FAIL with the failed items' one-line reasons; refused with its reason. The W2 columns are to the data law
p_0 (a scheduler whose grid ends at sigma_min > 0 keeps that gap in it; the as-shipped verdict judges convergence to
p at its grid's end).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..harness import fingerprint
from ..harness.progress import Progress, format_seconds
from ..harness.store import ResultStore

STUDY = "outside/v1"
TOL = 0.2
#: the --quick subset: two diffusers classes, four k-diffusion functions (ODE, stochastic, own grid, refused)
QUICK = (("diffusers", "EulerDiscreteScheduler"), ("diffusers", "VQDiffusionScheduler"),
         ("k-diffusion", "sample_euler"), ("k-diffusion", "sample_heun"), ("k-diffusion", "sample_euler_ancestral"),
         ("k-diffusion", "sample_dpm_fast"), ("k-diffusion", "sample_dpm_adaptive"))
#: the config a diffusers class is driven with where its default is refused by the adapter (stated in the row;
#: its as-shipped pass in the class's default config is reported beside it, in the row's note)
CONFIGS = {"DDIMScheduler": {"clip_sample": False}, "DDPMScheduler": {"clip_sample": False}}
COLUMNS = ("library", "sampler", "status", "claimed", "measured", "w2_10", "w2_25", "verdict", "reason")


@dataclass(frozen=True)
class Entry:
    library: str  # "diffusers" or "k-diffusion"
    name: str
    status: str  # driven-ode / driven-stochastic / driven-shipped / refused
    reason: str


def plan(quick: bool = False, only=None) -> list[Entry]:
    """Every diffusers scheduler class and k-diffusion sampler with its coverage status; quick: the QUICK subset;
    only: an explicit list of (library, name) pairs."""
    from ..adapters.diffusers.coverage import coverage as diffusers_coverage
    from ..adapters.kdiffusion_coverage import coverage as kdiffusion_coverage

    entries = [Entry("diffusers", *row) for row in diffusers_coverage()]
    entries += [Entry("k-diffusion", *row) for row in kdiffusion_coverage()]
    wanted = list(only) if only is not None else (list(QUICK) if quick else None)
    if wanted is None:
        return entries
    known = {(e.library, e.name): e for e in entries}
    missing = [w for w in wanted if tuple(w) not in known]
    if missing:
        raise ValueError(f"only: unknown sampler(s) {missing}")
    return [known[tuple(w)] for w in wanted]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def code() -> dict:
    """The fingerprint of the code that computes a row, with the library versions."""
    part = fingerprint.modules_part("outside", ("sdm_verify.report.outside",), ("sdm_verify", "analytic"))
    return {"outside": part.digest, **fingerprint.versions(), "diffusers": _version("diffusers"),
            "k-diffusion": _version("k-diffusion")}


def config(entry: Entry, quick: bool) -> dict:
    from ..conformance.shipped import NS, QUICK_NS

    return {"study": STUDY, "library": entry.library, "name": entry.name, "status": entry.status,
            "ns": list(QUICK_NS if quick else NS), "code": code()}


# ---------------------------------------------------------------- one row


def _w2(shipped, n):
    row = next((r for r in shipped.rows if r.n == n), None)
    return None if row is None or row.w2_to_zero is None else float(row.w2_to_zero)


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _checked(spec: str, config: dict | None = None):
    """(claimed, measured, measured_text, failed reasons, check json, solver) of the quick conformance check."""
    from ..adapters import spec as specs
    from ..conformance import check

    loaded = specs.load(spec, config)
    result = check(loaded, quick=True, progress=False)
    failed = [f"{n}: {_short(result.items[n].detail, 110)}" for n in result.failed]
    doc = {k: v for k, v in result.to_json().items() if k != "cases"}  # the per-case series stay out of the page
    if "weak_order" in result.items:  # a stochastic sampler
        item = result.items["weak_order"]
        fit = item.data.get("fit") or {}
        measured = fit.get("order") if fit.get("ok") else None
        text = (f"{item.value} (weak, W2)" if measured is not None else "no window")
        return result.claimed_order, measured, text, failed, doc, loaded.solver
    measured = result.measured_orders().get("overall")
    text = "—" if measured is None else f"{measured:.2f}"
    return result.claimed_order, measured, text, failed, doc, loaded.solver


def _blank(entry: Entry) -> dict:
    return {"library": entry.library, "sampler": entry.name, "status": entry.status, "claimed": None,
            "claim_source": None, "measured": None, "measured_text": "—", "w2_10": None, "w2_25": None,
            "verdict": "refused", "reason": entry.reason, "check": None, "shipped": None, "seconds": 0.0,
            "config": None, "note": None}


def compute(entry: Entry, quick: bool = False) -> dict:
    """One row of the table (module docstring)."""
    row = _blank(entry)
    if entry.status == "refused":
        return row
    start = time.perf_counter()
    failed: list[str] = []
    if entry.library == "diffusers":
        from ..conformance.shipped import as_shipped

        cfg = CONFIGS.get(entry.name)
        claimed, measured, text, failed, row["check"], solver = _checked(f"diffusers:{entry.name}", cfg)
        row["claim_source"] = getattr(solver, "claim_source", None) or "the diffusers adapter's declared order"
        shipped = as_shipped(solver, quick=quick)
        if cfg:
            default = as_shipped(solver.cls, {}, quick=quick)
            row["config"], row["default_shipped"] = cfg, default.to_json()
            row["note"] = (f"run with {json.dumps(cfg)} (the class default is refused by the adapter); as shipped "
                           f"in the class's default config: W2 N=10 {_num(_w2(default, 10))}, N=25 "
                           f"{_num(_w2(default, 25))}, {default.verdict.upper()}"
                           + (f" ({'; '.join(default.failures)})" if default.failures else ""))
    else:
        from ..adapters.kdiffusion_coverage import claim
        from ..conformance.shipped_kdiffusion import as_shipped, fast_order

        claimed, row["claim_source"] = claim(entry.name)
        if entry.status == "driven-shipped":
            fast = fast_order()
            measured, row["check"] = fast["order"], {"fast_order": fast}
            text = "—" if measured is None else f"{measured:.2f} (float64, own grid)"
            if measured is None or measured < claimed - TOL:
                failed.append(f"order: measured {text} on its own grid, claimed {claimed:g} (>= claimed - {TOL})")
        else:
            check_claimed, measured, text, failed, row["check"], _ = _checked(f"kdiffusion:{entry.name}")
            claimed = check_claimed if check_claimed is not None else claimed
        shipped = as_shipped(entry.name, quick=quick)
    if shipped.failures:  # first, and once: the same failure often repeats at every N
        more = len(shipped.failures) - 1
        failed.insert(0, f"as shipped: {_short(shipped.failures[0], 160)}" + (f" (and {more} more)" if more else ""))
    row.update(claimed=claimed, measured=measured, measured_text=text, w2_10=_w2(shipped, 10),
               w2_25=_w2(shipped, 25), shipped=shipped.to_json(), verdict="FAIL" if failed else "PASS",
               reason="; ".join(failed) if failed else entry.reason, seconds=time.perf_counter() - start)
    return row


# ---------------------------------------------------------------- the run


def run(quick: bool = False, store=None, progress: bool = True, only=None) -> list[dict]:
    """Every row of plan(quick, only), reused from `store` (a path or an open ResultStore; None: in memory) when the
    same code computed it. Each row gets `cached` (True when reused) and keeps `seconds` (its compute time)."""
    entries = plan(quick, only)
    own = store is not None and not isinstance(store, ResultStore)
    db = ResultStore(store) if own else store
    rows = []
    try:
        with Progress(len(entries), "outside", enabled=progress) as bar:
            for entry in entries:
                cfg = config(entry, quick) if entry.status != "refused" else None
                hit = db.get(cfg) if db is not None and cfg is not None else None
                if hit is not None:
                    row = dict(hit["row"], cached=True)
                else:
                    try:
                        row = dict(compute(entry, quick), cached=False)
                    except Exception as exc:  # noqa: BLE001 - the table goes on; the row says what raised
                        row = dict(_blank(entry), cached=False, verdict="error",
                                   reason=f"{type(exc).__name__}: {_short(exc, 200)}")
                    if db is not None and cfg is not None and row["verdict"] != "error":
                        db.put(cfg, {"row": _plain(row)})
                rows.append(row)
                bar.update()
    finally:
        if own:
            db.close()
    return rows


def _plain(value):
    """JSON-plain copy (non-finite floats -> None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- the page


def _num(x, fmt=".3g") -> str:
    return "—" if x is None else format(x, fmt)


def _claimed(row) -> str:
    if row["status"] == "refused":
        return "—"
    return "none" if row["claimed"] is None else f"{row['claimed']:g}"


def _verdict(row) -> str:
    if row["verdict"] == "refused":
        return f"refused: {row['reason']}"
    if row["verdict"] in ("FAIL", "error"):
        return f"{row['verdict']}: {_short(row['reason'], 420)}" + (f" ({row['note']})" if row.get("note") else "")
    return "PASS" + (f" ({row['note']})" if row.get("note") else "")


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The page's cells: library, sampler, status, claimed, measured, W2 N=10, W2 N=25, verdict."""
    return [[r["library"], f"`{r['sampler']}`" + (f" {json.dumps(r['config'])}" if r.get("config") else ""),
             r["status"], _claimed(r),
             r["measured_text"] if r["status"] != "refused" else "—", _num(r["w2_10"]), _num(r["w2_25"]),
             _verdict(r).replace("|", "\\|")] for r in rows]


def markdown(rows: list[dict], quick: bool, elapsed: float | None = None) -> str:
    from ..conformance.shipped import NS, QUICK_NS, TARGET
    from ..conformance.shipped import STOCHASTIC_SAMPLES as DIFFUSERS_SAMPLES
    from ..conformance.shipped_kdiffusion import STOCHASTIC_SAMPLES, mc_floor
    from ..harness import targets

    floor = mc_floor(targets.get(TARGET), STOCHASTIC_SAMPLES)

    count = {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "FAIL", "refused", "error")}
    cost = sum(r.get("seconds") or 0.0 for r in rows)
    versions = code()
    head = [
        "# Outside samplers: every diffusers scheduler and k-diffusion sampler, validated or refused",
        "",
        "Produced by `sdm-verify outside" + (" --quick" if quick else "") + "` (sdm_verify.report.outside). "
        f"diffusers {versions['diffusers']}, k-diffusion {versions['k-diffusion']}, torch {versions['torch']}.",
        "",
        f"**{len(rows)} rows: {count['PASS']} PASS, {count['FAIL']} FAIL, {count['refused']} refused"
        + (f", {count['error']} error" if count["error"] else "") + ".**"
        + (" Quick subset: " + ", ".join(f"{lib} {n}" for lib, n in QUICK) + "." if quick else ""),
        "",
        "- *claimed*: the order the adapter declares from the sampler's paper (\"none\": a stochastic sampler in its "
        "default config, for which no weak order is claimed).",
        "- *measured*: the conformance check in quick mode (`validate --quick`: the order on gmm-8d, EDM and logSNR "
        "grids, in float64; for a stochastic sampler the weak order fitted on the exact W2 to p_0.002 on gauss-4d, "
        "N = 16..128); sample_dpm_fast: its float64 order on its own grid (n = 3m - 1 NFE, m = 4..32).",
        f"- *W2 N=10 / N=25*: the as-shipped pass (N in {list(QUICK_NS if quick else NS)}): the sampler as its "
        "users run it (diffusers: the default config, its own `set_timesteps` grid, its final step; k-diffusion: "
        "default keyword arguments and its own noise, get_sigmas_karras(N, 0.002, 80, rho=7) with the appended 0; "
        "sample_dpm_fast: n = N NFE), float32 samples, the exact gauss-4d denoiser evaluated in float64 and cast to "
        "float32, started from the exact p at its first sigma; W2 to the data law p_0: exact (Bures on the fitted "
        f"affine map) for deterministic samplers, the Bures W2 of the empirical moments of {STOCHASTIC_SAMPLES} "
        f"(k-diffusion) or {DIFFUSERS_SAMPLES} (diffusers) samples for stochastic ones (a sample estimate, biased up "
        f"by its Monte Carlo floor, {floor:.2g} for {STOCHASTIC_SAMPLES} exact draws).",
        "- A config shown beside a name is what the row is run with where the class's default is refused by the "
        "adapter (DDIM / DDPM: clip_sample=True clamps D to [-1, 1]); the as-shipped pass in the class's default "
        "config is then given in the verdict's note.",
        "- *verdict*: PASS when every judged item of the check and the as-shipped pass (finite, ordered own grid, "
        "converging) pass; FAIL with the failed items; refused with the reason.",
        "",
    ]
    header = ["library", "sampler", "status", "claimed", "measured", "W2 N=10", "W2 N=25", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    tail = ["", f"Compute cost of the rows: {format_seconds(cost)} on one CPU thread (sum of the rows' own times"
            + (f"; this run took {format_seconds(elapsed)}, rows reused from the results store cost nothing"
               if elapsed is not None else "") + ")."]
    return "\n".join(head + lines + tail) + "\n"


def compact(rows: list[dict]) -> str:
    """The README's table: one line per row, the verdict cut to its first reason (OUT/table.md)."""
    def verdict(r) -> str:
        if r["verdict"] == "refused":
            return "refused: " + _short(r["reason"], 90)
        if r["verdict"] in ("FAIL", "error"):
            return f"**{r['verdict']}**: " + _short(r["reason"], 110)
        return "PASS"

    header = ["library", "sampler", "claimed", "measured", "W2 as shipped, N = 10 / 25", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        name = f"`{r['sampler']}`" + (f" {json.dumps(r['config'])}" if r.get("config") else "")
        measured = "—" if r["status"] == "refused" else _short(r["measured_text"], 40)
        w2 = "—" if r["w2_10"] is None and r["w2_25"] is None else f"{_num(r['w2_10'])} / {_num(r['w2_25'])}"
        cells = [r["library"], name, _claimed(r), measured, w2, verdict(r).replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out, quick: bool = False, elapsed: float | None = None) -> Path:
    """OUT/index.md, OUT/table.md (the README's compact table) and OUT/rows.json; returns the index path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(_plain(rows), indent=1) + "\n", encoding="utf-8")
    index = out / "index.md"
    index.write_text(markdown(rows, quick, elapsed), encoding="utf-8")
    (out / "table.md").write_text(compact(rows), encoding="utf-8")
    return index
