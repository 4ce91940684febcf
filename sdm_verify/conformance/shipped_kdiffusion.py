"""The as-shipped pass of a k-diffusion sampler: `as_shipped(sampler, kwargs=None, quick=False)` -> ShippedResult.

The sampler runs as its users run it: k-diffusion's own function, called directly (not through the adapter), with
the keyword arguments as given (default: none, so its defaults: eta = 1 and k-diffusion's own noise for the
ancestral / SDE samplers, randn_like or a torchsde Brownian tree, seeded with torch.manual_seed(N) under fork_rng),
on k-diffusion's own grid get_sigmas_karras(N, sigma_min=0.002, sigma_max=80, rho=7) with its appended 0, in
float32 (the float32 sigmas that function returns, float32 samples). sample_dpm_fast takes no grid: it is called
with (sigma_min=0.002, sigma_max=80, n=N), N its NFE budget, and ends at sigma_min. The network is exact: the
oracle's denoiser of gauss-4d evaluated in float64 at the sigma k-diffusion hands it, its output cast to float32.

The run starts from the exact noisy law p_80 (the prior mismatch of a pure-noise start is not counted). At each N
of NS (quick: QUICK_NS; the numbers of conformance.shipped) the W2 of the output law to p_0 (the data law) and to
p_end (where the grid ends: 0, or sigma_min for dpm_fast) is found by conformance.shipped's probe: SAMPLES points
pushed through and an affine map fitted; a deterministic sampler on a Gaussian target is affine up to float32
round-off, and then W2 is exact (Bures on the affine map). A stochastic sampler is run on STOCHASTIC_SAMPLES points
and W2 is the Bures W2 of the outputs' empirical mean and covariance: a sample estimate, biased up by its Monte
Carlo floor, stated as the mean Bures W2 of FLOOR_DRAWS sets of as many exact draws of p_0.

FAIL, one line each: an exception raised by the sampler, a non-finite sample (naming the step and its sigmas, and
the first denoiser call that returned a non-finite value), a zero-length or non-decreasing step in its own grid, and
no convergence (W2 at the largest N not below W2 at the smallest N by more than the Monte Carlo floor, or, for a
deterministic sampler, by more than AFFINE_TOL relative: the probe's resolution). A denoiser call on a non-finite
sample returns NaN in those rows (as a network would; the oracle refuses such input).

`fast_order()`: sample_dpm_fast's order on its own grid in float64: n = 3m - 1 NFE (m - 1 DPM-Solver-3 steps and a
last DPM-Solver-2 step, all of length h = (lambda_end - lambda_start) / m) for m in FAST_MS, the exact W2 to
p_sigma_min by the affine probe, and the least-squares slope of log W2 against log m over the last three points.
torchsde's "Should have ta >= t0" warnings (k-diffusion's float32 grid just outside its Brownian tree's float64
interval) are silenced.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from analytic import bures_w2

from ..adapters.kdiffusion import load_sampling
from ..harness import targets
from . import shipped
from .shipped import AFFINE_TOL, NS, QUICK_NS, SAMPLES, TARGET, ShippedResult, ShippedRow

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
STOCHASTIC_SAMPLES = 16384
FLOOR_DRAWS = 4
FAST_MS = (4, 8, 16, 32)
OWN_GRID = ("sample_dpm_fast",)  # called with (sigma_min, sigma_max, n), not a sigma grid


def karras(n: int) -> torch.Tensor:
    """k-diffusion's own grid: get_sigmas_karras(n, 0.002, 80, rho=7), float32, with its appended 0."""
    return load_sampling().get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, rho=RHO)


def mc_floor(target, m: int, seed: int = 7) -> float:
    """The mean empirical-moment Bures W2 of FLOOR_DRAWS sets of m exact draws of p_0 against p_0."""
    mu, C = (torch.as_tensor(v, dtype=torch.float64) for v in (target.mean, target.covariance))
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(FLOOR_DRAWS):
        y = target.sample(m, sigma=0.0, generator=g)
        total += bures_w2(y.mean(0), None, mu, None, factors=(shipped._sqrt_psd(torch.cov(y.T)), shipped._sqrt_psd(C)))
    return total / FLOOR_DRAWS


