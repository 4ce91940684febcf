"""`sdm-verify validate SPEC`: the conformance check (sdm_verify.conformance) of one solver, registered or outside
(module:attr, diffusers:Scheduler, kdiffusion:sample_x), as a verdict table and optionally JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..adapters import spec as specs
from ..adapters.spec import as_solver
from ..conformance import check
from ..harness.targets import available as available_targets
from .common import UsageError, positive


def add_parser(sub) -> None:
    v = sub.add_parser(
        "validate", help="conformance check of one solver (orders, symbolic order, NFE, exactness identities, "
        "float32, final step, determinism); exit 1 if a claim fails",
        description="Run the conformance check (sdm_verify.conformance) on SPEC: its measured convergence order on "
        "exact targets per process and schedule, judged against the claimed order by the theory rules "
        "(|measured - claimed| <= 0.2 on mixtures; measured >= claimed - 0.2 on the Gaussian); its symbolic order "
        "(own update_rule, or a declared equivalent registered solver checked to 1e-10); counted NFE against the "
        "declared nfe(n) or --claimed-nfe-per-step; exactness on a point-mass target and affinity on a Gaussian "
        "target (1e-12); float32 drift (<= 1e-4); the final step into sigma = 0 (reported); bitwise determinism. "
        "Prints a verdict table. Exit status 0 if every item passes, 1 if one fails, 2 on bad usage.")
    v.add_argument("solver", metavar="SPEC", help="a registered solver name; module:attr naming a callable "
                   "solver(denoiser, x, sigmas) -> x, a class (built without arguments) or an instance; "
                   "diffusers:SchedulerClass (with --config); kdiffusion:sample_name (with --config for its keyword "
                   "arguments, e.g. '{\"eta\": 0}')")
    v.add_argument("--config", metavar="JSON", help="diffusers scheduler config or k-diffusion sampler keyword "
                   "arguments: a JSON object, inline or as a file path")
    v.add_argument("--claimed-order", type=float, metavar="P", help="the order to check (default: the solver's "
                   "declared `order`)")
    v.add_argument("--claimed-nfe-per-step", type=float, metavar="K", help="check counted NFE = K N exactly "
                   "(default: the solver's declared nfe(n), if any)")
    v.add_argument("--json", metavar="FILE", help="write the measurements, items and verdict as JSON")
    v.add_argument("--targets", nargs="+", choices=available_targets(), metavar="TARGET",
                   help=f"restrict the order measurements to these targets ({', '.join(available_targets())}; "
                   "default: all)")
    v.add_argument("--quick", action="store_true", help="measure orders on gmm-8d (EDM and logSNR grids) only")
    v.set_defaults(func=run)


def load_solver(spec: str, config: dict | None = None):
    """SPEC -> sdm_verify.adapters.spec.LoadedSolver: a registered name, module:attr (a callable, a class built
    without arguments or an instance), diffusers:ClassName or kdiffusion:sample_name (with `config`)."""
    return specs.load(spec, config)


def read_config(text: str | None) -> dict | None:
    """--config: a JSON object, given inline or as the path of a JSON file."""
    if text is None:
        return None
    source = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source = Path(text).read_text(encoding="utf-8")
    try:
        config = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config: not a JSON object or a JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config: expected a JSON object, got {type(config).__name__}")
    return config


def validate(spec: str, claimed: float | None = None, targets=None, *, config: dict | None = None,
             claimed_nfe_per_step: float | None = None, quick: bool = False, progress: bool = True):
    """The conformance check (sdm_verify.conformance.check) of `spec` against `claimed` (default: the solver's
    declared `order`). Returns the ConformanceResult."""
    loaded = load_solver(spec, config)
    if claimed is None:
        claimed = as_solver(loaded.solver).order
        if not isinstance(claimed, (int, float)) or isinstance(claimed, bool):
            raise UsageError(f"--claimed-order: required, {spec} declares no numeric `order`")
    positive(claimed, "--claimed-order")
    if claimed_nfe_per_step is not None:
        positive(claimed_nfe_per_step, "--claimed-nfe-per-step")
    return check(loaded, float(claimed), config, claimed_nfe_per_step=claimed_nfe_per_step, targets=targets,
                 quick=quick, progress=progress)


def validation_json(result) -> dict:
    """The --json document: claimed and measured orders (overall, per process, per schedule), NFE, symbolic order,
    identities, float32 drift, final step, determinism, items, verdict and the per-case details."""
    return result.to_json()


def run(args) -> int:
    torch.set_num_threads(1)
    config = read_config(args.config)
    if args.claimed_order is not None:
        positive(args.claimed_order, "--claimed-order")
    if args.claimed_nfe_per_step is not None:
        positive(args.claimed_nfe_per_step, "--claimed-nfe-per-step")
    result = validate(args.solver, args.claimed_order, args.targets, config=config,
                      claimed_nfe_per_step=args.claimed_nfe_per_step, quick=args.quick)
    print(result.table())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(validation_json(result), indent=2) + "\n", encoding="utf-8")
    return 0 if result.ok else 1
