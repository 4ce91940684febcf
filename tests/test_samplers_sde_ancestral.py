"""Euler-Maruyama, EDM's stochastic sampler, DDPM, DDIM-eta and Euler ancestral (sdm_verify/solvers/sde.py and
ancestral.py) against mathematics.

Expected values come from the registered deterministic solvers (euler, heun), from the papers' formulas written
here independently (VP's DDPM posterior, DDIM's Eq. 12/16, EDM's Alg. 2, Eq. 6's Euler-Maruyama step) or from the
oracle (analytic.Gaussian): exact noisy laws p_sigma = N(mu, C + sigma^2 I) and the affine denoiser.
"""

from __future__ import annotations

import math

import pytest
import torch
from _stochastic import F64, GRIDS, TARGET, edm_grid  # noqa: F401  (shared test data)

import sdm_verify.solvers.ancestral  # noqa: F401  (registration, until the package imports the families)
import sdm_verify.solvers.sde  # noqa: F401
from analytic import Gaussian
from sdm_verify.errors import InputError
from sdm_verify.harness.nfe import CountedDenoiser
from sdm_verify.harness.noise import GaussianNoise, ZeroNoise
from sdm_verify.solvers import get

SAMPLERS = ("euler_maruyama", "edm_stochastic", "ddpm", "ddim_eta", "euler_ancestral")


def start(sigmas, n: int = 64, seed: int = 0) -> torch.Tensor:
    return TARGET.sample(n, sigma=float(sigmas[0]), generator=torch.Generator().manual_seed(seed))


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def run(name, sigmas, x, noise, denoiser=TARGET.denoiser, **params):
    return get(name, **params)(denoiser, x.clone(), sigmas, noise)


# --------------------------------------------------------------------------------- equivalences to rounding
@pytest.mark.parametrize("grid", GRIDS)
def test_equivalences_to_rounding(grid):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    noise = GaussianNoise(x, seed=3)
    euler = get("euler")(TARGET.denoiser, x.clone(), sigmas)
    heun = get("heun")(TARGET.denoiser, x.clone(), sigmas)
    ddpm = run("ddpm", sigmas, x, noise)
    assert rel_diff(run("ddim_eta", sigmas, x, noise, eta=0.0), euler) < 1e-12
    assert rel_diff(run("ddim_eta", sigmas, x, noise, eta=1.0), ddpm) < 1e-12
    assert rel_diff(run("euler_ancestral", sigmas, x, noise, eta=0.0), euler) < 1e-12
    for eta in (0.0, 0.3, 0.7, 1.0):
        ddim = run("ddim_eta", sigmas, x, noise, eta=eta)
        assert rel_diff(run("euler_ancestral", sigmas, x, noise, eta=eta), ddim) < 1e-12, eta
    assert rel_diff(run("edm_stochastic", sigmas, x, noise, S_churn=0.0), heun) < 1e-12
    # churn switched off by its window (no level of the grid in [S_tmin, S_tmax]) is heun too
    assert rel_diff(run("edm_stochastic", sigmas, x, noise, S_tmin=100.0, S_tmax=200.0), heun) < 1e-12
    # and the samplers do add noise (the equivalences above are not all between deterministic maps)
    assert rel_diff(ddpm, euler) > 1e-3
    assert rel_diff(run("euler_ancestral", sigmas, x, noise, eta=0.5, s_noise=1.1),
                    run("ddim_eta", sigmas, x, noise, eta=0.5)) > 1e-6


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("beta_form", ["inverse", "constant"])
def test_euler_maruyama_beta0_is_euler_exactly(grid, beta_form):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    euler = get("euler")(TARGET.denoiser, x.clone(), sigmas)
    for noise in (ZeroNoise(x), GaussianNoise(x, seed=1)):
        out = run("euler_maruyama", sigmas, x, noise, beta=0.0, beta_form=beta_form)
        assert torch.equal(out, euler)


