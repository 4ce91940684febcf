"""SDE-DPM-Solver++ samplers (sdm_verify/solvers/dpmpp_sde.py): dpmpp_sde_1, dpmpp_2m_sde, dpmpp_3m_sde.

- identities: eta = 1 first-order step = DDPM's posterior step (formula written here); eta = 0 = the registered ODE
  solvers (ddim / dpm_solver_1 / euler, dpmpp_2m; dpmpp_3m on its full steps);
- the derivations: on a denoiser polynomial in lambda, the steps that integrate the interpolant exactly match the
  variation-of-constants integrals (drift and noise variance) computed here by quadrature;
- k-diffusion: the same numbers as sample_dpmpp_2m_sde / sample_dpmpp_3m_sde fed the same draws (the 3M
  'lagrange' variant differs from it by design);
- convergence in law on a 1-D Gaussian at N = 256 (EDM grid, n = 20000);
- refusals (noise source, parameters) before any denoiser call, and the NFE counts.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import sdm_verify.solvers.dpmpp_sde  # noqa: F401  (registers the samplers before the lead wires the package)
from analytic import Gaussian
from sdm_verify import schedules, solvers
from sdm_verify.errors import InputError
from sdm_verify.harness import targets
from sdm_verify.harness.nfe import CountedDenoiser
from sdm_verify.harness.noise import GaussianNoise, ZeroNoise

F64 = torch.float64
GMM = targets.get("gmm-8d")  # a non-Gaussian target: D is not affine in x
RTOL = 1e-12
NAMES = ("dpmpp_sde_1", "dpmpp_2m_sde", "dpmpp_3m_sde")
GRIDS = {"above 0": schedules.edm(16, 0.002, 80.0), "into 0": schedules.edm(16, 0.002, 80.0, zero=True)}


def _x(n=12, seed=0, target=GMM, sigma=80.0):
    return target.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(seed))


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _run(name, x, sigmas, noise, denoiser=GMM.denoiser, **params):
    return solvers.get(name, **params)(denoiser, x.clone(), sigmas, noise)


# ------------------------------------------------------------------------------------------- identities


def _ddpm(denoiser, x, sigmas, noise):
    """DDPM ancestral sampling in canonical variables: the VE bridge posterior q(x' | x, x0) with x0 <- D,
    x' = a x + (1 - a) D + t' sqrt(1 - a) z, a = t'^2/t^2 (t' = 0: x' = D)."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        t, tn = s[i], s[i + 1]
        d = denoiser(x, t)
        a = tn ** 2 / t ** 2
        x = a * x + (1 - a) * d + (tn * math.sqrt(1 - a) * noise(i, t, tn) if tn > 0 else 0.0)
    return x


@pytest.mark.parametrize("grid", GRIDS)
def test_first_order_at_eta_1_is_ddpm(grid):
    x, sigmas = _x(), GRIDS[grid]
    noise = GaussianNoise(x, seed=3)
    assert _rel(_run("dpmpp_sde_1", x, sigmas, noise), _ddpm(GMM.denoiser, x.clone(), sigmas, noise)) < RTOL


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("twin", ["ddim", "dpm_solver_1", "euler"])
def test_first_order_at_eta_0_is_ddim(grid, twin):
    x, sigmas = _x(), GRIDS[grid]
    out = _run("dpmpp_sde_1", x, sigmas, GaussianNoise(x, seed=1), eta=0)  # the draws are never used
    assert _rel(out, solvers.get(twin)(GMM.denoiser, x.clone(), sigmas)) < RTOL


@pytest.mark.parametrize("grid", GRIDS)
def test_2m_midpoint_at_eta_0_is_dpmpp_2m(grid):
    x, sigmas = _x(), GRIDS[grid]
    out = _run("dpmpp_2m_sde", x, sigmas, GaussianNoise(x, seed=1), eta=0)
    assert _rel(out, solvers.get("dpmpp_2m")(GMM.denoiser, x.clone(), sigmas)) < RTOL
    # lower_order_final acts on grids of fewer than 10 steps only: none here
    assert _rel(out, solvers.get("dpmpp_2m", lower_order_final=True)(GMM.denoiser, x.clone(), sigmas)) < RTOL
    # 'heun' weighs D_1 by 1 - (1 - e^-h)/h instead of (1 - e^-h)/2: another second-order update, no twin
    heun = _run("dpmpp_2m_sde", x, sigmas, GaussianNoise(x, seed=1), eta=0, solver_type="heun")
    assert _rel(heun, out) > 1e-8


def _flat_warm_up(sigmas):
    """GMM's denoiser, except a constant (independent of x) at the first two grid levels: the warm-up's difference
    D_s - D_prev is then 0, so 2M-type and heun-type second steps coincide."""
    first = set(sigmas.tolist()[:2])

    def denoiser(x, sigma):
        return torch.full_like(x, 0.3) if float(sigma) in first else GMM.denoiser(x, sigma)

    return denoiser


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("variant, twin", [("authors", "dpmpp_3m"), ("lagrange", "dpmpp_3m_lagrange")])
def test_3m_at_eta_0_is_dpmpp_3m_on_its_full_steps(grid, variant, twin):
    x, sigmas = _x(), GRIDS[grid]
    noise = GaussianNoise(x, seed=1)
    den = _flat_warm_up(sigmas)
    out = _run("dpmpp_3m_sde", x, sigmas, noise, denoiser=den, eta=0, variant=variant)
    assert _rel(out, solvers.get(twin)(den, x.clone(), sigmas)) < RTOL
    # on a plain target the second (warm-up) step differs: p2 D1 here, 2M's (1 - e^-h)/2 D1 in dpmpp_3m
    out = _run("dpmpp_3m_sde", x, sigmas, noise, eta=0, variant=variant)
    assert _rel(out, solvers.get(twin)(GMM.denoiser, x.clone(), sigmas)) > 1e-8


# --------------------------------------------------------------------- the derivations, by quadrature


def _exact_step(x, s, t, eta, dfun, z):
    """One step of dx = -(1 + eta)(x - D) dlambda + e^{-lambda} sqrt(2 eta) dW over lambda = -log s -> -log t, for a
    D(lambda) independent of x: the variation-of-constants drift integral and noise variance, by quadrature."""
    lo, hi, c = -math.log(s), -math.log(t), 1.0 + eta
    drift = quad(lambda u: c * math.exp(-c * (hi - u)) * dfun(u), lo, hi, epsabs=1e-16, epsrel=1e-13)[0]
    var = quad(lambda u: 2 * eta * math.exp(-2 * c * (hi - u) - 2 * u), lo, hi, epsabs=1e-16, epsrel=1e-13)[0]
    return math.exp(-c * (hi - lo)) * x + drift + math.sqrt(var) * z


def _steps(name, dfun, sigmas, eta, **params):
    """(x before, x after, draw) of every step of `name` run on the x-independent denoiser D = dfun(lambda)."""
    x = torch.linspace(-1.0, 1.0, 5, dtype=F64)[:, None] * 30.0
    noise = GaussianNoise(x, seed=5)
    seen = [x]
    solvers.get(name, eta=eta, **params)(lambda y, sg: torch.full_like(y, dfun(-math.log(float(sg)))), x.clone(),
                                         sigmas, noise, callback=lambda info: seen.append(info["x"]))
    s = sigmas.tolist()
    return [(seen[i], seen[i + 1], noise(i, s[i], s[i + 1]) if eta > 0 else torch.zeros_like(x), s[i], s[i + 1])
            for i in range(len(s) - 1)]


def _step_errors(name, dfun, eta, **params):
    sigmas = torch.tensor([20.0, 9.0, 5.0, 2.2, 1.3, 0.5], dtype=F64)  # uneven steps in lambda
    errors = []
    for before, after, z, s, t in _steps(name, dfun, sigmas, eta, **params):
        exact = torch.tensor([_exact_step(float(b), s, t, eta, dfun, float(zz))
                              for b, zz in zip(before.flatten(), z.flatten(), strict=True)], dtype=F64)
        errors.append(float((after.flatten() - exact).abs().max() / exact.abs().max()))
    return errors


def CONST(u):
    return 0.7


def LINEAR(u):
    return 0.7 + 0.9 * u


def QUADRATIC(u):
    return 0.7 + 0.9 * u - 0.4 * u * u


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_each_step_integrates_its_interpolant_exactly(eta):
    tol = 1e-12
    # first order: exact on a constant D, every step
    assert max(_step_errors("dpmpp_sde_1", CONST, eta)) < tol
    # 2M heun: the exact integral of the linear interpolant from the second step on; midpoint is not
    heun = _step_errors("dpmpp_2m_sde", LINEAR, eta, solver_type="heun")
    assert max(heun[1:]) < tol and heun[0] > 1e-6
    assert min(_step_errors("dpmpp_2m_sde", LINEAR, eta, solver_type="midpoint")[1:]) > 1e-6
    # 3M: its warm-up step integrates the linear interpolant (either variant: D2 = 0 for a linear D)
    for variant in ("authors", "lagrange"):
        assert max(_step_errors("dpmpp_3m_sde", LINEAR, eta, variant=variant)[1:]) < tol
    # 3M lagrange: the exact integral of the quadratic interpolant from the third step on; authors (k-diffusion's
    # weight, half the D2 term) is not
    assert max(_step_errors("dpmpp_3m_sde", QUADRATIC, eta, variant="lagrange")[2:]) < tol
    assert min(_step_errors("dpmpp_3m_sde", QUADRATIC, eta, variant="authors")[2:]) > 1e-6


# ------------------------------------------------------------------------------------------- k-diffusion


def _kd():
    from sdm_verify.adapters import kdiffusion

    try:
        return kdiffusion.load_sampling()
    except kdiffusion.MissingKDiffusionError as exc:
        pytest.skip(str(exc))


def _kd_run(fn, x, sigmas, noise, **kwargs):
    """k-diffusion's sampler on the same denoiser and the same draws: its noise_sampler(sigma, sigma_next) gets
    noise(i, sigma, sigma_next) with i the step index of sigma in the grid."""
    index = {v: i for i, v in enumerate(sigmas.tolist())}

    def noise_sampler(sigma, sigma_next):
        return noise(index[float(sigma)], float(sigma), float(sigma_next))

    def model(y, sigma_vec):
        return GMM.denoiser(y, float(sigma_vec[0]))

    return fn(model, x.clone(), sigmas.clone(), disable=True, noise_sampler=noise_sampler, **kwargs)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("eta, s_noise", [(1.0, 1.0), (0.5, 0.7), (0.0, 1.0)])
def test_2m_sde_matches_kdiffusion(grid, solver_type, eta, s_noise):
    kd = _kd()
    x, sigmas = _x(), GRIDS[grid]
    noise = GaussianNoise(x, seed=11)
    ours = _run("dpmpp_2m_sde", x, sigmas, noise, eta=eta, s_noise=s_noise, solver_type=solver_type)
    theirs = _kd_run(kd.sample_dpmpp_2m_sde, x, sigmas, noise, eta=eta, s_noise=s_noise, solver_type=solver_type)
    assert _rel(ours, theirs) < RTOL


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("eta, s_noise", [(1.0, 1.0), (0.5, 1.3)])
def test_3m_sde_matches_kdiffusion(grid, eta, s_noise):
    kd = _kd()
    x, sigmas = _x(), GRIDS[grid]
    noise = GaussianNoise(x, seed=12)
    theirs = _kd_run(kd.sample_dpmpp_3m_sde, x, sigmas, noise, eta=eta, s_noise=s_noise)
    assert _rel(_run("dpmpp_3m_sde", x, sigmas, noise, eta=eta, s_noise=s_noise), theirs) < RTOL
    # the exact quadratic-interpolant weight (twice k-diffusion's on D2) is a different sampler
    lagrange = _run("dpmpp_3m_sde", x, sigmas, noise, eta=eta, s_noise=s_noise, variant="lagrange")
    assert _rel(lagrange, theirs) > 1e-8


@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_first_order_is_kdiffusion_first_2m_step(eta):
    kd = _kd()
    x = _x()
    for pair in ([80.0, 30.0], [5.0, 0.7], [0.1, 0.002]):
        sigmas = torch.tensor(pair, dtype=F64)
        noise = GaussianNoise(x, seed=13)
        theirs = _kd_run(kd.sample_dpmpp_2m_sde, x, sigmas, noise, eta=eta)
        assert _rel(_run("dpmpp_sde_1", x, sigmas, noise, eta=eta), theirs) < RTOL
    # a one-step grid into 0 is x <- D (k-diffusion's own loop raises UnboundLocalError on it: its `h_last = h`
    # runs after a denoising step that never set h)
    one = torch.tensor([3.0, 0.0], dtype=F64)
    assert _rel(_run("dpmpp_sde_1", x, one, GaussianNoise(x, seed=13), eta=eta), GMM.denoiser(x, 3.0)) == 0


# ------------------------------------------------------------------------------------ convergence in law


def _edm_grid(n, smax=80.0, smin=0.002, rho=7.0):
    return torch.tensor([(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
                         for i in range(n)], dtype=F64)


M, V = 0.5, 0.25  # the 1-D Gaussian target N(M, V)


def _ddpm_variance(sigmas) -> float:
    """The exact output variance of DDPM on N(M, V) from p_80: D = M + k (x - M), k = V/(V + t^2), is affine, so
    the law stays Gaussian and Var' = (a + (1 - a) k)^2 Var + t'^2 (1 - a)."""
    s = sigmas.tolist()
    var = V + s[0] ** 2
    for t, tn in zip(s[:-1], s[1:], strict=True):
        a, k = tn ** 2 / t ** 2, V / (V + t ** 2)
        var = (a + (1 - a) * k) ** 2 * var + tn ** 2 * (1 - a)
    return var


@pytest.mark.parametrize("name, params", [("dpmpp_sde_1", {}), ("dpmpp_sde_1", {"eta": 0.5}), ("dpmpp_2m_sde", {}),
                                          ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}),
                                          ("dpmpp_3m_sde", {}), ("dpmpp_3m_sde", {"variant": "lagrange"})])
