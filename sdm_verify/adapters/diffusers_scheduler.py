"""diffusers schedulers as suite solvers: `scheduler_solver(cls_or_name, config, process, grid)`.

A contributor's scheduler (a `diffusers.SchedulerMixin` class and its JSON config) is driven exactly as a pipeline
drives it (`set_timesteps`, then per timestep `scale_model_input`, the model, `step`), with a fake model in place of
the network: from the (input, timestep) the scheduler hands it, the fake model recovers the canonical state, calls
the oracle's denoiser D(x, sigma) and returns what a perfect network of the scheduler's `prediction_type` would
return. The result is a callable `solver(denoiser, x, sigmas) -> x` in canonical (EDM) variables.

Canonical variables (Karras et al. 2022, Eq. 1-3): x = x0 + sigma n, D = E[x0 | x], eps = E[n | x] = (x - D)/sigma.

Sample conventions (what the scheduler's `sample` is; `sample_scale(convention, sigma)` = sample / x):
    vp    x_vp = alpha x, alpha = 1/sqrt(1 + sigma^2): the DDPM marginal x_vp = sqrt(abar) x0 + sqrt(1 - abar) n with
          sigma^2 = (1 - abar)/abar (Ho et al. 2020; EDM Table 1, VP: s = 1/sqrt(1 + sigma^2)); diffusers
          `_sigma_to_alpha_sigma_t` returns (alpha, alpha sigma). DPMSolverMultistep/Singlestep, UniPC, DEIS.
    edm   the sample is x itself (k-diffusion style: EulerDiscrete, HeunDiscrete, LMSDiscrete, EDMEuler).
    flow  rectified flow x_t = (1 - t) x0 + t n (Liu et al. 2023; Esser et al. 2024): dividing by 1 - t gives
          x0 + t/(1 - t) n, so sigma = t/(1 - t), t = sigma/(1 + sigma) and x_t = x/(1 + sigma).
          FlowMatchEulerDiscrete, and DPM/UniPC/DEIS with use_flow_sigmas=True (alpha = 1 - t, sigma_t = t).
`scheduler.sigmas` hold sigma itself, except in the flow convention, where they hold t.

Processes (the model side: what the network sees and predicts; `model_output`, `denoised_from_output`):
    vp-eps  input x_vp, output eps = (x - D)/sigma                                        (prediction_type "epsilon")
    vp-v    input x_vp, output v = alpha_vp n - sigma_vp x0 (Salimans & Ho 2022), so E[v | x] = alpha (eps - sigma D)
            with alpha_vp = alpha, sigma_vp = alpha sigma                              (prediction_type "v_prediction")
            [diffusers inverts it as alpha x_vp - sigma_vp v = alpha^2 (x - sigma eps + sigma^2 D) = D]
    vp-x0   input x_vp, output D                                                       (prediction_type "sample")
    fm      input x_t = x/(1 + sigma), output u = n - x0, E[u | x] = eps - D           (prediction_type
            "flow_prediction"; diffusers: x0 = x_t - t u = (x - sigma eps + sigma D)/(1 + sigma) = D)
    edm     input c_in x, output F with D = c_skip x + c_out F: F = (D - c_skip x)/c_out, c_in = 1/sqrt(sigma^2 + sd^2),
            c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd/sqrt(sigma^2 + sd^2), sd = sigma_data (EDM Table 1;
            diffusers EDMEulerScheduler.precondition_*); "edm-v": c_out with the opposite sign (v_prediction).
The VP and EDM-scale schedulers both hand the model x_vp (EulerDiscrete's `scale_model_input` divides x by
sqrt(sigma^2 + 1)), so the fake model always recovers x = input / input_scale(process, sigma).

Grids:
    grid="harness"  the given EDM grid is imposed: after `set_timesteps(N)` (which initialises the scheduler's state)
        the adapter overwrites `scheduler.sigmas` (float64, in the scheduler's convention; HeunDiscrete's interleaved
        layout) and `scheduler.timesteps` (float64, the scheduler's own sigma -> t map, extended beyond its training
        table). The fake model maps each timestep to its sigma through a lookup of exactly those timesteps; any other
        timestep raises. A grid ending at sigma_min > 0 has no final step into 0; for schedulers with
        `final_sigmas_type` the adapter sets it to match the grid ("sigma_min" / "zero"; DPMSolverMultistep forces a
        first-order last step under "zero"). All other config keys are the contributor's, as given.
    grid="native"   the scheduler chooses its own timesteps (`set_timesteps(n)` with its config) and the fake model
        maps a timestep to sigma as a network trained on the scheduler's table would: the training table sigma_k =
        sqrt((1 - abar_k)/abar_k) (float64 from the scheduler's float32 abar), log-linear in fractional k; flow:
        sigma = t/(1 - t) with t = timestep/num_train_timesteps; EDM: sigma = exp(4 c_noise). `native_schedule(n)`
        reports the largest relative mismatch between the sigma the scheduler's update uses and the sigma of the
        timestep it hands the model (rounded timesteps, float32 tables, linear-vs-log interpolation).

float64: DPMSolverMultistep, EulerDiscrete, FlowMatchEulerDiscrete and EDMEuler cast the sample to float32 inside
`step` ("upcast to avoid precision issues"), which for a float64 run is a downcast: their output then carries float32
round-off (~1e-7 relative) and no order above ~2 can be measured. With keep_float64=True (default) the adapter
hands `step` a float64 tensor subclass whose `.to(<lower float>)` keeps float64; no other arithmetic is touched.
keep_float64=False runs the schedulers exactly as shipped.

Equivalent registered solvers (`equivalent`, `equivalent_params`; reproduced to round-off on the same grid, see
tests/test_adapter_diffusers.py): EulerDiscrete, EDMEuler and FlowMatchEulerDiscrete -> euler (Euler in flow time t
is DDIM: x' = (sigma'/sigma) x + (1 - sigma'/sigma) D); HeunDiscrete -> heun; DPMSolverMultistep dpmsolver++ midpoint
orders 1/2/3 -> ddim / dpmpp_2m / dpmpp_3m, dpmsolver order 1 -> dpm_solver_1; UniPC (predict_x0) bh1/bh2 order p
<= 3 -> unipc_<bh>_p<p>; DEIS order 1 -> dpm_solver_1; LMSDiscrete (step order 4) -> deis_tab3 on grids ending above
0. None: DEIS orders 2-3 (eps interpolated in log rho, not rho), DPM 2M "heun", dpmsolver multistep orders 2-3,
DPMSolverSinglestep orders 2-3 (its stages are grid points).

Heuristics that change the order (config as given; see `notes`):
    DPMSolverMultistep  lower_order_final (default True): with fewer than 15 steps the last step is first order
                        and the one before at most second order; euler_at_final: last step first order at every N.
    UniPCMultistep      lower_order_final (default True): step i uses order min(p, N - i) at every N, so on a grid
                        ending above 0 the last step is UniP-1 with no corrector: global error O(h^2) whatever p
                        (its constant ~ dD/dlambda = O(sigma_min^2): visible at sigma_min = 0.5, hidden at 0.002).
                        Into sigma = 0 solver_type "bh1" (and lower_order_final=False) return NaN.
    DEISMultistep       lower_order_final (default True): as DPMSolverMultistep, below 15 steps.
    DPMSolverSinglestep its order list ([1, 2, 3, 1, 2, 3, ...], lower_order_final) groups the grid into steps.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SolverDivergedError
from ..grid import check_grid
from ..solvers.base import all_finite

INSTALL_HINT = "pip install 'sdm-verify[diffusers]'"
GRIDS = ("harness", "native")
F64 = torch.float64


class MissingDiffusersError(ImportError):
    """diffusers is not installed."""


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise MissingDiffusersError(f"diffusers is not installed: {INSTALL_HINT}") from None
    return diffusers


@contextlib.contextmanager
def _quiet():
    """Silence diffusers' logger and its deprecation warnings (each message is recorded once in `notes`)."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------ conversions
