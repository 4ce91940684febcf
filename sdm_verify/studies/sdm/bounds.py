"""SDM's error estimates against the exact W2, on exact targets (harness side: uses the oracle).

Along a schedule sigma_0 > ... > sigma_K = sigma_end > 0, on the Euler path x_{i+1} = x_E(x_i) from x_0 ~ p_{sigma_0}:
    eta_i  = h_i ||f(x_E, s_{i+1}) - f(x_i, s_i)|| / 2       the official estimator (sdm_schedule), norms "mean"/"rms"
    tau_i  = ||Phi_{s_i -> s_{i+1}}(x_i) - x_E||             the exact local error (rms; analytic.exact_flow: closed
                                                           form for a Gaussian, DOP853 reference otherwise)
    lte_i  = h_i^2 ||x''(x_i, s_i)|| / 2,   x'' = -(J_D eps + dD/dsigma)/sigma,  eps = x' = (x - D)/sigma
                                             (the oracle's exact calculus, analytic.calculus)
Global bounds of the synchronous error at sigma_end (Lady Windermere's fan, docs/theory.md §8), in the same units as W2:
    B0 = sum_i e_i (plain sum; valid when the flow is contractive, as on a Gaussian),
    B1 = sum_i A_i e_i,  A_i = exp(int_{sigma_end}^{s_{i+1}} mu dsigma),  mu(sigma) = (lambda_max(sym J_D) - 1)/sigma,
with e = eta (either norm) or tau. mu is maximised over the batch's points on the (piecewise linear) Euler path and
integrated by panelled Gauss-Legendre in log sigma: a trajectory-wise estimate of the one-sided Lipschitz
growth, NOT a rigorous sup over space (docs/theory.md §8: worst-case constants are vacuous on mixtures; on separated
modes the batch max grows with the batch size). On a Gaussian J_D is constant and A_i is the exact Lipschitz
constant of the flow, so B1 is rigorous there.
Norms: on a Gaussian target every path quantity is affine in x_0, so its rms over p_{sigma_0} is computed exactly
from d + 1 probe points ("rms" keys are population values); otherwise rms and mean are over the batch.
W2 of the sampler at sigma_end comes from harness.run.measure_run and the target's meter: Bures (Gaussian),
quantiles (1-D), and for d > 1 mixtures the synchronous error against the DOP853 reference, an UPPER bound on W2:
then R = bound / W2 is a LOWER bound on the true ratio. R < 1 means the bound is violated (or, with the sync
meter, possibly violated).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from analytic import GaussianMixture, exact_flow
from analytic.calculus import expansion_rate, second_derivative, velocity

from ... import schedules, solvers
from ...harness import targets
from ...harness.meters import meter_for
from ...harness.nfe import count_nfe
from ...harness.run import decision_batch, freeze_decisions, measure_run
from ...solvers.sdm import replay_lambdas, run_with_trace
from .schedule import build_initial_schedule, euler_eta_path, resample

F64 = torch.float64
BOUND_KEYS = ("B0_eta_rms", "B0_eta_mean", "B0_tau", "B1_eta_rms", "B1_eta_mean", "B1_tau")


# ------------------------------------------------------------------------------------------ reductions
def _target(target) -> GaussianMixture:
    return targets.get(target) if isinstance(target, str) else target


def _norms(v):
    return v.reshape(v.shape[0], -1).norm(dim=1)


def _mean(v) -> float:
    return float(_norms(v).mean())


def _rms(v) -> float:
    return float(_norms(v).square().mean().sqrt())


class _GaussianProbes:
    """Exact rms over N(m, C) of a quantity affine in x_0, from its values at m and m + s e_j."""

    def __init__(self, target, sigma0):
        d = target.d
        self.m = target.means[0]
        self.C = target.covariances[0] + sigma0**2 * torch.eye(d, dtype=F64)
        self.s = math.sqrt(float(torch.diagonal(self.C).mean()))
        self.points = torch.cat([self.m[None], self.m + self.s * torch.eye(d, dtype=F64)])

    def rms(self, v: torch.Tensor) -> float:
        A = (v[1:] - v[0]).T / self.s  # v(x0) = v(m) + A (x0 - m)
        return math.sqrt(float(v[0].square().sum() + torch.einsum("ij,jk,ik->", A, self.C, A)))


def _path_vectors(target, sigmas: list[float], x: torch.Tensor):
    """Per Euler step: the exact local error, the estimator's drift difference, x'' and x' at x_i (all (B, d))."""
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        f = velocity(target, x, s)
        x_e = x + (t - s) * f
        yield {"x": x, "tau": exact_flow(target, x, s, t) - x_e, "df": velocity(target, x_e, t) - f,
               "xdd": second_derivative(target, x, s), "xd": f}
        x = x_e
    yield {"x": x}


def default_batch(target, sigma: float, n: int, seed: int = 0) -> torch.Tensor:
    """n points representing p_sigma: midpoint quantiles in 1-D, exact draws (seed) otherwise."""
    if target.d == 1:
        u = (torch.arange(n, dtype=F64) + 0.5) / n
        return target.marginal(sigma).quantile(u)[:, None]
    return target.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(seed))


def step_errors(target, sigmas, x=None, *, n: int = 256, seed: int = 0) -> dict:
    """Per-step eta (both norms), exact tau, lte, exact relative curvature and expansion rate along the Euler path.

    x: the batch at sigmas[0]; default: n exact draws of p_{sigmas[0]} (seed), or for a 1-D target its n midpoint
    quantiles Q((k + 1/2)/n) (deterministic, stratified: rms and mean are then quadratures of the population
    values; the rare points near a decision boundary, which dominate the rms on separated modes, are not missed
    by chance). Returns a dict of float64 lists of length
    K (steps): sigma, sigma_next, h, eta_mean, eta_rms, tau_mean, tau_rms, lte_rms, kappa_star (batch mean of
    ||x''||/||x'||), lam_max (max_b lambda_max(sym J_D) at x_i, s_i), growth (segment_growth of the step);
    lam_max_end (at sigma_end); exact_rms (True
    when the rms keys are exact population values: Gaussian targets).
    """
    target = _target(target)
    s = [float(v) for v in solvers.check_grid(sigmas)]
    if s[-1] == 0:
        raise ValueError("sigmas: the bounds are measured at sigma_end > 0; drop the final step into 0")
    if x is None:
        x = default_batch(target, s[0], n, seed)
    probes = _GaussianProbes(target, s[0]) if target.K == 1 else None
    rows = {k: [] for k in ("sigma", "sigma_next", "h", "eta_mean", "eta_rms", "tau_mean", "tau_rms", "lte_rms",
                            "kappa_star", "lam_max", "growth")}
    pop = _path_vectors(target, s, probes.points) if probes is not None else None
    for i, v in enumerate(_path_vectors(target, s, x)):
        if i == len(s) - 1:
            lam_end = expansion_rate(target, v["x"], s[-1])
            break
        h = s[i] - s[i + 1]
        p = next(pop) if pop is not None else v
        rms = probes.rms if probes is not None else _rms
        rows["sigma"].append(s[i])
        rows["sigma_next"].append(s[i + 1])
        rows["h"].append(h)
        rows["eta_mean"].append(0.5 * h * _mean(v["df"]))
        rows["eta_rms"].append(0.5 * h * rms(p["df"]))
        rows["tau_mean"].append(_mean(v["tau"]))
        rows["tau_rms"].append(rms(p["tau"]))
        rows["lte_rms"].append(0.5 * h * h * rms(p["xdd"]))
        rows["kappa_star"].append(float((_norms(v["xdd"]) / _norms(v["xd"])).mean()))
        rows["lam_max"].append(expansion_rate(target, v["x"], s[i]))
        rows["growth"].append(segment_growth(target, v["x"], v["xd"], s[i], s[i + 1]))
    rows["lam_max_end"] = lam_end
    rows["exact_rms"] = probes is not None
    return rows


def segment_growth(target, x, d, s: float, t: float, nodes: int = 8, panel: float = 0.5) -> float:
    """int_t^s (lambda_max(sym J_D(x(r), r)) - 1) dlog r along the Euler segment x(r) = x + (r - s) d (the numerical
    path is exactly this straight line), lambda_max maximised over the batch at each node: Gauss-Legendre with
    `nodes` points on each panel of width <= `panel` in log r."""
    z, w = np.polynomial.legendre.leggauss(nodes)
    lo, hi = math.log(t), math.log(s)
    m = max(1, math.ceil((hi - lo) / panel))
    total = 0.0
    for p in range(m):
        a, b = lo + (hi - lo) * p / m, lo + (hi - lo) * (p + 1) / m
        for zk, wk in zip(z, w, strict=True):
            r = math.exp(0.5 * (a + b) + 0.5 * (b - a) * zk)
            total += 0.5 * (b - a) * wk * (expansion_rate(target, x + (r - s) * d, r) - 1.0)
    return total


def growth_factors(integrals: list[float]) -> list[float]:
    """A_i = exp(sum_{k > i} I_k), I_k = int over step k of mu dsigma (segment_growth): the growth from s_{i+1} on."""
    A, acc = [0.0] * len(integrals), 0.0
    for i in range(len(integrals) - 1, -1, -1):
        A[i] = math.exp(acc)
        acc += integrals[i]
    return A


def global_bounds(steps: dict) -> dict:
    """B0 (plain sums) and B1 (growth-weighted sums) of eta (both norms) and tau, with the factors A_i."""
    A = growth_factors(steps["growth"])
    out = {"A": A}
    for key, name in (("eta_rms", "eta_rms"), ("eta_mean", "eta_mean"), ("tau_rms", "tau")):
        out[f"B0_{name}"] = sum(steps[key])
        out[f"B1_{name}"] = sum(a * e for a, e in zip(A, steps[key], strict=True))
    return out


# ------------------------------------------------------------------------------------------- exact W2
_METERS: dict = {}


def _meter(target, sigma_from, sigma_to):
    key = (id(target), float(sigma_from), float(sigma_to))
    if key not in _METERS:
        _METERS[key] = (target, meter_for(target, sigma_from, sigma_to))  # keep target alive: id stays unique
    return _METERS[key][1]


def sampler_w2(target, sigmas, solver="euler") -> dict:
    """W2 at sigmas[-1] of `solver` (a name or an instance) run from the exact p_{sigmas[0]}, by
    `harness.run.measure_run` (a solver that decides on the data is frozen on 128 draws first): {"w2", "nfe",
    "metric", "status"} ("bures_w2" and "w2_1d" are exact; "sync_rms" is an upper bound on W2; a diverged run
    gives w2 = inf and status "diverged")."""
    target = _target(target)
    sig = solvers.check_grid(sigmas)
    solver = solvers.get(solver) if isinstance(solver, str) else solver
    row = measure_run(solver, target, sig, float(sig[-1]), meter=_meter(target, float(sig[0]), float(sig[-1])))
    return {"w2": row["error"], "nfe": row["nfe"], "metric": row["metric"], "status": row["status"]}


def decide_lambdas(target, sigmas, *, solver="sdm", batch: int = 128, seed: int = 0, **params) -> dict:
    """Run the adaptive solver on a realistic batch (batch exact draws of p_{sigmas[0]}) and return its decisions
    (`harness.run.freeze_decisions`): {"lambdas", "nfe" (counted), "j" (first step with lambda = 0, None if none),
    "trace", "solver" (the solver replaying them)}."""
    target = _target(target)
    sig = solvers.check_grid(sigmas)
    counted = count_nfe(target.denoiser)
    fixed, trace = freeze_decisions(solvers.get(solver, **params), counted, decision_batch(target, sig[0], batch, seed),
                                    sig)
    j = next((r["i"] for r in trace if r["lambda"] == 0.0), None)
    return {"lambdas": replay_lambdas(trace), "nfe": counted.nfe, "j": j, "trace": trace, "solver": fixed}


def adaptive_w2(target, sigmas, *, solver="sdm", batch: int = 128, seed: int = 0, **params) -> dict:
    """W2 of the adaptive solver with its decisions (made on a batch) replayed on the meter's points."""
    dec = decide_lambdas(target, sigmas, solver=solver, batch=batch, seed=seed, **params)
    res = sampler_w2(target, sigmas, dec["solver"])
    return {**res, "nfe_decided": dec["nfe"], "j": dec["j"]}


# ------------------------------------------------------------------------------------------- schedules
def sdm_base_schedule(target, sigma_min, sigma_max, *, batch: int = 128, seed: int = 0, n_grid: int = 18,
                      eta_min=2e-3, eta_max=2e-2, eta_p=1.0, norm="rms") -> dict:
    """SDM's initial schedule and its Euler eta_i on a batch of exact p_{sigma_max} draws (docs/sdm.md §4), built once
    so that every N resamples the same path. Default eta ten times below the image defaults: the toy targets have
    d <= 8, and eta is in absolute L2 units (the defaults give K = 2 on gauss-4d, docs/sdm.md §6 (h))."""
    target = _target(target)
    x = target.sample(batch, sigma=sigma_max, generator=torch.Generator().manual_seed(seed))
    sig0, log = build_initial_schedule(target.denoiser, x, sigma_min, sigma_max, eta_min=eta_min, eta_max=eta_max,
                                       eta_p=eta_p, norm=norm, n_grid=n_grid)
    path = euler_eta_path(target.denoiser, x, sig0, norm)
    return {"sigmas0": sig0, "etas0": path["etas"], "build_log": log, "K": len(sig0) - 1,
            "nfe_build": log[-1]["nfe"], "nfe_estimate": path["nfe"]}


def schedule_grid(name, n, sigma_min, sigma_max, *, base=None, power=0.5, q=0.1) -> torch.Tensor:
    """An n-step grid sigma_max -> sigma_min (no final 0): "sdm" resamples `base` (sdm_base_schedule), others
    come from sdm_verify.schedules."""
    if name == "sdm":
        if base is None:
            raise ValueError("base: the sdm grid needs base=sdm_base_schedule(...)")
        return resample(base["sigmas0"], base["etas0"], n, power=power, q=q, zero=False)
    return schedules.get(name)(n, sigma_min, sigma_max)


# ------------------------------------------------------------------------------------------- sharpness
def sharpness_table(target, ns, *, schedule="edm", sigma_min=0.002, sigma_max=80.0, n: int = 256, seed: int = 0,
                    base=None, tau_k: float = 1e-4, adaptive: bool = True) -> list[dict]:
    """Per N: exact W2 of Euler (and of the adaptive `sdm` solver with replayed decisions), the bounds, and
    R = bound / W2_euler for each bound; `violated` lists the bounds with R < 1 (see `violations`)."""
    target = _target(target)
    if schedule == "sdm" and base is None:
        base = sdm_base_schedule(target, sigma_min, sigma_max, seed=seed)
    rows = []
    for N in ns:
        sig = schedule_grid(schedule, N, sigma_min, sigma_max, base=base)
        steps = step_errors(target, sig, n=n, seed=seed)
        bounds = global_bounds(steps)
        euler = sampler_w2(target, sig, "euler")
        row = {"N": N, "schedule": schedule, "nfe": euler["nfe"], "w2": euler["w2"], "metric": euler["metric"],
               "exact_rms": steps["exact_rms"], "A_max": max(bounds["A"]), "A_min": min(bounds["A"])}
        for k in BOUND_KEYS:
            row[k] = bounds[k]
            row["R_" + k] = bounds[k] / euler["w2"] if euler["w2"] > 0 else math.inf
        row["violated"] = [k for k in BOUND_KEYS if row["R_" + k] < 1.0]
        if adaptive:
            ad = adaptive_w2(target, sig, tau_k=tau_k)
            row.update(w2_sdm=ad["w2"], nfe_sdm=ad["nfe"], j_sdm=ad["j"])
        rows.append(row)
    return rows


def violations(rows: list[dict]) -> list[dict]:
    """Where a bound falls below W2: {"N", "bound", "R", "shortfall" (= W2 - bound), "metric"} per case."""
    out = []
    for r in rows:
        for k in r["violated"]:
            out.append({"N": r["N"], "bound": k, "R": r["R_" + k], "shortfall": r["w2"] - r[k], "metric": r["metric"]})
    return out


# ------------------------------------------------------------------------------------- the paper's claims
def curvature_profile(target, n: int = 18, *, sigma_min=0.002, sigma_max=80.0, batch: int = 128,
                      seed: int = 0) -> list[dict]:
    """Claim (a): along an EDM grid (n steps, sigma_max -> sigma_min) walked by `sdm` with tau_k = 0 (all Heun, as
    the code's calc_curvature), the exact relative curvature kappa* = mean_b ||x''||/||x'|| at each x_i against the
    solver's lagged proxy kappa_i (which differences d_i, d_{i-1}: it sits near sigma_{i-1/2})."""
    target = _target(target)
    sig = schedules.get("edm")(n, sigma_min, sigma_max)
    x = target.sample(batch, sigma=sigma_max, generator=torch.Generator().manual_seed(seed))
    points = [x]
    solver = solvers.get("sdm", tau_k=0.0, euler_last=False)
    _, trace = run_with_trace(solver, target.denoiser, x, sig)
    solver(target.denoiser, x, sig, callback=lambda info: points.append(info["x"]))
    rows = []
    for r in trace:
        i, s = r["i"], r["sigma"]
        xi = points[i]
        kappa = float((_norms(second_derivative(target, xi, s)) / _norms(velocity(target, xi, s))).mean())
        rows.append({"i": i, "sigma": s, "kappa_star": kappa, "kappa_proxy": r["kappa"],
                     "ratio": r["kappa"] / kappa if i > 0 else math.nan})
    return rows


def error_per_nfe(target, ns, *, names=("euler", "heun", "dpmpp_2m", "unipc", "sdm", "sdm_dpmpp"), tau_k=1e-4,
                  schedule="edm", sigma_min=0.002, sigma_max=80.0, base=None) -> list[dict]:
    """Claim (b): exact W2 at sigma_min and counted NFE per solver and N (adaptive solvers: decisions on a 128-point
    batch, replayed on the meter's points)."""
    target = _target(target)
    rows = []
    for N in ns:
        sig = schedule_grid(schedule, N, sigma_min, sigma_max, base=base)
        for name in names:
            if name.startswith("sdm"):
                res = adaptive_w2(target, sig, solver=name, tau_k=tau_k)
            else:
                res = sampler_w2(target, sig, name)
            rows.append({"solver": name, "N": N, "nfe": res["nfe"], "w2": res["w2"], "metric": res["metric"],
                         "j": res.get("j")})
    return rows


def schedule_comparison(target, ns, *, names=("sdm", "edm", "logsnr"), solver_names=("euler", "heun"),
                        sigma_min=0.002, sigma_max=80.0, base=None, **base_params) -> list[dict]:
    """Claim (c): the SDM schedule against EDM rho = 7 and uniform log-SNR at equal N (hence equal NFE for a given
    solver), by exact W2 at sigma_min."""
    target = _target(target)
    if "sdm" in names and base is None:
        base = sdm_base_schedule(target, sigma_min, sigma_max, **base_params)
    rows = []
    for N in ns:
        for name in names:
            sig = schedule_grid(name, N, sigma_min, sigma_max, base=base)
            for solver in solver_names:
                res = sampler_w2(target, sig, solver)
                rows.append({"schedule": name, "solver": solver, "N": N, "nfe": res["nfe"], "w2": res["w2"],
                             "metric": res["metric"]})
    return rows


def estimator_ratio(target, sigmas=(40.0, 5.0, 1.0, 0.3), rel_h=(0.1, 0.01), *, n: int = 512,
                    seed: int = 0) -> list[dict]:
    """Claim (d): eta / tau for one Euler step of size h = r sigma from exact draws of p_sigma, in both norms
    (docs/sdm.md §6 (d): 1.11 at r = 0.1 and 1.01 at r = 0.01 on a toy; expected 1 + O(h))."""
    target = _target(target)
    rows = []
    for s in sigmas:
        x = target.sample(n, sigma=s, generator=torch.Generator().manual_seed(seed))
        f = velocity(target, x, s)
        for r in rel_h:
            t = s * (1.0 - r)
            x_e = x - r * s * f
            df, err = velocity(target, x_e, t) - f, exact_flow(target, x, s, t) - x_e
            h = s - t
            rows.append({"sigma": s, "rel_h": r, "ratio_mean": 0.5 * h * _mean(df) / _mean(err),
                         "ratio_rms": 0.5 * h * _rms(df) / _rms(err)})
    return rows
