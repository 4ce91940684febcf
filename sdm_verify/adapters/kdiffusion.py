"""k-diffusion samplers behind the solver interface: `kdiffusion_solver(name, **kwargs)`.

k-diffusion's samplers (Crowson, `k_diffusion/sampling.py`) already work in canonical (EDM) variables: they take a
denoiser `model(x, sigma * s_in)` (s_in = ones of the batch size, so sigma arrives as a (B,) tensor) and a
decreasing sigma tensor, and return x at sigmas[-1]. The adapter runs their code unchanged:

    solver(denoiser, x, sigmas) = sample_<name>(model, x, sigmas_in_x_dtype, disable=True, **kwargs)
    model(x, sigma_vec)         = denoiser(x, float(sigma_vec[0]))  when all entries are equal, else the tensor

Deterministic samplers: s_churn = 0 (Karras et al. 2022, Alg. 2 with gamma = 0), and for the ancestral / SDE
samplers eta = 0, their deterministic limit (DPM-Solver++ 2S / 2M / 3M ODE updates). With eta = 0 their noise is
either never drawn or multiplied by sigma_up = 0, so the adapter passes a noise sampler that returns zeros: no
torchsde Brownian tree is built.

Stochastic samplers (`KDiffusionSDESolver`, needs_noise = True): the ancestral / SDE samplers with eta != 0 (their
default eta = 1, s_noise = 1 where the config gives none), called solver(denoiser, x, sigmas, noise). Every one of
them takes a `noise_sampler(sigma, sigma_next)`; the adapter passes one that returns noise(j, sigma, sigma_next), j
the running count of draws in that run (0, 1, ...) and (sigma, sigma_next) as k-diffusion asks (floats), so the keys
do not depend on the values drawn (the harness's probe law, sdm_verify.harness.stochastic_law). k-diffusion's own
default source (randn_like for the ancestral samplers, a torchsde Brownian tree for dpmpp_sde / 2m_sde / 3m_sde) is
never used: the law is the one of the caller's source. s_churn > 0 (sample_euler / heun / dpm_2) is refused: those
samplers draw their churn with torch.randn_like and take no noise_sampler, and the adapter patches nothing global.

Euler, Heun and DPM-2 draw `randn_like(x)` every step even with
s_churn = 0 (unused); the adapter runs every sampler under `torch.random.fork_rng` so the caller's global random
stream is left as it was. The samplers special-case sigmas[-1] == 0 (a final Euler / denoising step); a grid may
equally end at sigma_min > 0, where every step is a regular step.

Importing k-diffusion: `import k_diffusion` runs the package __init__, which imports the training code (skimage,
kornia, clip, wandb, torchvision, ...). The sampling module itself needs only torch, scipy, torchsde, torchdiffeq,
tqdm and `k_diffusion.utils.append_dims`; utils imports PIL, safetensors and `torchvision.transforms.functional` at
module level (for image helpers the samplers never call). `load_sampling()` therefore
  1. tries the normal `import k_diffusion.sampling`;
  2. if that fails, builds a package module `_sdm_verify_kdiffusion` whose `__path__` is the installed
     `k_diffusion` directory, without executing its __init__, and imports `utils` and `sampling` as its
     submodules from the installed files (so `from . import utils` in sampling.py resolves to the installed
     utils.py); the private package name keeps the real name `k_diffusion` out of sys.modules, so later imports of
     the real package are unaffected;
  3. only if torchvision is missing or fails to import, puts a placeholder `torchvision.transforms.functional` in
     sys.modules for the duration of that import (and removes it afterwards): utils keeps a reference to it as
     `TF`, whose functions raise a clear ImportError if ever called. The sampling code never calls them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types

import torch

from ..errors import InputError
from ..grid import check_grid, check_x, checked_denoiser
from ..solvers.base import Solver
from ..solvers.stochastic import checked_noise
from .kinds import wrong_kind

INSTALL_HINT = "pip install --no-deps k-diffusion torchsde torchdiffeq trampoline (see README)"
_PRIVATE_PACKAGE = "_sdm_verify_kdiffusion"


class MissingKDiffusionError(ImportError):
    """k-diffusion (or one of the packages its sampling module needs) is not installed."""


# ------------------------------------------------------------------------------------------- import


class _Unavailable(types.ModuleType):
    """Placeholder module: any public attribute is a function that raises ImportError when called."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise ImportError(f"{self.__name__}.{attr}: torchvision is not installed; sdm-verify loaded k-diffusion's "
                              "sampling module without it, and this image helper cannot run")

        return unavailable