@dataclass(frozen=True)
class Process:
    """How a network relates to canonical variables: its input scaling and its prediction type."""

    name: str
    input: str  # "vp" | "flow" | "edm"
    prediction: str  # diffusers prediction_type


PROCESSES = {p.name: p for p in (
    Process("vp-eps", "vp", "epsilon"),
    Process("vp-v", "vp", "v_prediction"),
    Process("vp-x0", "vp", "sample"),
    Process("fm", "flow", "flow_prediction"),
    Process("edm", "edm", "epsilon"),
    Process("edm-v", "edm", "v_prediction"),
)}


def _process(name) -> Process:
    if isinstance(name, Process):
        return name
    try:
        return PROCESSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"process: unknown process {name!r}; known: {', '.join(PROCESSES)}") from None


def flow_time(sigma: float) -> float:
    """Rectified-flow time of a noise level: t = sigma/(1 + sigma) (t = 1 at sigma = inf)."""
    return 1.0 if math.isinf(sigma) else sigma / (1.0 + sigma)


def flow_sigma(t: float) -> float:
    """Noise level of a rectified-flow time: sigma = t/(1 - t) (inf at t = 1)."""
    return math.inf if t >= 1.0 else t / (1.0 - t)


def sample_scale(convention: str, sigma: float) -> float:
    """sample / x for a scheduler's sample convention ("vp", "edm", "flow"; module docstring)."""
    if convention == "edm":
        return 1.0
    if convention == "vp":
        return 0.0 if math.isinf(sigma) else 1.0 / math.hypot(1.0, sigma)
    if convention == "flow":
        return 0.0 if math.isinf(sigma) else 1.0 / (1.0 + sigma)
    raise ValueError(f"convention: expected 'vp', 'edm' or 'flow' (got {convention!r})")


def input_scale(process, sigma: float, sigma_data: float = 0.5) -> float:
    """network input / x of a process: alpha (vp), 1/(1 + sigma) (flow), c_in (edm)."""
    p = _process(process)
    if p.input == "edm":
        return 1.0 / math.hypot(sigma, sigma_data)
    return sample_scale(p.input, sigma)


def _edm_coefficients(p: Process, sigma: float, sigma_data: float) -> tuple[float, float]:
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / math.hypot(sigma, sigma_data)
    return c_skip, (-c_out if p.prediction == "v_prediction" else c_out)


