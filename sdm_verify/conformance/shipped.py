"""The as-shipped pass of a diffusers scheduler: `as_shipped(cls_or_solver, config, quick)` -> ShippedResult.

The scheduler runs exactly as a pipeline runs it: the user's config as given, its own `set_timesteps(N)` grid and
spacing, its own final step, float32 samples and float32 model outputs (as a pipeline's), `scale_model_input` then
`step` per timestep. The network is exact: from the (input, timestep) the scheduler hands it, the oracle's denoiser
of the Gaussian target gauss-4d is evaluated in float64 at the sigma a network trained on the scheduler's own table
gives that timestep (the adapter's `model_sigma`: the DDPM table sigma_k = sqrt((1 - abar_k)/abar_k) from its betas,
flow t/(1 - t), EDM exp(4 c_noise)), and its output, in the scheduler's prediction_type, is cast to float32.

The run starts from the exact noisy law p_{s_0} at the scheduler's first sigma s_0 (at s_0 = inf: the standard
normal in its sample units), so the prior mismatch of a pipeline's pure-noise start is not counted. At each N of
NS (quick: QUICK_NS) it reports the exact W2 of the output law to p_{s_end} (s_end: where its own grid ends) and to
p_0. The output law is found with an affine probe: SAMPLES points of p_{s_0} are pushed through and an affine map
fitted; when it reproduces the outputs to AFFINE_TOL (a deterministic scheduler on a Gaussian target is affine up
to float32 round-off) the output law is N(A m + b, A S A^T) exactly and W2 is Bures'; otherwise (clipping, drawn
noise) the Bures W2 of the outputs' empirical moments is reported, with its Monte Carlo floor. FAIL, one line each:
a non-finite output (naming the model call, timestep and sigma), a zero-length or non-decreasing step in its own
sigma grid or a repeated timestep (naming them), and no convergence on its own grid (the W2 at the largest N not
below the smallest N's, beyond the Monte Carlo floor where there is one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from analytic import bures_w2

from ..harness import targets
from .result import Item

NS, QUICK_NS = (5, 10, 25, 50), (5, 10, 25)
SAMPLES, STOCHASTIC_SAMPLES = 256, 4096
AFFINE_TOL = 1e-3
TARGET = "gauss-4d"


@dataclass
class ShippedRow:
    n: int
    nfe: int | None
    w2: float | None  # to p at the end of its own grid
    w2_to_zero: float | None
    sigma_first: float | None
    sigma_last: float | None
    method: str
    failure: str | None = None


@dataclass
class ShippedResult:
    scheduler: str
    config: dict
    rows: list[ShippedRow]
    failures: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "fail" if self.failures else "pass"

    def item(self) -> Item:
        ok = [r for r in self.rows if r.w2 is not None]
        value = ", ".join(f"N={r.n} {r.w2:.2e}" for r in ok) or "—"
        detail = "; ".join(self.failures) if self.failures else (
            f"as shipped (its own grid, float32): W2 to the exact law at its grid's end on {TARGET}: {value}")
        return Item("as_shipped", self.verdict, value, "finite, ordered grid, converging", detail, self.to_json())

    def to_json(self) -> dict:
        return dict(scheduler=self.scheduler, config=self.config, target=TARGET, verdict=self.verdict,
                    failures=list(self.failures), rows=[r.__dict__.copy() for r in self.rows])

    def table(self) -> str:
        lines = [f"as shipped ({self.scheduler}, config {self.config or '{}'} as given; own grid, float32; exact "
                 f"{TARGET} denoiser):", "  N   NFE  sigma_0 -> sigma_end   W2 to p_end  W2 to p_0   method / failure"]
        for r in self.rows:
            s0 = "—" if r.sigma_first is None else f"{r.sigma_first:.3g}"
            s1 = "—" if r.sigma_last is None else f"{r.sigma_last:.3g}"
            w = "—" if r.w2 is None else f"{r.w2:.3e}"
            w0 = "—" if r.w2_to_zero is None else f"{r.w2_to_zero:.3e}"
            lines.append(f"  {r.n:<3d} {r.nfe if r.nfe is not None else '—':<4} {s0:>8} -> {s1:<9} {w:<12} {w0:<10} "
                         f"{r.failure or r.method}")
        lines.append(f"  as shipped: {self.verdict.upper()}" + (f" ({'; '.join(self.failures)})"
                                                                 if self.failures else ""))
        return "\n".join(lines)


def profile_for(cls):
    """The adapter's profile of cls or of its nearest base class that has one (None: none)."""
    from ..adapters.diffusers.profiles import PROFILES

    for base in cls.__mro__:
        if base.__name__ in PROFILES:
            return PROFILES[base.__name__]
    return None


