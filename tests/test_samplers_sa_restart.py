"""SA-Solver and Restart sampling (sdm_verify/solvers/sa_solver.py, restart.py) against mathematics.

Expected values come from the oracle (analytic.Gaussian: exact noisy laws p_sigma = N(mu, C + sigma^2 I) and its
affine denoiser), from registered samplers implemented independently elsewhere (euler, ddim, ddpm, heun,
dpmpp_2m_sde, dpmpp_3m_sde, unipc_*), from formulas written here (DDPM's posterior step, the exponential
Adams-Bashforth-2 step, the corrector by hand, Restart's jump and sub-grid), from mpmath / scipy.integrate.quad for
the SA weights, and, where installed, from diffusers' SASolverScheduler. Never from the samplers' own numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
from _stochastic import F64, GRIDS, TARGET, edm_grid  # noqa: F401  (shared test data)

import sdm_verify.solvers.ancestral  # noqa: F401  (registration, until the package imports the families)
import sdm_verify.solvers.dpmpp_sde  # noqa: F401
import sdm_verify.solvers.restart  # noqa: F401
import sdm_verify.solvers.sa_solver  # noqa: F401
from analytic import Gaussian
from sdm_verify.errors import InputError
from sdm_verify.harness.nfe import CountedDenoiser
from sdm_verify.harness.noise import BrownianNoise, GaussianNoise, ZeroNoise
from sdm_verify.harness.stochastic_law import output_law
from sdm_verify.solvers import get
from sdm_verify.solvers.sa_solver import exp_moments, sa_weights


def start(sigmas, n: int = 32, seed: int = 0, target=TARGET) -> torch.Tensor:
    return target.sample(n, sigma=float(sigmas[0]), generator=torch.Generator().manual_seed(seed))


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def sa(sigmas, x, noise, **params):
    return get("sa_solver", **params)(TARGET.denoiser, x.clone(), sigmas, noise)


def refuse(*args, **kwargs):
    raise AssertionError("the denoiser must not be called")


def mc_check(out: torch.Tensor, mean: float, var: float, allowance: float) -> None:
    """Sample mean / variance of a 1-D sample within 5 standard errors + allowance (relative to var)."""
    n = out.shape[0]
    m, v = float(out.mean()), float(out.var())
    assert abs(m - mean) < 5 * math.sqrt(var / n) + allowance * math.sqrt(var), (m, mean)
    assert abs(v - var) < 5 * var * math.sqrt(2 / (n - 1)) + allowance * var, (v, var)


# =============================================================================================== SA-Solver
# ------------------------------------------------------------------------------------------- the weights
@pytest.mark.parametrize("g", [1e-7, 1e-3, 0.2, 0.999, 1.0, 1.001, 2.5, 7.0, 40.0, 300.0])
def test_moments_against_mpmath(g):
    import mpmath

    mpmath.mp.dps = 40
    got = exp_moments(g, 3)
    for k in range(4):
        exact = mpmath.mpf(g) * mpmath.quad(lambda u, k=k: mpmath.exp(-mpmath.mpf(g) * (1 - u)) * u ** k, [0, 1])
        assert abs(got[k] - float(exact)) <= 2e-15 * float(exact), (g, k, got[k], float(exact))


def lagrange(lams, j, x):
    """The Lagrange basis polynomial of node j on the nodes `lams`, at x (product form)."""
    out = 1.0
    for m, lm in enumerate(lams):
        if m != j:
            out *= (x - lm) / (lams[j] - lm)
    return out


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("h", [0.01, 0.3, 2.0])
def test_weights_against_quad(tau, h):
    """b_j = a int_lambda^lambda' e^{a (l - lambda')} L_j(l) dl, a = 1 + tau^2 (Xue et al. 2023, Eq. 15/18), in
    absolute lambda, by scipy's adaptive quadrature: predictor nodes lambda_i, lambda_{i-1}, ... and corrector
    nodes lambda_{i+1}, lambda_i, ... (irregular previous steps)."""
    from scipy.integrate import quad

    a, lam = 1.0 + tau * tau, 0.7
    prev = [lam - 0.8 * h, lam - 1.9 * h, lam - 3.3 * h]  # previous grid points (steps 0.8h, 1.1h, 1.4h)
    for corrector in (False, True):
        for k in range(1, 5):
            lams = ([lam + h] if corrector else []) + [lam] + prev
            lams = lams[:k]
            got = sa_weights(a * h, [(lj - lam) / h for lj in lams])
            for j in range(k):
                def kernel(l, j=j, nodes=tuple(lams)):
                    return a * math.exp(a * (l - lam - h)) * lagrange(nodes, j, l)

                want, _ = quad(kernel, lam, lam + h, epsabs=1e-15, epsrel=1e-13)
                assert abs(got[j] - want) < 1e-11 * max(1.0, abs(want)), (corrector, k, j, got[j], want)


def test_rescaled_order_two_weights():
    """Appendix D's rescaling (official sa_solver.py `*_few_steps`, diffusers): the order-2 coefficients gain
    +/- e^{a lambda'} (h^2/2 - (h a - 1 + e^{-a h})/a^2)/(lambda_s - lambda_prev) (predictor) and
    +/- e^{a lambda'} (h/2 - (h a - 1 + e^{-a h})/(a^2 h)) (corrector), times a sigma' e^{-tau^2 lambda'} =
    a e^{-a lambda'} in canonical variables. Written out: the weights become [p1 + g/(2r), -g/(2r)] on the
    predictor's nodes (0, -r) and [g/2, p1 - g/2] on the corrector's (1, 0), g = a h, p1 = 1 - e^{-g}."""
    for tau, h, r in ((0.0, 0.3, 1.3), (1.0, 0.05, 0.8), (0.5, 2.0, 1.0)):
        a = 1 + tau * tau
        g, p1 = a * h, -math.expm1(-a * h)
        off = a * (h * h / 2 - (h * a - 1 + math.exp(-a * h)) / a ** 2) / (r * h)
        lagr = sa_weights(g, [0.0, -r])
        assert sa_weights(g, [0.0, -r], rescaled=True) == pytest.approx([lagr[0] + off, lagr[1] - off], rel=1e-12)
        assert sa_weights(g, [0.0, -r], rescaled=True) == pytest.approx([p1 + g / (2 * r), -g / (2 * r)], rel=1e-12)
        assert sa_weights(g, [1.0, 0.0], rescaled=True) == pytest.approx([g / 2, p1 - g / 2], rel=1e-12)
        # other orders are untouched
        assert sa_weights(g, [0.0, -r, -2 * r], rescaled=True) == sa_weights(g, [0.0, -r, -2 * r])


# -------------------------------------------------------------------------------- equivalences to rounding
@pytest.mark.parametrize("grid", GRIDS)
def test_sa_equivalences_to_rounding(grid):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    noise = GaussianNoise(x, seed=3)
    euler = get("euler")(TARGET.denoiser, x.clone(), sigmas)
    ddpm = get("ddpm")(TARGET.denoiser, x.clone(), sigmas, noise)
    assert rel_diff(sa(sigmas, x, noise, predictor_order=1, corrector_order=0, tau=0.0), euler) < 1e-12
    assert rel_diff(sa(sigmas, x, noise, predictor_order=1, corrector_order=0, tau=0.0),
                    get("ddim")(TARGET.denoiser, x.clone(), sigmas)) < 1e-12
    assert rel_diff(sa(sigmas, x, noise, predictor_order=1, corrector_order=0, tau=1.0), ddpm) < 1e-12
    for tau in (0.0, 0.6, 1.0):
        full = {"corrector_order": 0, "tau": tau, "lower_order_final": False}
        twin2 = get("dpmpp_2m_sde", eta=tau * tau, solver_type="heun")(TARGET.denoiser, x.clone(), sigmas, noise)
        assert rel_diff(sa(sigmas, x, noise, predictor_order=2, **full), twin2) < 1e-12, tau
        twin3 = get("dpmpp_3m_sde", eta=tau * tau, variant="lagrange")(TARGET.denoiser, x.clone(), sigmas, noise)
        assert rel_diff(sa(sigmas, x, noise, predictor_order=3, **full), twin3) < 1e-12, tau
    for p in (1, 2, 3):  # tau = 0, Appendix D's rescaling: UniPC with B(h) = h
        common = {"predictor_order": p, "tau": 0.0, "lower_order_final": False, "variant": "rescaled"}
        unipc = get(f"unipc_bh1_p{p}")(TARGET.denoiser, x.clone(), sigmas)
        assert rel_diff(sa(sigmas, x, noise, corrector_order=p + 1, **common), unipc) < 1e-12, p
        unip = get(f"unip_bh1_p{p}")(TARGET.denoiser, x.clone(), sigmas)
        assert rel_diff(sa(sigmas, x, noise, corrector_order=0, **common), unip) < 1e-12, p
    # the comparisons above are not between trivially equal maps
    assert rel_diff(ddpm, euler) > 1e-3
    assert rel_diff(sa(sigmas, x, noise, tau=0.0), sa(sigmas, x, noise, tau=0.0, corrector_order=0)) > 1e-8
    assert rel_diff(sa(sigmas, x, noise, tau=0.0, variant="rescaled"), sa(sigmas, x, noise, tau=0.0)) > 1e-8


@pytest.mark.parametrize("grid", ["edm12", "irregular_to_zero"])
def test_tau1_order1_is_ddpm_posterior_step(grid):
    """x' = (t'^2/t^2) x + (1 - t'^2/t^2) D + t' sqrt(1 - t'^2/t^2) z (Ho et al. 2020's posterior in canonical
    variables), written here; into 0: x <- D."""
    sigmas = GRIDS[grid]
    x = start(sigmas)
    noise = GaussianNoise(x, seed=5)
    y, s = x.clone(), sigmas.tolist()
    for i in range(len(s) - 1):
        t, tn = s[i], s[i + 1]
        d = TARGET.denoiser(y, t)
        a = tn * tn / (t * t)
        y = d if tn == 0 else a * y + (1 - a) * d + tn * math.sqrt(1 - a) * noise(i, t, tn)
    got = sa(sigmas, x, noise, predictor_order=1, corrector_order=0, tau=1.0)
    assert rel_diff(got, y) < 1e-12


@pytest.mark.parametrize("lower_order_final", [False, True])
@pytest.mark.parametrize("grid", ["edm12", "logsnr", "edm9_to_zero"])
def test_tau0_order2_is_exponential_ab2(grid, lower_order_final):
    """tau = 0, p = 2, c = 0: D linear in lambda through (lambda_prev, D_prev), (lambda, D) integrated exactly,
        x' = e^{-h} x + (1 - e^{-h}) D + (h - 1 + e^{-h})/h (D - D_prev)/r,   r = h_prev/h
    (first step: DDIM; lower_order_final: the last predictor step too). Not dpmpp_2m, whose D_1 weight is
    (1 - e^{-h})/2: the two differ by O(h^3) per step."""
    sigmas = GRIDS[grid]
    x = start(sigmas)
    s = sigmas.tolist()
    n_pred = len(s) - 1 - (s[-1] == 0)
    y, d_prev = x.clone(), None
    for i in range(len(s) - 1):
        t, tn = s[i], s[i + 1]
        d = TARGET.denoiser(y, t)
        if tn == 0:
            y = d
            break
        h = math.log(t / tn)
        y_new = math.exp(-h) * y + (1 - math.exp(-h)) * d
        if i > 0 and not (lower_order_final and i == n_pred - 1):
            r = math.log(s[i - 1] / t) / h
            y_new = y_new + (h - 1 + math.exp(-h)) / h * (d - d_prev) / r
        y, d_prev = y_new, d
    got = sa(sigmas, x, ZeroNoise(x), predictor_order=2, corrector_order=0, tau=0.0,
             lower_order_final=lower_order_final)
    assert rel_diff(got, y) < 1e-12
    dpmpp_2m = get("dpmpp_2m", lower_order_final=lower_order_final)(TARGET.denoiser, x.clone(), sigmas)
    assert rel_diff(got, dpmpp_2m) > 1e-9  # a different second-order step (large on these coarse grids)


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("grid", ["edm12", "irregular_to_zero"])
def test_corrector_by_hand(grid, c):
    """p = 1, tau = 0.6, corrector of order c written here: after D_new = D(x_pred, t') (the next step's call), the
    step from the same start x_s with the same draw z is redone with the weights of the constant (c = 1: [1 - e^{-g}])
    or linear (c = 2: new m1 = 1 - (1 - e^{-g})/g, old (1 - e^{-g}) - m1) interpolant, g = (1 + tau^2) h; the
    corrected x is the next start, D at the predicted x stays the history. No corrector after the last step."""
    tau = 0.6
    a = 1 + tau * tau
    sigmas = GRIDS[grid]
    x = start(sigmas)
    noise = GaussianNoise(x, seed=11)
    s = sigmas.tolist()
    y, x_start, z_prev, d_prev = x.clone(), None, None, None
    for i in range(len(s) - 1):
        t, tn = s[i], s[i + 1]
        d = TARGET.denoiser(y, t)
        if tn == 0:
            y = d
            break
        if i > 0:  # correct the interval s[i-1] -> s[i]
            h = math.log(s[i - 1] / t)
            g = a * h
            p1 = -math.expm1(-g)
            m1 = 1 - p1 / g
            w_new, w_old = (p1, 0.0) if c == 1 else (m1, p1 - m1)
            y = (math.exp(-g) * x_start + w_new * d + w_old * d_prev
                 + t * math.sqrt(-math.expm1(-2 * tau * tau * h)) * z_prev)
        h = math.log(t / tn)
        g = a * h
        z = noise(i, t, tn)
        x_start, z_prev, d_prev = y, z, d
        y = math.exp(-g) * y + (-math.expm1(-g)) * d + tn * math.sqrt(-math.expm1(-2 * tau * tau * h)) * z
    got = sa(sigmas, x, noise, predictor_order=1, corrector_order=c, tau=tau, lower_order_final=False)
    assert rel_diff(got, y) < 1e-12


class Replay:
    """A noise source giving the k-th distinct key the k-th draw of torch.randn(generator seeded `seed`): the
    order in which diffusers' scheduler draws its noise (one draw per step)."""

    def __init__(self, like: torch.Tensor, seed: int):
        self.shape, self.gen, self.cache = like.shape, torch.Generator().manual_seed(seed), {}

    def __call__(self, i, s, t):
        if (i, s, t) not in self.cache:
            self.cache[(i, s, t)] = torch.randn(self.shape, generator=self.gen, dtype=F64)
        return self.cache[(i, s, t)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_matches_diffusers_sasolver_scheduler():
    """diffusers' SASolverScheduler (VP, data prediction, prediction_type 'sample', tau_func constant) in canonical
    variables: y = x_vp sqrt(1 + sigma^2), its `sigmas` are canonical sigmas (float32) and its lambda is -log sigma.
    It applies Appendix D's order-2 rescaling and lower_order_final; its draws are replayed in the same order. Its
    coefficients are computed in float32, hence the tolerance."""
    pytest.importorskip("diffusers")
    from diffusers.schedulers.scheduling_sasolver import SASolverScheduler

    for tau in (0.0, 1.0):
        for p, c in ((2, 2), (3, 4), (1, 1)):
            sched = SASolverScheduler(predictor_order=p, corrector_order=c, prediction_type="sample",
                                      tau_func=lambda t, tau=tau: tau)
            sched.set_timesteps(10)
            sig = sched.sigmas.to(F64)
            y0 = start(sig, n=8)
            gen = torch.Generator().manual_seed(5)
            xv = y0 / math.sqrt(1 + float(sig[0]) ** 2)
            for k, t in enumerate(sched.timesteps):
                level = float(sig[k])
                xv = sched.step(TARGET.denoiser(xv * math.sqrt(1 + level ** 2), level), t, xv,
                                generator=gen).prev_sample
            want = xv * math.sqrt(1 + float(sig[-1]) ** 2)
            params = {"predictor_order": p, "corrector_order": c, "tau": tau}
            got = get("sa_solver", variant="rescaled", **params)(TARGET.denoiser, y0.clone(), sig, Replay(y0, 5))
            assert rel_diff(got, want) < 1e-5, (tau, p, c)
            if p == 2:  # the exact Lagrange weights are a different sampler
                other = get("sa_solver", variant="lagrange", **params)(TARGET.denoiser, y0.clone(), sig, Replay(y0, 5))
                assert rel_diff(other, want) > 1e-4


# ------------------------------------------------------------------------------------------ law, cost
def test_sa_converges_in_law_1d():
    """Default SA-Solver (p = 3, c = 4, tau = 1), N = 128 EDM steps 80 -> 0.002, n = 20000: the exact p_0.002."""
    mu, c, n = 0.5, 1.0, 20000
    target = Gaussian([mu], [[c]])
    sigmas = edm_grid(128)
    x = target.sample(n, sigma=80.0, generator=torch.Generator().manual_seed(8))
    out = get("sa_solver")(target.denoiser, x, sigmas, GaussianNoise(x, seed=9))
    mc_check(out[:, 0], mu, c + 0.002 ** 2, allowance=0.01)


@pytest.mark.parametrize("params", [{}, {"tau": 0.0}, {"corrector_order": 0}, {"predictor_order": 1}])
def test_sa_counted_nfe_and_draws(params):
    sampler = get("sa_solver", **params)
    for sigmas in (edm_grid(7), edm_grid(6, zero=True)):
        x = start(sigmas, n=4)
        counted, zero = CountedDenoiser(TARGET.denoiser), ZeroNoise(x)
        sampler(counted, x, sigmas, zero)
        n = len(sigmas) - 1
        assert counted.nfe == (sampler.nfe_to_zero(n) if sigmas[-1] == 0 else sampler.nfe(n)) == n
        s = sigmas.tolist()
        steps = n - (s[-1] == 0) if sampler.tau > 0 else 1  # tau = 0: only the loop's check of draw 0
        assert zero.keys == [(i, s[i], s[i + 1]) for i in range(steps)]


@pytest.mark.parametrize("params,word", [
    ({"predictor_order": 0}, "predictor_order"), ({"predictor_order": 5}, "predictor_order"),
    ({"predictor_order": 2.0}, "predictor_order"), ({"predictor_order": True}, "predictor_order"),
    ({"corrector_order": -1}, "corrector_order"), ({"corrector_order": 5}, "corrector_order"),
    ({"tau": -0.1}, "tau"), ({"tau": math.nan}, "tau"), ({"tau": "1"}, "tau"),
    ({"lower_order_final": 1}, "lower_order_final"), ({"variant": "few_steps"}, "variant"),
    ({"eta": 1.0}, "params"),
])
def test_sa_bad_parameters_named(params, word):
    with pytest.raises(InputError, match=word):
        get("sa_solver", **params)


def test_missing_or_bad_noise_refused_before_any_call():
    sigmas = GRIDS["edm12"]
    x = start(sigmas, n=4)
    for name in ("sa_solver", "restart"):
        for noise in (None, 3.0, lambda i, s, t: torch.zeros(4, 3, dtype=F64)):
            with pytest.raises(InputError, match="noise"):
                get(name)(refuse, x.clone(), sigmas, noise)
    with pytest.raises(InputError, match="noise"):  # tau = 0 still takes a source (a stochastic sampler's call)
        get("sa_solver", tau=0.0)(refuse, x.clone(), sigmas, None)


def test_sa_declarations():
    sampler = get("sa_solver")
    assert sampler.params() == {"predictor_order": 3, "corrector_order": 4, "tau": 1.0, "lower_order_final": True,
                                "variant": "lagrange"}
    assert sampler.needs_noise and sampler.order is None and sampler.claim_source and sampler.final_step
    assert (sampler.weak_order, sampler.strong_order) == (None, None)
    assert (sampler.nfe_per_step, sampler.final_step_nfe) == (1, 1)


# ================================================================================================ Restart
def restart_keys(n_main: int, low: float, t_max: float, k: int) -> list[tuple[int, float, float]]:
    """The documented draw keys: (N + j, hi_j, lo_j), [lo_j, hi_j] the j-th of K equal parts of [low, t_max]."""
    delta = (t_max - low) / k
    return [(n_main + j, t_max if j == k - 1 else low + (j + 1) * delta, low + j * delta) for j in range(k)]


@pytest.mark.parametrize("grid", GRIDS)
def test_restart_k0_is_heun(grid):
    sigmas = GRIDS[grid]
    x = start(sigmas)
    heun = get("heun")(TARGET.denoiser, x.clone(), sigmas)
    got = get("restart", K=0)(TARGET.denoiser, x.clone(), sigmas, GaussianNoise(x, seed=1))
    assert rel_diff(got, heun) < 1e-13


@pytest.mark.parametrize("zero", [False, True])
def test_restart_is_heun_jump_heun_composition(zero):
    """Written from the official loop: Heun on the main grid up to the point nearest to t_min (here 0.07 is not a
    grid point), then K times: x += sqrt(t_max^2 - sigma_i^2) z and Heun on EDM's rho = 7 grid from t_max to
    sigma_i in n_restart steps; then Heun on the rest of the main grid."""
    sigmas = edm_grid(14, zero=zero)
    t_min, t_max, k, n_r = 0.07, 0.4, 3, 4
    s = sigmas.tolist()
    idx = min(range(len(s)), key=lambda j: abs(s[j] - t_min))
    assert s[idx] != t_min and 0 < idx < len(s) - 1
    x = start(sigmas)
    noise = GaussianNoise(x, seed=4)
    heun = get("heun")
    y = heun(TARGET.denoiser, x.clone(), sigmas[: idx + 1])
    low = s[idx]
    j = torch.arange(n_r + 1, dtype=F64)
    sub = (t_max ** (1 / 7) + j / n_r * (low ** (1 / 7) - t_max ** (1 / 7))) ** 7
    sub[0], sub[-1] = t_max, low
    for key in restart_keys(len(s) - 1, low, t_max, k):
        y = y + math.sqrt(t_max ** 2 - low ** 2) * noise(*key)
        y = heun(TARGET.denoiser, y, sub)
    y = heun(TARGET.denoiser, y, sigmas[idx:])
    got = get("restart", t_min=t_min, t_max=t_max, K=k, n_restart=n_r)(TARGET.denoiser, x.clone(), sigmas, noise)
    assert rel_diff(got, y) < 1e-12
    # and the draws are exactly the documented keys: distinct indices, disjoint intervals
    zero_noise = ZeroNoise(x)
    get("restart", t_min=t_min, t_max=t_max, K=k, n_restart=n_r)(TARGET.denoiser, x.clone(), sigmas, zero_noise)
    assert zero_noise.keys == restart_keys(len(s) - 1, low, t_max, k)


def test_restart_draws_independent_under_interval_keyed_noise():
    """BrownianNoise returns the same draw for the same interval; the K restart draws use disjoint intervals, so
    they are distinct (independent increments)."""
    sigmas = edm_grid(10)
    x = start(sigmas, n=4)
    brownian = BrownianNoise(x, sigma_max=80.0, seed=2)
    seen = []
    get("restart", K=3)(TARGET.denoiser, x.clone(), sigmas, lambda i, s, t: seen.append(brownian(i, s, t)) or seen[-1])
    draws = seen[1:]  # the first is the loop's check of the first draw (the same key as draw 0)
    assert len(draws) == 3 and torch.equal(seen[0], draws[0])
    assert all(rel_diff(draws[a], draws[b]) > 0.1 for a in range(3) for b in range(a))


def test_restart_jump_is_exact_in_law():
    """Forward noising: an exact sample of p_t_min plus sqrt(t_max^2 - t_min^2) z is an exact sample of p_t_max
    (1-D Gaussian target N(0.5, 0.0025): the jump's variance dominates, so a wrong scale would show)."""
    mu, c, n, t_min, t_max = 0.5, 0.0025, 200000, 0.06, 0.3
    target = Gaussian([mu], [[c]])
    sampler = get("restart", t_min=t_min, t_max=t_max)
    x = target.sample(n, sigma=t_min, generator=torch.Generator().manual_seed(1))
    z = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(2))
    mc_check(sampler.jump(x, z, t_min)[:, 0], mu, c + t_max ** 2, allowance=0.0)
    assert float(sampler.jump(torch.zeros(1, 1, dtype=F64), torch.ones(1, 1, dtype=F64), t_min)) == pytest.approx(
        math.sqrt(t_max ** 2 - t_min ** 2), rel=1e-15)


def test_restart_converges_in_law_1d():
    """K = 2 (defaults), N = 64 EDM steps 80 -> 0.002, n = 20000: the exact p_0.002."""
    mu, c, n = 0.5, 1.0, 20000
    target = Gaussian([mu], [[c]])
    sigmas = edm_grid(64)
    x = target.sample(n, sigma=80.0, generator=torch.Generator().manual_seed(8))
    out = get("restart")(target.denoiser, x, sigmas, GaussianNoise(x, seed=9))
    mc_check(out[:, 0], mu, c + 0.002 ** 2, allowance=0.01)


def test_restarts_contract_the_main_grids_error():
    """Xu et al.'s mechanism, exactly on a Gaussian target (the output law read off with probe columns): with a
    fine Heun run inside [t_min, t_max], K = 2 restarts leave a smaller variance error at sigma_min than the plain
    Heun run on the same coarse main grid (which they contain); a coarse restart run adds its own error."""
    mu, c = 0.5, 0.05
    target = Gaussian([mu], [[c]])
    sigmas, exact = edm_grid(64), c + 0.002 ** 2
    mean, root = torch.tensor([mu], dtype=F64), torch.tensor([[math.sqrt(c + 80.0 ** 2)]], dtype=F64)

    def bias(**params):
        law = output_law(get("restart", **params), target.denoiser, mean, root, sigmas)
        assert abs(float(law.mean[0]) - mu) < 1e-12
        return abs(float(law.covariance[0, 0]) / exact - 1)

    plain, fine, coarse = bias(K=0), bias(K=2, n_restart=32), bias(K=2, n_restart=2)
    assert fine < plain / 3 and coarse > plain, (plain, fine, coarse)


@pytest.mark.parametrize("params", [{}, {"K": 0}, {"K": 3, "n_restart": 1}, {"K": 1, "n_restart": 5}])
def test_restart_counted_nfe(params):
    sampler = get("restart", **params)
    for sigmas in (edm_grid(9), edm_grid(8, zero=True)):
        x = start(sigmas, n=4)
        counted = CountedDenoiser(TARGET.denoiser)
        sampler(counted, x, sigmas, GaussianNoise(x, seed=2))
        n, into_zero = len(sigmas) - 1, float(sigmas[-1]) == 0
        declared = sampler.nfe_to_zero(n) if into_zero else sampler.nfe(n)
        restarts = 2 * sampler.K * sampler.n_restart
        assert counted.nfe == declared == 2 * n - into_zero + restarts


@pytest.mark.parametrize("params,word", [
    ({"t_min": 0.3, "t_max": 0.3}, "t_max"), ({"t_min": 0.5, "t_max": 0.3}, "t_max"), ({"t_min": 0.0}, "t_min"),
    ({"t_min": -1.0}, "t_min"), ({"t_max": math.inf}, "t_max"), ({"K": -1}, "K"), ({"K": 1.5}, "K"),
    ({"K": True}, "K"), ({"n_restart": 0}, "n_restart"), ({"n_restart": 2.0}, "n_restart"),
    ({"S_noise": 0.0}, "S_noise"), ({"S_noise": math.nan}, "S_noise"), ({"rho": 7}, "params"),
])
def test_restart_bad_parameters_named(params, word):
    with pytest.raises(InputError, match=word):
        get("restart", **params)


@pytest.mark.parametrize("sigmas,params", [
    ([80.0, 10.0, 1.0], {"t_min": 60.0, "t_max": 90.0}),  # nearest point is the first one
    ([1.0, 0.5, 0.0], {"t_min": 0.01, "t_max": 0.3}),  # nearest point is 0
    ([1.0, 0.5, 0.1], {"t_min": 0.45, "t_max": 0.46}),  # nearest point is not below t_max
])
def test_restart_unreachable_interval_refused_before_any_call(sigmas, params):
    sigmas = torch.tensor(sigmas, dtype=F64)
    x = start(sigmas, n=4)
    with pytest.raises(InputError, match="t_min"):
        get("restart", **params)(refuse, x, sigmas, GaussianNoise(x, seed=0))
    get("restart", K=0, **params)(TARGET.denoiser, x, sigmas, GaussianNoise(x, seed=0))  # K = 0: nothing to place


def test_restart_declarations():
    sampler = get("restart")
    assert sampler.params() == {"t_min": 0.06, "t_max": 0.3, "K": 2, "n_restart": 2, "S_noise": 1.0}
    assert sampler.needs_noise and sampler.order is None and sampler.claim_source and sampler.final_step
    assert (sampler.weak_order, sampler.strong_order) == (None, None)
    assert sampler.nfe(18) == 2 * 18 + 2 * 2 * 2 and sampler.nfe_to_zero(18) == 2 * 18 - 1 + 8


@pytest.mark.parametrize("name", ["sa_solver", "restart"])
def test_float32_runs_in_float32(name):
    sigmas = GRIDS["irregular_to_zero"]
    x = start(sigmas, n=8).float()

    def denoiser(y, s):
        return TARGET.denoiser(y.double(), s).float()

    noise32 = GaussianNoise(x, seed=1)
    out = get(name, t_min=0.2, t_max=0.5) if name == "restart" else get(name)
    got = out(denoiser, x, sigmas, noise32)
    ref = out(TARGET.denoiser, x.double(), sigmas, lambda i, s, t: noise32(i, s, t).double())
    assert got.dtype == torch.float32 and rel_diff(got.double(), ref) < 1e-4
