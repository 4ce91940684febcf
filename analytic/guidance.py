"""Classifier-free guidance on class-conditional Gaussian mixtures: the exact guided field and its reference flow.

Conventions (docs/guidance.md §1, §2): canonical EDM variables x = x0 + sigma n; every component of the mixture
carries a label, p(x | c) is the mixture of the components labelled c (weights renormalised), p(x) the whole mixture.
The guided denoiser at scale w >= 0 is

    D_w(x, sigma) = D_u + w (D_c - D_u),     evaluated as (1 - w) D_u + w D_c,

which is exactly D_u at w = 0 and exactly D_c at w = 1 in IEEE arithmetic (0 * a + b = b for finite a), and within
(|1 - w| + w) eps |D| of the difference form elsewhere. diffusers' `guidance_scale` g (eps = eps_u + g (eps_c - eps_u))
and the k-diffusion CFG wrappers' `cond_scale` (the same combination of two denoiser outputs) both equal D_w with
w = g: eps = (x - D)/sigma is affine in D with coefficients that do not depend on c. The CFG paper's w (Ho & Salimans
2022, eps = (1 + w) eps_c - w eps_u) is w_here - 1. The guided field is not the denoiser of any mixture, so its
PF-ODE dx/dlambda = D_w(x, e^-lambda) - x (lambda = -log sigma) has no closed form here: `guided_reference_flow`
solves it with DOP853, as analytic.flows.reference_flow does for the unguided ODE. The joint-Gaussian case, where it
has one, is analytic.guidance_joint; the tilted law p(x | c)^w p(x)^(1 - w) of a 1-D mixture is `TiltedLaw1D` here.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ._checks import DTYPE, as_tensor, check_float, check_points, check_sigma, check_weights
from .flows import _sigmas, dop853_flow
from .gmm import GaussianMixture

__all__ = ["LabelledMixture", "guided_reference_flow", "check_guidance_scale", "TiltedLaw1D"]


def check_guidance_scale(w, name: str = "w") -> float:
    """A guidance scale: a finite real number >= 0 (NaN, inf, negative and bool refused, naming the argument)."""
    return check_float(w, name, nonneg=True)


def _plain_label(label):
    """A label as a plain Python value: numpy and one-element torch scalars become Python numbers."""
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise TypeError("a tensor label must hold one value")
        return label.item()
    if isinstance(label, np.generic):
        return label.item()
    return label


class LabelledMixture:
    """A Gaussian mixture whose components carry labels: p(x) = mixture, p(x | c) = its components labelled c.

    `mixture` is an analytic.GaussianMixture with K components and `labels` K hashable labels (ints, strings, ...),
    one per component; several components may share a label. Errors are ValueError naming the argument.
    """

    def __init__(self, mixture: GaussianMixture, labels):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(f"mixture: expected an analytic.GaussianMixture, got {type(mixture).__name__}")
        labels = labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else labels
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
            raise ValueError(f"labels: expected a sequence of {mixture.K} labels (one per component), got {labels!r}")
        labels = list(labels)
        if len(labels) != mixture.K:
            raise ValueError(f"labels: expected {mixture.K} labels (one per component), got {len(labels)}")
        out = []
        for k, label in enumerate(labels):
            if label is None:
                raise ValueError(f"labels: component {k} has no label")
            try:
                label = _plain_label(label)
                hash(label)
            except TypeError:
                raise ValueError(f"labels: component {k}'s label {label!r} is not hashable") from None
            if isinstance(label, float) and math.isnan(label):
                raise ValueError(f"labels: component {k} is labelled NaN (NaN never equals itself)")
            out.append(label)
        self.mixture = mixture
        self.labels = tuple(out)
        self.classes = tuple(dict.fromkeys(out))  # distinct labels, in order of first appearance
        self._conditionals: dict = {}

    @property
    def d(self) -> int:
        return self.mixture.d

    @property
    def unconditional(self) -> GaussianMixture:
        """p(x): the mixture itself."""
        return self.mixture

    def _label(self, c, name: str = "c"):
        if c is None:
            raise ValueError(f"{name}: a label is required (None means the unconditional law, not a class)")
        try:
            c = _plain_label(c)
            known = c in self._conditionals or c in self.classes
        except TypeError:
            raise ValueError(f"{name}: label {c!r} is not hashable") from None
        if not known:
            raise ValueError(f"{name}: label {c!r}: not one of the mixture's labels {list(self.classes)}")
        return c

    def components(self, c) -> list[int]:
        """Indices of the components labelled c."""
        return [k for k, label in enumerate(self.labels) if label == self._label(c)]

    def class_probability(self, c) -> float:
        """P(c) = the total weight of the components labelled c."""
        return float(self.mixture.weights[self.components(c)].sum())

    def conditional(self, c) -> GaussianMixture:
        """p(x | c): the components labelled c, their weights renormalised to sum to 1 (an exact law)."""
        c = self._label(c)
        if c not in self._conditionals:
            idx, m = self.components(c), self.mixture
            w = m.weights[idx]
            total = float(w.sum())
            if not total > 0:
                raise ValueError(f"c: label {c!r} has total weight 0 in the mixture; p(x | c) is undefined")
            w = w / total
            if m.is_diagonal:
                self._conditionals[c] = GaussianMixture.from_diagonal(w, m.means[idx], m.eigvals[idx])
            else:
                self._conditionals[c] = GaussianMixture(w, m.means[idx], m.covariances[idx])
        return self._conditionals[c]

    def denoiser(self, x, sigma, c=None) -> torch.Tensor:
        """D(x, sigma | c) = E[x0 | x, c] (the unconditional D(x, sigma) when c is None), shape (B, d)."""
        law = self.mixture if c is None else self.conditional(c)
        return law.denoiser(x, sigma)

    def guided_denoiser(self, x, sigma, c, w) -> torch.Tensor:
        """D_w = D_u + w (D_c - D_u), evaluated as (1 - w) D_u + w D_c (exact at w = 0 and w = 1), shape (B, d)."""
        cond = self.conditional(c)
        w = check_guidance_scale(w)
        return (1.0 - w) * self.mixture.denoiser(x, sigma) + w * cond.denoiser(x, sigma)

    def guided_jacobian(self, x, sigma, c, w) -> torch.Tensor:
        """dD_w/dx = J_u + w (J_c - J_u), evaluated as (1 - w) J_u + w J_c, shape (B, d, d)."""
        cond = self.conditional(c)
        w = check_guidance_scale(w)
        return (1.0 - w) * self.mixture.denoiser_jacobian(x, sigma) + w * cond.denoiser_jacobian(x, sigma)

    def guided_field(self, c, w):
        """The guided denoiser as a plain callable D(x, sigma) (what a solver sees); c and w are checked now."""
        cond = self.conditional(c)
        w = check_guidance_scale(w)
        mixture = self.mixture

        def guided(x, sigma):
            return (1.0 - w) * mixture.denoiser(x, sigma) + w * cond.denoiser(x, sigma)

        guided.__name__ = guided.__qualname__ = f"guided_denoiser(c={c!r}, w={w!r})"
        return guided

    def tilted(self, c, w, sigma=0.0) -> TiltedLaw1D:
        """The tilted law p_sigma(x | c)^w p_sigma(x)^(1 - w), normalised (1-D mixtures only): a TiltedLaw1D."""
        return TiltedLaw1D(self, c, w, sigma)


def guided_reference_flow(lm, c, w, x, sigma_from, sigma_to, rtol: float = 1e-12, *, atol: float = 1e-12,
                          return_info: bool = False):
    """DOP853 reference for the guided PF-ODE dx/dlambda = D_w(x, e^-lambda) - x, lambda = -log sigma, x (B, d).

    `lm` is a LabelledMixture (then c is a label) or an analytic.guidance_joint.JointGaussianGuidance (then c must
    be None: its condition is fixed at construction). The batch is one system (one step-size sequence). A flow to
    or from sigma = 0 stops at ZERO_SIGMA_FACTOR * sqrt(smallest covariance eigenvalue), as reference_flow does:
    the motion left below it is O(w sigma0^2 / l_min) relative, below float64 resolution for w <= 1e3. Its floor
    against the joint-Gaussian closed form is measured in tests/test_guidance_oracle.py (docs/guidance.md §4).
    With return_info, also returns a dict with DOP853's nfev and step count.
    """
    if isinstance(lm, LabelledMixture):
        field = lm.guided_field(c, w)
        l_min = float(lm.mixture.eigvals.min())
    elif callable(getattr(lm, "guided_field", None)) and hasattr(lm, "min_eigenvalue"):
        # a guidance target with its condition fixed at construction (guidance_joint.JointGaussianGuidance; read by
        # its two members, so that this module does not import that one, which imports it)
        if c is not None:
            raise ValueError(f"c: a {type(lm).__name__} has one condition, fixed at construction; pass c=None")
        field = lm.guided_field(w)
        l_min = float(lm.min_eigenvalue)
    else:
        raise ValueError(f"lm: expected a LabelledMixture or a JointGaussianGuidance, got {type(lm).__name__}")
    x = check_points(x, lm.d)
    sf, st = _sigmas(sigma_from, sigma_to)
    return dop853_flow(field, x, sf, st, l_min, rtol, atol, return_info, "guided_reference_flow")


_GL_T, _GL_W = np.polynomial.legendre.leggauss(16)


def _log_density_1d(law: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_sigma(x) of a 1-D mixture at x (B,) (the closed form of GaussianMixture.log_prob, without its
    batching overhead: the tabulation evaluates it at ~10^5 points)."""
    var = law.eigvals[:, 0] + sigma**2
    a = torch.log(law.weights) - 0.5 * (torch.log(2 * math.pi * var) + (x.reshape(-1, 1) - law.means[:, 0]) ** 2 / var)
    top = a.max(1, keepdim=True).values
    return (top + torch.log(torch.exp(a - top).sum(1, keepdim=True)))[:, 0]
