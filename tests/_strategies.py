"""Hypothesis strategies and builders for random targets, shared by the tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from analytic import GaussianMixture

F64 = torch.float64


def random_spd(rng: np.random.Generator, d: int, lo: float = 0.05, hi: float = 2.0) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-uniform in [lo, hi] and a random orientation."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.exp(rng.uniform(np.log(lo), np.log(hi), d))
    return (q * lam) @ q.T


def random_mixture(seed: int, d: int, K: int, spread: float = 2.0, lo: float = 0.05, hi: float = 2.0):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K) * 2.0)
    mu = rng.standard_normal((K, d)) * spread
    cov = np.stack([random_spd(rng, d, lo, hi) for _ in range(K)])
    return GaussianMixture(w, mu, cov)


@st.composite
def mixtures(draw, d=None, K=None):
    """A random anisotropic mixture with d in 1..8 and K in 1..4 components."""
    d = draw(d if d is not None else st.integers(1, 8))
    K = draw(K if K is not None else st.integers(1, 4))
    return random_mixture(draw(st.integers(0, 2**31 - 1)), d, K)


sigmas = st.sampled_from([0.0, 1e-3, 0.05, 0.7, 3.0, 80.0])
