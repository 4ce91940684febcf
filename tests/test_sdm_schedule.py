"""SDM's Wasserstein-bounded schedule (sdm_verify/sdm_schedule.py): the eta estimator against the exact Euler local
error, the build's step-size law, the N-step resampling invariants and the registered "sdm" schedule."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analytic import Gaussian, GaussianMixture, gaussian_flow_map
from sdm_verify import count_nfe, schedules
from sdm_verify.studies.sdm import schedule as ss

F64 = torch.float64
GMM = GaussianMixture([0.2, 0.5, 0.3], [[-2.0], [0.5], [2.5]], [[[0.1]], [[0.25]], [[0.05]]])
C2 = 0.3  # variance of the 1-D Gaussian below
G1 = Gaussian([0.2], [[C2]])


def draws(target=GMM, n=64, sigma=80.0, seed=0):
    return target.sample(n, sigma=sigma, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- the estimator
def test_norms():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=F64)  # per-sample norms 5, 0, 1
    assert ss.batch_norm(v, "mean") == pytest.approx(2.0, rel=1e-15)
    assert ss.batch_norm(v, "rms") == pytest.approx(math.sqrt(26.0 / 3.0), rel=1e-15)


def test_eta_tolerance():
    assert ss.eta_tolerance(80.0, 80.0, 0.02, 0.2, 1.0) == pytest.approx(0.2, rel=1e-15)
    assert ss.eta_tolerance(20.0, 80.0, 0.02, 0.2, 2.0) == pytest.approx(0.02 + 0.18 / 16, rel=1e-15)
    assert ss.eta_tolerance(100.0, 80.0, 0.02, 0.2, 1.0) == pytest.approx(0.2, rel=1e-15)  # clipped


@pytest.mark.theory
def test_estimate_etas_on_a_gaussian_matches_the_closed_form():
    """On N(mu, c^2) every Euler quantity is a multiple of y = x - mu. With t = s - h:
    exact local error |y| |sqrt((c^2 + t^2)/(c^2 + s^2)) - 1 + h s/(c^2 + s^2)|,
    eta = (h/2)|y| |t (1 - h s/(c^2 + s^2))/(c^2 + t^2) - s/(c^2 + s^2)|, so eta / tau is a function of (s, h) only."""
    sig = torch.tensor([20.0, 9.0, 2.0, 0.7, 0.1, 0.0], dtype=F64)
    x = draws(G1, n=16, sigma=20.0)
    path = ss.euler_eta_path(G1.denoiser, x, sig, "rms")
    etas = path["etas"]
    assert path["nfe"] == 2 * 5 - 1 and etas[-1] == 0.0  # 2 per interval above 0, 1 into 0
    for i in range(4):
        s, t = float(sig[i]), float(sig[i + 1])
        h = s - t
        y_rms = float((path["xs"][i] - 0.2).norm(dim=1).square().mean().sqrt())
        eta = 0.5 * h * abs(t * (1 - h * s / (C2 + s * s)) / (C2 + t * t) - s / (C2 + s * s))
        assert float(etas[i]) == pytest.approx(eta * y_rms, rel=1e-10)  # closed form; h + 1e-12 guard is 1e-13 rel
        err = gaussian_flow_map(G1, path["xs"][i], s, t) - path["x_euler"][i]
        tau = float(err.norm(dim=1).square().mean().sqrt())
        assert float(etas[i]) >= tau  # on a Gaussian eta over-estimates the local error in every direction


@pytest.mark.theory
def test_eta_over_tau_tends_to_one():
    """docs/sdm.md §6 (d): eta/tau = 1 + O(h); 1.11 at h = 0.1 sigma, 1.01 at 0.01 sigma (high noise). At sigma >> c the
    1-D ratio is 1/(1 - r) + O(c^2/sigma^2) with r = h/sigma (expand the closed form above)."""
    x = draws(G1, n=8, sigma=40.0)
    for r in (0.1, 0.01):
        sig = torch.tensor([40.0, 40.0 * (1 - r)], dtype=F64)
        path = ss.euler_eta_path(G1.denoiser, x, sig, "mean")
        tau = float((gaussian_flow_map(G1, x, 40.0, 40.0 * (1 - r)) - path["x_euler"][0]).norm(dim=1).mean())
        assert float(path["etas"][0]) / tau == pytest.approx(1 / (1 - r), rel=1e-3)  # c^2/sigma^2 ~ 2e-4


# ----------------------------------------------------------------------------------------- the build
def test_build_step_size_law_and_nfe():
    """docs/sdm.md §6 (f): an unclipped step: dsigma = gamma sqrt(2 eta/S), so h^2 S/2 = gamma^2 eta at the proposal; an
    accepted trial satisfies eta_trial <= eta; the log's NFE is the counted NFE; the grid is sigma_max ... sigma_min,
    0."""
    den = count_nfe(GMM.denoiser)
    sig, log = ss.build_initial_schedule(den, draws(), 0.002, 80.0, eta_min=2e-3, eta_max=2e-2, n_grid=18)
    assert den.nfe == log[-1]["nfe"]
    assert float(sig[0]) == 80.0 and float(sig[-2]) == 0.002 and float(sig[-1]) == 0.0
    assert bool((sig[1:] < sig[:-1]).all()) and len(sig) == len(log) + 2
    free = 0
    for r in log:
        ds = r["sigma"] - r["sigma_next"]
        assert ds >= r["h"] - 1e-12 or r["sigma_next"] == 0.002  # clipped below by the accepted trial
        if r["eta_trial"] <= r["eta"] and ds > r["h"] and r["sigma_next"] > 0.002:
            assert 0.5 * ds * ds * r["S"] == pytest.approx(0.95**2 * r["eta"], rel=1e-12)  # sqrt then square
            free += 1
    assert free > len(log) // 2
    # steps per build: 1 NFE for d, 1 per trial, at most 1 + (2 expansions + 2 shrinks + 1)
    assert len(log) * 2 <= den.nfe <= len(log) * 6


def test_smaller_eta_gives_more_steps():
    k = [len(ss.build_initial_schedule(GMM.denoiser, draws(), 0.002, 80.0, eta_min=e / 10, eta_max=e)[0])
         for e in (0.2, 0.02, 0.002)]
    assert k[0] < k[1] < k[2]


# ----------------------------------------------------------------------------------------- resampling
def edm_initial(k, smin=0.002, smax=80.0):
    """An initial schedule of k intervals above 0: k + 1 values sigma_max ... sigma_min, then 0 (k + 2 values)."""
    return torch.cat([schedules.get("edm")(k, smin, smax), torch.zeros(1, dtype=F64)])


@given(k=st.integers(3, 40), n=st.integers(2, 60), seed=st.integers(0, 10_000), q=st.sampled_from([0.0, 0.1, 0.25]))
@settings(max_examples=30, deadline=None)
def test_resample_shape_order_endpoints_and_scale_invariance(k, n, seed, q):
    """n steps: n + 1 strictly decreasing values sigma_max, ..., sigma_min, 0 (zero=True, the code's convention) or
    sigma_max ... sigma_min (zero=False); eta enters only through ratios."""
    s0 = edm_initial(k)
    etas = torch.from_numpy(np.random.default_rng(seed).uniform(0.01, 1.0, k + 1)).to(F64)
    etas[-1] = 0.0  # the step into 0 carries eta = 0 and is dropped
    for zero in (True, False):
        out = ss.resample(s0, etas, n, q=q, zero=zero)
        assert out.shape == (n + 1,) and bool((out[1:] < out[:-1]).all())
        assert float(out[0]) == 80.0
        assert (float(out[-2]), float(out[-1])) == (0.002, 0.0) if zero else float(out[-1]) == 0.002
        scaled = ss.resample(s0, etas * 1e3, n, q=q, zero=zero)
        torch.testing.assert_close(scaled, out, rtol=1e-12, atol=0)  # 1e3 scale: cumsum and linspace round alike


@pytest.mark.parametrize("n", [2, 3, 18, 40])
def test_one_interval_gives_the_edm_grid(n):
    """docs/sdm.md §6 (g): K = 1 interval (sigma_max, sigma_min, 0): PCHIP on 2 nodes is linear in tau = sigma^(1/7)."""
    s0 = torch.tensor([80.0, 0.002, 0.0], dtype=F64)
    for zero in (True, False):
        out = ss.resample(s0, [0.37, 0.0], n, q=0.0, zero=zero)
        edm = schedules.get("edm")(n, 0.002, 80.0, zero=zero)
        torch.testing.assert_close(out, edm, rtol=1e-13, atol=0)  # 7 * few eps in sigma = tau^7


@given(k=st.integers(2, 25), m=st.integers(1, 6), seed=st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_equidistribution_of_sqrt_eta(k, m, seed):
    """q = 0, power = 1/2: the new points split sum sqrt(eta_i) into equal shares. Exactly true of the PCHIP map (it
    passes through every node and is monotone): the number of new points in the initial interval j is the number of
    u_k = k L/(n - 1) in [L_j, L_{j+1}), L_j = sum_{i<j} sqrt(eta_i) (computed here in exact rational arithmetic)."""
    from fractions import Fraction

    s0 = edm_initial(k)
    rng = np.random.default_rng(seed)
    roots = [Fraction(int(v), 1000) for v in rng.integers(1, 1000, k)]  # sqrt(eta_i), exact rationals
    etas = [float(r) ** 2 for r in roots] + [0.0]
    n = m * k + 1 + int(rng.integers(0, 3))
    out = ss.resample(s0, etas, n, power=0.5, q=0.0)[:-1].numpy()
    L = [Fraction(0)]
    for r in roots:
        L.append(L[-1] + r)
    u = [L[-1] * i / (n - 1) for i in range(n)]
    lo, hi = s0[1:-1].numpy(), s0[:-2].numpy()
    for j in range(k):
        expect = sum(1 for v in u if L[j] < v < L[j + 1])  # strictly inside: ties at nodes land on the node itself
        inside = int(((out < hi[j] * (1 - 1e-12)) & (out > lo[j] * (1 + 1e-12))).sum())
        assert inside == expect


def test_equal_etas_hit_the_initial_nodes():
    """Equal eta and n - 1 = 3 K: every third new point is an initial node (PCHIP interpolates)."""
    s0 = edm_initial(8)
    out = ss.resample(s0, [1.0] * 8 + [0.0], 3 * 8 + 1, q=0.0)
    torch.testing.assert_close(out[:-1:3], s0[:-1], rtol=1e-14, atol=0)  # (sigma^(1/7))^7 round trip


def test_resample_validation():
    s0 = edm_initial(4)
    with pytest.raises(ValueError, match="^etas:"):
        ss.resample(s0, [1.0, 1.0], 4)
    with pytest.raises(ValueError, match="^etas:"):
        ss.resample(s0, [1.0, 0.0, 1.0, 1.0, 0.0], 4)  # a zero-weight interval: PCHIP needs increasing L
    with pytest.raises(ValueError, match="^n:"):
        ss.resample(s0, [1.0] * 4 + [0.0], 1)
    with pytest.raises(ValueError, match="^power:"):
        ss.resample(s0, [1.0] * 4 + [0.0], 4, power=0.0)
    with pytest.raises(ValueError, match="^q:"):
        ss.resample(s0, [1.0] * 4 + [0.0], 4, q=-1.0)


# ----------------------------------------------------------------------------------- the registered schedule
@pytest.mark.parametrize("zero", [False, True])
def test_registered_schedule(zero):
    x = draws(n=32)
    out = schedules.get("sdm")(12, 0.002, 80.0, denoiser=GMM.denoiser, x=x, zero=zero, eta_min=2e-3, eta_max=2e-2)
    assert out.shape == (13,) and bool((out[1:] < out[:-1]).all()) and float(out[0]) == 80.0
    assert float(out[-1]) == (0.0 if zero else 0.002)
    info = ss.sdm_schedule_info(12, 0.002, 80.0, denoiser=GMM.denoiser, x=x, zero=zero, eta_min=2e-3, eta_max=2e-2)
    assert torch.equal(info["sigmas"], out)


@pytest.mark.parametrize(
    "params, prefix",
    [
        ({"denoiser": None}, "denoiser"),
        ({"eta_min": 0.0}, "eta_min"),
        ({"eta_min": 0.1, "eta_max": 0.05}, "eta_max"),
        ({"eta_p": -1.0}, "eta_p"),
        ({"norm": "l1"}, "norm"),
        ({"solver": "rk4"}, "solver"),
        ({"n_grid": 1}, "n_grid"),
        ({"x": torch.zeros(3)}, "x"),
    ],
)
def test_schedule_validation(params, prefix):
    kw = {"denoiser": GMM.denoiser, "x": draws(n=4), **params}
    with pytest.raises(ValueError, match=f"^{prefix}:"):
        schedules.get("sdm")(8, 0.002, 80.0, **kw)


def test_schedule_needs_n_at_least_2():
    with pytest.raises(ValueError, match="^n:"):
        schedules.get("sdm")(1, 0.002, 80.0, denoiser=GMM.denoiser, x=draws(n=4))