@pytest.mark.parametrize("beta_form", ["inverse", "constant"])
def test_euler_maruyama_step_is_eq6(beta_form):
    # Karras et al. 2022, Eq. 6 with sigma = t, score (D - x)/t^2, reverse time: drift (1/t + beta(t))(x - D),
    # diffusion sqrt(2 beta(t)) t; one Euler-Maruyama step of length Delta = t - t'
    s, t, beta = 1.7, 1.2, 0.8
    x = start([s], n=16)
    noise = GaussianNoise(x, seed=5)
    out = run("euler_maruyama", [s, t], x, noise, beta=beta, beta_form=beta_form)
    b = beta / s if beta_form == "inverse" else beta
    delta, d = s - t, TARGET.denoiser(x, s)
    expected = x - delta * (1 / s + b) * (x - d) + math.sqrt(2 * b * delta) * s * noise(0, s, t)
    assert rel_diff(out, expected) < 1e-13
    # the deterministic skeleton (ZeroNoise) drops only the noise term
    skeleton = run("euler_maruyama", [s, t], x, ZeroNoise(x), beta=beta, beta_form=beta_form)
    assert rel_diff(skeleton, x - delta * (1 / s + b) * (x - d)) < 1e-13
    # into sigma = 0: the ODE's Euler step, D(x, sigma), no noise
    into0 = run("euler_maruyama", [s, 0.0], x, noise, beta=beta, beta_form=beta_form)
    assert rel_diff(into0, d) < 1e-13


def test_ddpm_is_vp_posterior_and_ddim_is_eq12():
    # Ho et al. 2020, Eq. 7 and Song et al. 2021, Eq. 12/16 in VP variables (alpha_bar = 1/(1 + sigma^2)),
    # mapped back with y = x/sqrt(alpha_bar): independent of the canonical-variable derivation in the module
    s, t = 2.3, 0.9
    y = start([s], n=16)
    noise = GaussianNoise(y, seed=7)
    z, d = noise(0, s, t), TARGET.denoiser(y, s)
    ab, abp = 1 / (1 + s * s), 1 / (1 + t * t)
    x_t, eps = math.sqrt(ab) * y, (y - d) / s  # eps_hat = (x_t - sqrt(ab) x0_hat)/sqrt(1 - ab)
    beta_t = 1 - ab / abp
    mu = math.sqrt(abp) * beta_t / (1 - ab) * d + math.sqrt(ab / abp) * (1 - abp) / (1 - ab) * x_t
    var = (1 - abp) / (1 - ab) * beta_t
    assert rel_diff(run("ddpm", [s, t], y, noise), (mu + math.sqrt(var) * z) / math.sqrt(abp)) < 1e-12
    for eta in (0.0, 0.4, 1.0):
        sig = eta * math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
        x_prev = math.sqrt(abp) * d + math.sqrt(1 - abp - sig ** 2) * eps + sig * z
        assert rel_diff(run("ddim_eta", [s, t], y, noise, eta=eta), x_prev / math.sqrt(abp)) < 1e-12, eta


def test_edm_churn_is_noise_then_heun_from_t_hat():
    # Karras et al. 2022, Alg. 2: gamma = min(S_churn/N, sqrt(2) - 1) inside [S_tmin, S_tmax];
    # x_hat = x + sqrt(t_hat^2 - t^2) S_noise z, then one Heun step t_hat -> t' (Euler into 0)
    x = start([3.0], n=16)
    noise = GaussianNoise(x, seed=11)
    for sigmas, churn in (([3.0, 1.0], 0.3), ([3.0, 1.0], 5.0), ([3.0, 0.0], 0.3)):
        gamma = min(churn / 1, math.sqrt(2) - 1)
        s, t = sigmas
        s_hat = s * (1 + gamma)
        x_hat = x + math.sqrt(s_hat ** 2 - s ** 2) * 1.01 * noise(0, s, t)
        ref = get("heun")(TARGET.denoiser, x_hat, [s_hat, t])
        out = run("edm_stochastic", sigmas, x, noise, S_churn=churn, S_noise=1.01)
        assert rel_diff(out, ref) < 1e-13, (sigmas, churn)


