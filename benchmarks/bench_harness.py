"""Cost of one theory-sweep cell, and the share of it spent on the reference (the meter's construction).

For each target (gauss-4d, gmm-1d, gmm-8d), solver (euler, heun, dpmpp_2m, rk4, unipc) and N (32 ... 512) on the
EDM grid (sigma 80 -> 0.002, final=False), `sdm_verify.harness.sweep.compute_cell` is timed twice:
    cold  after `sdm_verify.harness.meters.cached_meter.cache_clear()`: builds the meter (for gmm-8d: SyncMeter's DOP853
          reference flow of 64 samples), then runs and measures the solver;
    warm  with the meter cached, as every later cell of the same target and sigma range in a sweep process.
reference = cold - warm, per cell; per target, the median over its cells, and as a check the meter's construction
timed directly (`cached_meter(target, 80, 0.002)` from a cleared cache: for gmm-8d 64 samples and their DOP853
reference flow; the Bures and quantile meters have no precomputed reference and build in < 1 ms, so their cold -
warm is timing noise around 0). The warm time is split, by timing the solver's calls and
its denoiser's calls inside one more `measure_run`, into solver steps (everything but the denoiser), denoiser
calls, and the meter's own measurement (Bures W2, adaptive 1-D quantile W2 with its refinement rounds (each one a
solver run), or the synchronous error).
A cached meter is keyed by (target, sigma_from, sigma_to): a sweep process pays the reference once per target, so
the sweep's reference share is reference / (reference + sum of warm cells) over the table's cells of that target.
Targets are built (and cached) before timing. torch.set_num_threads(1), as the sweep's workers. All times are
process CPU time (time.process_time): on a shared machine it does not count the time spent waiting for a core.

    python benchmarks/bench_harness.py [--repeats 3] [--ns 32 64 128 256 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sdm_verify.harness import meters, run, sweep, targets

TARGETS = ("gauss-4d", "gmm-1d", "gmm-8d")
SOLVERS = ("euler", "heun", "dpmpp_2m", "rk4", "unipc")
NS = (32, 64, 128, 256, 512)


class TimedSolver:
    """Wraps a solver: accumulates the CPU time of its calls in `.seconds` and of its denoiser calls in `.denoiser`."""

    def __init__(self, solver):
        self.solver, self.seconds, self.denoiser, self.calls = solver, 0.0, 0.0, 0

    def __call__(self, denoiser, x, sigmas, **kw):
        def timed_denoiser(*a, **k):
            t0 = time.process_time()
            try:
                return denoiser(*a, **k)
            finally:
                self.denoiser += time.process_time() - t0

        t0 = time.process_time()
        try:
            return self.solver(timed_denoiser, x, sigmas, **kw)
        finally:
            self.seconds += time.process_time() - t0
            self.calls += 1


def timed(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def bench_reference(target: str, sigma_from: float, sigma_to: float, repeats: int) -> float:
    """Seconds to build the meter of `target` (for SyncMeter: sampling and the DOP853 reference), best of `repeats`."""
    times = []
    for _ in range(repeats):
        meters.cached_meter.cache_clear()
        times.append(timed(lambda: meters.cached_meter(target, sigma_from, sigma_to)))
    return min(times)


def bench_cell(cfg: dict, repeats: int) -> dict:
    cold, warm = [], []
    for _ in range(repeats):
        meters.cached_meter.cache_clear()
        cold.append(timed(lambda: sweep.compute_cell(cfg)))
        warm.append(timed(lambda: sweep.compute_cell(cfg)))
    # split of a warm cell: solver runs vs the meter's own measurement
    solver = TimedSolver(sweep.solver_for(cfg))
    sigma_to = 0.0 if cfg["final"] else cfg["sigma_min"]
    t0 = time.process_time()
    row = run.measure_run(solver, cfg["target"], sweep.grid_for(cfg), sigma_to)
    measure = time.process_time() - t0
    cold_s, warm_s = min(cold), min(warm)
    return dict(
        target=cfg["target"],
        solver=cfg["solver"],
        n=cfg["n"],
        cold=cold_s,
        warm=warm_s,
        cold_minus_warm=cold_s - warm_s,
        solver_runs=solver.seconds,
        denoiser=solver.denoiser,
        runs=solver.calls,
        measure=measure,
        nfe=row["nfe"],
        metric=row["metric"],
        error=row["error"],
    )


def print_cell(r: dict) -> None:
    steps_ms = 1e3 * (r["solver_runs"] - r["denoiser"])
    meter_ms = 1e3 * max(r["measure"] - r["solver_runs"], 0.0)
    ref = r["cold_minus_warm"]
    print(
        f"{r['target']:<9} {r['solver']:<9} {r['n']:>4} {r['nfe']:>5} {r['runs']:>4} {1e3 * r['cold']:>8.1f} "
        f"{1e3 * r['warm']:>8.1f} {1e3 * ref:>7.1f} {ref / r['cold']:>8.1%} {steps_ms:>8.1f} "
        f"{1e3 * r['denoiser']:>8.1f} {meter_ms:>8.1f}"
    )


def summarize(rs: list[dict], build: float) -> dict:
    """One sweep process over the cells `rs` of one target: the reference is paid once."""
    cells = sum(r["warm"] for r in rs)
    diffs = sorted(r["cold_minus_warm"] for r in rs)
    ref = max(diffs[len(diffs) // 2], 0.0)  # median over the cells; noise around 0 where nothing is precomputed
    ref_share = ref / (ref + cells)
    # the cells' time split as the timed runs split it: solver steps, denoiser calls, the meter's measurement
    timed_total = sum(r["measure"] for r in rs)
    steps = sum(r["solver_runs"] - r["denoiser"] for r in rs) / timed_total
    den = sum(r["denoiser"] for r in rs) / timed_total
    return dict(
        cells=len(rs),
        reference=ref,
        meter_build=build,
        cells_seconds=cells,
        ref_share=ref_share,
        steps_share=(1 - ref_share) * steps,
        denoiser_share=(1 - ref_share) * den,
        meter_share=(1 - ref_share) * (1 - steps - den),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ns", type=int, nargs="*", default=list(NS))
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--solvers", nargs="*", default=list(SOLVERS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, summary = [], {}
    print(
        f"{'target':<9} {'solver':<9} {'N':>4} {'NFE':>5} {'runs':>4} {'cold ms':>8} {'warm ms':>8} "
        f"{'ref ms':>7} {'ref/cold':>8} {'steps ms':>8} {'D ms':>8} {'meter ms':>8}"
    )
    for tname in args.targets:
        targets.get(tname)  # build and cache the target outside the timings
        build = bench_reference(tname, sweep.SIGMA_MAX, sweep.SIGMA_MIN, args.repeats)
        for sname in args.solvers:
            for n in args.ns:
                cfg = sweep.Cell(target=tname, solver=sname, schedule="edm", n=n).config()
                rows.append(bench_cell(cfg, args.repeats))
                print_cell(rows[-1])
        summary[tname] = summarize([r for r in rows if r["target"] == tname], build)
    print("\nper target, one sweep process over the cells above (the reference is paid once; shares of the total):")
    print(
        f"{'target':<9} {'cells':>5} {'ref ms':>7} {'build ms':>8} {'cells s':>8} {'ref':>6} {'steps':>6} "
        f"{'D':>6} {'meter':>6}"
    )
    for tname, s in summary.items():
        print(
            f"{tname:<9} {s['cells']:>5} {1e3 * s['reference']:>7.1f} {1e3 * s['meter_build']:>8.1f} "
            f"{s['cells_seconds']:>8.2f} {s['ref_share']:>6.1%} {s['steps_share']:>6.1%} "
            f"{s['denoiser_share']:>6.1%} {s['meter_share']:>6.1%}"
        )
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, best of {args.repeats}, CPU time; "
        f"load average {load:.2f}"
    )
    if args.json:
        meta = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "clock": "cpu",
            "loadavg": load,
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
