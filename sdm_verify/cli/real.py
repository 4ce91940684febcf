"""`sdm-verify real`: the harness on a real denoiser (the committed digits model or a checkpoint), into the store,
then the report rewritten with its theory and real-model sections. Under torchrun the seeds are sharded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import report
from ..models import load_denoiser
from ..models.digits import digits_checkpoint
from ..real.distributed import auto_batch, context, select_device
from ..real.harness import RealSettings
from ..real.run import default_pairs, run_real
from .common import open_store


def add_parser(sub) -> None:
    p = sub.add_parser(
        "real", help="measure the solvers on a real denoiser (the committed digits model or your checkpoint)",
        description="Run the theory harness on a real model: a checked high-accuracy reference solution, measured "
        "orders of the solvers against it, SDM's schedule and adaptive solver against the baselines at equal NFE, "
        "sample quality (digits model), written to the same store and report as `sdm-verify theory`. Under "
        "torchrun the seeds are sharded across processes.")
    p.add_argument("--model", default="digits", metavar="PATH",
                   help="checkpoint: an sdm-verify model dir, a diffusers pipeline/UNet dir or an NVlabs EDM/EDM2 "
                   ".pkl; 'digits' = the committed digits model (default)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu (default), cuda, cuda:K or auto")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="the model's dtype for the solver runs (the reference is always float64)")
    p.add_argument("--quick", action="store_true", help="a solver subset, EDM grid, N = 8..64, 512 samples")
    p.add_argument("--solvers", nargs="+", metavar="NAME", help="registered solvers to measure (default: all)")
    p.add_argument("--ns", nargs="+", type=int, metavar="N", help="step counts (default: 8..64 quick, 8..128)")
    p.add_argument("--seeds", type=int, default=16, metavar="K", help="start points per cell (default: 16)")
    p.add_argument("--samples", type=int, metavar="K", help="samples per sampler for the quality table "
                   "(default: 512 quick, 2048; 0 skips it)")
    p.add_argument("--batch", type=int, metavar="B", help="batch size (default: probed on CUDA, 64 on CPU)")
    p.add_argument("--sigma-min", type=float, metavar="S", help="default: max(model's sigma_min, 0.002)")
    p.add_argument("--sigma-max", type=float, metavar="S", help="default: min(model's sigma_max, 80)")
    p.add_argument("--labels", type=int, metavar="C", help="class label for a class-conditional model")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow executing the code embedded in an NVlabs pickle (only for files you trust)")
    p.add_argument("--out", default="reports/theory", metavar="DIR",
                   help="report directory, shared with `theory` (default: %(default)s)")
    p.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite)")
    p.set_defaults(func=run)


def resolve_model_path(spec: str) -> Path:
    """--model: "digits" is the committed digits model, anything else a path."""
    return digits_checkpoint() if spec == "digits" else Path(spec)


def run(args) -> int:
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "results.sqlite"
    with open_store(db, must_exist=False) as store:
        record = run_from_args(args, store)
        if not record:  # a non-zero rank of a torchrun launch: rank 0 writes the report
            return 0
        results, run_record = report.load_results(store)
        md, _ = report.write_report(store, results, out, run_record)
    print(f"report: {md}")
    return 0


def run_from_args(args, store) -> dict:
    if args.seeds < 1:
        raise ValueError(f"--seeds: must be >= 1 (got {args.seeds})")
    ctx = context(args.device)
    device = select_device(args.device, ctx.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // max(ctx.world, 1)))
    model = load_denoiser(resolve_model_path(args.model), trust_pickle=args.trust_pickle, device=device,
                          dtype=getattr(torch, args.dtype))
    if args.labels is not None:
        if not model.label_dim:
            raise ValueError("--labels: the model is unconditional")
        model = model.with_labels(args.labels)
    batch = args.batch or auto_batch(model, device, getattr(torch, args.dtype))
    settings = RealSettings(seeds=args.seeds, sigma_min=args.sigma_min, sigma_max=args.sigma_max, dtype=args.dtype,
                            batch=batch)
    pairs = default_pairs(args.solvers, quick=args.quick)
    try:
        record = run_real(model, store, settings=settings, device=str(device), pairs=pairs, ns=args.ns,
                          quick=args.quick, samples=args.samples, ctx=ctx)
    finally:
        ctx.close()
    if record:
        print(json.dumps({k: record[k] for k in ("model", "floor", "wall")}, default=str))
    return record