def _path(sched, profile, cfg) -> np.ndarray:
    """The EDM sigmas the sample passes through on the scheduler's own grid."""
    from ..adapters.diffusers.conventions import flow_sigma

    own = getattr(profile, "shipped_path", None)
    if own is not None:
        return np.asarray(own(sched, cfg), dtype=np.float64)
    if hasattr(profile, "impose"):  # DDIM / DDPM: alphas_cumprod indexed by timestep
        abar = sched.alphas_cumprod.double()
        sig = [float(((1 - abar[int(t)]) / abar[int(t)]).sqrt()) for t in sched.timesteps]
        final = getattr(sched, "final_alpha_cumprod", getattr(sched, "one", torch.tensor(1.0)))
        final = float(final)
        return np.array(sig + [math.sqrt(max(1.0 - final, 0.0) / final)])
    s = sched.sigmas.double().numpy()
    if profile.sigma_is_flow_time(cfg):
        s = np.array([flow_sigma(float(t)) for t in s])
    if profile.layout == "heun":
        s = np.concatenate([s[:1], s[1::2]])
    return s


def _grid_failure(path: np.ndarray, steps) -> str | None:
    steps = [float(t) for t in steps]
    for i in range(len(steps) - 1):
        if steps[i + 1] >= steps[i]:
            what = "repeated" if steps[i + 1] == steps[i] else "increasing"
            return f"{what} timestep in its own schedule: timesteps[{i}] = {steps[i]:g}, timesteps[{i + 1}] = " \
                   f"{steps[i + 1]:g}"
    for i in range(len(path) - 1):
        if not path[i + 1] < path[i]:
            what = "zero-length" if path[i + 1] == path[i] else "non-decreasing"
            return f"{what} step {i} in its own sigma grid: sigma {path[i]:.6g} -> {path[i + 1]:.6g}"
    return None


def _model(profile, sched, cfg, process, target, sd):
    from ..adapters.diffusers.conventions import input_scale, model_output

    mean = torch.as_tensor(target.mean, dtype=torch.float64)

    def call(inp, t):
        sigma = float(profile.model_sigma(sched, cfg, float(t)))
        inp = inp.double()
        if math.isinf(sigma):  # t = 1 / abar = 0: the input is the noise itself; D = E[x0] = the mean
            if process.startswith("vp-") and process != "vp-eps" or process.startswith("edm"):
                raise ValueError(f"model called at sigma = inf with process {process}")
            return (inp - mean if process == "fm" else inp).float(), sigma
        x = inp / input_scale(process, sigma, sd)
        return model_output(process, x, target.denoiser(x, sigma), sigma, sd).float(), sigma

    return call


#: W2 below this is converged for any purpose here (float32 round-off of the shipped run is ~1e-6)
STALL_ABS = 1e-3


def stalls(w2_prev: float, w2_last: float, floor: float = 0.0) -> bool:
    """The last refinement of N did not lower W2 by 10% although W2 is well above the floors: a biased limit."""
    return w2_last > max(STALL_ABS, 3.0 * floor) and w2_last > 0.9 * w2_prev


def _one(cls, config, profile, cfg, process, n, target, stochastic, step_args):
    from ..adapters.diffusers.conventions import sample_scale
    from ..adapters.diffusers.dependency import quiet

    with quiet():
        sched = cls(**config)
        sched.set_timesteps(n)
    path = _path(sched, profile, cfg)
    own = getattr(profile, "shipped_steps", None)
    steps = own(sched) if own is not None else sched.timesteps[0::2] if profile.layout == "heun" else sched.timesteps
    bad = _grid_failure(path, steps)
    if bad is not None:
        return ShippedRow(n, None, None, None, float(path[0]), float(path[-1]), "", f"N={n}: {bad}")
    conv = profile.sample_convention(cfg)
    g = torch.Generator().manual_seed(1000 + n)
    m = STOCHASTIC_SAMPLES if stochastic else SAMPLES
    if math.isinf(path[0]):
        x0, sample = None, torch.randn(m, target.d, generator=g, dtype=torch.float64)
    else:
        x0 = target.sample(m, sigma=float(path[0]), generator=g)
        sample = x0 * sample_scale(conv, float(path[0]))
    start = sample.clone()
    sample = sample.float()
    model = _model(profile, sched, cfg, process, target, profile.sigma_data(cfg))
    torch.manual_seed(n)  # schedulers that draw noise use the global generator
    with quiet():
        for i, t in enumerate(sched.timesteps):
            inp = sched.scale_model_input(sample, t) if hasattr(sched, "scale_model_input") else sample
            out, sigma = model(inp, t)
            sample = sched.step(out, t, sample, return_dict=False, **step_args)[0]
            if not bool(torch.isfinite(sample).all()):
                return ShippedRow(n, i + 1, None, None, float(path[0]), float(path[-1]), "",
                                  f"N={n}: non-finite output at model call {i} (timestep {float(t):g}, model sigma "
                                  f"{sigma:.6g})")
    end = float(path[-1])
    y = sample.double() / sample_scale(conv, end) if end > 0 or conv == "edm" else sample.double()
    w2, w0, method = _laws(start, y, target, end, conv, path[0])
    return ShippedRow(n, len(sched.timesteps), w2, w0, float(path[0]), end, method)


