"""`sdm-verify stochastic`: the stochastic samplers' report (sdm_verify.report.stochastic): weak and strong orders
against their claims on exact laws, and exact W2 at equal NFE for ODE against SDE samplers."""

from __future__ import annotations

import torch

from ..report.page import check_output_dir


def add_parser(sub) -> None:
    s = sub.add_parser("stochastic", help="stochastic samplers: weak/strong orders against claims, exact W2 at equal "
                       "NFE (ODE against SDE); writes OUT/index.md",
                       description="Measure every registered stochastic sampler (exact output law on gauss-4d, "
                       "strong order against torchsde's SRK where claimed, weak error on gmm-1d through exact "
                       "moments) and the ODE baselines at equal NFE; write OUT/index.md, results.json and a figure.")
    s.add_argument("--out", default="reports/stochastic", help="output folder (default: reports/stochastic)")
    s.add_argument("--no-figures", action="store_true", help="skip the PNG figure")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..report import stochastic

    out = check_output_dir(args.out, "--out")
    torch.set_num_threads(1)
    path = stochastic.write(out, progress=True, figures=not args.no_figures)
    print(f"wrote {path}")
    return 0
