"""Weak and strong orders of stochastic samplers (docs/stochastic.md).

    weak_gaussian   exact: the output law read off with probe columns (`stochastic_law`), its Bures W2 to
                    p_sigma_min on nested EDM grids N = 2^j; also the W2 of the full sampler (grid into 0) to p_0,
                    reported, not fitted (its last step is a fixed-size step). Floor ~1e-13.
    weak_mixture    any target: the sample mean of closed-form test functions (moments up to order 4, the
                    characteristic function at fixed frequencies; analytic.expectations) over P paths against their
                    exact expectation under p_sigma_min. Paths share their start points and one Brownian motion across
                    N (BrownianNoise: common random numbers), so the differences between N and 2N have small variance;
                    the Monte Carlo floor (the standard error of the estimate) is stated and orders are fitted on the
                    coupled differences |E_N f - E_2N f| only where they exceed FLOOR_FACTOR standard errors.
    strong          the RMS distance at sigma_min to a reference path driven by the same Brownian motion: torchsde's
                    SRK (strong order 1.5 for additive noise) on the EDM reverse SDE with beta(t) = beta/t, on a
                    geometric grid much finer than the sampler's; its own floor is measured by halving its step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from analytic import GaussianMixture
from analytic.wasserstein.quantile import w2_1d_cloud

from .. import schedules
from ..errors import InputError
from .meters import F64
from .nfe import count_nfe
from .noise import BrownianNoise
from .orders import OrderFit, fit_order
from .stochastic_law import StochasticGaussianMeter

__all__ = ["StochasticMeasurement", "weak_gaussian", "weak_mixture", "strong", "DEFAULT_NS"]

SIGMA_MAX, SIGMA_MIN = 80.0, 0.002
DEFAULT_NS = (8, 16, 32, 64, 128, 256)
#: a Monte Carlo estimate is used for the fit only where it exceeds this many of its standard errors
FLOOR_FACTOR = 3.0
#: exact samples of p_sigma_min averaged for the sampling bias of a 1-D cloud's W2
CLOUD_REPEATS = 8
#: Monte Carlo slopes scatter by ~0.1-0.3 at a few standard errors: the window accepts slopes within this span
MC_SLOPE_TOL = 0.3


@dataclass
class StochasticMeasurement:
    """Errors of one sampler on nested grids, and the order fitted on them (None where no window)."""

    sampler: str
    target: str
    kind: str  # "weak" / "strong"
    metric: str
    claimed: float | None
    ns: list[int]
    nfe: list[int]
    errors: list[float]
    floor: float
    fit: OrderFit
    extra: dict = field(default_factory=dict)

    @property
    def order(self) -> float | None:
        return self.fit.order

    def agrees(self, tol: float = 0.2) -> bool:
        return self.claimed is not None and self.fit.ok and abs(self.fit.order - self.claimed) <= tol

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fit"] = self.fit.to_dict()
        return out


def _name(sampler) -> str:
    return getattr(sampler, "name", getattr(sampler, "__name__", type(sampler).__name__))


def _check_sampler(sampler) -> None:
    if not callable(sampler):
        raise InputError(f"sampler: must be callable as sampler(denoiser, x, sigmas, noise), got {sampler!r:.60}")


def grid(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, zero: bool = False,
         schedule: str = "edm") -> torch.Tensor:
    return schedules.get(schedule)(n, sigma_min, sigma_max, zero=zero)


def weak_gaussian(sampler, target: GaussianMixture, ns=DEFAULT_NS, sigma_min: float = SIGMA_MIN,
                  sigma_max: float = SIGMA_MAX, schedule: str = "edm", to_zero: bool = True,
                  target_name: str = "gaussian", **fit_kw) -> StochasticMeasurement:
    """Exact W2 of the output law to p_sigma_min at each N, the weak order fitted on it; with to_zero also the exact
    W2 of the full sampler (grid into 0) to p_0 at each N (extra["w2_to_zero"])."""
    _check_sampler(sampler)
    meter = StochasticGaussianMeter(target, sigma_max, sigma_min)
    errors, nfe, to_0 = [], [], []
    root_0 = meter.root_to if not to_zero else None
    if to_zero:
        zero_meter = StochasticGaussianMeter(target, sigma_max, 0.0)
        root_0 = zero_meter.root_to
    for n in ns:
        law = meter.law(sampler, grid(n, sigma_min, sigma_max, schedule=schedule))
        errors.append(meter.w2(law))
        nfe.append(law.nfe)
        if to_zero:
            law0 = meter.law(sampler, grid(n, sigma_min, sigma_max, zero=True, schedule=schedule))
            to_0.append(meter.w2(law0, root_0))
    fit = fit_order(list(ns), errors, floor=meter.floor, **fit_kw)
    extra = {"w2_to_zero": to_0} if to_zero else {}
    return StochasticMeasurement(_name(sampler), target_name, "weak", "bures_w2_exact",
                                 getattr(sampler, "weak_order", None), list(ns), nfe, errors, meter.floor, fit, extra)


def _paths(sampler, target, n_steps, start, noise, sigma_min, sigma_max, schedule, counted=None):
    return sampler(counted or target.denoiser, start.clone(), grid(n_steps, sigma_min, sigma_max, schedule=schedule),
                   noise)


def weak_mixture(sampler, target: GaussianMixture, ns=DEFAULT_NS, paths: int = 4096, seed: int = 0,
                 sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, schedule: str = "edm",
                 features: str = "moments", target_name: str = "mixture", **fit_kw) -> StochasticMeasurement:
    """Weak error through closed-form expectations (module docstring). errors[j]: the RMS over features of
    |mean_N f - E f| / scale_f (scale_f the exact standard deviation of f, so features are comparable); the order is
    fitted on the coupled differences d_j = RMS |mean_{N_j} f - mean_{N_{j+1}} f| / scale_f (ns[:-1]), whose floor is
    their own standard error. extra: the differences, their floor, the estimate's Monte Carlo floor."""
    from analytic import expectations as ex

    _check_sampler(sampler)
    if len(ns) < 3:
        raise InputError(f"ns: need at least 3 step counts for coupled differences (got {list(ns)})")
    g = torch.Generator().manual_seed(seed)
    start = target.sample(paths, sigma=sigma_max, generator=g)
    noise = BrownianNoise(start, sigma_max, seed=seed)
    law = target.marginal(sigma_min)
    if features == "moments":
        feats, exact = ex.moment_features, ex.moment_targets(law)
    elif features == "cf":
        freqs = ex.fixed_frequencies(target.d)
        feats, exact = (lambda x: ex.cf_features(x, freqs)), None
        cf = ex.characteristic_function(law, freqs)
        exact = torch.cat([cf.real, cf.imag])
    else:
        raise InputError(f"features: must be 'moments' or 'cf' (got {features!r})")
    values, nfe, clouds = [], [], []
    for n in ns:
        counted = count_nfe(target.denoiser)
        y = _paths(sampler, target, n, start, noise, sigma_min, sigma_max, schedule, counted)
        values.append(feats(y))
        nfe.append(counted.nfe)
        if target.d == 1:
            clouds.append(w2_1d_cloud(y.to(F64), law))
    scale = values[-1].std(0).clamp_min(1e-12)
    errors = [float((((v.mean(0) - exact) / scale) ** 2).mean().sqrt()) for v in values]
    mc_floor = float(((ex.standard_error(values[-1]) / scale) ** 2).mean().sqrt())
    diffs, diff_floors = [], []
    for a, b in zip(values[:-1], values[1:], strict=True):
        diffs.append(float((((a.mean(0) - b.mean(0)) / scale) ** 2).mean().sqrt()))
        diff_floors.append(float(((ex.standard_error(a - b) / scale) ** 2).mean().sqrt()))
    fit_kw = {"floor_factor": FLOOR_FACTOR, "slope_tol": MC_SLOPE_TOL, **fit_kw}
    fit = fit_order(list(ns[:-1]), diffs, floors=diff_floors, **fit_kw)
    extra = dict(differences=diffs, difference_floors=diff_floors, mc_floor=mc_floor, paths=paths, features=features)
    if clouds:  # 1-D: the exact W2 of the cloud to p_sigma_min, and its sampling bias (exact samples of it)
        g = torch.Generator().manual_seed(seed + 1)
        floor = sum(w2_1d_cloud(law.sample(paths, generator=g), law) for _ in range(CLOUD_REPEATS)) / CLOUD_REPEATS
        extra.update(w2_cloud=clouds, w2_cloud_floor=floor)
    return StochasticMeasurement(_name(sampler), target_name, "weak", f"{features}_rms", getattr(sampler, "weak_order",
                                 None), list(ns), nfe, errors, mc_floor, fit, extra)


