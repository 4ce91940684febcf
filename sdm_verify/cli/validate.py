"""`sdm-verify validate SPEC`: the conformance check (sdm_verify.conformance) of one solver, registered or outside
(module:attr, diffusers:Scheduler, kdiffusion:sample_x), as a verdict table and optionally JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ..adapters import spec as specs
from ..adapters.spec import as_solver
from ..conformance import check
from ..harness.targets import available as available_targets
from .common import UsageError, check_output, positive  # noqa: F401  (check_output: re-exported)


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
    v.add_argument("--guidance", type=float, metavar="W", help="check the solver on the classifier-free-guided field "
                   "D_u + W (D_c - D_u) (W finite, >= 0; diffusers guidance_scale = k-diffusion cond_scale = W): "
                   "orders on a joint Gaussian (exact law) and a labelled mixture (DOP853 reference); diffusers "
                   "schedulers get the pipeline's eps_u + W (eps_c - eps_u) (the conditional branch alone for W <= 1), "
                   "k-diffusion samplers a CFG denoiser wrapper; one NFE = one batched call of both branches "
                   "(sdm_verify.conformance.guided)")
    v.set_defaults(func=run)


def load_solver(spec: str, config: dict | None = None):
    """SPEC -> sdm_verify.adapters.spec.LoadedSolver: a registered name, module:attr (a callable, a class built
    without arguments or an instance), diffusers:ClassName or kdiffusion:sample_name (with `config`)."""
    return specs.load(spec, config)


def _json_kind(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), "not an object")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _object(pairs):
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(f"duplicate key(s) {duplicated}")
    return dict(pairs)


def _parse(source: str, where: str):
    """json.loads refusing NaN/Infinity and duplicate keys, any failure a UsageError naming `where`."""
    try:
        return json.loads(source, parse_constant=_no_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config: {where} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise UsageError(f"--config: {where} is nested too deeply to be a scheduler config or sampler keywords") \
            from None
    except ValueError as exc:
        raise UsageError(f"--config: {where} is not valid here ({exc})") from None


def read_config(text: str | None) -> dict | None:
    """--config: a JSON object, given inline or as the path of a JSON file. Something that looks like a path (ends
    with .json, contains a path separator, or exists) is read as a file: a missing one is "no such file"; a file or
    inline text that is not valid JSON names the JSON error with its line and column; JSON that is not an object
    says what it is."""
    if text is None:
        return None
    stripped = text.strip()
    inline = stripped[:1] in ("{", "[", '"')
    try:
        path = Path(text)
        exists = not inline and path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL: not a file
        exists = False
    looks_like_path = not inline and (stripped.lower().endswith(".json") or "/" in text or os.sep in text or exists)
    if looks_like_path:
        if not exists:
            raise UsageError(f"--config: no such file {text}")
        if path.is_dir():
            raise UsageError(f"--config: {text} is a directory, not a JSON file")
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--config: {text} is not a UTF-8 text file") from None
        except OSError as exc:
            raise UsageError(f"--config: cannot read {text} ({exc.strerror or exc})") from None
        config = _parse(source, f"the file {text}")
        where = f"the file {text}"
    else:
        if not stripped:
            raise UsageError("--config: empty; give a JSON object, inline or as a file path")
        config = _parse(text, "not a JSON object: the inline text")
        where = "the inline text"
    if not isinstance(config, dict):
        raise UsageError(f"--config: expected a JSON object, {where} is {_json_kind(config)}")
    return config


def validate(spec: str, claimed: float | None = None, targets=None, *, config: dict | None = None,
             claimed_nfe_per_step: float | None = None, quick: bool = False, progress: bool = True,
             guidance: float | None = None):
    """The conformance check (sdm_verify.conformance.check) of `spec` against `claimed` (default: the solver's
    declared `order`; a declared order that cannot be read fails the order item), on the guided field at scale
    `guidance` when given. Returns the ConformanceResult."""
    if guidance is not None:
        check_guidance(guidance)
    if claimed is not None:
        positive(claimed, "--claimed-order")
    if claimed_nfe_per_step is not None:
        positive(claimed_nfe_per_step, "--claimed-nfe-per-step")
    loaded = load_solver(spec, config)
    if claimed is None:
        try:
            declared = as_solver(loaded.solver).order
        except Exception:  # unreadable: conformance.check fails the order item
            declared = math.nan
        if declared is None and not getattr(loaded.solver, "needs_noise", False):
            raise UsageError(f"--claimed-order: required, {spec} declares no numeric `order`")
    result = check(loaded, None if claimed is None else float(claimed), config,
                   claimed_nfe_per_step=claimed_nfe_per_step, targets=targets, quick=quick, progress=progress,
                   guidance=guidance)
    return with_shipped(result, loaded.solver, quick)


def check_guidance(value) -> float:
    """--guidance: a finite number >= 0, else a one-line usage error naming --guidance."""
    from ..conformance.guided import check_scale
    from ..errors import InputError

    try:
        return check_scale(value, "--guidance")
    except InputError as exc:
        raise UsageError(str(exc)) from None


def with_shipped(result, solver, quick: bool):
    """For a diffusers scheduler: the result with what the order measurement imposed (`result.imposed`, rows of
    key/user/imposed/why) and the as-shipped pass (sdm_verify.conformance.shipped) as the judged item
    "as_shipped" (its FAIL fails the verdict). Other solvers: the result unchanged."""
    from ..adapters.diffusers.solver import DiffusersSolver
    from ..conformance.shipped import as_shipped

    result.imposed, result.shipped = None, None
    if isinstance(solver, DiffusersSolver):
        result.imposed = solver.imposed
        result.shipped = as_shipped(solver, quick=quick)
        result.items["as_shipped"] = result.shipped.item()
        if getattr(result, "guidance", None) is not None:  # the as-shipped pass runs unguided
            result.guidance["items_unguided"].append("as_shipped")
    return result


def verdict_text(result) -> str:
    """The verdict table, with the imposed list and the as-shipped table of a diffusers scheduler before it."""
    from ..adapters.diffusers.imposed import imposed_text

    parts = []
    if getattr(result, "imposed", None):
        parts.append(imposed_text(result.imposed))
    if getattr(result, "shipped", None) is not None:
        parts.append(result.shipped.table())
    return "\n\n".join([*parts, result.table()])


def validation_json(result) -> dict:
    """The --json document: claimed and measured orders (overall, per process, per schedule), NFE, symbolic order,
    identities, float32 drift, final step, determinism, items, verdict and the per-case details."""
    doc = result.to_json()
    if getattr(result, "imposed", None) is not None:
        doc["imposed"] = result.imposed
    if getattr(result, "shipped", None) is not None:
        doc["as_shipped"] = result.shipped.to_json()
    return doc


def run(args) -> int:
    torch.set_num_threads(1)
    out = check_output(args.json)  # every option before the solver is loaded or run
    if args.claimed_order is not None:
        positive(args.claimed_order, "--claimed-order")
    if args.claimed_nfe_per_step is not None:
        positive(args.claimed_nfe_per_step, "--claimed-nfe-per-step")
    if args.guidance is not None:
        check_guidance(args.guidance)
    config = read_config(args.config)
    result = validate(args.solver, args.claimed_order, args.targets, config=config,
                      claimed_nfe_per_step=args.claimed_nfe_per_step, quick=args.quick, guidance=args.guidance)
    print(verdict_text(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(validation_json(result), indent=2) + "\n", encoding="utf-8")
    return 0 if result.ok else 1
