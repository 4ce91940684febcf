"""Bad inputs to the oracle's public API (analytic/): each is refused with a ValueError naming the argument
(issue: reliability; table format in tests/_bad_inputs.py)."""

import math

import numpy as np
import torch
from _bad_inputs import Bad, check, parametrize

from analytic import (
    Gaussian,
    GaussianMixture,
    bures_w2,
    exact_flow,
    gaussian_flow_map,
    pot_w2,
    processes,
    reference_flow,
    sliced_w2,
    sliced_w2_gmm,
    sync_error,
    w2_1d,
    w2_1d_laws,
)
from analytic.calculus import denoiser_dsigma, expansion_rate, velocity
from analytic.wasserstein import w2_1d_cloud

F64 = torch.float64
G = Gaussian([0.0, 1.0], [[1.0, 0.2], [0.2, 0.5]])
M = GaussianMixture([0.3, 0.7], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2), 0.5 * np.eye(2)])
M1 = GaussianMixture([0.3, 0.7], [[-1.0], [1.0]], [[[0.5]], [[1.0]]])
X = torch.zeros(3, 2, dtype=F64)
EYE = [[1.0, 0.0], [0.0, 1.0]]
VP, FM, COS, VE = (processes.get(n) for n in ("vp", "fm", "vp-cosine", "ve"))