class _ReverseSDE(torch.nn.Module):
    """EDM's reverse SDE with sigma(t) = t and beta(t) = beta/t, in s = sigma_max - t (forward for torchsde):
    dx/ds = -(1/t + beta(t)) (x - D(x, t)),  diffusion sqrt(2 beta(t)) t, additive (docs/stochastic.md §2)."""

    noise_type, sde_type = "additive", "ito"

    def __init__(self, target, sigma_max: float, beta: float):
        super().__init__()
        self.target, self.T, self.beta = target, sigma_max, beta

    def f(self, s, x):
        t = self.T - float(s)
        return -(1.0 / t + self.beta / t) * (x - self.target.denoiser(x, t))

    def g(self, s, x):
        t = self.T - float(s)
        coef = math.sqrt(2.0 * self.beta / t) * t
        return coef * torch.eye(x.shape[-1], dtype=x.dtype).expand(x.shape[0], -1, -1)


def reference_paths(target, start, noise: BrownianNoise, sigma_min, sigma_max, beta=1.0, rel=1 / 64):
    """torchsde SRK along the reverse SDE from `start` at sigma_max to sigma_min, driven by `noise`'s Brownian
    motion, on a geometric grid: segments [t, t/2] with step rel * t (fine where the drift is stiff)."""
    import torchsde

    sde = _ReverseSDE(target, sigma_max, beta)
    x, t = start.clone(), sigma_max
    while t > sigma_min:
        t_next = max(t / 2, sigma_min)
        ts = torch.tensor([sigma_max - t, sigma_max - t_next], dtype=F64)
        x = torchsde.sdeint(sde, x, ts, bm=noise.bm, method="srk", dt=rel * t_next)[-1]
        t = t_next
    return x


