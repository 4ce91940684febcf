"""SPEC -> solver: what `sdm-verify validate SPEC`, the pytest plugin and `conformance.check` accept.

    NAME                      a registered sdm_verify solver (sdm_verify.solvers.available())
    module:attr               an importable callable solver(denoiser, x, sigmas) -> x, a class (instantiated without
                              arguments) or an instance; attr may be dotted
    diffusers:ClassName       a diffusers scheduler driven by sdm_verify.adapters.diffusers_scheduler; `config` is
                              its JSON config (dict)
    kdiffusion:sample_name    a k-diffusion sampler (also `k-diffusion:`); `config` holds its keyword arguments
                              (e.g. {"eta": 0})

A loaded solver may expose the optional attributes the conformance check reads: `name`, `order` (claimed),
`nfe(n)`, `nfe_to_zero(n)`, `equivalent` (a registered solver with the same update), `processes` +
`with_process(p)`, `sigma_range`, `update_rule` + `symbolic_form`. A plain callable has none.
Errors: SpecError (a ValueError) naming the argument; a missing optional package -> MissingExtraError, one line with
the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass


class SpecError(ValueError):
    """A SPEC or config that cannot be turned into a solver."""


class MissingExtraError(SpecError):
    """An optional package the SPEC needs is not installed (the message names the pip command)."""


@dataclass
class LoadedSolver:
    spec: str  # as given
    name: str  # for tables and JSON
    solver: object  # callable solver(denoiser, x, sigmas) -> x
    registered: str | None = None  # the registered name when SPEC is one


_KD_PREFIXES = ("kdiffusion:", "k-diffusion:", "k_diffusion:")


def load(spec: str, config: dict | None = None) -> LoadedSolver:
    """The solver named by `spec` (see the module docstring); `config` is for diffusers / k-diffusion specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"SPEC: expected a registered name, module:attr, diffusers:Class or kdiffusion:sampler "
                        f"(got {spec!r})")
    if config is not None and not isinstance(config, dict):
        raise SpecError(f"--config: expected a JSON object (got {type(config).__name__})")
    if spec.startswith("diffusers:"):
        return _diffusers(spec, config)
    if spec.startswith(_KD_PREFIXES):
        return _kdiffusion(spec, config)
    if config is not None:
        raise SpecError("--config: only diffusers: and kdiffusion: specs take a config")
    if ":" not in spec:
        return _registered(spec)
    return LoadedSolver(spec, spec, _import_attr(spec))


def _registered(name: str) -> LoadedSolver:
    from .. import solvers
    from ..harness.sweep import Cell, solver_for

    if name not in solvers.available():
        raise SpecError(f"SPEC: unknown solver {name!r}; give a registered name ({', '.join(solvers.available())})"
                        " or module:attr")
    if solvers.needs_process(name):
        return LoadedSolver(name, name, ProcessFamily(name), registered=name)
    return LoadedSolver(name, name, solver_for(Cell("gmm-8d", name, "edm", 2).config()), registered=name)


class ProcessFamily:
    """A registered native-time solver (it integrates in a process's own time): one instance per process, VE by
    default. Exposes `processes` and `with_process(p)` like the outside adapters."""

    processes = ("ve", "vp", "fm")

    def __init__(self, name: str, process: str = "ve"):
        from ..harness.sweep import Cell, solver_for

        self.registered_name, self.process = name, process
        self._solver = solver_for(Cell("gmm-8d", name, "edm", 2, process).config())
        self.name, self.order = name, self._solver.order
        # RK steps in t are exact for trajectories affine in t; a point mass's is s(t)(x0 + sigma(t) c): affine in t
        # when s and s sigma are (VE: 1, t; FM: 1 - t, t), not for VP
        self.point_mass_exact = process in ("ve", "fm")
        self.point_mass_note = (f"{name} steps in {process} time t, in which the point-mass trajectory "
                                "s(t)(x0 + sigma(t) c) is not affine")

    def with_process(self, process: str) -> ProcessFamily:
        if process not in self.processes:
            raise SpecError(f"process: {self.registered_name} supports {', '.join(self.processes)} (got {process!r})")
        return ProcessFamily(self.registered_name, process)

    def nfe(self, n: int) -> int:
        return self._solver.nfe(n)

    def nfe_to_zero(self, n: int) -> int:
        return self._solver.nfe_to_zero(n)

    def __call__(self, denoiser, x, sigmas):
        return self._solver(denoiser, x, sigmas)


def _import_attr(spec: str):
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise SpecError(f"SPEC: expected module:attr (got {spec!r})")
    if os.getcwd() not in sys.path:  # console scripts do not put the working directory on the path
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod)
    except Exception as exc:
        raise SpecError(f"SPEC: cannot import module {mod!r} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"SPEC: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise SpecError(f"SPEC: cannot instantiate {spec} without arguments ({exc})") from None
    check_callable(obj, spec)
    return obj


def check_callable(obj, what: str) -> None:
    """Raise SpecError unless `obj` can be called as solver(denoiser, x, sigmas)."""
    if not callable(obj):
        raise SpecError(f"SPEC: {what} is not callable")
    try:
        inspect.signature(obj).bind(None, None, None)
    except TypeError:
        raise SpecError(f"SPEC: {what} is not callable as solver(denoiser, x, sigmas)") from None
    except ValueError:  # no signature to inspect (a builtin): try it
        pass


def _diffusers(spec: str, config: dict | None) -> LoadedSolver:
    cls_name = spec.partition(":")[2]
    if not cls_name:
        raise SpecError(f"SPEC: expected diffusers:ClassName (got {spec!r})")
    if importlib.util.find_spec("diffusers") is None:
        raise MissingExtraError("diffusers is not installed: pip install 'sdm-verify[diffusers]'")
    try:
        from .diffusers_scheduler import scheduler_solver
    except ImportError as exc:
        raise MissingExtraError(f"the diffusers adapter cannot be imported ({exc}): pip install "
                                "'sdm-verify[diffusers]'") from None
    try:
        solver = scheduler_solver(cls_name, config or {}, process=None, grid="harness")
    except ImportError as exc:
        raise MissingExtraError(f"{exc}: pip install 'sdm-verify[diffusers]'") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SpecError(f"SPEC: {spec}: {exc}") from None
    return LoadedSolver(spec, str(getattr(solver, "name", spec)), solver)


def _kdiffusion(spec: str, config: dict | None) -> LoadedSolver:
    from . import kdiffusion

    sampler = spec.partition(":")[2]
    if not sampler:
        raise SpecError(f"SPEC: expected kdiffusion:sample_name (got {spec!r})")
    try:
        solver = kdiffusion.kdiffusion_solver(sampler, **(config or {}))
    except kdiffusion.MissingKDiffusionError as exc:
        raise MissingExtraError(str(exc)) from None
    except ValueError as exc:
        raise SpecError(f"SPEC: {spec}: {exc}") from None
    return LoadedSolver(spec, solver.name, solver)
