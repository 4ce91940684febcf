"""The embedded analytic targets the theory sweep runs on (built from the oracle, fixed seeds).

    gauss-4d   Gaussian, d = 4, eigenvalues (0.05, 0.2, 0.6, 1.5) in a random orientation: exact flow map and exact
               Bures W2; exercises only the linear order conditions (docs/theory.md §6).
    gmm-1d     three-component 1-D mixture: exact W2 through quantiles (flow maps are monotone in 1-D).
    gmm-8d     three-component anisotropic mixture in d = 8 (eigenvalues in [0.05, 1]): nonlinear order conditions;
               measured by the synchronous error against the DOP853 reference (an upper bound on W2).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from analytic import Gaussian, GaussianMixture


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _gauss_4d() -> GaussianMixture:
    rng = np.random.default_rng(20260401)
    q = _rotation(rng, 4)
    return Gaussian([0.5, -0.3, 0.2, 1.0], (q * np.array([0.05, 0.2, 0.6, 1.5])) @ q.T)


def _gmm_1d() -> GaussianMixture:
    return GaussianMixture([0.2, 0.5, 0.3], [[-2.0], [0.5], [2.5]], [[[0.1]], [[0.25]], [[0.05]]])


def _gmm_8d() -> GaussianMixture:
    rng = np.random.default_rng(20260402)
    d, K = 8, 3
    covs = [(q * np.exp(rng.uniform(np.log(0.05), 0.0, d))) @ q.T for q in (_rotation(rng, d) for _ in range(K))]
    return GaussianMixture([0.3, 0.45, 0.25], 1.5 * rng.standard_normal((K, d)), np.stack(covs))


_BUILDERS = {"gauss-4d": _gauss_4d, "gmm-1d": _gmm_1d, "gmm-8d": _gmm_8d}


def available() -> list[str]:
    return list(_BUILDERS)


@cache
def get(name: str) -> GaussianMixture:
    """The embedded target registered under `name`."""
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise ValueError(f"target: unknown target {name!r}; available: {', '.join(available())}") from None