class _Model:
    """The exact network: the oracle's float64 denoiser at k-diffusion's sigma, cast to the sample's dtype; it
    records the first sigma at which it returned a non-finite value."""

    def __init__(self, target):
        self.target, self.calls, self.bad_sigma = target, 0, None

    def __call__(self, x, sigma):
        if torch.is_tensor(sigma):
            flat = sigma.reshape(-1)
            if not bool((flat == flat[0]).all()):
                raise ValueError("sigma: the sampler passed different sigmas across the batch")
            sigma = float(flat[0])
        ok = torch.isfinite(x).all(dim=-1)
        out = torch.full_like(x, math.nan)  # a network fed a non-finite sample returns NaN (the oracle refuses it)
        if bool(ok.any()):
            out[ok] = self.target.denoiser(x[ok].double(), float(sigma)).to(x.dtype)
        self.calls += 1
        if self.bad_sigma is None and not bool(torch.isfinite(out).all()):
            self.bad_sigma = float(sigma)
        return out


def _resolve(sampler):
    """(label, function, takes its own grid) of a sample_* name or a callable with k-diffusion's signature."""
    if isinstance(sampler, str):
        name = sampler if sampler.startswith("sample_") else "sample_" + sampler
        fn = getattr(load_sampling(), name, None)
        if fn is None:
            raise ValueError(f"sampler: k-diffusion has no {name}")
        return name, fn, name in OWN_GRID
    if callable(sampler):
        return getattr(sampler, "__name__", repr(sampler)), sampler, False
    raise ValueError(f"sampler: expected a sample_* name or a callable (got {sampler!r})")