def test_converges_in_law_on_a_gaussian(name, params):
    n, N = 20000, 256
    target = Gaussian([M], [[V]])
    sigmas = _edm_grid(N)
    x = target.sample(n, sigma=80.0, generator=torch.Generator().manual_seed(7))
    out = solvers.get(name, **params)(target.denoiser, x, sigmas, GaussianNoise(x, seed=8)).flatten()
    var_exact = V + 0.002 ** 2
    mean, var = float(out.mean()), float(out.var())
    se_mean, se_var = math.sqrt(var_exact / n), var_exact * math.sqrt(2 / (n - 1))
    # bias allowance: 1.5x DDPM's exact variance bias on this grid (a first-order sampler; ~0.012 here, 5 % of V),
    # computed above from DDPM's formula; the mean is unbiased for every sampler (weights sum to 1)
    allowance = 1.5 * abs(_ddpm_variance(sigmas) - var_exact)
    assert abs(mean - M) < 5 * se_mean
    assert abs(var - var_exact) < 5 * se_var + allowance
    if name == "dpmpp_sde_1" and not params:  # DDPM: its exact law, no allowance
        assert abs(var - _ddpm_variance(sigmas)) < 5 * se_var


# ---------------------------------------------------------------------------------------- refusals, NFE


def _forbidden(x, sigma):
    raise AssertionError("the denoiser was called before the input was refused")


