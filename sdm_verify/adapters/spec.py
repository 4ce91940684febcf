"""SPEC -> solver: what `sdm-verify validate SPEC`, the pytest plugin and `conformance.check` accept.

    NAME                      a registered sdm_verify solver (sdm_verify.solvers.available())
    module:attr               an importable callable solver(denoiser, x, sigmas) -> x, a class (instantiated without
                              arguments) or an instance; attr may be dotted. One that declares needs_noise = True
                              is a stochastic sampler(denoiser, x, sigmas, noise) (StochasticCallableSolver)
    diffusers:ClassName       a diffusers scheduler driven by sdm_verify.adapters.diffusers; `config` is
                              its JSON config (dict)
    kdiffusion:sample_name    a k-diffusion sampler (also `k-diffusion:`); `config` holds its keyword arguments
                              (e.g. {"eta": 0})

A loaded solver always satisfies the declared interface (sdm_verify.solvers.interface.SolverInterface): a registered
solver, a k-diffusion or diffusers adapter, a `ProcessFamily` for a native-time solver, or, for an outside object
that is not a `Solver`, a `CallableSolver` around it. An outside object may declare any of the interface's names as
attributes (`order`, `nfe(n)`, `equivalent`, `update_rule` + `symbolic_form`, ...): they are carried over, every
other declaration is the interface's default, and a cost it does not declare stays undeclared (nfe = None).
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

from analytic import processes as oracle_processes

from .. import solvers
from ..errors import InputError
from ..grid import check_callback, check_grid, check_x, checked_denoiser
from ..solvers.base import Solver
from ..solvers.interface import DECLARED, SolverInterface
from ..solvers.stochastic import checked_noise


class SpecError(InputError):
    """A SPEC or config that cannot be turned into a solver (an InputError: exit status 2, one line)."""


class MissingExtraError(SpecError):
    """An optional package the SPEC needs is not installed (the message names the pip command)."""


@dataclass
class LoadedSolver:
    spec: str  # as given
    name: str  # for tables and JSON
    solver: SolverInterface  # solver(denoiser, x, sigmas) -> x, with its declarations
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
    return LoadedSolver(spec, spec, as_solver(_import_attr(spec)))


def _registered(name: str) -> LoadedSolver:
    if name not in solvers.available() and name not in solvers.available(stochastic=True):
        raise SpecError(f"SPEC: unknown solver {name!r}; give a registered name ({', '.join(solvers.available())}; "
                        f"stochastic: {', '.join(solvers.available(stochastic=True))}) or module:attr")
    if solvers.needs_process(name):
        return LoadedSolver(name, name, ProcessFamily(name), registered=name)
    return LoadedSolver(name, name, solvers.get(name), registered=name)


def as_solver(obj) -> SolverInterface:
    """`obj` itself when it is a solver of the declared interface, else a CallableSolver around it."""
    return obj if isinstance(obj, SolverInterface) else CallableSolver(obj)


#: declarations that are methods: carried over only when the object's attribute is callable
_METHODS = ("nfe", "nfe_to_zero", "update_rule", "stage_rules", "corrector_rule", "equivalent_solver")


class CallableSolver(Solver):
    """An outside solver(denoiser, x, sigmas) -> x behind the declared interface. Its name is the object's `name`,
    else its `__name__`, else its class name; each other declaration the object carries as an attribute is taken
    over (`order` None unless it gives one); the rest are the interface's defaults, except the cost: a callable
    that declares no `nfe(n)` / `nfe_to_zero(n)` has them None (not declared), so counted calls are reported only."""

    nfe = nfe_to_zero = None

    def __new__(cls, fn=None):
        # an object that declares needs_noise = True is a stochastic sampler: called with the noise argument
        if cls is CallableSolver and declares_noise(fn):
            cls = StochasticCallableSolver
        return super().__new__(cls)

    def __init__(self, fn):
        self.fn = fn
        self.name = str(getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__)
        check_callable(fn, self.name)
        for attr in DECLARED:
            if attr in ("name", "processes", "with_process"):
                continue
            try:
                if not hasattr(fn, attr):
                    continue
                value = getattr(fn, attr)
            except Exception as exc:  # a property that raises: declared, but unreadable (conformance fails it)
                value = Unreadable(attr, f"reading it raised {type(exc).__name__}: {exc}")
            if attr in _METHODS:
                if value is None:
                    continue
                if not callable(value):  # declared, but not as a method: calling it names the claim
                    value = Unreadable(attr, f"declared {value!r} ({type(value).__name__}), not a method")
            setattr(self, attr, value)
        try:
            procs, with_process = getattr(fn, "processes", None), getattr(fn, "with_process", None)
            declared = procs is not None and not (isinstance(procs, (tuple, list)) and not procs)
        except Exception as exc:
            self.processes = Unreadable("processes", f"reading it raised {type(exc).__name__}: {exc}")
            return
        if declared and not callable(with_process):
            self.processes = Unreadable("processes", f"declared {procs!r} without a with_process(process) method")
        elif declared:
            self.processes = tuple(procs) if isinstance(procs, (tuple, list)) else procs

    def with_process(self, process: str) -> CallableSolver:
        """The wrapped object's own `with_process(process)`, wrapped in turn."""
        if not self.processes:
            return super().with_process(process)
        return CallableSolver(self.fn.with_process(process))

    def __call__(self, denoiser, x, sigmas, callback=None):
        # the outside loop gets the same refusals as the suite's own (grid.py): bad arguments before any call, and a
        # denoiser output of the wrong shape refused instead of broadcast
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        check_grid(sigmas)
        check_callback(callback)
        if callback is None:
            return self.fn(denoiser, x, sigmas)
        return self.fn(denoiser, x, sigmas, callback=callback)

    def __repr__(self) -> str:
        return f"CallableSolver({self.fn!r})"