_Z_WINDOW = 20.0  # each component's window mu_k +- 20 sd_k: beyond all of them p_u < 1e-88 relative


class TiltedLaw1D:
    """The normalised tilted law q(x) ∝ p_sigma(x | c)^w p_sigma(x)^(1 - w) of a 1-D labelled mixture.

    q ∝ p_u (p_c / p_u)^w = p_u (P(c | x) / P(c))^w <= p_u P(c)^-w, so q is integrable for every w >= 0 and its
    tails are at most the mixture's. Numerics (docs/guidance.md §6): 16-point Gauss-Legendre on cells whose edges
    are the union of mu_k + j sd_k / cells_per_sd, |j| sd_k <= 20 sd_k, over all components; cdf/sf inside a cell
    by the same rule on the partial cell; quantile and isf by safeguarded Newton; density in log space (the
    unnormalised log density is w log p_c + (1 - w) log p_u, shifted by its maximum before exponentiation).
    """

    def __init__(self, lm: LabelledMixture, c, w, sigma=0.0, cells_per_sd: int = 10):
        if not isinstance(lm, LabelledMixture):
            raise ValueError(f"lm: expected a LabelledMixture, got {type(lm).__name__}")
        if lm.d != 1:
            raise ValueError(f"lm: the tilted law is tabulated for 1-D mixtures only (d = {lm.d})")
        self.cond = lm.conditional(c)
        self.w = check_guidance_scale(w)
        self.sigma = float(check_sigma(sigma, scalar=True))
        if isinstance(cells_per_sd, bool) or not isinstance(cells_per_sd, numbers.Integral) or cells_per_sd < 1:
            raise ValueError(f"cells_per_sd: must be an int >= 1, got {cells_per_sd!r}")
        self.unc, mu = lm.mixture, lm.mixture.means[:, 0].numpy()
        sd = np.sqrt(lm.mixture.eigvals[:, 0].numpy() + self.sigma**2)
        j = np.arange(-_Z_WINDOW * cells_per_sd, _Z_WINDOW * cells_per_sd + 1) / cells_per_sd
        edges = np.unique((mu[:, None] + sd[:, None] * j[None, :]).ravel())
        keep = np.concatenate([[True], np.diff(edges) > 1e-12 * (np.abs(edges[1:]) + sd.min())])
        self.edges = torch.as_tensor(edges[keep], dtype=DTYPE)
        self.scale = float(np.abs(mu).max() + sd.max())
        a, b = self.edges[:-1], self.edges[1:]
        self._nodes = (0.5 * (a + b))[:, None] + (0.5 * (b - a))[:, None] * torch.as_tensor(_GL_T, dtype=DTYPE)
        logq = self._log_unnormalised(self._nodes.reshape(-1)).reshape(self._nodes.shape)
        self._shift = float(logq.max())
        self._qw = torch.exp(logq - self._shift) * (0.5 * (b - a))[:, None] * torch.as_tensor(_GL_W, dtype=DTYPE)
        total = float(self._qw.sum())
        self.log_normaliser = self._shift + math.log(total)  # log Z, Z = int p_c^w p_u^(1-w) dx
        self._qw = self._qw / total  # quadrature weights of the normalised law at self._nodes
        cell = self._qw.sum(1)
        self._below = torch.cat([cell.new_zeros(1), torch.cumsum(cell, 0)])  # mass left of each edge, right of it:
        self._above = torch.cat([torch.flip(torch.cumsum(torch.flip(cell, [0]), 0), [0]), cell.new_zeros(1)])
        x = self._nodes.reshape(-1)
        self.mean = float((self._qw.reshape(-1) * x).sum())
        self.var = float((self._qw.reshape(-1) * (x - self.mean) ** 2).sum())

    def _log_unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w
        lc = _log_density_1d(self.cond, x, self.sigma)
        if w == 1.0:
            return lc
        lu = _log_density_1d(self.unc, x, self.sigma)
        return lu if w == 0.0 else w * lc + (1.0 - w) * lu

    def pdf(self, x) -> torch.Tensor:
        """The normalised density q(x), x of shape (B,) or (B, 1); returns (B,)."""
        return torch.exp(self._log_unnormalised(self.cond._flat(x, "x")) - self.log_normaliser)

    def _rule(self, lo: torch.Tensor, hi: torch.Tensor):
        """(nodes, weights * q(nodes)) of the 16-point rule on each [lo, hi], shapes (B, 16)."""
        nodes = (0.5 * (lo + hi))[:, None] + (0.5 * (hi - lo))[:, None] * torch.as_tensor(_GL_T, dtype=DTYPE)
        f = torch.exp(self._log_unnormalised(nodes.reshape(-1)).reshape(nodes.shape) - self.log_normaliser)
        return nodes, f * torch.as_tensor(_GL_W, dtype=DTYPE) * (0.5 * (hi - lo))[:, None]

    def _partial(self, x: torch.Tensor, upper: bool):
        """Mass of q on [edge left of x, x] (or [x, edge right of x] when upper), and the cell indices."""
        j = torch.searchsorted(self.edges, x.contiguous(), right=True).clamp(1, self.edges.shape[0] - 1) - 1
        a, b = self.edges[j], self.edges[j + 1]
        xc = torch.minimum(torch.maximum(x, a), b)
        return self._rule(xc, b)[1].sum(1) if upper else self._rule(a, xc)[1].sum(1), j

    def cdf(self, x) -> torch.Tensor:
        """Q(X <= x) under the tilted law, shape (B,)."""
        x = self.cond._flat(x, "x")
        part, j = self._partial(x, upper=False)
        out = self._below[j] + part
        out = torch.where(x < self.edges[0], torch.zeros_like(out), out)
        return torch.where(x >= self.edges[-1], torch.ones_like(out), out.clamp(0.0, 1.0))

    def sf(self, x) -> torch.Tensor:
        """Q(X > x), accurate in the upper tail, shape (B,)."""
        x = self.cond._flat(x, "x")
        part, j = self._partial(x, upper=True)
        out = self._above[j + 1] + part
        out = torch.where(x >= self.edges[-1], torch.zeros_like(out), out)
        return torch.where(x < self.edges[0], torch.ones_like(out), out.clamp(0.0, 1.0))

    def _invert(self, p, upper: bool, name: str) -> torch.Tensor:
        p = self.cond._flat(p, name)
        if ((p <= 0) | (p >= 1)).any():
            raise ValueError(f"{name}: probabilities must lie in (0, 1)")
        key = -self._above if upper else self._below  # nondecreasing in the edge index
        j = (torch.searchsorted(key, (-p if upper else p).contiguous(), right=True) - 1).clamp(0, len(key) - 2)
        lo, hi = self.edges[j].clone(), self.edges[j + 1].clone()
        x = 0.5 * (lo + hi)
        eps = float(np.finfo(np.float64).eps)
        active = torch.arange(p.shape[0])
        for _ in range(100):  # safeguarded Newton per point; typically 3-6 steps
            if active.numel() == 0:
                break
            xa, pa, la, ha = x[active], p[active], lo[active], hi[active]
            F = self.sf(xa) if upper else self.cdf(xa)
            g = (pa - F) if upper else (F - pa)  # increasing in x
            la, ha = torch.where(g < 0, xa, la), torch.where(g < 0, ha, xa)
            xn = xa - g / self.pdf(xa)
            xn = torch.where(torch.isfinite(xn) & (xn >= la) & (xn <= ha), xn, 0.5 * (la + ha))  # (g = 0: xn = xa)
            res = 4 * eps * (xa.abs() + self.scale)
            # done: a step at the resolution, a bracket at it, or F at p to its own rounding (8 eps p)
            done = ((xn - xa).abs() <= res) | ((ha - la) <= res) | (g.abs() <= 8 * eps * pa)
            x[active], lo[active], hi[active] = xn, la, ha
            active = active[~done]
        return x

    def quantile(self, u) -> torch.Tensor:
        """The x with cdf(x) = u, u in (0, 1), shape (B,)."""
        return self._invert(u, False, "u")

    def isf(self, v) -> torch.Tensor:
        """The x with sf(x) = v (upper-tail quantiles), shape (B,)."""
        return self._invert(v, True, "v")

    def w2_1d(self, other, weights=None) -> float:
        """W2 between the tilted law and `other`: a 1-D sample cloud (array (n,) or (n, 1), optional weights), or a
        quantile function (a callable u -> Q(u) on (0, 1)), or a 1-D law with quantile and isf methods (a
        GaussianMixture, a TiltedLaw1D: isf above the median keeps the upper tail precise).

        Cloud: W2^2 = sum_i int_{b_(i-1)}^{b_i} (y_i - x)^2 q(x) dx with b_i the tilted quantiles at the cloud's
        cumulative weights, from cumulative moments about the mean (absolute error ~ eps Var on W2^2).
        Quantile function: W2^2 = E_q[(Q(F_q(x)) - x)^2] on the tilted law's own quadrature nodes (a plain callable
        gets F_q near 1 only to absolute eps: Q(F_q) floors at W2 ~ 1e-7; a law does not, but where q is ~1e-15
        between modes its own quantiles are ill-conditioned: W2 of the law to itself floors at ~2e-9).
        """
        law = hasattr(other, "quantile") and hasattr(other, "isf")  # a GaussianMixture or a TiltedLaw1D
        if callable(other) or law:
            if weights is not None:
                raise ValueError("weights: only for a sample cloud, not for a quantile function")
            x, qw = self._nodes.reshape(-1), self._qw.reshape(-1)
            F, S = self.cdf(x), self.sf(x)
            ok, low = (F > 0) & (S > 0) & (qw > 0), F <= 0.5
            y = torch.full_like(x, math.nan)
            if law:  # its isf above the median: precise in the upper tail
                if isinstance(other, GaussianMixture) and other.d != 1:
                    raise ValueError(f"other: expected a 1-D law, got a mixture in d = {other.d}")
                y[ok & low], y[ok & ~low] = other.quantile(F[ok & low]), other.isf(S[ok & ~low])
            else:
                q = as_tensor(other(F[ok]), "other").reshape(-1)
                if q.shape[0] != int(ok.sum()):
                    raise ValueError(f"other: the quantile function must map (B,) to (B,), got {q.shape[0]} values")
                y[ok] = q
            return math.sqrt(float((qw[ok] * (y[ok] - x[ok]) ** 2).sum()))
        y = as_tensor(other, "other")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] < 1:
            raise ValueError(f"other: expected a cloud of shape (n,) or (n, 1), or a quantile function; got "
                             f"shape {tuple(y.shape)}")
        wts = check_weights(weights, y.shape[0], "weights")
        order = torch.argsort(y)
        y, wts = y[order], wts[order]
        cum = torch.cumsum(wts, 0)[:-1]
        low = cum <= 0.5
        b = torch.empty_like(cum)
        if low.any():
            b[low] = self.quantile(cum[low])
        if (~low).any():
            b[~low] = self.isf(torch.flip(torch.cumsum(torch.flip(wts, [0]), 0), [0])[1:][~low])
        m1, m2 = self._moments_below(b)
        zero, m = torch.zeros(1, dtype=DTYPE), self.mean
        d1 = torch.diff(torch.cat([zero, m1, zero]))  # int over each piece of (x - m) q: total 0
        d2 = torch.diff(torch.cat([zero, m2, torch.tensor([self.var], dtype=DTYPE)]))
        yc = y - m
        return math.sqrt(max(float((yc**2 * wts - 2 * yc * d1 + d2).sum()), 0.0))

    def _moments_below(self, b: torch.Tensor):
        """(int_{-inf}^b (x - m) q, int_{-inf}^b (x - m)^2 q) for each b, m the tilted mean."""
        x, qw, m = self._nodes, self._qw, self.mean
        c1 = torch.cat([torch.zeros(1, dtype=DTYPE), torch.cumsum((qw * (x - m)).sum(1), 0)])
        c2 = torch.cat([torch.zeros(1, dtype=DTYPE), torch.cumsum((qw * (x - m) ** 2).sum(1), 0)])
        j = torch.searchsorted(self.edges, b.contiguous(), right=True).clamp(1, self.edges.shape[0] - 1) - 1
        nodes, f = self._rule(self.edges[j], torch.minimum(torch.maximum(b, self.edges[j]), self.edges[j + 1]))
        return c1[j] + (f * (nodes - m)).sum(1), c2[j] + (f * (nodes - m) ** 2).sum(1)