def model_output(process, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_data: float = 0.5):
    """What a perfect network of `process` returns at canonical state x with D = denoised (module docstring)."""
    p = _process(process)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: the network is evaluated at a finite sigma > 0 (got {sigma})")
    if p.input == "edm":
        c_skip, c_out = _edm_coefficients(p, sigma, sigma_data)
        return (denoised - c_skip * x) / c_out
    eps = (x - denoised) / sigma
    if p.prediction == "epsilon":
        return eps
    if p.prediction == "sample":
        return denoised
    if p.prediction == "v_prediction":
        return (eps - sigma * denoised) / math.hypot(1.0, sigma)
    return eps - denoised  # flow_prediction


def denoised_from_output(process, x: torch.Tensor, output: torch.Tensor, sigma: float, sigma_data: float = 0.5):
    """The inverse of `model_output`: D from the canonical state and a network output."""
    p = _process(process)
    if p.input == "edm":
        c_skip, c_out = _edm_coefficients(p, sigma, sigma_data)
        return c_skip * x + c_out * output
    if p.prediction == "epsilon":
        return x - sigma * output
    if p.prediction == "sample":
        return output
    if p.prediction == "v_prediction":  # v = alpha (eps - sigma D) with eps = (x - D)/sigma
        alpha = 1.0 / math.hypot(1.0, sigma)
        return alpha**2 * (x - sigma * output / alpha)
    return (x - sigma * output) / (1.0 + sigma)  # u = eps - D  =>  sigma u = x - D - sigma D


# ------------------------------------------------------------------------------------------ float64 guard
class _Float64(torch.Tensor):
    """A float64 tensor whose `.to(<lower float dtype>)` keeps float64 (module docstring: float64)."""

    def to(self, *args, **kwargs):
        if self.dtype != F64:
            return super().to(*args, **kwargs)
        args = list(args)
        for j, a in enumerate(args):
            if isinstance(a, torch.dtype) and a.is_floating_point:
                args[j] = F64
            elif torch.is_tensor(a) and a.is_floating_point():
                args[j] = a.device  # x.to(other) takes other's dtype and device: keep the device only
        if isinstance(kwargs.get("dtype"), torch.dtype) and kwargs["dtype"].is_floating_point:
            kwargs["dtype"] = F64
        return super().to(*args, **kwargs)


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor) if isinstance(t, _Float64) else t


# ------------------------------------------------------------------------------------------ scheduler families
def _vp_table(sched) -> np.ndarray:
    """sigma_k = sqrt((1 - abar_k)/abar_k), k = 0..T-1, in float64 from the scheduler's abar."""
    abar = sched.alphas_cumprod.double().numpy()
    return np.sqrt((1.0 - abar) / abar)


