"""Error meters: how the harness measures a sampler's error against the oracle, in float64.

A meter measures W2(law of run(x_from), p_to) where x_from ~ p_from = p_{sigma_from} exactly (the exact noisy law,
so the measured error is the discretisation error alone, with no prior mismatch) and p_to = p_{sigma_to}:

    GaussianMeter  Gaussian target. A sampler is affine on this target (docs/theory.md §3 (a)), x -> M x + c, so the
                   output law is N(M m + c, M C M^T). M and c are read off one batched run over d + 1 probes
                   (m, m + s e_1, ..., m + s e_d); W2 is the Procrustes-Bures distance with factors (M C^{1/2},
                   C_to^{1/2}): exact, no sampling error.
                   (A solver that decides on the data: M and c fitted on its decision batch, affine_of; harness.run.)
    Quantile1DMeter  1-D mixture: exact W2 through quantiles (analytic.w2_1d, adaptive Gauss-Legendre; the solver
                   is run once per refinement round).
    SyncMeter      any other mixture: the synchronous error (E||run(x) - Phi(x)||^2)^{1/2} over a fixed sample
                   (common random numbers across N) against the DOP853 reference Phi: an upper bound on W2.

Each meter states its error `floor`: measured errors within 100x of it are not used to fit orders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from analytic import GaussianMixture, reference_flow
from analytic.wasserstein import bures_w2, sync_error, w2_1d

from . import targets

F64 = torch.float64
Run = Callable[[torch.Tensor], torch.Tensor]

#: float64 round-off of a whole solver run started at sigma ~ 80 (N eps |x|, |x| ~ 100): common to every meter.
ROUNDOFF_FLOOR = 1e-13


def _sqrtm(S: torch.Tensor) -> torch.Tensor:
    w, V = torch.linalg.eigh(0.5 * (S + S.T))
    return (V * w.clamp_min(0).sqrt()) @ V.T


class Meter:
    metric = "none"
    floor = ROUNDOFF_FLOOR

    def __init__(self, target: GaussianMixture, sigma_from: float, sigma_to: float):
        self.target, self.sigma_from, self.sigma_to = target, float(sigma_from), float(sigma_to)

    def measure(self, run: Run) -> float:
        raise NotImplementedError


class GaussianMeter(Meter):
    metric = "bures_w2"
    floor = ROUNDOFF_FLOOR  # Procrustes Bures: relative error ~1e-8 at W2 ~ 1e-7 (tests/test_wasserstein.py)

    def __init__(self, target, sigma_from, sigma_to):
        super().__init__(target, sigma_from, sigma_to)
        d, eye = target.d, torch.eye(target.d, dtype=F64)
        self.mean = target.means[0]
        self.cov_from = target.covariances[0] + self.sigma_from**2 * eye
        self.cov_to = target.covariances[0] + self.sigma_to**2 * eye
        self.scale = math.sqrt(float(torch.diagonal(self.cov_from).mean()))
        self.probes = torch.cat([self.mean[None], self.mean + self.scale * eye])  # (d + 1, d)
        self._root_from, self._root_to = _sqrtm(self.cov_from), _sqrtm(self.cov_to)
        self.d = d

    def affine(self, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) of the sampler's affine map, from one batched run over the probes."""
        out = run(self.probes.clone()).to(F64)
        M = ((out[1:] - out[0]) / self.scale).T
        return M, out[0] - M @ self.mean

    def affine_of(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) of an affine map from its values y = M x + c on points x, (B, d) with B > d in general position
        (e.g. a batch of draws of p_from): least squares on the centred points, exact up to round-off."""
        x, y = x.to(F64), y.to(F64)
        xm, ym = x.mean(0), y.mean(0)
        M = torch.linalg.lstsq(x - xm, y - ym).solution.T
        return M, ym - M @ xm

    def bures(self, M: torch.Tensor, c: torch.Tensor) -> float:
        """W2 of N(M m + c, M C_from M^T) against p_to (Procrustes-Bures, exact)."""
        return bures_w2(M @ self.mean + c, None, self.mean, None, factors=(M @ self._root_from, self._root_to))

    def measure(self, run: Run) -> float:
        return self.bures(*self.affine(run))


class Quantile1DMeter(Meter):
    metric = "w2_1d"
    #: adaptive Gauss-Legendre on W2^2 to max(RTOL * W2^2, ATOL): W2 to ~5e-7 relative or ~1e-13 absolute. Tighter
    #: tolerances only add refinement rounds (each one a solver run) around the steep parts of the optimal map.
    RTOL, ATOL, MAX_ROUNDS = 1e-6, 1e-26, 16
    floor = ROUNDOFF_FLOOR

    def __init__(self, target, sigma_from, sigma_to):
        super().__init__(target, sigma_from, sigma_to)
        self.source, self.law_to = target.marginal(self.sigma_from), target.marginal(self.sigma_to)

    def measure(self, run: Run) -> float:
        return w2_1d(lambda x: run(x).to(F64), self.source, self.law_to, rtol=self.RTOL, atol=self.ATOL,
                     max_rounds=self.MAX_ROUNDS)


class SyncMeter(Meter):
    metric = "sync_rms"
    floor = 1e-12  # reference_flow: ~3e-13 max-abs against the Gaussian closed form (analytic.flows)

    def __init__(self, target, sigma_from, sigma_to, n: int = 64, seed: int = 0):
        super().__init__(target, sigma_from, sigma_to)
        self.x = target.sample(n, sigma=self.sigma_from, generator=torch.Generator().manual_seed(seed))
        self.reference = reference_flow(target, self.x, self.sigma_from, self.sigma_to)

    def measure(self, run: Run) -> float:
        return sync_error(run(self.x.clone()).to(F64), self.reference)


def meter_for(target: GaussianMixture, sigma_from: float, sigma_to: float, **kw) -> Meter:
    """The exact meter where one exists: Bures for a Gaussian, quantiles in 1-D, else the synchronous bound."""
    if target.K == 1:
        return GaussianMeter(target, sigma_from, sigma_to)
    if target.d == 1:
        return Quantile1DMeter(target, sigma_from, sigma_to)
    return SyncMeter(target, sigma_from, sigma_to, **kw)


@lru_cache(maxsize=64)
def cached_meter(target_name: str, sigma_from: float, sigma_to: float) -> Meter:
    """Meters of the embedded targets, built once per process (the DOP853 reference is the expensive part)."""
    return meter_for(targets.get(target_name), sigma_from, sigma_to)