def _torchvision_usable() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # a broken wheel (e.g. built against another torch) fails in many ways
        return False
    return True


def _placeholder_torchvision() -> dict[str, types.ModuleType]:
    top, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    functional = _Unavailable("torchvision.transforms.functional")
    top.__path__, transforms.__path__ = [], []  # packages, so `from torchvision.transforms import functional` works
    top.transforms, transforms.functional = transforms, functional
    return {"torchvision": top, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def _load_without_init() -> types.ModuleType:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise MissingKDiffusionError(f"k-diffusion is not installed: {INSTALL_HINT}")
    if _PRIVATE_PACKAGE + ".sampling" in sys.modules:
        return sys.modules[_PRIVATE_PACKAGE + ".sampling"]
    package = types.ModuleType(_PRIVATE_PACKAGE, "k-diffusion's installed files, its __init__ not executed")
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = _PRIVATE_PACKAGE
    placeholders = {} if _torchvision_usable() else _placeholder_torchvision()
    saved = {name: sys.modules.get(name) for name in placeholders}
    sys.modules[_PRIVATE_PACKAGE] = package
    sys.modules.update(placeholders)
    try:
        importlib.import_module(_PRIVATE_PACKAGE + ".utils")
        sampling = importlib.import_module(_PRIVATE_PACKAGE + ".sampling")
    except ImportError as exc:
        for name in [n for n in sys.modules if n == _PRIVATE_PACKAGE or n.startswith(_PRIVATE_PACKAGE + ".")]:
            del sys.modules[name]
        raise MissingKDiffusionError(f"k-diffusion's sampling module cannot be imported ({exc}): {INSTALL_HINT}") \
            from None
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return sampling


_SAMPLING: list[types.ModuleType] = []


def load_sampling() -> types.ModuleType:
    """k-diffusion's `sampling` module (see the module docstring for how it is imported)."""
    if not _SAMPLING:
        try:
            module = importlib.import_module("k_diffusion.sampling")
        except Exception:  # the package __init__ needs the training dependencies: load the sampling module alone
            module = _load_without_init()
        _SAMPLING.append(module)
    return _SAMPLING[0]


# ------------------------------------------------------------------------------------------- samplers


class _Sampler:
    """What the adapter knows about one sampler: claimed order, equivalent suite solver, NFE per step."""

    def __init__(self, order, equivalent=None, stages=1, stochastic=None, note=""):
        self.order, self.equivalent, self.stages = order, equivalent, stages
        self.stochastic = stochastic  # the keyword that must be 0 for the deterministic ODE limit
        self.note = note


#: claimed orders from the papers the samplers implement: Euler / Heun (Karras et al. 2022), DPM-Solver-2 (Lu et al.
#: 2022), linear multistep (Adams-Bashforth in sigma, order = its `order`), DPM-Solver++ 2S / 2M / 3M (Lu et al.
#: 2022b); `equivalent`: the registered solver with the same update (checked to 1e-10 in tests/test_adapter_kdiffusion)
SAMPLERS = {
    "sample_euler": _Sampler(1, "euler"),
    "sample_euler_ancestral": _Sampler(1, "euler", stochastic="eta"),
    "sample_heun": _Sampler(2, "heun", stages=2),
    "sample_dpm_2": _Sampler(2, "dpm_solver_2", stages=2, note="sigma_mid = sqrt(sigma sigma_next): DPM-Solver-2 "
                             "(r1 = 1/2) in noise-prediction form, not the sigma-space midpoint rule"),
    "sample_dpm_2_ancestral": _Sampler(2, "dpm_solver_2", stages=2, stochastic="eta"),
    "sample_lms": _Sampler(None, None, note="variable-step Adams-Bashforth in sigma on dx/dsigma (coefficients by "
                           "scipy quad), warm-up with orders 1, 2, ..."),
    "sample_dpmpp_2s_ancestral": _Sampler(2, "dpmpp_2s", stages=2, stochastic="eta"),
    "sample_dpmpp_sde": _Sampler(2, "dpmpp_2s", stages=2, stochastic="eta",
                                 note="eta = 0: DPM-Solver++(2S) with its r (default 1/2)"),
    "sample_dpmpp_2m": _Sampler(2, "dpmpp_2m"),
    "sample_dpmpp_2m_sde": _Sampler(2, "dpmpp_2m", stochastic="eta", note="eta = 0, solver_type 'midpoint': the 2M "
                                    "update; 'heun' weights the difference by h phi_2(h) instead (no suite twin)"),
    "sample_dpmpp_3m_sde": _Sampler(3, None, stochastic="eta", note="eta = 0: full steps use the authors' 3M "
                                    "coefficients (as dpmpp_3m: its D2 term weighted by 1/2, second order), the "
                                    "second (warm-up) step weights D1 by h phi_2(h), not 2M's (1 - e^-h)/2: no twin"),
}


def available() -> list[str]:
    """The k-diffusion samplers the adapter admits (names as in k_diffusion.sampling)."""
    return list(SAMPLERS)


def _zero_noise(x):
    def noise(sigma, sigma_next):  # eta = 0: the samplers multiply this by sigma_up = 0 (or never call it)
        return torch.zeros_like(x)

    return noise


class KDiffusionSolver(Solver):
    """A k-diffusion sampler as a solver(denoiser, x, sigmas) -> x; see the module docstring. Declares its name, the
    claimed order of the sampler's paper, its cost (one call per stage, one for the step into 0), its registered
    twin (`equivalent`) where one implements the same update, and `notes`; it exposes no coefficient functions
    (k-diffusion's code is run as it is)."""

    final_step = "k-diffusion's own step into sigma = 0 (an Euler / denoising step), 1 NFE"
    final_step_nfe = 1

    def __init__(self, name: str, kwargs: dict):
        self.sampler_name, self.kwargs, self._meta = name, dict(kwargs), SAMPLERS[name]
        self.name = f"kdiffusion:{name}" + (f"{{{', '.join(f'{k}={v!r}' for k, v in sorted(kwargs.items()))}}}"
                                           if kwargs else "")
        if name == "sample_lms":
            self.order = self.kwargs.get("order", 4)
        else:
            self.order = self._meta.order
        self.nfe_per_step = self._meta.stages
        self.equivalent = self._meta.equivalent
        if name == "sample_dpmpp_sde" and float(self.kwargs.get("r", 0.5)) != 0.5:
            self.equivalent = None  # the registered dpmpp_2s has r = 1/2
        if name == "sample_dpmpp_2m_sde" and self.kwargs.get("solver_type", "midpoint") != "midpoint":
            self.equivalent = None
        self.note = self._meta.note
        self.notes = (self.note,) if self.note else ()
        self._fn = getattr(load_sampling(), name)

    def params(self) -> dict:
        return {"sampler": self.sampler_name, **self.kwargs}

    def __call__(self, denoiser, x, sigmas, callback=None):
        if callback is not None:
            raise ValueError("callback: k-diffusion's samplers call theirs with their own fields; not supported here")
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        sigmas = check_grid(sigmas).to(dtype=x.dtype, device=x.device)

        def model(y, sigma):
            if torch.is_tensor(sigma) and sigma.ndim == 1 and bool((sigma == sigma[0]).all()):
                sigma = float(sigma[0])
            return denoiser(y, sigma)

        kwargs = dict(self.kwargs)
        if "noise_sampler" in inspect.signature(self._fn).parameters:
            kwargs["noise_sampler"] = _zero_noise(x)
        with torch.random.fork_rng(devices=[]):
            return self._fn(model, x, sigmas, disable=True, **kwargs)

    def __repr__(self) -> str:
        return f"KDiffusionSolver({self.name!r})"


#: what k-diffusion draws by default (replaced by the caller's source here), and the twin of the same update
_SDE_NOTES = {
    "sample_euler_ancestral": ("randn_like", "euler_ancestral"),
    "sample_dpm_2_ancestral": ("randn_like", None),
    "sample_dpmpp_2s_ancestral": ("randn_like", None),
    "sample_dpmpp_sde": ("a torchsde Brownian tree", None),
    "sample_dpmpp_2m_sde": ("a torchsde Brownian tree", "dpmpp_2m_sde"),
    "sample_dpmpp_3m_sde": ("a torchsde Brownian tree", None),
}


class KDiffusionSDESolver(KDiffusionSolver):
    """A k-diffusion ancestral / SDE sampler with eta != 0: solver(denoiser, x, sigmas, noise) -> x (module docstring).
    k-diffusion's `noise_sampler(sigma, sigma_next)` returns noise(j, sigma, sigma_next), j the running count of its
    calls in the run. Declares no order (k-diffusion states none); `notes` give eta, s_noise and the noise hook."""

    needs_noise = True
    weak_order = strong_order = None
    claim_source = "k-diffusion states no order"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler: its path is not the ODE flow"
    symbolic_form = None

    def __init__(self, name: str, kwargs: dict):
        super().__init__(name, kwargs)
        params = inspect.signature(self._fn).parameters
        self.eta = float(kwargs.get("eta", params["eta"].default))
        self.s_noise = float(kwargs.get("s_noise", params["s_noise"].default))
        self.order, self.equivalent = None, None
        default, twin = _SDE_NOTES[name]
        notes = [f"eta = {self.eta:g}, s_noise = {self.s_noise:g} (k-diffusion's defaults where the config gives none)",
                 "noise: k-diffusion's noise_sampler(sigma, sigma_next) is the caller's noise(j, sigma, sigma_next), j "
                 f"the running count of draws in the run; k-diffusion's default source ({default}) is not used"]
        if name == "sample_dpmpp_sde":
            notes.append("two draws per step (sigma -> sigma_mid and sigma -> sigma_next): k-diffusion's default "
                         "Brownian tree makes them increments of one path (correlated); an independent source "
                         "(GaussianNoise) makes them independent, a different law; BrownianNoise, keyed on the "
                         "interval, reproduces the Brownian-tree correlation")
        if twin is not None:
            notes.append(f"registered twin of the same update: {twin} (same eta, s_noise"
                         + (", solver_type" if twin == "dpmpp_2m_sde" else "") + ")")
        if self.note:
            notes.append(self.note)
        self.notes = tuple(notes)

    def __call__(self, denoiser, x, sigmas, noise=None, callback=None):
        if callback is not None:
            raise ValueError("callback: k-diffusion's samplers call theirs with their own fields; not supported here")
        denoiser = checked_denoiser(denoiser, self.name)
        check_x(x)
        sigmas = check_grid(sigmas).to(dtype=x.dtype, device=x.device)
        draw = checked_noise(noise, x, self.name)  # a missing source: NoiseError before any denoiser call
        calls = 0

        def noise_sampler(sigma, sigma_next):
            nonlocal calls
            j, calls = calls, calls + 1
            return draw(j, float(sigma), float(sigma_next))

        def model(y, sigma):
            if torch.is_tensor(sigma) and sigma.ndim == 1 and bool((sigma == sigma[0]).all()):
                sigma = float(sigma[0])
            return denoiser(y, sigma)

        with torch.random.fork_rng(devices=[]):
            return self._fn(model, x, sigmas, disable=True, noise_sampler=noise_sampler, **self.kwargs)

    def __repr__(self) -> str:
        return f"KDiffusionSDESolver({self.name!r})"


def _check_kind(sampler: str, key: str, value, default) -> None:
    """A keyword's value must be of its default's kind (adapters.kinds.wrong_kind)."""
    kind = wrong_kind(value, default)
    if kind is not None:
        raise ValueError(f"{key}: {sampler} needs {kind} (got {value!r})")


def kdiffusion_solver(name: str, **kwargs) -> KDiffusionSolver:
    """The k-diffusion sampler `name` (e.g. "sample_heun" or "heun") with keyword arguments `kwargs`, as a solver.

    eta != 0 (the default eta = 1 included) for the ancestral and SDE samplers gives a stochastic
    `KDiffusionSDESolver` (called with a noise source); eta = 0 their deterministic ODE limit. Refused: samplers that
    are not grid samplers (sample_dpm_fast, sample_dpm_adaptive), s_churn > 0 (its noise is drawn with
    torch.randn_like, no hook), eta < 0 or s_noise <= 0 in a stochastic sampler, noise-related or unknown keywords,
    and values of another kind than the keyword's default (a string for a number,
    NaN, ...)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a k-diffusion sampler name, got {name!r}")
    full = name if name.startswith("sample_") else "sample_" + name
    if full not in SAMPLERS:
        sampling = load_sampling()
        if hasattr(sampling, full):
            raise ValueError(f"name: {full} is not a deterministic grid sampler sdm-verify can run as "
                             f"solver(denoiser, x, sigmas); admitted: {', '.join(SAMPLERS)}")
        raise ValueError(f"name: k-diffusion has no sampler {full!r}; admitted: {', '.join(SAMPLERS)}")
    fn = getattr(load_sampling(), full)
    params = inspect.signature(fn).parameters
    fixed = {"model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler"}
    for key in kwargs:
        if key in fixed or key not in params:
            allowed = sorted(set(params) - fixed)
            raise ValueError(f"kwargs: {full} takes no setting {key!r} here; allowed: {', '.join(allowed)}")
    for key, value in kwargs.items():
        _check_kind(full, key, value, params[key].default)
    if "solver_type" in kwargs and kwargs["solver_type"] not in ("midpoint", "heun"):
        raise ValueError(f"solver_type: {full} takes 'midpoint' or 'heun' (got {kwargs['solver_type']!r})")
    meta = SAMPLERS[full]
    stochastic = False
    if meta.stochastic is not None:
        eta = kwargs.get(meta.stochastic, params[meta.stochastic].default)
        stochastic = eta != 0
        if stochastic and not (math.isfinite(eta) and eta > 0):
            raise InputError(f"{meta.stochastic}: {full} needs a finite {meta.stochastic} >= 0 (got {eta!r})")
        s_noise = kwargs.get("s_noise", params["s_noise"].default)
        if stochastic and not (math.isfinite(s_noise) and s_noise > 0):
            raise InputError(f"s_noise: {full} needs a finite s_noise > 0 (got {s_noise!r})")
    if "s_churn" in params and kwargs.get("s_churn", 0.0) != 0:
        raise InputError(f"s_churn: {full} with s_churn={kwargs['s_churn']!r} adds noise (stochastic churn) drawn "
                         "with torch.randn_like: the sampler takes no noise_sampler, so the caller's noise source "
                         "cannot be fed to it (the adapter patches nothing global); pass s_churn=0 for the ODE sampler")
    if full == "sample_lms":
        order = kwargs.get("order", 4)
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order: sample_lms needs a positive integer order (got {order!r})")
    if full == "sample_dpmpp_sde":
        r = kwargs.get("r", 0.5)
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ValueError(f"r: sample_dpmpp_sde needs 0 < r < 1 (got {r!r})")
    return KDiffusionSDESolver(full, kwargs) if stochastic else KDiffusionSolver(full, kwargs)