# ---------------------------------------------------------------------------------- exact one-step laws
def one_step_affine(sampler, denoiser, mu: torch.Tensor, s: float, t: float):
    """(M, b, N): one step of `sampler` from s to t is x' = M x + b + N z on an affine denoiser, read off the
    sampler by running it on basis points (batch rows are independent) with a noise source returning chosen z."""
    d = mu.shape[0]
    eye = torch.eye(d, dtype=F64)
    x = torch.cat([mu[None], mu[None] + eye])

    def fixed(z):
        return lambda i, a, b: z

    base = sampler(denoiser, x.clone(), [s, t], fixed(torch.zeros_like(x)))
    m = (base[1:] - base[0]).T
    b = base[0] - m @ mu
    kicked = sampler(denoiser, mu[None].expand(d + 1, d).clone(), [s, t], fixed(torch.cat([eye, eye[:1] * 0])))
    n = (kicked[:d] - kicked[d]).T
    return m, b, n


def push_forward(m, b, n, mean, cov):
    return m @ mean + b, m @ cov @ m.T + n @ n.T


@pytest.mark.parametrize("name,params", [("ddpm", {}), ("ddim_eta", {"eta": 0.0}), ("ddim_eta", {"eta": 0.6}),
                                         ("euler_ancestral", {"eta": 0.6}), ("edm_stochastic", {"S_noise": 1.0})])
def test_point_mass_one_step_law_is_exact(name, params):
    # point mass x0: p_s = N(x0, s^2 I); every sampler here maps it onto N(x0, t^2 I) exactly (DDPM/DDIM sample the
    # bridge, EDM's churn keeps the law N(x0, s_hat^2 I) and Heun is exact on a point mass's flow)
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=F64)

    def point_mass(y, sigma):
        return x0.expand_as(y).clone()

    s, t = 2.5, 0.7
    m, b, n = one_step_affine(get(name, **params), point_mass, x0, s, t)
    mean, cov = push_forward(m, b, n, x0, s * s * torch.eye(3, dtype=F64))
    assert float((mean - x0).abs().max()) < 1e-12
    assert float((cov - t * t * torch.eye(3, dtype=F64)).abs().max()) < 1e-12 * t * t


def test_ddpm_one_step_law_on_gaussian_exactly():
    # On a Gaussian target DDPM's step x' = a x + (1 - a) D + t' sqrt(1 - a) z (a = t'^2/s^2) misses exactly the
    # spread of x0 around D: the true bridge step a x + (1 - a) x0 + noise lands on p_t', and x0 - D(x) is
    # uncorrelated with x and z, so Cov(x') + (1 - a)^2 Cov(x0 | x) = C + t'^2 I (law of total variance).
    mu, c = TARGET.mean, TARGET.covariance
    eye = torch.eye(2, dtype=F64)
    for s, t in ((2.0, 1.0), (0.5, 0.3), (20.0, 1.5)):
        m, b, n = one_step_affine(get("ddpm"), TARGET.denoiser, mu, s, t)
        mean, cov = push_forward(m, b, n, mu, c + s * s * eye)
        a = (t / s) ** 2
        post = c - c @ torch.linalg.solve(c + s * s * eye, c)  # Cov(x0 | x) of a Gaussian
        assert float((mean - mu).abs().max()) < 1e-12
        assert float((cov + (1 - a) ** 2 * post - (c + t * t * eye)).abs().max()) < 1e-12 * (1 + t * t)
        # the noise is isotropic with the bridge's variance t'^2 (1 - a)
        assert float((n @ n.T - t * t * (1 - a) * eye).abs().max()) < 1e-13 * (1 + t * t)


def mc_check(out: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, allowance: float = 0.0) -> None:
    """Per coordinate: sample mean / variance within 5 standard errors (+ a relative allowance) of the target."""
    n = out.shape[0]
    se_mean, se_var = torch.sqrt(var / n), var * math.sqrt(2 / (n - 1))
    assert bool(((out.mean(0) - mean).abs() < 5 * se_mean + allowance * var.sqrt()).all()), (out.mean(0), mean)
    assert bool(((out.var(0) - var).abs() < 5 * se_var + allowance * var).all()), (out.var(0), var)