@pytest.mark.parametrize("name", NAMES)
def test_noise_source_refused_before_any_denoiser_call(name):
    x, sigmas = _x(), GRIDS["above 0"]
    sampler = solvers.get(name)
    with pytest.raises(InputError, match="^noise: .*needs a noise source"):
        sampler(_forbidden, x, sigmas)
    with pytest.raises(InputError, match="^noise: returned shape"):
        sampler(_forbidden, x, sigmas, GaussianNoise(x[:, :3], seed=0))
    with pytest.raises(InputError, match="^noise: returned dtype"):
        sampler(_forbidden, x, sigmas, GaussianNoise(x.float(), seed=0))
    with pytest.raises(InputError, match="^noise: must be callable"):
        sampler(_forbidden, x, sigmas, 0.5)


@pytest.mark.parametrize("name, params, param", [
    *[(n, {"eta": v}, "eta") for n in NAMES for v in (-0.1, math.nan, math.inf, "1", True, None)],
    *[(n, {"s_noise": v}, "s_noise") for n in NAMES for v in (0.0, -1.0, math.nan, "1", False)],
    ("dpmpp_2m_sde", {"solver_type": "euler"}, "solver_type"), ("dpmpp_2m_sde", {"solver_type": None}, "solver_type"),
    ("dpmpp_3m_sde", {"variant": "exact"}, "variant"), ("dpmpp_sde_1", {"solver_type": "heun"}, "params"),
    ("dpmpp_2m_sde", {"variant": "lagrange"}, "params"),
])
def test_bad_parameters_name_the_parameter(name, params, param):
    with pytest.raises(InputError, match=f"^{param}: "):
        solvers.get(name, **params)


