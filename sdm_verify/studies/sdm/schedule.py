"""SDM's Wasserstein-bounded schedule and its N-step resampling (Jo & Choi, arXiv 2602.12624; official code
aiimaginglab/sdm: `ablation_sampler_adaptive_scheduling`, `calc_wasserstein_bound`, `n_step_resampling.py`,
`resample_sigmas_uniform_cum_eta`; docs/sdm.md §4). Sees only a denoiser D(x, sigma).

Local error proxy of one Euler step of the EDM ODE dx/dsigma = f(x, sigma) = (x - D)/sigma from (x, sigma) to
sigma' = sigma - h (h > 0 is a step in sigma here, as in the code, not in lambda):
    x_E = x - h f(x, sigma),  S = ||f(x_E, sigma') - f(x, sigma)|| / (h + 1e-12),  eta = h^2 S / 2  (= h ||df|| / 2)
(1 extra NFE). ||.|| is a batch norm of per-sample flattened L2 norms, named:
    "mean"  mean_b ||v_b||              what the official code does: a bound in this norm bounds W1, not W2;
    "rms"   (mean_b ||v_b||^2)^(1/2)    the norm that bounds W2 (synchronous coupling). Default.
Tolerance: eta(sigma) = eta_min + (eta_max - eta_min) clip(sigma/sigma_max, 0, 1)^eta_p (defaults 0.02, 0.20, 1),
in absolute L2 units of the whole sample vector (its scale depends on the dimension).

Pipeline of `schedules.get("sdm")`: build_initial_schedule (the eta-driven line search, K data-dependent steps)
-> estimate_etas (eta_i re-measured along that schedule with Euler) -> resample (n steps equidistributing
eta_i^power, PCHIP in tau = sigma^(1/rho)).
Deviations from the code, all at the level of float noise: the build lands exactly on sigma_min (the code's
t - (t - t_min) can leave a 1e-14 overshoot and one more tiny step); resampled endpoints are set to sigma_max,
sigma_min exactly (the code's max/min can keep a 1-ulp overshoot of (sigma^(1/rho))^rho).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from ... import schedules
from ...errors import InputError
from ...grid import bad_output, check_grid, check_x, denoiser_output_error

F64 = torch.float64
NORMS = ("mean", "rms")
S_EPS = 1e-12  # the official code's guard in S = ||df|| / (h + eps)


# ------------------------------------------------------------------------------------------------- pieces
def batch_norm(v: torch.Tensor, norm: str) -> float:
    """"mean" = mean_b ||v_b|| (bounds W1) or "rms" = (mean_b ||v_b||^2)^(1/2) (bounds W2); float64."""
    per = v.reshape(v.shape[0], -1).to(F64).norm(dim=1)
    return float(per.mean()) if norm == "mean" else float(per.square().mean().sqrt())


def eta_tolerance(sigma: float, sigma_max: float, eta_min: float, eta_max: float, eta_p: float) -> float:
    """eta(sigma) = eta_min + (eta_max - eta_min) clip(sigma/sigma_max, 0, 1)^eta_p."""
    r = min(1.0, max(0.0, sigma / sigma_max))
    return eta_min + (eta_max - eta_min) * r**eta_p


def _drift(denoiser, x, sigma):
    out = denoiser(x, sigma)
    if bad_output(out, x):  # a (B, 1) output would be broadcast into a wrong drift
        raise denoiser_output_error(out, x, f"sdm schedule, sigma {sigma:.6g}")
    return (x - out) / sigma


def _number(name, value, *, low=None, low_open=False, allow_inf=False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise InputError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not allow_inf and math.isinf(value):
        raise InputError(f"{name}: must be finite (got {value})")
    if low is not None and (value <= low if low_open else value < low):
        raise InputError(f"{name}: must be {'>' if low_open else '>='} {low} (got {value})")
    return value


def _check_norm(norm):
    if norm not in NORMS:
        raise InputError(f"norm: must be one of {NORMS}, got {norm!r}")


def _check_etas(eta_min, eta_max, eta_p):
    eta_min = _number("eta_min", eta_min, low=0.0, low_open=True)
    eta_max = _number("eta_max", eta_max, low=eta_min)
    return eta_min, eta_max, _number("eta_p", eta_p, low=0.0, low_open=True)


def _check_x(x):
    check_x(x)  # a non-empty, finite floating-point tensor
    if x.ndim < 2:
        raise InputError(f"x: expected a floating-point batch tensor of shape (B, ...), got shape {tuple(x.shape)}")
    return x


# -------------------------------------------------------------------- docs/sdm.md §4 (c) initial schedule
def _edm_bins(n_grid, sigma_min, sigma_max, rho):
    return [float(v) for v in schedules.edm(n_grid - 1, sigma_min, sigma_max, rho=rho)]


def _bin_index(grid: list[float], sigma: float) -> int:
    """i with grid[i] >= sigma > grid[i+1], clamped to the grid's bins (the code's find_bin_index)."""
    if sigma >= grid[0]:
        return 0
    for i in range(len(grid) - 1):
        if grid[i] >= sigma > grid[i + 1]:
            return i
    return len(grid) - 2


def build_initial_schedule(denoiser, x, sigma_min, sigma_max, *, eta_min=0.02, eta_max=0.20, eta_p=1.0,
                           norm="rms", n_grid=18, solver="euler", gamma=0.95, c_shrink=0.5, max_expand_bins=2,
                           max_shrink_iters=2, grid_snap=False, rho=7.0, max_steps=100_000):
    """The eta-driven schedule (docs/sdm.md §4 (c)): from (x, sigma_max) to sigma_min, each step
      1. d = f(x, sigma) (1 NFE); budget eta = eta(sigma); trial step = one bin of the EDM rho grid of n_grid points;
      2. line search, 1 NFE per trial: S = ||f(x + (s_tr - sigma) d, s_tr) - d|| / h, eta_tr = h^2 S/2; while
         eta_tr <= eta grow the trial to 2 then 4 bins (not after a shrink), while eta_tr > eta halve it (twice at
         most); the last accepted (S, h) is kept (else the last tried);
      3. dsigma = gamma sqrt(2 eta / S), clipped to [h_best, sigma - sigma_min]; optional snap down to the grid;
      4. advance x with `solver` ("euler": reuses d; "heun": +1 NFE).
    x is the batch at sigma_max (e.g. z sigma_max or draws of p_{sigma_max}). Returns (sigmas, log): sigmas the
    K + 1 values sigma_max ... sigma_min then 0 (float64, K data-dependent steps); log a list of per-step dicts
    with sigma, sigma_next, S, h (the accepted trial), eta (the budget), eta_trial, expand, shrink and nfe (the
    cumulative count of denoiser calls).
    """
    x = _check_x(x)
    sigma_min = _number("sigma_min", sigma_min, low=0.0, low_open=True)
    sigma_max = _number("sigma_max", sigma_max, low=sigma_min, low_open=True)
    eta_min, eta_max, eta_p = _check_etas(eta_min, eta_max, eta_p)
    _check_norm(norm)
    if not callable(denoiser):
        raise InputError(f"denoiser: must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    if isinstance(n_grid, bool) or not isinstance(n_grid, Integral) or not 2 <= n_grid <= schedules.grids.MAX_STEPS:
        raise InputError(f"n_grid: must be an int in [2, {schedules.grids.MAX_STEPS}] (got {n_grid!r})")
    if solver not in ("euler", "heun"):
        raise InputError(f"solver: must be 'euler' or 'heun', got {solver!r}")
    gamma = _number("gamma", gamma, low=0.0, low_open=True)
    c_shrink = _number("c_shrink", c_shrink, low=0.0, low_open=True)
    if not c_shrink < 1:
        raise InputError(f"c_shrink: must be < 1 (got {c_shrink})")
    for name, value, low in (("max_expand_bins", max_expand_bins, 0), ("max_shrink_iters", max_shrink_iters, 0),
                             ("max_steps", max_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise InputError(f"{name}: must be an int >= {low} (got {value!r})")
    if not isinstance(grid_snap, bool):
        raise InputError(f"grid_snap: must be a bool (got {grid_snap!r})")
    grid = _edm_bins(int(n_grid), sigma_min, sigma_max, rho)

    nfe = [0]

    def f(y, s):
        nfe[0] += 1
        return _drift(denoiser, y, s)

    sigma, out, log = sigma_max, [sigma_max], []
    while sigma > sigma_min + 1e-15:
        if len(log) >= max_steps:
            raise RuntimeError(f"build_initial_schedule: more than {max_steps} steps (eta too small?)")
        d = f(x, sigma)
        eta = eta_tolerance(sigma, grid[0], eta_min, eta_max, eta_p)
        idx = _bin_index(grid, sigma)
        dsig = min(sigma - sigma_min, max(sigma - grid[min(idx + 1, len(grid) - 1)], 0.0))
        best, prev, expand, shrink, shrunk = None, None, 0, 0, False
        while True:
            s_tr = min(max(sigma - dsig, sigma_min), sigma)
            if prev is not None and s_tr == prev:
                break
            prev = s_tr
            h = sigma - s_tr
            S = batch_norm(f(x + (s_tr - sigma) * d, s_tr) - d, norm) / (h + S_EPS)
            eta_tr = 0.5 * h * h * S
            if eta_tr <= eta:
                best = (S, h, eta_tr)
                if expand < max_expand_bins:
                    if shrunk or idx + 2 ** (expand + 1) > len(grid) - 1:
                        break
                    new = min(sigma - sigma_min, max(sigma - grid[idx + 2 ** (expand + 1)], 0.0))
                    if new <= dsig + 1e-15:
                        break
                    dsig, expand = new, expand + 1
                    continue
                break
            if shrink < max_shrink_iters:
                dsig, shrunk, shrink = max(dsig * c_shrink, 1e-12), True, shrink + 1
                continue
            break
        S_best, h_best, eta_best = best if best is not None else (S, h, eta_tr)
        dsigma = gamma * math.sqrt(2.0 * eta / max(S_best, 1e-30))
        dsigma = min(sigma - sigma_min, max(h_best, 1e-12, dsigma))
        s_next = sigma_min if dsigma >= sigma - sigma_min else sigma - dsigma
        if grid_snap:
            below = [g for g in grid if g <= s_next]
            s_next = max(below[0] if below else grid[-1], sigma_min)
        if solver == "euler":
            x = x + (s_next - sigma) * d
        else:
            x_e = x + (s_next - sigma) * d
            x = x + (s_next - sigma) * 0.5 * (d + f(x_e, s_next))
        log.append({"sigma": sigma, "sigma_next": s_next, "S": S_best, "h": h_best, "eta": eta,
                    "eta_trial": eta_best, "expand": expand, "shrink": shrink, "nfe": nfe[0]})
        sigma = s_next
        out.append(sigma)
    out[0], out[-1] = sigma_max, sigma_min
    return torch.tensor(out + [0.0], dtype=F64), log


# -------------------------------------------------------------------------- docs/sdm.md §4 (d): re-measure
def euler_eta_path(denoiser, x, sigmas, norm="rms") -> dict:
    """Walk `sigmas` with Euler from x (the batch at sigmas[0]) and measure each interval's proxy
    eta_i = h_i^2 S_i / 2, S_i = ||f(x_E, s_{i+1}) - f(x_i, s_i)|| / (h_i + 1e-12) (the code's calc_wasserstein_bound
    with Euler hard-coded); eta = 0 for a step into sigma = 0 (no second evaluation). Returns a dict of
    etas, S, h (float64 tensors of length len(sigmas) - 1), the path points xs (x_0 ... x_{K-1}), the Euler
    predictions x_euler, and nfe."""
    _check_norm(norm)
    x = _check_x(x)
    s = check_grid(sigmas).tolist()
    etas, Ss, hs, xs, xe, nfe = [], [], [], [], [], 0
    for i in range(len(s) - 1):
        d = _drift(denoiser, x, s[i])
        x_e = x + (s[i + 1] - s[i]) * d
        h = s[i] - s[i + 1]
        nfe += 1
        if s[i + 1] == 0:
            S = 0.0
        else:
            S = batch_norm(_drift(denoiser, x_e, s[i + 1]) - d, norm) / (h + S_EPS)
            nfe += 1
        xs.append(x)
        xe.append(x_e)
        etas.append(0.5 * h * h * S)
        Ss.append(S)
        hs.append(h)
        x = x_e
    t = lambda v: torch.tensor(v, dtype=F64)
    return {"etas": t(etas), "S": t(Ss), "h": t(hs), "xs": xs, "x_euler": xe, "nfe": nfe}


def estimate_etas(denoiser, x, sigmas, norm="rms") -> torch.Tensor:
    """Per-interval eta_i along `sigmas` with Euler (docs/sdm.md §4 (d), step 1); 0 for a step into sigma = 0."""
    return euler_eta_path(denoiser, x, sigmas, norm)["etas"]


# --------------------------------------------------------------------------- docs/sdm.md §4 (d): resample
def resample(sigmas0, etas, n, power=0.5, q=0.1, rho=7.0, *, zero=True) -> torch.Tensor:
    """N-step resampling: equal shares of the cumulative weight L(sigma) along the initial schedule.

    A trailing 0 of sigmas0 (and its eta) is dropped, leaving K intervals sigmas0[0] > ... > sigmas0[K]. Weights
    l_i = max(eta_i, 0)^power ((sigmas0[0] + 1e-12)/(sigmas0[i+1] + 1e-12))^q, L_j = sum_{i<j} l_i; tau = sigma^(1/rho)
    is interpolated against L by PCHIP (monotone, through every node) at m + 1 equally spaced values of L, and
    sigma = tau^rho with the endpoints set to sigmas0[0], sigmas0[K] exactly.
    Convention (the code's): zero=True gives m = n - 1, i.e. n points sigma_max ... sigma_min then 0: n + 1 values,
    n steps, the last into 0. zero=False gives m = n: n + 1 values sigma_max ... sigma_min, n steps (as
    `schedules` with zero=False). With power = 1/2, q = 0 each new interval carries an equal share of sum sqrt(eta_i),
    i.e. equidistributes the local error bound h sqrt(S/2). eta is used only through ratios (scale-invariant).
    """
    from scipy.interpolate import PchipInterpolator

    s0 = check_grid(sigmas0).clone()
    e = torch.as_tensor(etas, dtype=F64).flatten().clone()
    if e.numel() != s0.numel() - 1:
        raise InputError(f"etas: expected {s0.numel() - 1} values (one per interval of sigmas0), got {e.numel()}")
    if not torch.isfinite(e).all():
        raise InputError("etas: contains NaN or inf")
    if s0[-1] == 0:
        s0, e = s0[:-1], e[:-1]
    if s0.numel() < 2:
        raise InputError("sigmas0: needs at least one interval above sigma = 0")
    if isinstance(n, bool) or not isinstance(n, Integral) or n < (2 if zero else 1):
        raise InputError(f"n: must be an int >= {2 if zero else 1} (got {n!r})")
    power = _number("power", power, low=0.0, low_open=True)
    q = _number("q", q, low=0.0)
    rho = _number("rho", rho, low=0.0, low_open=True)
    w = e.clamp_min(0.0) ** power * ((s0[0] + 1e-12) / (s0[1:] + 1e-12)) ** q
    if not (w > 0).all():
        i = int(torch.nonzero(w <= 0)[0])
        raise InputError(f"etas: every interval needs a positive weight (eta[{i}] = {e[i].item():.3g})")
    L = torch.cat([w.new_zeros(1), torch.cumsum(w, 0)])
    tau_of_L = PchipInterpolator(L.numpy(), (s0 ** (1.0 / rho)).numpy())

    def sigma_of_u(u):  # u in [0, 1] -> cumulative weight u L_total -> tau (PCHIP) -> sigma = tau^rho
        return torch.as_tensor(tau_of_L((u * float(L[-1])).numpy()), dtype=F64) ** rho

    try:  # the shared grid maker: u = i/n (zero: i/(n-1), then 0), endpoints set exactly, validated
        return schedules.grid_from_map(sigma_of_u, n, float(s0[-1]), float(s0[0]), zero)
    except ValueError as exc:
        raise InputError(f"n: the resampled {n}-step grid is not strictly decreasing ({exc})") from None


# ------------------------------------------------------------------------------------------ the schedule
def sdm_schedule_info(n, sigma_min, sigma_max, *, denoiser, x, zero=False, eta_min=0.02, eta_max=0.20, eta_p=1.0,
                      norm="rms", n_grid=None, solver="euler", gamma=0.95, power=0.5, q=0.1, rho=7.0) -> dict:
    """Build + estimate + resample; returns {"sigmas", "sigmas0", "build_log", "etas0", "nfe_build",
    "nfe_estimate"}. n_grid defaults to n (the scripts use the final N for the EDM bin grid)."""
    if denoiser is None or not callable(denoiser):
        raise InputError("denoiser: the sdm schedule needs denoiser=D(x, sigma) and x= (the batch at sigma_max)")
    if isinstance(n, bool) or not isinstance(n, Integral) or not 2 <= n <= schedules.grids.MAX_STEPS:
        raise InputError(f"n: must be an int in [2, {schedules.grids.MAX_STEPS}] (got {n!r})")
    if not isinstance(zero, bool):
        raise InputError(f"zero: expected a bool, got {zero!r}")
    x = _check_x(x)
    # every argument of the build, the re-measurement and the resampling, before the first denoiser call
    _check_norm(norm)
    power = _number("power", power, low=0.0, low_open=True)
    q = _number("q", q, low=0.0)
    rho = _number("rho", rho, low=0.0, low_open=True)
    sigmas0, log = build_initial_schedule(denoiser, x, sigma_min, sigma_max, eta_min=eta_min, eta_max=eta_max,
                                          eta_p=eta_p, norm=norm, n_grid=n if n_grid is None else n_grid,
                                          solver=solver, gamma=gamma, rho=rho)
    path = euler_eta_path(denoiser, x, sigmas0, norm)
    sigmas = resample(sigmas0, path["etas"], n, power=power, q=q, rho=rho, zero=zero)
    return {"sigmas": sigmas, "sigmas0": sigmas0, "build_log": log, "etas0": path["etas"],
            "nfe_build": log[-1]["nfe"] if log else 0, "nfe_estimate": path["nfe"]}


def sdm(n, sigma_min, sigma_max, *, denoiser=None, x=None, zero=False, process=None, **params) -> torch.Tensor:
    """schedules.get("sdm"): SDM's eta-bounded schedule resampled to n steps (n + 1 values; zero as in
    `schedules`). Needs denoiser= and x= (the batch at sigma_max); params as in `sdm_schedule_info`."""
    unknown = set(params) - _SDM_PARAMS
    if unknown:
        raise InputError(f"params: unknown sdm schedule parameter(s) {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(_SDM_PARAMS))}")
    return sdm_schedule_info(n, sigma_min, sigma_max, denoiser=denoiser, x=x, zero=zero, **params)["sigmas"]




#: the keyword parameters `sdm` passes on to `sdm_schedule_info`
_SDM_PARAMS = frozenset(("eta_min", "eta_max", "eta_p", "norm", "n_grid", "solver", "gamma", "power", "q", "rho"))