def test_ddpm_one_step_monte_carlo():
    s, t, n = 2.0, 1.0, 50000
    gen = torch.Generator().manual_seed(21)
    # point mass x0 = 0.7: exact draws of p_s = N(0.7, s^2) land on p_t = N(0.7, t^2)
    x = 0.7 + s * torch.randn(n, 1, dtype=F64, generator=gen)
    out = get("ddpm")(lambda y, sg: torch.full_like(y, 0.7), x, [s, t], GaussianNoise(x, seed=4))
    mc_check(out, torch.tensor([0.7], dtype=F64), torch.tensor([t * t], dtype=F64))
    # 1-D Gaussian N(0.5, 1): Var(x') = 1 + t^2 - (1 - a)^2 (1 - 1/(1 + s^2)) = 2 - 0.5625 * 0.8 = 1.55 (see above)
    target = Gaussian([0.5], [[1.0]])
    x = target.sample(n, sigma=s, generator=gen)
    out = get("ddpm")(target.denoiser, x, [s, t], GaussianNoise(x, seed=5))
    mc_check(out, torch.tensor([0.5], dtype=F64), torch.tensor([1.55], dtype=F64))


# ------------------------------------------------------------------------------- convergence in law (EM)
def em_variance(sigmas: list[float], c: float, beta: float, s_noise: float) -> float:
    """The exact law of Euler-Maruyama (beta(t) = beta/t) on N(mu, c) from the exact p_sigma0: each step is affine,
    x' - mu = (1 - Delta k s^2/(c + s^2))(x - mu) + s_noise sqrt(2 b Delta) s z, k = 1/s + b, b = beta/s."""
    v = c + sigmas[0] ** 2
    for s, t in zip(sigmas[:-1], sigmas[1:], strict=True):
        b, delta = beta / s, s - t
        v = (1 - delta * (1 / s + b) * s * s / (c + s * s)) ** 2 * v + s_noise ** 2 * 2 * b * delta * s * s
    return v


def test_euler_maruyama_converges_in_law_1d():
    mu, c, n = 0.5, 1.0, 20000
    target = Gaussian([mu], [[c]])
    sigmas = edm_grid(256)  # 80 -> 0.002, rho = 7
    exact = c + 0.002 ** 2
    # weak order 1: the exact bias of the scheme's law is small at N = 256 and halves with N
    bias = [em_variance(edm_grid(k).tolist(), c, 1.0, 1.0) / exact - 1 for k in (256, 512)]
    assert abs(bias[0]) < 0.03 and 1.7 < bias[0] / bias[1] < 2.3, bias
    x = target.sample(n, sigma=80.0, generator=torch.Generator().manual_seed(8))
    means, var_exact = torch.tensor([mu], dtype=F64), torch.tensor([exact], dtype=F64)
    out = get("euler_maruyama")(target.denoiser, x.clone(), sigmas, GaussianNoise(x, seed=9))
    mc_check(out, means, var_exact, allowance=0.03)
    mc_check(out, means, torch.tensor([em_variance(sigmas.tolist(), c, 1.0, 1.0)], dtype=F64))
    # the noise scaled by 1.05 is caught: its law is the predicted biased one, outside the allowance of p_0.002
    out = get("euler_maruyama", s_noise=1.05)(target.denoiser, x.clone(), sigmas, GaussianNoise(x, seed=9))
    biased = em_variance(sigmas.tolist(), c, 1.0, 1.05)
    mc_check(out, means, torch.tensor([biased], dtype=F64))
    se = exact * math.sqrt(2 / (n - 1))
    assert float(out.var(0)[0]) - exact > 5 * se + 0.03 * exact


# -------------------------------------------------------------------------------------------- refusals
def refuse(*args, **kwargs):
    raise AssertionError("the denoiser must not be called")


