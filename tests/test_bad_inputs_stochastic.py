"""Bad inputs to the stochastic samplers, their noise sources and meters (docs/stochastic.md): each refused on one
line naming the argument, before any denoiser call (the probe denoiser counts calls; `calls` is 0 in every row)."""

from __future__ import annotations

import math

import torch
from _bad_inputs import Bad, check, parametrize

import sdm_verify.solvers as solvers
from sdm_verify.errors import InputError
from sdm_verify.harness import targets
from sdm_verify.harness.noise import BrownianNoise, GaussianNoise
from sdm_verify.harness.stochastic import weak_mixture
from sdm_verify.harness.stochastic_law import StochasticGaussianMeter

F64 = torch.float64
X = torch.zeros(3, 2, dtype=F64)
GRID = torch.tensor([10.0, 1.0, 0.1], dtype=F64)


def run(name, noise, x=X, **params):
    return lambda p: solvers.get(name, **params)(p.denoiser, x.clone(), GRID, noise)


def noise_of(fn):
    return lambda i, s, t: fn()


CASES = [
    Bad(f"{name}-noise-missing", run(name, None), InputError, ("noise", name, "needs a noise source"))
    for name in ("euler_maruyama", "ddpm", "euler_ancestral", "edm_stochastic", "dpmpp_2m_sde", "sa_solver",
                 "restart")
] + [
    Bad("ddpm-noise-not-callable", run("ddpm", 3.0), InputError, ("noise", "callable")),
    Bad("ddpm-noise-wrong-shape", run("ddpm", noise_of(lambda: torch.zeros(3, 1, dtype=F64))), InputError,
        ("noise", "shape")),
    Bad("ddpm-noise-wrong-dtype", run("ddpm", noise_of(lambda: torch.zeros(3, 2))), InputError,
        ("noise", "dtype")),
    Bad("ddpm-noise-nan", run("ddpm", noise_of(lambda: torch.full((3, 2), math.nan, dtype=F64))), InputError,
        ("noise", "NaN")),
    Bad("ddpm-noise-list", run("ddpm", noise_of(lambda: [0.0] * 6)), InputError, ("noise", "list")),
    Bad("euler_maruyama-beta-negative", lambda p: solvers.get("euler_maruyama", beta=-1.0), InputError, "beta"),
    Bad("ddim_eta-eta-above-one", lambda p: solvers.get("ddim_eta", eta=2.0), InputError, "eta"),
    Bad("euler_ancestral-s_noise-zero", lambda p: solvers.get("euler_ancestral", s_noise=0.0), InputError,
        "s_noise"),
    Bad("dpmpp_2m_sde-solver_type", lambda p: solvers.get("dpmpp_2m_sde", solver_type="rk4"), InputError,
        "solver_type"),
    Bad("restart-t_min-above-t_max", lambda p: solvers.get("restart", t_min=1.0, t_max=0.5), InputError, "t_min"),
    Bad("gaussian-noise-seed-negative", lambda p: GaussianNoise(X, seed=-1), InputError, "seed"),
    Bad("gaussian-noise-like-int", lambda p: GaussianNoise(torch.zeros(3, dtype=torch.int64)), InputError, "like"),
    Bad("brownian-noise-sigma_max-zero", lambda p: BrownianNoise(X, 0.0), InputError, "sigma_max"),
    Bad("brownian-noise-outside-range", lambda p: BrownianNoise(X, 5.0)(0, 10.0, 1.0), InputError, "sigma"),
    Bad("probe-law-mixture-target", lambda p: StochasticGaussianMeter(targets.get("gmm-1d"), 10.0, 0.1),
        InputError, ("target", "Gaussian")),
    Bad("probe-law-noise-model", lambda p: StochasticGaussianMeter(targets.get("gauss-4d"), 10.0, 0.1, noise="x"),
        InputError, "noise"),
    Bad("weak_mixture-features", lambda p: weak_mixture(solvers.get("ddpm"), targets.get("gmm-1d"), features="x",
                                                        paths=8), InputError, "features"),
    Bad("weak_mixture-ns-two", lambda p: weak_mixture(solvers.get("ddpm"), targets.get("gmm-1d"), ns=(8, 16)),
        InputError, "ns"),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)
