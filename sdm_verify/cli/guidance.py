"""`sdm-verify guidance`: solvers on the exact classifier-free-guidance targets (sdm_verify.studies.guidance)."""

from __future__ import annotations

import math

from .common import add_store_options, study_outputs, write_json


def add_parser(sub) -> None:
    s = sub.add_parser("guidance", help="orders, stability and the DPM-Solver++ claim under classifier-free guidance",
                       description="Measure every ODE solver of the theory matrix on the guided field D_u + w (D_c - "
                       "D_u) of exact targets (1-D and 2-D labelled mixtures, a joint Gaussian): orders against w, "
                       "few-step errors, stability boundaries, the DPM-Solver++ guidance claim, dynamic "
                       "thresholding, SDM's latch and schedule, stochastic samplers and the CFG-to-tilted gap; "
                       "writes OUT/index.md with figures. --quick: euler, heun, dpmpp_2m, dpm_solver_3, unipc, ipndm "
                       "at w in {1, 3, 7.5} (about a minute); the full matrix: docs/guidance.md §7.")
    s.add_argument("--quick", action="store_true", help="the quick matrix (about a minute)")
    s.add_argument("--json", metavar="FILE", help="write every measured curve and table as JSON")
    s.add_argument("--out", default="reports/guidance", help="report folder (default: reports/guidance)")
    add_store_options(s, "results/guidance.sqlite")
    s.set_defaults(func=run)


def _plain(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def run(args) -> int:
    from ..studies.guidance import report, study

    out_json, out, store = study_outputs(args)
    res = study.run(quick=args.quick, store=store)
    if out_json is not None:
        write_json(out_json, _plain(res.to_dict()))
    print(f"wrote {report.write(res, out)}")
    return 0
