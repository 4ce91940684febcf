"""`sdm-verify outside`: the table of every diffusers scheduler class and k-diffusion sampler in its default config
(sdm_verify.report.outside): claimed and measured order, as-shipped W2 at N = 10 and 25, verdict."""

from __future__ import annotations

import time

from .common import add_store_options, study_outputs, write_json


def add_parser(sub) -> None:
    s = sub.add_parser("outside", help="every diffusers scheduler and k-diffusion sampler: validated or refused "
                       "(table)", description="One row per diffusers *Scheduler class and k-diffusion sample_* "
                       "function in its default config: claimed order, measured order (validate --quick), "
                       "as-shipped W2 to the data law at N = 10 and 25 (own grid, float32, exact denoiser), verdict "
                       "(PASS / FAIL reason / refused reason). Writes OUT/index.md and OUT/rows.json. --quick: a "
                       "subset (EulerDiscreteScheduler, VQDiffusionScheduler, sample_euler, sample_heun, "
                       "sample_euler_ancestral, sample_dpm_fast, sample_dpm_adaptive), as-shipped N in {5, 10, 25}.")
    s.add_argument("--quick", action="store_true", help="the quick subset (well under a minute)")
    s.add_argument("--out", default="reports/outside", help="report folder (default: reports/outside)")
    s.add_argument("--json", metavar="FILE", help="also write the rows as a JSON list to FILE")
    add_store_options(s, "results/outside.sqlite")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..report import outside

    out_json, out, store = study_outputs(args)
    start = time.perf_counter()
    rows = outside.run(quick=args.quick, store=store)
    elapsed = time.perf_counter() - start
    if out_json is not None:
        write_json(out_json, outside._plain(rows))
    print(f"wrote {outside.write(rows, out, quick=args.quick, elapsed=elapsed)}")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "FAIL", "refused", "error")}
    print(", ".join(f"{n} {v}" for v, n in counts.items()) + f"; {elapsed:.0f} s "
          f"({sum(r.get('cached', False) for r in rows)} rows reused from the store)")
    return 0