def _run(fn, own_grid, x, n, kwargs, model, callback=None):
    """One call of the sampler as shipped; returns (output, sigma grid it was given or None)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
        torch.manual_seed(n)  # k-diffusion's own noise (randn_like, the Brownian tree's seed) uses the global stream
        if own_grid:
            return fn(model, x, SIGMA_MIN, SIGMA_MAX, n, callback=callback, disable=True, **kwargs), None
        sigmas = karras(n)
        return fn(model, x, sigmas, callback=callback, disable=True, **kwargs), sigmas


def _where(n, seen, sigmas, model) -> str:
    """The one-line failure of a non-finite run: the first step whose result is non-finite, and its sigmas."""
    grid = [float(s) for s in sigmas] if sigmas is not None else [s for _, s, _ in seen]
    bad = next((i for i, _, ok in seen if not ok), None)
    step = (bad - 1) if bad is not None else (len(grid) - 2 if sigmas is not None else len(seen) - 1)
    step = max(step, 0)
    frm = grid[step] if step < len(grid) else float("nan")
    to = grid[step + 1] if step + 1 < len(grid) else (SIGMA_MIN if sigmas is None else float("nan"))
    text = f"N={n}: non-finite sample after step {step} (sigma {frm:.6g} -> {to:.6g})"
    if model.bad_sigma is not None:
        text += f"; first non-finite denoiser output at sigma {model.bad_sigma:.6g}"
    return text


def _one(fn, own_grid, kwargs, n, target, m) -> ShippedRow:
    end = SIGMA_MIN if own_grid else 0.0
    if not own_grid:
        path = karras(n).double().numpy()
        bad = shipped._grid_failure(path, [])
        if bad is not None:
            return ShippedRow(n, None, None, None, float(path[0]), float(path[-1]), "", f"N={n}: {bad}")
    x0 = target.sample(m, sigma=SIGMA_MAX, generator=torch.Generator().manual_seed(1000 + n))
    model, seen = _Model(target), []

    def callback(info):
        seen.append((int(info["i"]), float(info["sigma"]), bool(torch.isfinite(info["x"]).all())))

    try:
        y, sigmas = _run(fn, own_grid, x0.float(), n, kwargs, model, callback)
    except Exception as exc:  # noqa: BLE001 - a sampler that raises as shipped fails, with its message
        msg = " ".join(str(exc).split())[:160]
        return ShippedRow(n, model.calls, None, None, SIGMA_MAX, end, "", f"N={n}: raised {type(exc).__name__}: "
                          f"{msg}")
    if not bool(torch.isfinite(y).all()) or not all(ok for *_, ok in seen):
        return ShippedRow(n, model.calls, None, None, SIGMA_MAX, end, "", _where(n, seen, sigmas, model))
    w2, w0, method = shipped._laws(x0, y.double(), target, end, "edm", SIGMA_MAX)
    return ShippedRow(n, model.calls, w2, w0, SIGMA_MAX, end, method)


def as_shipped(sampler, kwargs: dict | None = None, quick: bool = False, *, ns=None,
               stochastic: bool | None = None) -> ShippedResult:
    """The as-shipped pass (module docstring) of a k-diffusion sampler: a `sample_*` name (or "euler") or a callable
    with k-diffusion's signature fn(model, x, sigmas, callback=, disable=, **kwargs). stochastic (default: from
    adapters.kdiffusion_coverage for a name, False for a callable) sets the sample count and the Monte Carlo floor."""
    label, fn, own_grid = _resolve(sampler)
    kwargs = dict(kwargs or {})
    if stochastic is None:
        if isinstance(sampler, str):
            from ..adapters.kdiffusion_coverage import stochastic_by_default

            stochastic = stochastic_by_default(label) if not kwargs else kwargs.get("eta", 1.0) != 0
        else:
            stochastic = False
    ns = tuple(ns) if ns is not None else (QUICK_NS if quick else NS)
    if not ns or any(not isinstance(n, int) or isinstance(n, bool) or n < 2 for n in ns):
        raise ValueError(f"ns: step counts must be integers >= 2 (got {list(ns)})")
    target = targets.get(TARGET)
    m = STOCHASTIC_SAMPLES if stochastic else SAMPLES
    rows = [_one(fn, own_grid, kwargs, n, target, m) for n in ns]
    floor = mc_floor(target, m) if stochastic else 0.0
    if stochastic:
        for r in rows:
            if r.w2 is not None:
                r.method += f"; Monte Carlo floor ~ {floor:.2e}"
    failures = [r.failure for r in rows if r.failure]
    done = [r for r in rows if r.w2 is not None]
    tol = floor if stochastic else AFFINE_TOL * done[0].w2 if done else 0.0  # the probe's resolution
    if len(done) >= 2 and not failures and not done[-1].w2 < done[0].w2 - tol:
        failures.append(f"no convergence on its own grid: W2 {done[0].w2:.3e} at N={done[0].n}, {done[-1].w2:.3e} "
                        f"at N={done[-1].n}" + (f" (Monte Carlo floor {floor:.1e})" if stochastic else ""))
    elif len(done) >= 2 and not failures and shipped.stalls(done[-2].w2, done[-1].w2, floor):
        failures.append(f"stalls on its own grid: W2 {done[-2].w2:.3e} at N={done[-2].n}, {done[-1].w2:.3e} at "
                        f"N={done[-1].n}" + (f" (Monte Carlo floor {floor:.1e})" if stochastic else ""))
    result = ShippedResult(label, kwargs, rows, failures)
    result.floor = floor
    return result


def fast_order(ms=FAST_MS, samples: int = SAMPLES) -> dict:
    """sample_dpm_fast's order on its own grid in float64 (module docstring): {nfe, w2, slopes, order}."""
    fn = load_sampling().sample_dpm_fast
    target = targets.get(TARGET)
    x0 = target.sample(samples, sigma=SIGMA_MAX, generator=torch.Generator().manual_seed(11))
    nfe, w2 = [], []
    for m in ms:
        n = 3 * m - 1
        y = fn(_Model(target), x0.clone(), SIGMA_MIN, SIGMA_MAX, n, disable=True)
        nfe.append(n)
        w2.append(shipped._laws(x0, y, target, SIGMA_MIN, "edm", SIGMA_MAX)[0])
    logm, logw = np.log(np.asarray(ms, dtype=float)), np.log(np.asarray(w2))
    slopes = [float(-(logw[i + 1] - logw[i]) / (logm[i + 1] - logm[i])) for i in range(len(ms) - 1)]
    k = min(3, len(ms))
    order = float(-np.polyfit(logm[-k:], logw[-k:], 1)[0]) if all(math.isfinite(v) and v > 0 for v in w2) else None
    return dict(ms=list(ms), nfe=nfe, w2_to_sigma_min=w2, slopes=slopes, order=order)
