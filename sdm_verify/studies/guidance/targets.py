"""The guidance study's targets and their exact (or reference) meters (docs/guidance.md §7).

Every meter measures a sampler run on the guided field D_w = (1 - w) D_u + w D_c from sigma_max = 80 to
sigma_min = 0.002 (VE, canonical variables), started from the exact noisy conditional law p_80(. | c), against the
guided flow's own law at sigma_min (the discretisation error alone):

    JointMeter    joint Gaussian (analytic.guidance_joint, commuting covariances): D_w is affine, so a sampler is
                  an affine map x -> M x + v, read off d + 1 probes; its output law N(M m + v, M S M^T) against the
                  closed-form guided flow law, Procrustes-Bures W2: exact, floor ROUNDOFF_FLOOR.
    Quad1DMeter   1-D law (the labelled mixture, or the 1-D joint Gaussian of the thresholding study): the source
                  law mu = p_80(. | c) is a Gaussian mixture; composite Gauss-Legendre nodes x_j, weights q_j carry
                  it. For two monotone maps S, Phi of one 1-D law, W2(S#mu, Phi#mu)^2 = int (S - Phi)^2 dmu exactly
                  (both push the quantile function: F^-1_{S#mu} = S o F^-1_mu); the ODE flow Phi is monotone, the
                  sampler's map is checked to be monotone on the sorted nodes (else the value is the synchronous
                  error, an upper bound on W2, and the row says so). Phi: guided_reference_flow (DOP853, floor
                  1e-12) or the closed form.
    Sync2DMeter   2-D labelled mixture: the synchronous RMS error over 64 exact draws of p_80(. | c) against the
                  DOP853 reference of the guided ODE on the same points (an upper bound on W2; floor 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from analytic import GaussianMixture
from analytic.guidance import LabelledMixture, check_guidance_scale, guided_reference_flow
from analytic.guidance_joint import JointGaussianGuidance
from analytic.wasserstein import bures_w2

from ...errors import InputError
from ...harness.meters import ROUNDOFF_FLOOR, _sqrtm

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
REFERENCE_FLOOR = 1e-12  # DOP853 at rtol = atol = 1e-12 against the closed form: <= 6.5e-13 (docs/guidance.md §4)
TARGETS = ("mix-1d", "mix-2d", "joint-2d")
QUAD_PANELS, QUAD_NODES, QUAD_SDS = 48, 8, 10.0
DECISION_BATCH = 128


def _t(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=F64)


def mixture_1d() -> tuple[LabelledMixture, int]:
    """Three labels on five components in 1-D (labels 0 and 1 have two components each); guidance target: label 1."""
    mix = GaussianMixture.from_diagonal(_t([0.2, 0.15, 0.25, 0.2, 0.2]), _t([[-2.0], [-0.8], [0.6], [1.8], [3.0]]),
                                        _t([[0.09], [0.16], [0.1], [0.05], [0.2]]))
    return LabelledMixture(mix, [0, 0, 1, 1, 2]), 1


def mixture_2d() -> tuple[LabelledMixture, int]:
    """Three labels on five diagonal components in 2-D (labels 0 and 1 with two components); target: label 1."""
    mix = GaussianMixture.from_diagonal(
        _t([0.2, 0.2, 0.25, 0.15, 0.2]),
        _t([[-1.5, -1.0], [-0.5, -1.5], [1.0, 1.0], [1.5, 0.2], [-1.0, 1.4]]),
        _t([[0.1, 0.2], [0.15, 0.1], [0.12, 0.08], [0.06, 0.15], [0.2, 0.1]]))
    return LabelledMixture(mix, [0, 0, 1, 1, 2]), 1


def joint_2d() -> JointGaussianGuidance:
    """p(x) = N(0, U diag(1, 0.5) U^T), p(x | c) = N((0.8, -0.4), U diag(0.4, 0.3) U^T), U a 30-degree rotation."""
    a = math.pi / 6
    U = _t([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return JointGaussianGuidance.commuting(_t([0.0, 0.0]), _t([1.0, 0.5]), _t([0.8, -0.4]), _t([0.4, 0.3]), U)


def joint_1d_clip() -> JointGaussianGuidance:
    """The thresholding target: p(x) = N(0, 1), p(x | c) = N(1.2, 0.3): with max_value = 1 clipping bites."""
    return JointGaussianGuidance.commuting(_t([0.0]), _t([1.0]), _t([1.2]), _t([0.3]))


def gl_nodes(law: GaussianMixture, panels: int = QUAD_PANELS, nodes: int = QUAD_NODES, sds: float = QUAD_SDS):
    """Composite Gauss-Legendre nodes (sorted, (n, 1)) and weights (n,) of a 1-D Gaussian mixture's density on
    [min mu_k - sds sd_k, max mu_k + sds sd_k] (mass outside < 1e-22 for sds = 10); weights sum to 1 - that."""
    mu, sd = law.means[:, 0].numpy(), np.sqrt(law.eigvals[:, 0].numpy())
    lo, hi = float((mu - sds * sd).min()), float((mu + sds * sd).max())
    t, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    x = ((0.5 * (edges[:-1] + edges[1:]))[:, None] + half[:, None] * t).ravel()
    wts = (half[:, None] * w).ravel()
    dens = np.zeros_like(x)
    for k in range(law.K):
        v = float(law.eigvals[k, 0])
        dens += float(law.weights[k]) * np.exp(-0.5 * (x - mu[k]) ** 2 / v) / math.sqrt(2 * math.pi * v)
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(wts * dens)


class _Base:
    metric, floor, target, d = "none", ROUNDOFF_FLOOR, "", 1

    def decision_batch(self) -> torch.Tensor:
        raise NotImplementedError


class JointMeter(_Base):
    """Exact Bures W2 of an affine sampler on the joint Gaussian (module docstring)."""

    metric, floor = "bures_w2", ROUNDOFF_FLOOR

    def __init__(self, jg: JointGaussianGuidance, w: float, name: str = "joint-2d", sigma_from=SIGMA_MAX,
                 sigma_to=SIGMA_MIN):
        self.jg, self.w, self.target, self.d = jg, check_guidance_scale(w), name, jg.d
        self.field = jg.guided_field(self.w)
        eye = torch.eye(jg.d, dtype=F64)
        self.mean = jg.conditional.mean
        self.root_from = _sqrtm(jg.conditional.covariance + float(sigma_from) ** 2 * eye)
        self.ref_mean, ref_cov = jg.guided_flow_law(self.w, sigma_from, sigma_to, "conditional")
        self.root_to = _sqrtm(ref_cov)
        self.sigma_from = float(sigma_from)
        self.probe_scale = math.sqrt(float(torch.diagonal(self.root_from @ self.root_from).mean()))
        self.probes = torch.cat([self.mean[None], self.mean + self.probe_scale * eye])
        self.scale = float(self.ref_mean.abs().max() + torch.diagonal(ref_cov).sqrt().max())

    def decision_batch(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return self.mean + torch.randn(DECISION_BATCH, self.d, generator=g, dtype=F64) @ self.root_from.T

    def measure(self, run) -> dict:
        out = run(self.probes.clone()).to(F64)
        M = ((out[1:] - out[0]) / self.probe_scale).T
        v = out[0] - M @ self.mean
        err = bures_w2(M @ self.mean + v, None, self.ref_mean, None, factors=(M @ self.root_from, self.root_to))
        return {"error": err, "exact": True}


class Quad1DMeter(_Base):
    """W2 in 1-D of a monotone sampler map against a reference map, by quadrature on the source law."""

    metric, floor = "w2_1d_quad", REFERENCE_FLOOR

    def __init__(self, source: GaussianMixture, reference, name: str, panels: int = QUAD_PANELS,
                 floor: float = REFERENCE_FLOOR):
        self.target, self.d, self.floor = name, 1, floor
        self.nodes, self.weights = gl_nodes(source, panels)
        self.source = source
        self.reference = reference(self.nodes.clone())
        self.scale = float(self.reference.abs().max())

    def decision_batch(self) -> torch.Tensor:
        return self.source.sample(DECISION_BATCH, generator=torch.Generator().manual_seed(0))

    def measure(self, run) -> dict:
        y = run(self.nodes.clone()).to(F64)[:, 0]
        monotone = bool((torch.diff(y) >= 0).all())
        err = math.sqrt(float((self.weights * (y - self.reference[:, 0]) ** 2).sum()))
        return {"error": err, "exact": monotone}


class Sync2DMeter(_Base):
    """Synchronous RMS error against the DOP853 reference of the guided ODE (an upper bound on W2)."""

    metric, floor = "sync_rms", REFERENCE_FLOOR

    def __init__(self, lm: LabelledMixture, c, w: float, name: str = "mix-2d", n: int = 64):
        self.target, self.d = name, lm.d
        self.x = lm.conditional(c).sample(n, sigma=SIGMA_MAX, generator=torch.Generator().manual_seed(0))
        self.reference = guided_reference_flow(lm, c, w, self.x, SIGMA_MAX, SIGMA_MIN)
        self.scale = float(self.reference.abs().max())

    def decision_batch(self) -> torch.Tensor:
        return self.x.clone()

    def measure(self, run) -> dict:
        y = run(self.x.clone()).to(F64)
        return {"error": math.sqrt(float(((y - self.reference) ** 2).sum(1).mean())), "exact": False}


def check_target(name) -> str:
    if name not in TARGETS:
        raise InputError(f"target: expected one of {list(TARGETS)}, got {name!r}")
    return name


def mixture_meter(lm: LabelledMixture, c, w: float, name: str):
    """The 1-D quadrature meter against the DOP853 guided flow (d = 1), else the 2-D synchronous meter."""
    if lm.d == 1:
        source = lm.conditional(c).marginal(SIGMA_MAX)

        def reference(x):
            return guided_reference_flow(lm, c, w, x, SIGMA_MAX, SIGMA_MIN)

        return Quad1DMeter(source, reference, name)
    return Sync2DMeter(lm, c, w, name)


def make_meter(name: str, w: float):
    """The meter of study target `name` at guidance scale w (checked first: NaN, inf and negative w refused)."""
    w = checked_w(w)
    name = check_target(name)
    if name == "joint-2d":
        m = JointMeter(joint_2d(), w)
    else:
        lm, c = mixture_1d() if name == "mix-1d" else mixture_2d()
        m = mixture_meter(lm, c, w, name)
        m.field = lm.guided_field(c, w)
    m.w = w
    return m


def checked_w(w) -> float:
    try:
        return check_guidance_scale(w, "w")
    except ValueError as exc:
        raise InputError(str(exc)) from None


def checked_label(lm: LabelledMixture, c):
    """The label c if the mixture has it (InputError naming `c` otherwise), before any solver runs."""
    try:
        lm.conditional(c)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return c
