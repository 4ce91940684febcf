"""`sdm-verify real`: the harness on a real denoiser (the committed digits model or a checkpoint), into the store,
then the report rewritten with its theory and real-model sections. Under torchrun the seeds are sharded."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import torch

from .. import report
from ..errors import StoreError
from ..harness.store import ResultStore
from ..models import ModelError, UntrustedPickleError, detect_format, load_denoiser
from ..models.base import SIGMA_SLACK
from ..models.digits import digits_checkpoint
from ..real.distributed import auto_batch, context, select_device
from ..real.harness import RealSettings, check_ns
from ..real.run import check_solvers, default_pairs, run_real
from .common import UsageError, check_output_dir, open_store


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
    p.add_argument("--batch", type=batch_size, metavar="B",
                   help="batch size, a positive integer, or 'auto' (the default: probed on CUDA, 64 on CPU)")
    p.add_argument("--sigma-min", type=float, metavar="S", help="default: max(model's sigma_min, 0.002)")
    p.add_argument("--sigma-max", type=float, metavar="S", help="default: min(model's sigma_max, 80)")
    p.add_argument("--labels", type=int, metavar="C", help="class label for a class-conditional model")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow executing the code embedded in an NVlabs pickle (only for files you trust)")
    p.add_argument("--out", default="reports/theory", metavar="DIR",
                   help="report directory, shared with `theory` (default: %(default)s)")
    p.add_argument("--db", metavar="FILE", help="results store (default: DIR/results.sqlite)")
    p.set_defaults(func=run)


def batch_size(text: str) -> int | None:
    """--batch: 'auto' (None) or an integer (checked to be positive with the other arguments)."""
    return None if text.strip().lower() == "auto" else int(text)


def resolve_model_path(spec: str) -> Path:
    """--model: "digits" is the committed digits model, anything else a path."""
    return digits_checkpoint() if spec == "digits" else Path(spec)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _renamed(exc: ValueError, option: str) -> ValueError:
    """`exc` (same class) with its leading argument name ("path: ", "device: ") replaced by the option's."""
    msg = str(exc)
    head, sep, rest = msg.partition(": ")
    if sep and " " not in head:
        msg = rest
    return type(exc)(f"{option}: {msg}")


def check_args(args) -> tuple[Path, Path]:
    """Every argument of `real` that can be checked without loading the model, before anything runs or is created:
    raises UsageError/OutputPathError/ModelError (exit status 2) naming the option. Returns (out, db)."""
    if not _is_int(args.seeds) or args.seeds < 1:
        raise UsageError(f"--seeds: must be a positive integer (got {args.seeds})")
    if args.samples is not None and (not _is_int(args.samples) or args.samples < 0):
        raise UsageError(f"--samples: must be an integer >= 0; 0 skips the quality table (got {args.samples})")
    if args.batch is not None and (not _is_int(args.batch) or args.batch < 1):
        raise UsageError(f"--batch: must be a positive integer, or 'auto' (got {args.batch})")
    if args.labels is not None and (not _is_int(args.labels) or args.labels < 0):
        raise UsageError(f"--labels: must be a class index >= 0 (got {args.labels})")
    if args.dtype not in ("float64", "float32"):
        raise UsageError(f"--dtype: float64 or float32 (got {args.dtype!r})")
    for option, v in (("--sigma-min", args.sigma_min), ("--sigma-max", args.sigma_max)):
        if v is not None and not _is_positive(v):
            raise UsageError(f"{option}: must be a finite positive number (got {v})")
    if args.sigma_min is not None and args.sigma_max is not None and not args.sigma_min < args.sigma_max:
        raise UsageError(f"--sigma-min, --sigma-max: need sigma_min < sigma_max (got {args.sigma_min}, "
                         f"{args.sigma_max})")
    try:
        if args.ns is not None:
            check_ns(args.ns, "--ns")
        if args.solvers is not None:
            check_solvers(args.solvers, "--solvers")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        select_device(args.device)
    except ValueError as exc:
        raise UsageError(str(_renamed(exc, "--device"))) from None
    if not isinstance(args.model, str) or not args.model.strip():
        raise UsageError(f"--model: expected 'digits' or a checkpoint path (got {args.model!r})")
    try:
        fmt = detect_format(resolve_model_path(args.model))
    except ModelError as exc:
        raise _renamed(exc, "--model") from None
    if fmt == "nvlabs-pickle" and not args.trust_pickle:
        raise UntrustedPickleError(f"--model: {args.model} is an NVlabs persistent pickle: it embeds Python source "
                                   f"code that loading executes; pass --trust-pickle only if you trust where it "
                                   f"came from")
    out = check_output_dir(args.out, "--out")
    db = Path(args.db) if args.db else out / "results.sqlite"
    name = "--db" if args.db else "--out"
    ResultStore.check_path(db, name=name, writable=True, must_exist=False)
    if db.is_file() and db.stat().st_size > 0:  # an existing store must be one of ours before the model is loaded
        try:
            ResultStore(db, readonly=True, name=name).close()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"{name}: {db} is not a results store ({exc})") from None
    return out, db