@pytest.mark.parametrize("name", SAMPLERS)
def test_bad_noise_refused_before_any_call(name):
    sigmas = GRIDS["edm12"]
    x = start(sigmas, n=4)
    sampler = get(name)
    bad = {
        "missing": None,
        "not callable": 3.0,
        "wrong shape": lambda i, s, t: torch.zeros(4, 3, dtype=F64),
        "wrong dtype": lambda i, s, t: torch.zeros(4, 2, dtype=torch.float32),
        "NaN": lambda i, s, t: torch.full((4, 2), math.nan, dtype=F64),
    }
    for label, noise in bad.items():
        with pytest.raises(InputError, match="noise"):
            sampler(refuse, x.clone(), sigmas, noise)
        print(label, "refused")


@pytest.mark.parametrize("name,params,word", [
    ("euler_maruyama", {"beta": -0.1}, "beta"), ("euler_maruyama", {"beta": math.inf}, "beta"),
    ("euler_maruyama", {"beta": True}, "beta"), ("euler_maruyama", {"beta_form": "linear"}, "beta_form"),
    ("euler_maruyama", {"s_noise": 0.0}, "s_noise"), ("euler_maruyama", {"s_noise": "1"}, "s_noise"),
    ("edm_stochastic", {"S_churn": -1}, "S_churn"), ("edm_stochastic", {"S_tmin": -0.1}, "S_tmin"),
    ("edm_stochastic", {"S_tmin": 2.0, "S_tmax": 1.0}, "S_tmax"), ("edm_stochastic", {"S_noise": 0}, "S_noise"),
    ("edm_stochastic", {"S_noise": math.nan}, "S_noise"), ("ddim_eta", {"eta": 1.5}, "eta"),
    ("ddim_eta", {"eta": -0.1}, "eta"), ("ddim_eta", {"eta": None}, "eta"),
    ("euler_ancestral", {"eta": -1.0}, "eta"), ("euler_ancestral", {"s_noise": -1.0}, "s_noise"),
    ("ddpm", {"eta": 0.5}, "params"),
])
def test_bad_parameters_named(name, params, word):
    with pytest.raises(InputError, match=word):
        get(name, **params)


# ------------------------------------------------------------------------------------ cost and declarations
@pytest.mark.parametrize("name", SAMPLERS)
def test_nfe_matches_declaration(name):
    sampler = get(name)
    for sigmas, expected in ((edm_grid(7), sampler.nfe(7)), (edm_grid(6, zero=True), sampler.nfe_to_zero(7))):
        x = start(sigmas, n=8)
        counted = CountedDenoiser(TARGET.denoiser)
        sampler(counted, x, sigmas, GaussianNoise(x, seed=2))
        assert counted.nfe == expected, (name, len(sigmas) - 1)
    assert sampler.needs_noise and sampler.order is None and sampler.claim_source


def test_declared_claims():
    assert (get("euler_maruyama").weak_order, get("euler_maruyama").strong_order) == (1, 1)
    assert (get("edm_stochastic").weak_order, get("edm_stochastic").strong_order) == (None, None)
    for name in ("ddpm", "ddim_eta", "euler_ancestral"):
        assert get(name).weak_order == 1 and get(name).strong_order is None
    assert get("edm_stochastic").params() == {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0, "S_noise": 1.003}
    assert get("euler_maruyama").params() == {"beta": 1.0, "beta_form": "inverse", "s_noise": 1.0}


@pytest.mark.parametrize("name", SAMPLERS)
def test_float32_runs_in_float32(name):
    sigmas = GRIDS["edm9_to_zero"]
    x = start(sigmas, n=8).float()
    target32 = TARGET.denoiser

    def denoiser(y, s):
        return target32(y.double(), s).float()

    noise32 = GaussianNoise(x, seed=1)
    out = get(name)(denoiser, x, sigmas, noise32)
    ref = get(name)(TARGET.denoiser, x.double(), sigmas, lambda i, s, t: noise32(i, s, t).double())
    assert out.dtype == torch.float32 and rel_diff(out.double(), ref) < 1e-4