def strong(sampler, target: GaussianMixture, ns=DEFAULT_NS, paths: int = 256, seed: int = 0,
           sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, beta: float = 1.0, rel: float = 1 / 64,
           schedule: str = "edm", target_name: str = "target", **fit_kw) -> StochasticMeasurement:
    """Strong error: RMS |x_N - x_ref| at sigma_min over `paths` paths sharing one Brownian motion with the reference
    (module docstring). The reference's floor: RMS |ref(rel) - ref(rel/2)| (extra["reference_floor"])."""
    _check_sampler(sampler)
    g = torch.Generator().manual_seed(seed)
    start = target.sample(paths, sigma=sigma_max, generator=g)
    noise = BrownianNoise(start, sigma_max, seed=seed, levy_area=True, dt=rel * sigma_min / 2)
    ref = reference_paths(target, start, noise, sigma_min, sigma_max, beta, rel)
    ref_fine = reference_paths(target, start, noise, sigma_min, sigma_max, beta, rel / 2)
    ref_floor = float(((ref - ref_fine) ** 2).sum(-1).mean().sqrt())
    errors, nfe = [], []
    for n in ns:
        counted = count_nfe(target.denoiser)
        out = _paths(sampler, target, n, start, noise, sigma_min, sigma_max, schedule, counted)
        errors.append(float(((out - ref_fine) ** 2).sum(-1).mean().sqrt()))
        nfe.append(counted.nfe)
    fit_kw = {"floor_factor": 10.0, **fit_kw}
    fit = fit_order(list(ns), errors, floor=ref_floor, **fit_kw)
    return StochasticMeasurement(_name(sampler), target_name, "strong", "rms_path", getattr(sampler, "strong_order",
                                 None), list(ns), nfe, errors, ref_floor, fit, dict(reference_floor=ref_floor,
                                                                                     paths=paths, beta=beta))