def load_model(args, device: torch.device):
    """The model of --model on `device`, with --labels applied and --sigma-min/--sigma-max checked against its
    noise range: refusals name the option, and come before any model call."""
    try:
        model = load_denoiser(resolve_model_path(args.model), trust_pickle=args.trust_pickle, device=device,
                              dtype=getattr(torch, args.dtype))
    except ModelError as exc:
        raise _renamed(exc, "--model") from None
    k = int(getattr(model, "label_dim", 0) or 0)
    if args.labels is not None:
        if not k:
            raise UsageError("--labels: the model is unconditional (it takes no --labels)")
        if not args.labels < k:
            raise UsageError(f"--labels: the model has {k} classes: a class index in [0, {k - 1}] (got {args.labels})")
        model = model.with_labels(args.labels)
    elif k:
        raise UsageError(f"--labels: the model is class-conditional ({k} classes): pass --labels C, C in [0, {k - 1}]")
    lo, hi = float(model.sigma_min), float(model.sigma_max)
    for option, v in (("--sigma-min", args.sigma_min), ("--sigma-max", args.sigma_max)):
        if v is not None and not lo * (1 - SIGMA_SLACK) <= v <= hi * (1 + SIGMA_SLACK):
            raise UsageError(f"{option}: {v} is outside the model's noise range [{lo:.6g}, {hi:.6g}]")
    return model


def run(args) -> int:
    out, db = check_args(args)
    ctx = context(args.device)
    device = select_device(args.device, ctx.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // max(ctx.world, 1)))
    model = load_model(args, device)
    settings = RealSettings(seeds=args.seeds, sigma_min=args.sigma_min, sigma_max=args.sigma_max, dtype=args.dtype,
                            batch=args.batch or 1)
    try:
        settings.resolve(model)  # e.g. --sigma-min above the default sigma_max: refused before the store is opened
    except ValueError as exc:
        msg = str(exc).removeprefix("sigma range: ")
        raise UsageError(f"--sigma-min, --sigma-max: {msg} (an omitted bound is max(the model's sigma_min, 0.002) "
                         f"or min(the model's sigma_max, 80))") from None
    pairs = default_pairs(args.solvers, quick=args.quick)
    with open_store(db, must_exist=False) as store:
        record = run_from_args(args, store, model=model, device=device, ctx=ctx, pairs=pairs)
        if not record:  # a non-zero rank of a torchrun launch: rank 0 writes the report
            return 0
        results, run_record = report.load_results(store)
        md, _ = report.write_report(store, results, out, run_record)
    print(f"report: {md}")
    return 0


def run_from_args(args, store, *, model=None, device=None, ctx=None, pairs=None) -> dict:
    """Measure with parsed `args` into `store` (the model, device, context and pairs as `run` prepared them, or
    prepared here from `args`)."""
    if model is None:
        check_args(args)
        ctx = context(args.device)
        device = select_device(args.device, ctx.local_rank)
        model = load_model(args, device)
    ctx = ctx or context(args.device)
    batch = args.batch or auto_batch(model, device, getattr(torch, args.dtype))
    settings = RealSettings(seeds=args.seeds, sigma_min=args.sigma_min, sigma_max=args.sigma_max, dtype=args.dtype,
                            batch=batch)
    pairs = pairs or default_pairs(args.solvers, quick=args.quick)
    try:
        record = run_real(model, store, settings=settings, device=str(device), pairs=pairs, ns=args.ns,
                          quick=args.quick, samples=args.samples, ctx=ctx)
    finally:
        ctx.close()
    if record:
        print(json.dumps({k: record[k] for k in ("model", "floor", "wall")}, default=str))
    return record