def _t_of_sigma_table(table: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Fractional training step of sigma: log-linear in the table, extended linearly beyond its ends (harness only:
    the lookup, not this map, gives the fake model its sigma; the values only need to be distinct and ordered)."""
    ls, l = np.log(table), np.log(sigma)
    k = np.interp(l, ls, np.arange(len(ls), dtype=np.float64))
    lo, hi = l < ls[0], l > ls[-1]
    k[lo] = (l[lo] - ls[0]) / (ls[1] - ls[0])
    k[hi] = len(ls) - 1 + (l[hi] - ls[-1]) / (ls[-1] - ls[-2])
    return k


def _sigma_of_t_table(table: np.ndarray, t: float) -> float:
    """A network trained on the table at fractional step t: log sigma interpolated linearly between the steps."""
    last = len(table) - 1
    if not 0.0 <= t <= last:
        raise ValueError(f"timestep: {t:g} is outside the training steps 0..{last}: no trained network was "
                         "conditioned on it")
    k = min(int(math.floor(t)), last - 1)
    w = t - k
    return math.exp((1.0 - w) * math.log(table[k]) + w * math.log(table[k + 1]))


class _Family:
    """What the adapter knows about one scheduler class. Methods take the scheduler's effective config (a dict)."""

    classes: tuple[str, ...] = ()
    layout = "per_step"  # one model call per grid point; "heun": HeunDiscrete's interleaved stages
    final_zero = "append"  # "config": final_sigmas_type decides; "append": always 0; "never": cannot step into 0
    final_step = "the scheduler's own step into sigma = 0, 1 NFE"
    float32_cast = False  # step() casts the sample to float32

    def sample_convention(self, cfg) -> str:
        return "edm"

    def processes(self, cfg) -> tuple[str, ...]:
        return ("vp-eps", "vp-v", "vp-x0")

    def process_of(self, cfg) -> str:
        for name in self.processes(cfg):
            if PROCESSES[name].prediction == cfg.get("prediction_type"):
                return name
        raise ValueError(f"config: prediction_type {cfg.get('prediction_type')!r} is not one of the processes "
                         f"{self.processes(cfg)} this adapter supports")

    def process_config(self, process: str) -> dict:
        return {"prediction_type": PROCESSES[process].prediction}

    def check(self, cfg) -> None:
        """Raise ValueError for configs the adapter cannot drive (stochastic samplers, learned variances...)."""

    def order(self, cfg) -> int | None:
        return None

    def equivalent(self, cfg) -> tuple[str, dict] | None:
        return None

    def notes(self, cfg) -> list[str]:
        return []

    def sigma_data(self, cfg) -> float:
        return 0.5

    # grid conventions
    def sigma_is_flow_time(self, cfg) -> bool:
        return self.sample_convention(cfg) == "flow"

    def harness_timesteps(self, sched, cfg, sigmas: np.ndarray) -> np.ndarray:
        return _t_of_sigma_table(_vp_table(sched), sigmas)

    def model_sigma(self, sched, cfg, t: float) -> float:
        return _sigma_of_t_table(_vp_table(sched), t)

    def sigma_range(self, sched, cfg):
        table = _vp_table(sched)
        return float(table[0]), float(table[-1])


class _VPMultistep(_Family):
    """DDPM-table exponential integrators: the sample is x_vp (or x_t with use_flow_sigmas)."""

    final_zero = "config"
    final_step = "first-order step into sigma = 0 (x <- D), 1 NFE"

    def sample_convention(self, cfg) -> str:
        return "flow" if cfg.get("use_flow_sigmas") else "vp"

    def processes(self, cfg) -> tuple[str, ...]:
        return ("vp-eps", "vp-v", "vp-x0", "fm")

    def process_of(self, cfg) -> str:
        if cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction":
            if cfg.get("use_flow_sigmas") and cfg.get("prediction_type") == "flow_prediction":
                return "fm"
            raise ValueError("config: use_flow_sigmas=True and prediction_type='flow_prediction' go together here "
                             "(the 'fm' process); other combinations are not supported")
        return super().process_of(cfg)

    def process_config(self, process: str) -> dict:
        return {"prediction_type": PROCESSES[process].prediction, "use_flow_sigmas": process == "fm"}

    def check(self, cfg) -> None:
        if str(cfg.get("algorithm_type", "")).startswith("sde-"):
            raise ValueError(f"config: algorithm_type {cfg['algorithm_type']!r} is a stochastic (SDE) sampler; the "
                             "suite validates ODE solvers")
        if cfg.get("variance_type") in ("learned", "learned_range"):
            raise ValueError("config: variance_type 'learned*' expects extra variance channels from the network; the "
                             "fake model predicts the mean only")
        if cfg.get("use_dynamic_shifting"):
            raise ValueError("config: use_dynamic_shifting needs a per-image `mu`; not supported")

    def order(self, cfg) -> int | None:
        return int(cfg["solver_order"])

    def sigma_range(self, sched, cfg):
        return None if cfg.get("use_flow_sigmas") else super().sigma_range(sched, cfg)

    def harness_timesteps(self, sched, cfg, sigmas):
        if cfg.get("use_flow_sigmas"):
            return cfg["num_train_timesteps"] * sigmas / (1.0 + sigmas)
        return super().harness_timesteps(sched, cfg, sigmas)

    def model_sigma(self, sched, cfg, t):
        if cfg.get("use_flow_sigmas"):
            return flow_sigma(t / cfg["num_train_timesteps"])
        return super().model_sigma(sched, cfg, t)

    @staticmethod
    def _modified(cfg) -> bool:
        return bool(cfg.get("thresholding"))


class _DPMMultistep(_VPMultistep):
    classes = ("DPMSolverMultistepScheduler",)
    float32_cast = True

    def processes(self, cfg):
        return super().processes(cfg) if cfg.get("algorithm_type") == "dpmsolver++" else ("vp-eps", "vp-v", "vp-x0")

    def equivalent(self, cfg):
        if self._modified(cfg) or cfg.get("euler_at_final"):
            return None
        order, plus = int(cfg["solver_order"]), cfg["algorithm_type"] == "dpmsolver++"
        if order == 1:
            return ("ddim" if plus else "dpm_solver_1"), {}
        if not plus or cfg["solver_type"] != "midpoint" or order > 3:
            return None  # no registered multistep noise-prediction solver; "heun" 2M is another formula
        return {2: "dpmpp_2m", 3: "dpmpp_3m"}[order], {"lower_order_final": bool(cfg["lower_order_final"])}

    def notes(self, cfg):
        out = []
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: below 15 steps the last step is first order and the one before at most "
                       "second (the registered dpmpp_* apply the dpm-solver rule, below 10 steps: equal for N < 10 "
                       "and N >= 15)")
        if cfg.get("euler_at_final"):
            out.append("euler_at_final: the last step is first order at every N (global order 1 on grids ending "
                       "above 0)")
        if int(cfg["solver_order"]) == 3 and cfg.get("algorithm_type") == "dpmsolver++":
            out.append("3M update = the registered dpmpp_3m (authors' coefficients), whose symbolic global order is 2")
        if int(cfg["solver_order"]) == 3 and cfg.get("algorithm_type") == "dpmsolver":
            out.append("third-order noise-prediction update: its D2 weight sigma_t ((e^h - 1 - h)/h^2 - 1/2) is half "
                       "the exact one, as in 3M (analytic.symbolic: leading error e2/12, global order 2)")
        return out