class StochasticCallableSolver(CallableSolver):
    """An outside stochastic sampler (it declares `needs_noise = True`): called as sampler(denoiser, x, sigmas, noise).
    The noise source is checked before any denoiser call (a missing one: NoiseError, an InputError) and handed to the
    object wrapped so that every draw is checked (sdm_verify.solvers.stochastic.checked_noise)."""

    needs_noise = True

    def __call__(self, denoiser, x, sigmas, noise=None, callback=None):
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        check_grid(sigmas)
        check_callback(callback)
        draw = checked_noise(noise, x, self.name)
        if callback is None:
            return self.fn(denoiser, x, sigmas, draw)
        return self.fn(denoiser, x, sigmas, draw, callback=callback)

    def __repr__(self) -> str:
        return f"StochasticCallableSolver({self.fn!r})"


def declares_noise(obj) -> bool:
    """Whether an outside object declares itself a stochastic sampler (`needs_noise` True); unreadable: False."""
    try:
        return getattr(obj, "needs_noise", False) is True
    except Exception:
        return False


class Unreadable:
    """An outside object's declaration that cannot be read (its attribute raised, or a method is not callable):
    conformance.declared turns it into a failed claim naming `unreadable_reason`; using it in any other way raises."""

    def __init__(self, claim: str, reason: str):
        self.claim, self.unreadable_reason = claim, reason

    def _raise(self, *args, **kwargs):
        raise ValueError(f"{self.claim}: {self.unreadable_reason}")

    __call__ = __bool__ = __iter__ = __len__ = __float__ = __index__ = _raise

    def __repr__(self) -> str:
        return f"<unreadable {self.claim}: {self.unreadable_reason}>"