@pytest.mark.parametrize("name, params", [(n, {}) for n in NAMES] + [("dpmpp_2m_sde", {"eta": 0.0})])
def test_counted_nfe_and_draws(name, params):
    x = _x()
    sampler = solvers.get(name, **params)
    for n in (1, 2, 3, 7):
        for zero in (False, True):
            sigmas = schedules.edm(n, 0.002, 80.0, zero=zero)
            counted, noise = CountedDenoiser(GMM.denoiser), ZeroNoise(x)
            sampler(counted, x.clone(), sigmas, noise)
            assert counted.nfe == (sampler.nfe_to_zero(n) if zero else sampler.nfe(n)) == n
            s = sigmas.tolist()
            # one draw per step with noise (eta > 0, sigma' > 0); the loop checks the first draw in any case
            drawn = [(i, s[i], s[i + 1]) for i in range(n) if s[i + 1] > 0] if sampler.eta > 0 else []
            assert noise.keys == (drawn or [(0, s[0], s[1])])


def test_declarations():
    for name in NAMES:
        sampler = solvers.get(name)
        assert sampler.needs_noise and sampler.order is None and sampler.strong_order is None
        assert sampler.claim_source and sampler.final_step and sampler.notes
        assert solvers.get(name, **sampler.params()).params() == sampler.params()
    assert solvers.get("dpmpp_sde_1").weak_order == 1
    assert solvers.get("dpmpp_2m_sde").weak_order is None and "no weak order stated" in \
        solvers.get("dpmpp_2m_sde").claim_source
    assert solvers.get("dpmpp_3m_sde").weak_order is None
    assert solvers.get("dpmpp_2m_sde").params() == {"eta": 1.0, "s_noise": 1.0, "solver_type": "midpoint"}
    assert solvers.get("dpmpp_3m_sde").params() == {"eta": 1.0, "s_noise": 1.0, "variant": "authors"}
    assert set(NAMES) <= set(solvers.available(stochastic=True))