class _DPMSinglestep(_VPMultistep):
    classes = ("DPMSolverSinglestepScheduler",)
    final_step = "the order list's last entry is 1 into sigma = 0 (x <- D), 1 NFE"

    def processes(self, cfg):
        return super().processes(cfg) if cfg.get("algorithm_type") == "dpmsolver++" else ("vp-eps", "vp-v", "vp-x0")

    def equivalent(self, cfg):
        if self._modified(cfg) or int(cfg["solver_order"]) != 1:
            return None  # orders 2, 3 take their stages at the grid's interior points: r varies with the grid
        return ("ddim" if cfg["algorithm_type"] == "dpmsolver++" else "dpm_solver_1"), {}

    def notes(self, cfg):
        return ["the grid's points are the stages: a step of order k spans k grid intervals (order list "
                "[1, 2, 3, 1, 2, 3, ...]); set_timesteps switches lower_order_final on when N is not a multiple of "
                "solver_order or the grid ends in 0, and a trailing lower-order step then limits the order",
                "order 2 (midpoint) on a grid uniform in lambda = the registered dpmpp_2s / dpm_solver_2 (r = 1/2) on "
                "every other grid point; order 3 takes its second stage with the order-2 midpoint update, not "
                "DPM-Solver-3's (registered dpm_solver_3)"]


class _UniPC(_VPMultistep):
    classes = ("UniPCMultistepScheduler",)
    final_step = "predictor step into sigma = 0 with the step's order: x <- D only when that order is 1"

    def order(self, cfg):
        # diffusers docstring: "The effective order of accuracy is `solver_order + 1` due to the UniC."
        return int(cfg["solver_order"]) + 1

    def equivalent(self, cfg):
        p = int(cfg["solver_order"])
        if self._modified(cfg) or not cfg.get("predict_x0", True) or cfg.get("solver_p") is not None or p > 3:
            return None
        params = {"lower_order_final": bool(cfg["lower_order_final"])}
        if cfg.get("disable_corrector"):
            params["disable_corrector_steps"] = tuple(int(k) for k in cfg["disable_corrector"])
        return f"unipc_{cfg['solver_type']}_p{p}", params

    def notes(self, cfg):
        out = []
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: step i uses order min(p, N - i) at every N; on a grid ending above 0 the "
                       "last step is UniP-1 with no corrector after it, so the global error is O(h^2) for any p")
        else:
            out.append("lower_order_final=False with a grid ending in 0: the last predictor of order >= 2 divides by "
                       "rk = (lambda_prev - lambda_s)/h = 0 (h = inf) and returns NaN")
        if cfg.get("solver_type") == "bh1":
            out.append("bh1 with a grid ending in 0 (final_sigmas_type 'zero', the default): B(h) = -h = -inf times "
                       "the zero residual of the first-order last step is NaN")
        return out


class _DEIS(_VPMultistep):
    classes = ("DEISMultistepScheduler",)
    final_zero = "never"
    final_step = "none: the schedule ends at the table's smallest sigma (the update divides by log rho)"

    def equivalent(self, cfg):
        if self._modified(cfg) or int(cfg["solver_order"]) != 1:
            return None  # "logrho": eps interpolated in log rho, not in rho = sigma as the registered deis_tab*
        return "dpm_solver_1", {}

    def notes(self, cfg):
        out = ["solver_type 'logrho': the Lagrange interpolant of eps is a polynomial in log(rho) (rho = sigma), "
               "integrated exactly in rho; the registered deis_tab* interpolate in rho itself: another update of "
               "the same order"]
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: below 15 steps the last step is first order and the one before at most "
                       "second")
        if cfg.get("use_karras_sigmas"):
            out.append("use_karras_sigmas: set_timesteps repeats the last sigma, a zero-length final step")
        return out


class _KarrasDiscrete(_Family):
    """k-diffusion-style schedulers: the sample is x, the model input x/sqrt(sigma^2 + 1), the table a DDPM one."""

    def harness_timesteps(self, sched, cfg, sigmas):
        if cfg.get("timestep_type") == "continuous" and cfg.get("prediction_type") == "v_prediction":
            return 0.25 * np.log(sigmas)
        return super().harness_timesteps(sched, cfg, sigmas)

    def model_sigma(self, sched, cfg, t):
        if cfg.get("timestep_type") == "continuous" and cfg.get("prediction_type") == "v_prediction":
            return math.exp(4.0 * t)
        return super().model_sigma(sched, cfg, t)


class _Euler(_KarrasDiscrete):
    classes = ("EulerDiscreteScheduler",)
    float32_cast = True
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE"

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        return "euler", {}


class _Heun(_KarrasDiscrete):
    classes = ("HeunDiscreteScheduler",)
    layout = "heun"
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE: 2N - 1 in all"

    def order(self, cfg):
        return 2

    def check(self, cfg):
        if cfg.get("clip_sample"):
            raise ValueError("config: clip_sample clamps D; not an ODE solver of the target")

    def equivalent(self, cfg):
        return "heun", {}


class _LMS(_KarrasDiscrete):
    classes = ("LMSDiscreteScheduler",)
    final_step = "the order-4 Adams-Bashforth polynomial integrated down to sigma = 0 (not x <- D), 1 NFE"

    def order(self, cfg):
        return 4  # step(order=4): the adapter calls step() with its defaults

    def equivalent(self, cfg):
        # Adams-Bashforth in sigma on d = (x - D)/sigma with Lagrange coefficients (scipy quad): DEIS tAB-3 in VE.
        # Equal on grids ending above 0; into 0 the registered solver takes x <- D instead.
        return "deis_tab3", {}