class ProcessFamily(Solver):
    """A registered native-time solver (it integrates in a process's own time): one instance per process, VE by
    default, the process taken from the oracle's (analytic.processes). Declares `processes` and `with_process(p)`
    like the outside adapters."""

    processes = ("ve", "vp", "fm")

    def __init__(self, name: str, process: str = "ve"):
        self.registered_name, self.process = name, process
        self._solver = solvers.get(name, process=oracle_processes.get(process))
        self.name, self.order = name, self._solver.order
        self.final_step = self._solver.final_step
        # RK steps in t are exact for trajectories affine in t; a point mass's is s(t)(x0 + sigma(t) c): affine in t
        # when s and s sigma are (VE: 1, t; FM: 1 - t, t), not for VP
        self.point_mass_exact = process in ("ve", "fm")
        self.point_mass_note = (f"{name} steps in {process} time t, in which the point-mass trajectory "
                                "s(t)(x0 + sigma(t) c) is not affine")

    def params(self) -> dict:
        return {"solver": self.registered_name, "process": self.process}

    def with_process(self, process: str) -> ProcessFamily:
        if process not in self.processes:
            raise SpecError(f"process: {self.registered_name} supports {', '.join(self.processes)} (got {process!r})")
        return ProcessFamily(self.registered_name, process)

    def nfe(self, n: int) -> int:
        return self._solver.nfe(n)

    def nfe_to_zero(self, n: int) -> int:
        return self._solver.nfe_to_zero(n)

    def __call__(self, denoiser, x, sigmas, callback=None):
        return self._solver(denoiser, x, sigmas, callback=callback)


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
        try:
            found = part.isidentifier() and hasattr(obj, part)
        except Exception as exc:  # a property or module __getattr__ that raises
            raise SpecError(f"SPEC: {spec}: reading {part!r} raised {type(exc).__name__}: {exc}") from None
        if not found:
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
    """Raise SpecError unless `obj` can be called as solver(denoiser, x, sigmas), or, when it declares
    `needs_noise = True`, as sampler(denoiser, x, sigmas, noise)."""
    if not callable(obj):
        raise SpecError(f"SPEC: {what} is not callable")
    noise = declares_noise(obj)
    try:
        inspect.signature(obj).bind(*([None] * (4 if noise else 3)))
    except TypeError:
        form = "sampler(denoiser, x, sigmas, noise) (it declares needs_noise = True)" if noise else \
            "solver(denoiser, x, sigmas)"
        raise SpecError(f"SPEC: {what} is not callable as {form}") from None
    except ValueError:  # no signature to inspect (a builtin): try it
        pass


def _diffusers(spec: str, config: dict | None) -> LoadedSolver:
    cls_name = spec.partition(":")[2]
    if not cls_name:
        raise SpecError(f"SPEC: expected diffusers:ClassName (got {spec!r})")
    if importlib.util.find_spec("diffusers") is None:
        raise MissingExtraError("diffusers is not installed: pip install 'sdm-verify[diffusers]'")
    try:
        from .diffusers import scheduler_solver
    except ImportError as exc:
        raise MissingExtraError(f"the diffusers adapter cannot be imported ({exc}): pip install "
                                "'sdm-verify[diffusers]'") from None
    try:
        solver = scheduler_solver(cls_name, config or {}, process=None, grid="harness")
    except ImportError as exc:
        raise MissingExtraError(f"{exc}: pip install 'sdm-verify[diffusers]'") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _refusal(spec, exc, config) from None
    return LoadedSolver(spec, solver.name, as_solver(solver))


def _refusal(spec: str, exc: Exception, config: dict | None) -> SpecError:
    """The adapter's refusal as a SpecError naming the argument: --config for a config key or value it refuses
    (the adapters' messages start with 'config:' / a keyword's name), SPEC for the class or sampler name."""
    text = str(exc) if str(exc) else type(exc).__name__
    head = text.partition(":")[0]
    if head in ("cls_or_name", "name") or not config:
        return SpecError(f"SPEC: {spec}: {text}")
    if head == "config":
        text = text.partition(":")[2].strip()
    return SpecError(f"--config: {spec}: {text}")


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
        raise _refusal(spec, exc, config) from None
    return LoadedSolver(spec, solver.name, solver)