def _sqrt_psd(S):
    e, v = torch.linalg.eigh(0.5 * (S + S.T))
    return (v * e.clamp_min(0).sqrt()) @ v.T


def _laws(start, y, target, end, conv, s0):
    """(W2 to p_end, W2 to p_0, method) of the output law, by the affine probe or the empirical moments."""
    from ..adapters.diffusers.conventions import sample_scale

    mu, C = torch.as_tensor(target.mean, dtype=torch.float64), torch.as_tensor(target.covariance,
                                                                                dtype=torch.float64)
    d = mu.shape[0]
    # the law of the start in sample units
    if math.isinf(s0):
        m0, S0 = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    else:
        k = sample_scale(conv, float(s0))
        m0, S0 = k * mu, k * k * (C + float(s0) ** 2 * torch.eye(d, dtype=torch.float64))
    X = torch.cat([start, torch.ones(len(start), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(X, y).solution
    resid = float((X @ coef - y).norm() / (y - y.mean(0)).norm())
    if resid < AFFINE_TOL:
        A, b = coef[:d].T, coef[d]
        m_out, F_out = A @ m0 + b, A @ _sqrt_psd(S0)
        method = f"affine probe (fit residual {resid:.1e})"
    else:
        m_out, F_out = y.mean(0), _sqrt_psd(torch.cov(y.T))
        method = f"empirical moments of {len(y)} samples (not affine: residual {resid:.1e})"
    eye = torch.eye(d, dtype=torch.float64)
    w_end = bures_w2(m_out, None, mu, None, factors=(F_out, _sqrt_psd(C + end**2 * eye)))
    w_zero = bures_w2(m_out, None, mu, None, factors=(F_out, _sqrt_psd(C)))
    return w_end, w_zero, method


def as_shipped(cls_or_solver, config: dict | None = None, quick: bool = False) -> ShippedResult:
    """The as-shipped pass (module docstring) of a diffusers scheduler class, or of a DiffusersSolver's class and
    user config."""
    from ..adapters.diffusers.conventions import PROCESSES

    if hasattr(cls_or_solver, "user_config") and hasattr(cls_or_solver, "cls"):
        cls = cls_or_solver.cls
        config = {**cls_or_solver.user_config, **getattr(cls_or_solver, "step_given", {})}
    else:
        cls = cls_or_solver
    config = dict(config or {})
    step_args = {}
    profile = profile_for(cls)
    if profile is None:
        raise ValueError(f"cls_or_solver: no profile for {cls.__name__}: the as-shipped pass cannot map its "
                         "timesteps to sigma")
    for k in getattr(profile, "step_args", {}):
        if k in config:
            step_args[k] = config.pop(k)
    from ..adapters.diffusers.dependency import quiet

    with quiet():
        cfg = dict(cls(**config).config)
    process = profile.process_of(cfg)
    if process not in PROCESSES:
        raise ValueError(f"process: {process!r}")
    draws = getattr(profile, "draws", None)
    stochastic = bool(getattr(profile, "stochastic", False)) and (draws is None or draws({**cfg, **step_args}))
    if callable(getattr(profile, "is_stochastic", None)) and profile.is_stochastic(cfg):
        stochastic = True
    target = targets.get(TARGET)
    ns = QUICK_NS if quick else NS
    rows = [_one(cls, config, profile, cfg, process, n, target, stochastic, step_args) for n in ns]
    failures = [r.failure for r in rows if r.failure]
    done = [r for r in rows if r.w2 is not None]
    if len(done) >= 2 and not failures:
        floor = 2.0 * math.sqrt(2.0 * target.d / STOCHASTIC_SAMPLES) if stochastic else 0.0
        if not done[-1].w2 < done[0].w2 - floor:
            failures.append(f"no convergence on its own grid: W2 {done[0].w2:.3e} at N={done[0].n}, "
                            f"{done[-1].w2:.3e} at N={done[-1].n}")
        elif stalls(done[-2].w2, done[-1].w2, floor):
            failures.append(f"stalls on its own grid: W2 {done[-2].w2:.3e} at N={done[-2].n}, {done[-1].w2:.3e} at "
                            f"N={done[-1].n} (W2 fell by less than 10% as N grew: a biased limit)")
    return ShippedResult(cls.__name__, {**config, **step_args}, rows, failures)