class _FlowMatchEuler(_Family):
    classes = ("FlowMatchEulerDiscreteScheduler",)
    float32_cast = True
    final_step = "Euler in t into t = 0 (= x <- D), 1 NFE"

    def sample_convention(self, cfg):
        return "flow"

    def processes(self, cfg):
        return ("fm",)

    def process_of(self, cfg):
        return "fm"

    def process_config(self, process):
        return {}

    def check(self, cfg):
        if cfg.get("stochastic_sampling"):
            raise ValueError("config: stochastic_sampling=True is a stochastic sampler; the suite validates ODE "
                             "solvers")
        if cfg.get("invert_sigmas"):
            raise ValueError("config: invert_sigmas (t -> 1 - t) is not supported")
        if cfg.get("use_dynamic_shifting"):
            raise ValueError("config: use_dynamic_shifting needs a per-image `mu`; not supported")

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        # Euler in t on x_t = x/(1 + sigma), u = eps - D, is DDIM: x' = (sigma'/sigma) x + (1 - sigma'/sigma) D,
        # i.e. Euler in sigma (also the registered euler_t with the "fm" process)
        return "euler", {}

    def harness_timesteps(self, sched, cfg, sigmas):
        return cfg["num_train_timesteps"] * sigmas / (1.0 + sigmas)

    def model_sigma(self, sched, cfg, t):
        return flow_sigma(t / cfg["num_train_timesteps"])

    def sigma_range(self, sched, cfg):
        return None


class _EDMEuler(_Family):
    classes = ("EDMEulerScheduler",)
    float32_cast = True
    final_step = "Euler into sigma = 0 (x <- D), 1 NFE"

    def processes(self, cfg):
        return ("edm", "edm-v")

    def process_config(self, process):
        return {"prediction_type": PROCESSES[process].prediction}

    def process_of(self, cfg):
        return "edm-v" if cfg.get("prediction_type") == "v_prediction" else "edm"

    def sigma_data(self, cfg):
        return float(cfg["sigma_data"])

    def order(self, cfg):
        return 1

    def equivalent(self, cfg):
        return "euler", {}

    def harness_timesteps(self, sched, cfg, sigmas):
        return 0.25 * np.log(sigmas)  # EDM's c_noise

    def model_sigma(self, sched, cfg, t):
        return math.exp(4.0 * t)

    def sigma_range(self, sched, cfg):
        return float(cfg["sigma_min"]), float(cfg["sigma_max"])


_FAMILIES: dict[str, _Family] = {
    name: fam
    for fam in (_DPMMultistep(), _DPMSinglestep(), _UniPC(), _DEIS(), _Euler(), _Heun(), _LMS(), _FlowMatchEuler(),
                _EDMEuler())
    for name in fam.classes
}


def supported() -> list[str]:
    """Names of the diffusers scheduler classes the adapter can drive."""
    return list(_FAMILIES)


# ------------------------------------------------------------------------------------------ the solver
@dataclass
class NativeSchedule:
    """A scheduler's own schedule for n steps: what its update uses and what the model is handed."""

    sigmas: torch.Tensor  # the sample's path in EDM sigma (consecutive duplicates of HeunDiscrete removed)
    timesteps: torch.Tensor  # one per model call, as the scheduler hands them
    update_sigmas: torch.Tensor  # per model call: the sigma the scheduler's update assumes there (EDM)
    model_sigmas: torch.Tensor  # per model call: the sigma of the timestep (the trained table, EDM)

    def _ratios(self) -> torch.Tensor:
        ok = torch.isfinite(self.update_sigmas) & (self.update_sigmas > 0)
        return self.model_sigmas[ok] / self.update_sigmas[ok]

    @property
    def mismatch(self) -> float:
        """max over calls of |sigma_model / sigma_update - 1|."""
        return float((self._ratios() - 1).abs().max())

    @property
    def lambda_mismatch(self) -> float:
        """max over calls of |log(sigma_model / sigma_update)|: the mismatch in half log-SNR."""
        return float(self._ratios().log().abs().max())


