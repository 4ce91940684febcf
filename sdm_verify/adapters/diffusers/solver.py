"""A diffusers scheduler as a suite solver: `DiffusersSolver`, built by `scheduler_solver(cls_or_name, config, ...)`.

A contributor's scheduler (a `diffusers.SchedulerMixin` class and its JSON config) is driven exactly as a pipeline
drives it (`set_timesteps`, then per timestep `scale_model_input`, the model, `step`), with a fake model in place of
the network: from the (input, timestep) the scheduler hands it, the fake model recovers the canonical state
x = input / input_scale(process, sigma), calls the oracle's denoiser D(x, sigma) and returns what a perfect network
of the scheduler's `prediction_type` would return (conventions.py). The result is a `Solver`, solver(denoiser, x,
sigmas) -> x in canonical (EDM) variables (Karras et al. 2022, Eq. 1-3), whose capabilities (claimed order, NFE,
final step, processes, equivalent registered solver) come from the scheduler class's profile (profiles.py). The
sigma grid is imposed on the scheduler (grid="harness") or chosen by it (grid="native"; grids.py), and float64 runs
stay float64 through `step` unless keep_float64=False (float64.py).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings

import numpy as np
import torch

from ...errors import SolverDivergedError
from ...grid import check_grid, check_x, checked_denoiser
from ...solvers.base import Solver, all_finite
from ..kinds import wrong_kind
from .conventions import flow_sigma, input_scale, model_output, sample_scale
from .dependency import load_diffusers, quiet
from .float64 import F64, guard, plain
from .grids import GRIDS, NativeSchedule, TimestepLookup, heun_layout
from .profiles import PROFILES, supported

#: steps of the set_timesteps call that checks a config when the solver is built (DiffusersSolver._probe_timesteps)
PROBE_STEPS = 8
#: integer config keys and their least value (diffusers accepts e.g. solver_order=-1 and fails later, or not at all)
_LEAST = {"solver_order": 1, "num_train_timesteps": 1, "steps_offset": 0}


def _check_config_values(cls, config: dict) -> None:
    """Each config value must be of the kind of the constructor's default (a bool for a bool, an integer for an
    integer, a finite-or-infinite non-NaN number for a float, a string for a string; None only where the default
    or annotation allows it), and the integer keys of _LEAST at least their least value."""
    params = inspect.signature(cls.__init__).parameters
    for key, value in config.items():
        p = params[key]
        default, note = p.default, str(p.annotation)
        if value is None and (default is None or "Optional" in note or "None" in note):
            continue
        kind = wrong_kind(value, default, integer=isinstance(default, int) and "float" not in note)
        if kind is not None:
            raise ValueError(f"config: {cls.__name__} needs {kind} for {key} (got {value!r})")
        # the keys of _LEAST have integer defaults: value passed the kind check as an integer
        if key in _LEAST and isinstance(default, int) and value < _LEAST[key]:
            raise ValueError(f"config: {cls.__name__} needs {key} >= {_LEAST[key]} (got {value!r})")


def guidance_of(denoiser):
    """The classifier-free-guidance pair a denoiser carries, or None: an object with `guidance_scale` (a float),
    `branches(x, sigma)` -> (D_u, D_c) (one batched model call of both branches) and `conditional(x, sigma)` -> D_c
    (sdm_verify.conformance.guided.Guided). The scheduler is then driven with the pipeline's combination of the two
    network outputs instead of the output of the combined denoiser."""
    cfg = getattr(denoiser, "cfg_pair", None)
    return cfg if cfg is not None and callable(getattr(cfg, "branches", None)) else None


def _format_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


class DiffusersSolver(Solver):
    """A diffusers scheduler behind the solver interface (module docstring). Build with `scheduler_solver`.

    Declared capabilities (read by the harness and the conformance check): `name` ("diffusers:Class{changed
    config}"), `order` (the scheduler's claim), `final_step`, `nfe(n)` / `nfe_to_zero(n)`, `steps_into_zero`,
    `processes` with `with_process(p)`, `sigma_range` (grid="native": the training table's; else None),
    `equivalent` / `equivalent_params` (the registered solver with the same update; `equivalent_solver()` is the
    interface's default), and `notes` (the config's heuristics that change the order, and diffusers' deprecation
    warnings)."""

    def __init__(self, cls, config: dict, process: str | None, grid: str, keep_float64: bool, _switch: bool = False):
        diffusers = load_diffusers()
        if not (inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin)):
            raise ValueError(f"cls_or_name: expected a diffusers scheduler class (a SchedulerMixin), got {cls!r}")
        if cls.__name__ not in PROFILES:
            raise ValueError(f"cls_or_name: no adapter for diffusers.{cls.__name__} (stochastic or unsupported); "
                             f"supported: {', '.join(supported())}")
        if grid not in GRIDS:
            raise ValueError(f"grid: expected one of {GRIDS} (got {grid!r})")
        if not isinstance(keep_float64, bool):
            raise ValueError(f"keep_float64: expected a bool (got {keep_float64!r})")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ValueError(f"config: expected a dict (a JSON object), got {type(config).__name__}")
        accepted = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                    if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown} for {cls.__name__}; accepted: {', '.join(accepted)}")
        _check_config_values(cls, config)
        self.cls, self.profile = cls, PROFILES[cls.__name__]
        self.user_config, self.grid, self.keep_float64 = dict(config), grid, keep_float64
        try:
            self._configure(config, process, _switch)
        except (TypeError, KeyError, IndexError, AttributeError, NotImplementedError, ZeroDivisionError) as exc:
            raise ValueError(f"config: diffusers.{cls.__name__} cannot be run with {self.user_config} "
                             f"({type(exc).__name__}: {exc})") from None

    def _configure(self, config: dict, process: str | None, _switch: bool) -> None:
        """Build the scheduler for `process` and read the profile's declarations of its config."""
        cls = self.cls
        base = self._construct(self.user_config, record=True)  # validates the contributor's config
        defaults = dict(base.config)
        self.processes: tuple[str, ...] = self.profile.processes(defaults)
        if process is None:
            process = self.profile.process_of(defaults)
        elif process not in self.processes:
            raise ValueError(f"process: {cls.__name__} supports {', '.join(self.processes)} (got {process!r})")
        changes = self.profile.process_config(process)
        if not _switch:
            clash = {k: config[k] for k, v in changes.items() if k in config and config[k] != v}
            if clash:
                raise ValueError(f"process: {process!r} needs {changes}, but the config sets {clash}")
        self.process, self.config = process, {**self.user_config, **changes}
        sched = self._construct(self.config)
        self.effective_config = dict(sched.config)
        cfg = self.effective_config
        self.profile.check(cfg)
        self._probe_timesteps()
        self._sigma_data = self.profile.sigma_data(cfg)

        shown = {**self.user_config, **{k: v for k, v in changes.items() if defaults.get(k) != v}}
        inner = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(shown.items()))
        self.name = f"diffusers:{cls.__name__}" + (f"{{{inner}}}" if inner else "")
        self.order = self.profile.order(cfg)
        eq = self.profile.equivalent(cfg)
        self.equivalent, self.equivalent_params = (eq[0], dict(eq[1])) if eq else (None, {})
        self.final_step = self.profile.final_step
        self.notes = list(self._warnings) + self.profile.notes(cfg)
        if self.profile.float32_cast:
            self.notes.append("step() casts the sample to float32" + (
                "; the adapter keeps float64 (keep_float64=True)" if self.keep_float64 else ": float32 round-off"))
        self.sigma_range = self.profile.sigma_range(sched, cfg) if self.grid == "native" else None

    # ------------------------------------------------------------------ construction
    def _construct(self, config: dict, record: bool = False):
        """cls(**config); record=True keeps diffusers' deprecation warnings (FutureWarning) in `_warnings`."""
        with warnings.catch_warnings(record=True) as caught, contextlib.ExitStack() as stack:
            warnings.simplefilter("always")
            if not record:
                stack.enter_context(quiet())
            try:
                sched = self.cls(**config)
            except (ValueError, TypeError, NotImplementedError, AssertionError, KeyError) as exc:
                raise ValueError(f"config: {self.cls.__name__} rejected {config}: {exc}") from None
        if record:
            self._warnings = sorted({str(w.message).strip() for w in caught if issubclass(w.category, FutureWarning)})
        return sched

    def _probe_timesteps(self) -> None:
        """set_timesteps(PROBE_STEPS) on a fresh scheduler: a config its set_timesteps refuses is refused here, naming
        the class, the config and diffusers' message, not met in the middle of the check."""
        try:
            sched = self._construct(self.config)
            with quiet():
                sched.set_timesteps(PROBE_STEPS)
        except (TypeError, KeyError, IndexError, AttributeError, NotImplementedError, AssertionError, ZeroDivisionError,
                RuntimeError) as exc:
            raise ValueError(f"config: {self.cls.__name__}.set_timesteps({PROBE_STEPS}) refused the config "
                             f"{self.user_config} ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            text = str(exc)
            if not text.startswith("config:"):
                text = (f"config: {self.cls.__name__}.set_timesteps({PROBE_STEPS}) refused the config "
                        f"{self.user_config} ({exc})")
            raise ValueError(text) from None

    def _scheduler(self, n: int, final_zero: bool | None):
        """A fresh scheduler after set_timesteps(n); final_zero (harness) sets final_sigmas_type to match the grid."""
        config = dict(self.config)
        if final_zero is not None:
            mode = self.profile.final_zero
            if mode == "never" and final_zero:
                raise ValueError(f"sigmas: {self.cls.__name__} cannot take a step into sigma = 0 ({self.final_step}); "
                                 "end the grid at sigma_min > 0")
            if mode == "config" and "final_sigmas_type" in self.effective_config:
                config["final_sigmas_type"] = "zero" if final_zero else "sigma_min"  # listed in `imposed`
            harness_config = getattr(self.profile, "harness_config", None)
            if harness_config is not None:
                config.update(harness_config(self.effective_config, n))
        try:
            sched = self._construct(config)
        except ValueError as exc:
            if final_zero:
                raise ValueError(f"sigmas: a grid ending in 0 needs final_sigmas_type='zero' ({exc})") from None
            raise
        with quiet():
            sched.set_timesteps(n)
        return sched

    # ------------------------------------------------------------------ declared capabilities
    def params(self) -> dict:
        """What distinguishes this configured instance: the scheduler class, its config, process, grid, float64."""
        return {"scheduler": self.cls.__name__, "config": dict(self.user_config), "process": self.process,
                "grid": self.grid, "keep_float64": self.keep_float64}

    def with_process(self, process: str) -> DiffusersSolver:
        """The same scheduler and config with the network of another process (prediction type / flow sigmas)."""
        if process not in self.processes:
            raise ValueError(f"process: {self.cls.__name__} supports {', '.join(self.processes)} (got {process!r})")
        return type(self)(self.cls, self.user_config, process, self.grid, self.keep_float64, _switch=True)

    @property
    def steps_into_zero(self) -> bool:
        """Whether the scheduler can take a final step into sigma = 0 (DEIS cannot: its schedule ends above 0)."""
        return self.profile.final_zero != "never"

    def nfe(self, n_steps: int) -> int:
        """Model calls for n steps on a grid ending above 0."""
        return 2 * n_steps if self.profile.layout == "heun" else n_steps + self._extra_nfe()

    def nfe_to_zero(self, n_steps: int) -> int:
        """Model calls for n steps, the last into sigma = 0."""
        return 2 * n_steps - 1 if self.profile.layout == "heun" else n_steps + self._extra_nfe()

    def _extra_nfe(self) -> int:
        extra = getattr(self.profile, "nfe_extra", None)
        return 0 if extra is None else int(extra(self.effective_config))

    @property
    def imposed(self) -> list[dict]:
        """What the order measurement imposes on the user's config and run, one dict per key: key, user (the user's
        value, or the class default), imposed, why (imposed.py). The user's config itself is never changed."""
        from .imposed import imposed_changes

        return imposed_changes(self)

    # ------------------------------------------------------------------ running
    def __call__(self, denoiser, x: torch.Tensor, sigmas, callback=None) -> torch.Tensor:
        if callback is not None:
            raise ValueError("callback: the scheduler drives its own loop; per-step callbacks are not supported")
        cfg = guidance_of(denoiser)  # a classifier-free-guided pair: combined as the pipeline does (_fake_model)
        denoiser = checked_denoiser(denoiser, self.name)
        denoiser.sdm_verify_cfg = cfg
        check_x(x)
        if self.grid == "native":
            grid = check_grid(sigmas)
            n = grid.numel() - 1
            native = self.native_sigmas(n)
            if grid.shape != native.shape or not torch.allclose(grid, native, rtol=1e-12, atol=0.0):
                raise ValueError(f"sigmas: grid='native' runs the scheduler's own grid; pass solver.native_sigmas({n})")
            return self._native(denoiser, x, n)[0]
        return self._harness(denoiser, x, check_grid(sigmas))

    def native_schedule(self, n: int) -> NativeSchedule:
        """The scheduler's own schedule for n steps (its config as given), with the model-side sigmas."""
        sched = self._scheduler(n, None)
        cfg = self.effective_config
        upd = sched.sigmas.double().numpy()
        if self.profile.sigma_is_flow_time(cfg):
            upd = np.array([flow_sigma(float(t)) for t in upd])
        ts = sched.timesteps
        model = [self.profile.model_sigma(sched, cfg, float(t)) for t in ts]
        path = upd if self.profile.layout != "heun" else np.concatenate([upd[:1], upd[1::2]])
        return NativeSchedule(torch.tensor(path, dtype=F64), ts.clone(), torch.tensor(upd[: len(ts)], dtype=F64),
                              torch.tensor(model, dtype=F64))

    def native_sigmas(self, n: int) -> torch.Tensor:
        """The EDM sigmas the sample passes through on the scheduler's own n-step grid (may end in 0; DEIS with
        use_karras_sigmas repeats its last sigma)."""
        return self.native_schedule(n).sigmas

    def _wrap(self, x):
        return guard(x) if self.keep_float64 else x

    def _fake_model(self, denoiser, sigma_of):
        process, sd = self.process, self._sigma_data

        cfg = getattr(denoiser, "sdm_verify_cfg", None)

        def model(inp, t):
            sigma = sigma_of(t)
            x = plain(inp) / input_scale(process, sigma, sd)
            if cfg is None:
                return model_output(process, x, denoiser(x, sigma), sigma, sd)
            # pipeline_stable_diffusion: guidance_scale > 1 batches both branches and combines the two network
            # outputs as out_u + g (out_c - out_u); guidance_scale <= 1 runs the conditional branch alone
            if cfg.guidance_scale <= 1:
                return model_output(process, x, cfg.conditional(x, sigma), sigma, sd)
            d_u, d_c = cfg.branches(x, sigma)
            out_u, out_c = (model_output(process, x, d, sigma, sd) for d in (d_u, d_c))
            return out_u + cfg.guidance_scale * (out_c - out_u)

        return model

    def _step(self, sched, out, t, sample, i: int):
        """One scheduler step (the stochastic adapter wraps it to feed its noise; stochastic.py)."""
        return sched.step(out, t, sample, return_dict=False)[0]

    def _loop(self, sched, model, x, sigma_start: float, sigma_end: float) -> torch.Tensor:
        conv = self.profile.sample_convention(self.effective_config)
        scale0 = sample_scale(conv, sigma_start)
        if scale0 == 0:
            raise ValueError(f"sigmas: {self.cls.__name__} starts at sigma = inf (t = 1): there is no canonical state "
                             "to start from")
        sample = self._wrap(x * scale0)
        scale_input = getattr(sched, "scale_model_input", None)  # FlowMatchEulerDiscrete has none
        self.profile.prepare(sched)
        with quiet():
            for i, t in enumerate(sched.timesteps):
                inp = scale_input(sample, t) if scale_input is not None else sample
                out = model(inp, t)
                sample = self._wrap(self._step(sched, out, t, sample, i))
                if not all_finite(plain(sample)):
                    raise SolverDivergedError(self.name, i, self._sigma_after(sched, i), "non-finite sample")
        return plain(sample) / sample_scale(conv, sigma_end)

    def _sigma_after(self, sched, i: int) -> float:
        """The EDM sigma the scheduler steps to at model call i (for error messages)."""
        s = float(sched.sigmas[min(i + 1, len(sched.sigmas) - 1)])
        return flow_sigma(s) if self.profile.sigma_is_flow_time(self.effective_config) else s

    def _harness(self, denoiser, x, grid: torch.Tensor) -> torch.Tensor:
        n, cfg = grid.numel() - 1, self.effective_config
        ends_zero = bool(grid[-1] == 0)
        sched = self._scheduler(n, ends_zero)
        g = grid.numpy()
        if hasattr(self.profile, "impose_grid"):  # the profile writes the grid in the scheduler's own layout
            ts, call_sigmas = self.profile.impose_grid(sched, cfg, g)
            lookup = TimestepLookup(self.cls.__name__, ts, call_sigmas)
            return self._loop(sched, self._fake_model(denoiser, lookup), x, float(g[0]), float(g[-1]))
        positive = g[g > 0]
        ts = np.asarray(self.profile.harness_timesteps(sched, cfg, positive), dtype=np.float64)
        if np.any(np.diff(ts) == 0):
            raise ValueError("sigmas: two grid points map to the same timestep")
        lookup = TimestepLookup(self.cls.__name__, ts, positive)
        sig = g / (1.0 + g) if self.profile.sigma_is_flow_time(cfg) else g
        steps = ts[:n]
        if self.profile.layout == "heun":
            sig, steps = heun_layout(sig, ts, ends_zero)
        sched.sigmas = torch.tensor(sig, dtype=F64)
        sched.timesteps = torch.tensor(steps, dtype=F64)
        return self._loop(sched, self._fake_model(denoiser, lookup), x, float(g[0]), float(g[-1]))

    def _native(self, denoiser, x, n: int):
        sched = self._scheduler(n, None)
        cfg = self.effective_config
        path = self.native_sigmas(n)
        model = self._fake_model(denoiser, lambda t: self.profile.model_sigma(sched, cfg, float(t)))
        return self._loop(sched, model, x, float(path[0]), float(path[-1])), path

    def __repr__(self) -> str:
        return f"DiffusersSolver({self.name!r}, process={self.process!r}, grid={self.grid!r})"


def native_run(solver: DiffusersSolver, denoiser, x_edm: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `solver`'s scheduler on its own n-step grid from x_edm (canonical state at native_sigmas(n)[0]); returns
    (canonical x at the grid's end, the EDM sigmas of the path)."""
    if not isinstance(solver, DiffusersSolver):
        raise ValueError(f"solver: expected a DiffusersSolver (from scheduler_solver), got {type(solver).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int number of steps (got {n!r})")
    return solver._native(denoiser, x_edm, n)