CASES = [
    # --- constructors
    Bad("mixture-weights-string", lambda p: GaussianMixture("ab", [[0.0]], [[[1.0]]]), ValueError, "weights"),
    Bad("mixture-weights-bool-tensor", lambda p: GaussianMixture(torch.tensor([True]), [[0.0]], [[[1.0]]]),
        ValueError, ("weights", "bool")),
    Bad("mixture-means-complex", lambda p: GaussianMixture([1.0], torch.tensor([[1 + 1j]]), [[[1.0]]]),
        ValueError, ("means", "complex")),
    Bad("mixture-weights-not-summing", lambda p: GaussianMixture([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
        ValueError, "weights"),
    Bad("mixture-covariance-indefinite", lambda p: GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]),
        ValueError, "covariances"),
    Bad("gaussian-ragged-covariance", lambda p: Gaussian([0.0, 1.0], [[1.0], [0.0, 1.0]]), ValueError, "covariance"),
    Bad("from-diagonal-zero-variance", lambda p: GaussianMixture.from_diagonal([1.0], [[0.0, 1.0]], [[1.0, 0.0]]),
        ValueError, "variances"),
    # --- closed forms
    Bad("denoiser-sigma-bool", lambda p: G.denoiser(X, True), ValueError, "sigma"),
    Bad("denoiser-sigma-nan", lambda p: M.denoiser(X, np.float64("nan")), ValueError, "sigma"),
    Bad("denoiser-sigma-none", lambda p: M.denoiser(X, None), ValueError, "sigma"),
    Bad("denoiser-sigma-wrong-batch", lambda p: M.denoiser(X, torch.ones(4, dtype=F64)), ValueError, "sigma"),
    Bad("denoiser-x-complex", lambda p: M.denoiser(torch.zeros(3, 2, dtype=torch.complex128), 1.0),
        ValueError, ("x", "complex")),
    Bad("denoiser-x-bool", lambda p: M.denoiser(torch.zeros(3, 2, dtype=torch.bool), 1.0), ValueError, "x"),
    Bad("denoiser-x-empty-batch", lambda p: M.denoiser(torch.zeros(0, 2, dtype=F64), 1.0), ValueError, "x"),
    Bad("denoiser-x-meta", lambda p: M.denoiser(torch.zeros(3, 2, device="meta"), 1.0), ValueError, "x"),
    Bad("score-x-wrong-dimension", lambda p: M.score(torch.zeros(3, 5, dtype=F64), 1.0), ValueError, "x"),
    Bad("log-prob-unrepresentable", lambda p: M.log_prob(torch.full((1, 2), 1e300, dtype=F64), 0.0),
        ValueError, "x"),
    Bad("posterior-covariance-sigma-2d", lambda p: M.posterior_covariance(X, torch.ones(3, 1)), ValueError, "sigma"),
    Bad("marginal-sigma-batch", lambda p: M.marginal(torch.ones(3, dtype=F64)), ValueError, "sigma"),
    Bad("marginal-covariance-overflow", lambda p: M.marginal(1e200), ValueError, "sigma"),
    # --- sampling
    Bad("sample-n-bool", lambda p: G.sample(True), ValueError, "n"),
    Bad("sample-n-float", lambda p: G.sample(3.0), ValueError, "n"),
    Bad("sample-n-huge", lambda p: G.sample(10**12), ValueError, "n"),
    Bad("sample-generator-seed-int", lambda p: G.sample(4, generator=0), ValueError, "generator"),
    # --- 1-D laws
    Bad("cdf-x-matrix", lambda p: M1.cdf(torch.zeros(2, 2, dtype=F64)), ValueError, "x"),
    Bad("quantile-u-one", lambda p: M1.quantile([0.5, 1.0]), ValueError, "u"),
    Bad("quantile-u-nan", lambda p: M1.quantile([math.nan]), ValueError, "u"),
    Bad("isf-sigma-negative", lambda p: M1.isf([0.1], sigma=-1.0), ValueError, "sigma"),
    # --- flows and calculus
    Bad("flow-map-mixture", lambda p: gaussian_flow_map(M, X, 1.0, 0.5), ValueError, "gaussian"),
    Bad("flow-map-sigma-batch", lambda p: gaussian_flow_map(G, X, torch.ones(3), 0.5), ValueError, "sigma_from"),
    Bad("reference-rtol-string", lambda p: reference_flow(M, X, 1.0, 0.5, rtol="1e-3"), ValueError, "rtol"),
    Bad("reference-atol-inf", lambda p: reference_flow(M, X, 1.0, 0.5, atol=math.inf), ValueError, "atol"),
    Bad("reference-rtol-below-floor", lambda p: reference_flow(M, X, 1.0, 0.5, rtol=1e-300), ValueError, "rtol"),
    Bad("reference-return-info-string", lambda p: reference_flow(M, X, 1.0, 0.5, return_info="no"),
        ValueError, "return_info"),
    Bad("exact-flow-target-string", lambda p: exact_flow("gmm", X, 1.0, 0.5), ValueError, "target"),
    Bad("exact-flow-x-list-wrong-d", lambda p: exact_flow(M, [[0.0, 0.0, 0.0]], 1.0, 1.0), ValueError, "x"),
    Bad("velocity-sigma-zero", lambda p: velocity(M, X, 0.0), ValueError, "sigma"),
    Bad("denoiser-dsigma-sigma-batch", lambda p: denoiser_dsigma(M, X, torch.ones(3)), ValueError, "sigma"),
    Bad("expansion-rate-target-gaussian-params", lambda p: expansion_rate((G.mean, G.covariance), X, 1.0),
        ValueError, "target"),
    # --- Wasserstein
    Bad("bures-empty", lambda p: bures_w2([], np.zeros((0, 0)), [], np.zeros((0, 0))), ValueError, "m1"),
    Bad("bures-covariance-complex", lambda p: bures_w2([0.0], torch.tensor([[1 + 0j]]), [0.0], [[1.0]]),
        ValueError, "S1"),
    Bad("w2-1d-rtol-string", lambda p: w2_1d(lambda x: x, M1, M1, rtol="a"), ValueError, "rtol"),
    Bad("w2-1d-laws-unknown-keyword", lambda p: w2_1d_laws(M1, M1, tol=1e-3), ValueError, "tol"),
    Bad("w2-1d-target-2d", lambda p: w2_1d_laws(M1, M), ValueError, "target"),
    Bad("w2-1d-cloud-empty", lambda p: w2_1d_cloud([], M1), ValueError, "y"),
    Bad("sync-error-mismatched-dims", lambda p: sync_error(torch.zeros(3, 2), torch.zeros(3, 3)), ValueError, "x_ref"),
    Bad("pot-mismatched-dims", lambda p: pot_w2(torch.zeros(3, 2), torch.zeros(3, 3)), ValueError, "Y"),
    Bad("pot-empty-cloud", lambda p: pot_w2(torch.zeros(0, 2), torch.zeros(3, 2)), ValueError, "X"),
    Bad("pot-nan-cloud", lambda p: pot_w2(torch.full((3, 2), math.nan), torch.zeros(3, 2)), ValueError, "X"),
    Bad("pot-debias-string", lambda p: pot_w2(torch.zeros(3, 2), torch.zeros(3, 2), debias="no"),
        ValueError, "debias"),
    Bad("sliced-generator-string", lambda p: sliced_w2(torch.zeros(3, 2), torch.zeros(3, 2), generator="seed"),
        ValueError, "generator"),
    Bad("sliced-n-projections-float", lambda p: sliced_w2(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=8.0),
        ValueError, "n_projections"),
    Bad("sliced-gmm-dimension", lambda p: sliced_w2_gmm(torch.zeros(3, 3), M), ValueError, "gmm"),
    # --- processes
    Bad("vp-sigma-beyond-t-max", lambda p: VP.sigma(2.0), ValueError, ("t", "vp", "[0, 1.0]")),
    Bad("vp-sigma-nan", lambda p: VP.sigma(math.nan), ValueError, ("t", "vp", "finite")),
    Bad("vp-sigma-inv-negative", lambda p: VP.sigma_inv(-1.0), ValueError, ("sigma", "vp")),
    Bad("vp-sigma-inv-beyond-range", lambda p: VP.sigma_inv(1e6), ValueError, ("sigma", "vp", "152.167")),
    Bad("fm-sigma-at-one", lambda p: FM.sigma(1.0), ValueError, ("t", "fm")),
    Bad("cosine-scale-tensor-out-of-domain", lambda p: COS.scale(torch.tensor([0.5, 0.9995], dtype=F64)),
        ValueError, ("t", "vp-cosine", "0.9995")),
    Bad("cosine-scale-deriv-bool-tensor", lambda p: COS.scale_deriv(torch.tensor([True])), ValueError, ("t", "bool")),
    Bad("vp-sigma-deriv-string", lambda p: VP.sigma_deriv("0.5"), ValueError, ("t", "vp")),
    Bad("ve-lam-negative", lambda p: VE.lam(-1.0), ValueError, ("t", "ve")),
    Bad("fm-sigma-inv-inf-tensor", lambda p: FM.sigma_inv(torch.tensor([1.0, math.inf], dtype=F64)),
        ValueError, ("sigma", "fm")),
    Bad("vp-drift-beyond-t-max", lambda p: VP.drift(X, 1.5, X), ValueError, ("t", "vp")),
    Bad("process-name-list", lambda p: processes.get(["ve"]), ValueError, "name"),
    Bad("process-unknown-parameter", lambda p: processes.get("vp", beta=1.0), ValueError, "beta"),
    Bad("process-parameter-nan", lambda p: processes.get("vp", beta_d=math.nan), ValueError, "beta_d"),
    Bad("cosine-t-max-at-pole", lambda p: processes.get("vp-cosine", t_max=1.0), ValueError, "t_max"),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_table_size():
    assert len(CASES) >= 30