def _heun_layout(sigmas: np.ndarray, timesteps: np.ndarray, ends_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """HeunDiscrete's interleaved arrays for the grid s_0..s_n (timesteps t_k of the s_k > 0). Model call 2k is the
    Euler stage of step k (reads sigmas[2k], sigmas[2k+1]), call 2k+1 its correction at s_{k+1} (reads sigmas[2k],
    sigmas[2k+1] again): sigmas = [s0, s1, s1, ..., s_n, s_n], timesteps = [t0, t1, t1, ..., t_{n-1}, t_{n-1}, t_n].
    Into 0 the last step is its Euler stage alone (set_timesteps' own layout): sigmas [s0, s1, s1, ..., s_{n-1},
    s_{n-1}, 0], timesteps [t0, t1, t1, ..., t_{n-1}, t_{n-1}]."""
    n = len(sigmas) - 1
    if ends_zero:
        return (np.concatenate([sigmas[:1], np.repeat(sigmas[1:-1], 2), sigmas[-1:]]),
                np.concatenate([timesteps[:1], np.repeat(timesteps[1:n], 2)]))
    return (np.concatenate([sigmas[:1], np.repeat(sigmas[1:], 2)]),
            np.concatenate([timesteps[:1], np.repeat(timesteps[1:n], 2), timesteps[n:n + 1]]))


class TimestepLookup:
    """grid="harness": timestep -> sigma for exactly the timesteps the adapter set; any other timestep raises."""

    def __init__(self, scheduler: str, timesteps, sigmas):
        self.scheduler = scheduler
        self._sigma = {float(t): float(s) for t, s in zip(timesteps, sigmas, strict=True)}

    def __call__(self, t) -> float:
        try:
            return self._sigma[float(t)]
        except KeyError:
            raise ValueError(f"timestep: {self.scheduler} handed the model timestep {float(t)!r}, which the adapter "
                             "did not set") from None


def _format_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


class DiffusersSolver:
    """A diffusers scheduler behind the solver interface (module docstring). Build with `scheduler_solver`."""

    def __init__(self, cls, config: dict, process: str | None, grid: str, keep_float64: bool, _switch: bool = False):
        diffusers = _diffusers()
        if not (inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin)):
            raise ValueError(f"cls_or_name: expected a diffusers scheduler class (a SchedulerMixin), got {cls!r}")
        if cls.__name__ not in _FAMILIES:
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
        self.cls, self.family = cls, _FAMILIES[cls.__name__]
        self.user_config, self.grid, self.keep_float64 = dict(config), grid, keep_float64

        base = self._construct(self.user_config, record=True)  # validates the contributor's config
        defaults = dict(base.config)
        self.processes = self.family.processes(defaults)
        if process is None:
            process = self.family.process_of(defaults)
        elif process not in self.processes:
            raise ValueError(f"process: {cls.__name__} supports {', '.join(self.processes)} (got {process!r})")
        changes = self.family.process_config(process)
        if not _switch:
            clash = {k: config[k] for k, v in changes.items() if k in config and config[k] != v}
            if clash:
                raise ValueError(f"process: {process!r} needs {changes}, but the config sets {clash}")
        self.process, self.config = process, {**self.user_config, **changes}
        sched = self._construct(self.config)
        self.effective_config = dict(sched.config)
        cfg = self.effective_config
        self.family.check(cfg)
        self._sigma_data = self.family.sigma_data(cfg)

        shown = {**self.user_config, **{k: v for k, v in changes.items() if defaults.get(k) != v}}
        inner = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(shown.items()))
        self.name = f"diffusers:{cls.__name__}" + (f"{{{inner}}}" if inner else "")
        self.order = self.family.order(cfg)
        eq = self.family.equivalent(cfg)
        self.equivalent, self.equivalent_params = (eq[0], dict(eq[1])) if eq else (None, {})
        self.final_step = self.family.final_step
        self.notes = list(self._warnings) + self.family.notes(cfg)
        if self.family.float32_cast:
            self.notes.append("step() casts the sample to float32" + (
                "; the adapter keeps float64 (keep_float64=True)" if keep_float64 else ": float32 round-off"))
        self.sigma_range = self.family.sigma_range(sched, cfg) if grid == "native" else None

    # ------------------------------------------------------------------ construction
    def _construct(self, config: dict, record: bool = False):
        """cls(**config); record=True keeps diffusers' deprecation warnings (FutureWarning) in `_warnings`."""
        with warnings.catch_warnings(record=True) as caught, contextlib.ExitStack() as stack:
            warnings.simplefilter("always")
            if not record:
                stack.enter_context(_quiet())
            try:
                sched = self.cls(**config)
            except (ValueError, TypeError, NotImplementedError, AssertionError, KeyError) as exc:
                raise ValueError(f"config: {self.cls.__name__} rejected {config}: {exc}") from None
        if record:
            self._warnings = sorted({str(w.message).strip() for w in caught if issubclass(w.category, FutureWarning)})
        return sched

    def _scheduler(self, n: int, final_zero: bool | None):
        """A fresh scheduler after set_timesteps(n); final_zero (harness) sets final_sigmas_type to match the grid."""
        config = dict(self.config)
        if final_zero is not None:
            mode = self.family.final_zero
            if mode == "never" and final_zero:
                raise ValueError(f"sigmas: {self.cls.__name__} cannot take a step into sigma = 0 ({self.final_step}); "
                                 "end the grid at sigma_min > 0")
            if mode == "config" and "final_sigmas_type" in self.effective_config:
                config["final_sigmas_type"] = "zero" if final_zero else "sigma_min"
        try:
            sched = self._construct(config)
        except ValueError as exc:
            if final_zero:
                raise ValueError(f"sigmas: a grid ending in 0 needs final_sigmas_type='zero' ({exc})") from None
            raise
        with _quiet():
            sched.set_timesteps(n)
        return sched

    # ------------------------------------------------------------------ public API
    def with_process(self, process: str) -> DiffusersSolver:
        """The same scheduler and config with the network of another process (prediction type / flow sigmas)."""
        if process not in self.processes:
            raise ValueError(f"process: {self.cls.__name__} supports {', '.join(self.processes)} (got {process!r})")
        return DiffusersSolver(self.cls, self.user_config, process, self.grid, self.keep_float64, _switch=True)

    @property
    def steps_into_zero(self) -> bool:
        """Whether the scheduler can take a final step into sigma = 0 (DEIS cannot: its schedule ends above 0)."""
        return self.family.final_zero != "never"

    def nfe(self, n_steps: int) -> int:
        """Model calls for n steps on a grid ending above 0."""
        return 2 * n_steps if self.family.layout == "heun" else n_steps

    def nfe_to_zero(self, n_steps: int) -> int:
        """Model calls for n steps, the last into sigma = 0."""
        return 2 * n_steps - 1 if self.family.layout == "heun" else n_steps

    def equivalent_solver(self):
        """The registered solver `equivalent` names, configured with `equivalent_params` (None without one)."""
        if self.equivalent is None:
            return None
        from .. import solvers

        return solvers.get(self.equivalent, **self.equivalent_params)

    def __call__(self, denoiser, x: torch.Tensor, sigmas) -> torch.Tensor:
        if self.grid == "native":
            grid = torch.as_tensor(sigmas, dtype=F64)
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
        if self.family.sigma_is_flow_time(cfg):
            upd = np.array([flow_sigma(float(t)) for t in upd])
        ts = sched.timesteps
        model = [self.family.model_sigma(sched, cfg, float(t)) for t in ts]
        path = upd if self.family.layout != "heun" else np.concatenate([upd[:1], upd[1::2]])
        return NativeSchedule(torch.tensor(path, dtype=F64), ts.clone(), torch.tensor(upd[: len(ts)], dtype=F64),
                              torch.tensor(model, dtype=F64))

    def native_sigmas(self, n: int) -> torch.Tensor:
        """The EDM sigmas the sample passes through on the scheduler's own n-step grid (may end in 0; DEIS with
        use_karras_sigmas repeats its last sigma)."""
        return self.native_schedule(n).sigmas

    # ------------------------------------------------------------------ running
    def _wrap(self, x):
        return x.as_subclass(_Float64) if self.keep_float64 and x.dtype == F64 else x

    def _fake_model(self, denoiser, sigma_of):
        process, sd = self.process, self._sigma_data

        def model(inp, t):
            sigma = sigma_of(t)
            x = _plain(inp) / input_scale(process, sigma, sd)
            return model_output(process, x, denoiser(x, sigma), sigma, sd)

        return model

    def _loop(self, sched, model, x, sigma_start: float, sigma_end: float) -> torch.Tensor:
        conv = self.family.sample_convention(self.effective_config)
        scale0 = sample_scale(conv, sigma_start)
        if scale0 == 0:
            raise ValueError(f"sigmas: {self.cls.__name__} starts at sigma = inf (t = 1): there is no canonical state "
                             "to start from")
        sample = self._wrap(x * scale0)
        scale_input = getattr(sched, "scale_model_input", None)
        with _quiet():
            for i, t in enumerate(sched.timesteps):
                inp = scale_input(sample, t) if scale_input is not None else sample
                out = model(inp, t)
                sample = self._wrap(sched.step(out, t, sample, return_dict=False)[0])
                if not all_finite(_plain(sample)):
                    raise SolverDivergedError(self.name, i, self._sigma_after(sched, i), "non-finite sample")
        return _plain(sample) / sample_scale(conv, sigma_end)

    def _sigma_after(self, sched, i: int) -> float:
        """The EDM sigma the scheduler steps to at model call i (for error messages)."""
        s = float(sched.sigmas[min(i + 1, len(sched.sigmas) - 1)])
        return flow_sigma(s) if self.family.sigma_is_flow_time(self.effective_config) else s

    def _harness(self, denoiser, x, grid: torch.Tensor) -> torch.Tensor:
        n, cfg = grid.numel() - 1, self.effective_config
        ends_zero = bool(grid[-1] == 0)
        sched = self._scheduler(n, ends_zero)
        g = grid.numpy()
        positive = g[g > 0]
        ts = np.asarray(self.family.harness_timesteps(sched, cfg, positive), dtype=np.float64)
        if np.any(np.diff(ts) == 0):
            raise ValueError("sigmas: two grid points map to the same timestep")
        lookup = TimestepLookup(self.cls.__name__, ts, positive)
        sig = g / (1.0 + g) if self.family.sigma_is_flow_time(cfg) else g
        steps = ts[:n]
        if self.family.layout == "heun":
            sig, steps = _heun_layout(sig, ts, ends_zero)
        sched.sigmas = torch.tensor(sig, dtype=F64)
        sched.timesteps = torch.tensor(steps, dtype=F64)
        return self._loop(sched, self._fake_model(denoiser, lookup), x, float(g[0]), float(g[-1]))

    def _native(self, denoiser, x, n: int):
        sched = self._scheduler(n, None)
        cfg = self.effective_config
        path = self.native_sigmas(n)
        model = self._fake_model(denoiser, lambda t: self.family.model_sigma(sched, cfg, float(t)))
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


def scheduler_solver(cls_or_name, config: dict | None = None, process: str | None = None, grid: str = "harness",
                     keep_float64: bool = True) -> DiffusersSolver:
    """A diffusers scheduler as a solver(denoiser, x, sigmas) -> x in EDM variables (module docstring).

    cls_or_name: a scheduler class or its name in `diffusers` (e.g. "DPMSolverMultistepScheduler"); config: its
    constructor keywords (JSON config); process: the network's parameterization (None: from the config); grid:
    "harness" (impose the given sigma grid) or "native" (the scheduler's own timesteps).
    """
    diffusers = _diffusers()
    cls = cls_or_name
    if isinstance(cls_or_name, str):
        cls = getattr(diffusers, cls_or_name, None)
        if cls is None:
            raise ValueError(f"cls_or_name: diffusers has no scheduler named {cls_or_name!r}; supported: "
                             f"{', '.join(supported())}")
    return DiffusersSolver(cls, config, process, grid, keep_float64)
