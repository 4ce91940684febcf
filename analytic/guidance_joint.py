"""Classifier-free guidance when p(x) and p(x | c) are both Gaussian: the guided flow and its laws in closed form.

p(x) = N(mu_u, C_u) and p(x | c) = N(mu_c, C_c), e.g. x and a continuous label y jointly Gaussian, where
p(x | y) = N(mu_x + C_xy C_yy^-1 (y - mu_y), C_xx - C_xy C_yy^-1 C_yx) (`JointGaussianGuidance.from_joint`; Bradley &
Nakkiran 2024, arXiv 2408.09000, analyse CFG in this setting). Each denoiser is affine, D(x, sigma) = A x + b with
A = C (C + sigma^2 I)^-1, b = sigma^2 (C + sigma^2 I)^-1 mu, so the guided denoiser D_w = (1 - w) D_u + w D_c is
affine too (`guided_affine`). When C_u and C_c commute (one orthonormal eigenbasis U, eigenvalues c_u, c_c; always in
1-D), the guided PF-ODE dx/dsigma = (x - D_w)/sigma decouples per eigen-direction; with y = U^T (x - mu_u) and
delta = U^T (mu_c - mu_u) (docs/guidance.md §3):

    dy/dsigma = a(sigma) y - w sigma delta / (c_c + sigma^2),
    a(sigma)  = (1 - w) sigma / (c_u + sigma^2) + w sigma / (c_c + sigma^2),
    phi(sigma) = (c_u + sigma^2)^((1 - w)/2) (c_c + sigma^2)^(w/2)    (phi' = a phi: the homogeneous solution),
    y(t) = phi(t)/phi(f) y(f) - w delta phi(t) J(f, t),
    J(f, t) = int_f^t s (c_u + s^2)^(-(1-w)/2) (c_c + s^2)^(-1-w/2) ds,

J by scipy's adaptive quadrature (QUADPACK) in log s, split at sqrt(c_u) and sqrt(c_c), at relative tolerance 1e-13.
The flow map is affine, so it carries a Gaussian law to a Gaussian law (`guided_flow_law`). For non-commuting
covariances there is no closed form (except at w = 0 and w = 1, the flows of p and p(. | c)): only
analytic.guidance.guided_reference_flow solves the guided ODE. The tilted law p(x | c)^w p(x)^(1 - w) is Gaussian with
precision w P_c + (1 - w) P_u (`tilted_law`); `cfg_tilted_gap` is the Bures W2 between it and the guided flow's output.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from scipy.integrate import quad

from ._checks import DTYPE, as_tensor, check_points, check_sigma, check_spd
from .flows import _sigmas, gaussian_flow_affine
from .gmm import Gaussian
from .guidance import check_guidance_scale
from .wasserstein import bures_w2

__all__ = ["JointGaussianGuidance"]

_QUAD_RTOL = 1e-13  # QUADPACK's floor is 50 eps = 1.1e-14; 1e-13 is reached without warnings
_COMMUTE_RTOL = 1e-10  # ||C_u C_c - C_c C_u||_F <= this * ||C_u||_F ||C_c||_F: the covariances commute


def _gaussian(mean, cov, mean_name: str, cov_name: str, d: int | None = None) -> Gaussian:
    mean, cov = as_tensor(mean, mean_name, ndim=1), as_tensor(cov, cov_name, ndim=2)
    if d is not None and mean.shape[0] != d:
        raise ValueError(f"{mean_name}: expected shape {(d,)}, got {tuple(mean.shape)}")
    try:
        return Gaussian(mean, cov)
    except ValueError as exc:
        msg = str(exc)
        msg = msg.replace("mean:", f"{mean_name}:", 1) if msg.startswith("mean:") else msg
        raise ValueError(msg.replace("covariance:", f"{cov_name}:", 1)) from None


def _sym(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m + m.T)


class JointGaussianGuidance:
    """Guidance between p(x) = N(mean_x, cov_x) and p(x | c) = N(mean_c, cov_c) (one fixed condition c).

    Attributes: `unconditional`, `conditional` (analytic.Gaussian), `d`, `commute` (whether the two covariances
    share an eigenbasis, to relative 1e-10), `min_eigenvalue`. Guidance scales w are finite and >= 0.
    """

    def __init__(self, mean_x, cov_x, mean_c, cov_c):
        self.unconditional = _gaussian(mean_x, cov_x, "mean_x", "cov_x")
        self.d = self.unconditional.d
        self.conditional = _gaussian(mean_c, cov_c, "mean_c", "cov_c", self.d)
        Cu, Cc = self.unconditional.covariance, self.conditional.covariance
        comm = float(torch.linalg.matrix_norm(Cu @ Cc - Cc @ Cu))
        self.commutator = comm / float(torch.linalg.matrix_norm(Cu) * torch.linalg.matrix_norm(Cc))
        self.commute = self.commutator <= _COMMUTE_RTOL
        self.min_eigenvalue = float(min(self.unconditional.eigvals.min(), self.conditional.eigvals.min()))
        if self.commute:
            self._common_basis(Cu, Cc)

    def _common_basis(self, Cu, Cc):
        """One orthonormal U diagonalising both: eigh of Cu + a Cc for a generic a (checked; three tries)."""
        scale = float(torch.trace(Cu) / torch.trace(Cc))
        for a in (0.6180339887498949, 0.3183098861837907, 1.4142135623730951):
            U = torch.linalg.eigh(Cu + a * scale * Cc).eigenvectors
            du, dc = U.T @ Cu @ U, U.T @ Cc @ U
            off = max(float((du - torch.diag(torch.diag(du))).abs().max()) / float(Cu.abs().max()),
                      float((dc - torch.diag(torch.diag(dc))).abs().max()) / float(Cc.abs().max()))
            if off <= 1e-9:
                self._U = U
                self._cu, self._cc = torch.diag(du).numpy().copy(), torch.diag(dc).numpy().copy()
                self._delta = U.T @ (self.conditional.mean - self.unconditional.mean)
                return
        raise RuntimeError("JointGaussianGuidance: no common eigenbasis found for commuting covariances")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_joint(cls, mean_x, cov_x, mean_y, cov_y, cov_xy, y) -> JointGaussianGuidance:
        """(x, y) jointly Gaussian, conditioned on the label value y: p(x | y) = N(mu_x + K (y - mu_y),
        C_xx - K C_yx), K = C_xy C_yy^-1. cov_xy is (d, m); the joint covariance must be positive definite."""
        mx, Cxx = as_tensor(mean_x, "mean_x", ndim=1), as_tensor(cov_x, "cov_x", ndim=2)
        my, Cyy = as_tensor(mean_y, "mean_y", ndim=1), as_tensor(cov_y, "cov_y", ndim=2)
        Cxy, yv = as_tensor(cov_xy, "cov_xy", ndim=2), as_tensor(y, "y").reshape(-1)
        d, m = mx.shape[0], my.shape[0]
        shapes = (("cov_x", Cxx, (d, d)), ("cov_y", Cyy, (m, m)), ("cov_xy", Cxy, (d, m)), ("y", yv, (m,)))
        for name, t, shape in shapes:
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
        check_spd(Cxx, "cov_x")
        check_spd(Cyy, "cov_y")
        joint = torch.cat([torch.cat([Cxx, Cxy], 1), torch.cat([Cxy.T, Cyy], 1)], 0)
        try:
            check_spd(joint, "cov_xy")
        except ValueError as exc:
            raise ValueError(f"cov_xy: the joint covariance [[cov_x, cov_xy], [cov_xy^T, cov_y]] is not positive "
                             f"definite ({exc})") from None
        K = torch.linalg.solve(Cyy, Cxy.T).T
        return cls(mx, Cxx, mx + K @ (yv - my), _sym(Cxx - K @ Cxy.T))

    @classmethod
    def commuting(cls, mean_x, var_x, mean_c, var_c, basis=None) -> JointGaussianGuidance:
        """C_u = U diag(var_x) U^T, C_c = U diag(var_c) U^T for an orthogonal basis U (identity by default)."""
        vx, vc = as_tensor(var_x, "var_x", ndim=1), as_tensor(var_c, "var_c", ndim=1)
        d = vx.shape[0]
        if vc.shape != (d,):
            raise ValueError(f"var_c: expected shape {(d,)}, got {tuple(vc.shape)}")
        for name, v in (("var_x", vx), ("var_c", vc)):
            if not (v > 0).all():
                raise ValueError(f"{name}: variances must be > 0, got min {float(v.min()):.3g}")
        U = torch.eye(d, dtype=DTYPE) if basis is None else as_tensor(basis, "basis", ndim=2)
        if U.shape != (d, d) or float((U.T @ U - torch.eye(d, dtype=DTYPE)).abs().max()) > 1e-12:
            raise ValueError(f"basis: expected an orthogonal ({d}, {d}) matrix (U^T U = I to 1e-12)")
        return cls(mean_x, _sym((U * vx) @ U.T), mean_c, _sym((U * vc) @ U.T))

    # ------------------------------------------------------------------ the guided field
    def guided_denoiser(self, x, sigma, w) -> torch.Tensor:
        """D_w = (1 - w) D_u + w D_c (exactly D_u at w = 0, D_c at w = 1), shape (B, d)."""
        w = check_guidance_scale(w)
        return (1.0 - w) * self.unconditional.denoiser(x, sigma) + w * self.conditional.denoiser(x, sigma)

    def guided_jacobian(self, x, sigma, w) -> torch.Tensor:
        """dD_w/dx = (1 - w) A_u + w A_c, shape (B, d, d)."""
        w = check_guidance_scale(w)
        return ((1.0 - w) * self.unconditional.denoiser_jacobian(x, sigma)
                + w * self.conditional.denoiser_jacobian(x, sigma))

    def guided_field(self, w):
        """The guided denoiser as a plain callable D(x, sigma)."""
        w = check_guidance_scale(w)
        unc, cond = self.unconditional, self.conditional

        def guided(x, sigma):
            return (1.0 - w) * unc.denoiser(x, sigma) + w * cond.denoiser(x, sigma)

        guided.__name__ = guided.__qualname__ = f"joint_guided_denoiser(w={w!r})"
        return guided

    def guided_affine(self, sigma, w) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_w, b_w) with D_w(x, sigma) = A_w x + b_w: A = C (C + sigma^2 I)^-1, b = sigma^2 (C + sigma^2 I)^-1 mu."""
        s2 = float(check_sigma(sigma, "sigma", scalar=True)) ** 2
        w = check_guidance_scale(w)
        parts = []
        for g in (self.unconditional, self.conditional):
            lam, U = g.eigvals[0], g.eigvecs[0]
            A = _sym((U * (lam / (lam + s2))) @ U.T)
            parts.append((A, U @ ((s2 / (lam + s2)) * (U.T @ g.mean))))
        (Au, bu), (Ac, bc) = parts
        return (1.0 - w) * Au + w * Ac, (1.0 - w) * bu + w * bc

    # ------------------------------------------------------------------ the exact guided flow
    def _log_phi(self, s: float, w: float) -> np.ndarray:
        return 0.5 * (1.0 - w) * np.log(self._cu + s * s) + 0.5 * w * np.log(self._cc + s * s)

    def _J(self, sf: float, st: float, w: float) -> np.ndarray:
        """J(f, t) = int_f^t s (c_u + s^2)^(-(1-w)/2) (c_c + s^2)^(-1-w/2) ds per eigen-direction (f may be inf)."""
        lo, hi = min(sf, st), max(sf, st)
        ua = -math.inf if lo == 0.0 else math.log(lo)
        ub = math.inf if hi == math.inf else math.log(hi)
        out = np.empty(self.d)
        for k, (cu, cc) in enumerate(zip(self._cu, self._cc, strict=True)):
            lcu, lcc = math.log(cu), math.log(cc)

            def h(u, lcu=lcu, lcc=lcc):  # s g(s) with s = e^u, in logs
                log_h = 2 * u - 0.5 * (1 - w) * np.logaddexp(lcu, 2 * u) - (1 + 0.5 * w) * np.logaddexp(lcc, 2 * u)
                return math.exp(log_h)

            cuts = sorted(v for v in {0.5 * lcu, 0.5 * lcc} if ua < v < ub)
            edges = [ua, *cuts, ub]
            pieces = zip(edges[:-1], edges[1:], strict=True)
            out[k] = sum(quad(h, a, b, epsabs=0.0, epsrel=_QUAD_RTOL, limit=500)[0] for a, b in pieces)
        return out if st >= sf else -out

    def _require_closed_form(self):
        if not self.commute:
            raise ValueError(f"cov_c: does not commute with cov_x (relative commutator {self.commutator:.3g}): the "
                             f"guided flow has no closed form here (except at w = 0 and w = 1); use "
                             f"analytic.guidance.guided_reference_flow")

    def guided_flow_affine(self, w, sigma_from, sigma_to) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, v) with Phi_w(x) = M x + v, the exact guided flow map from sigma_from to sigma_to."""
        w = check_guidance_scale(w)
        sf, st = _sigmas(sigma_from, sigma_to)
        if not self.commute and w in (0.0, 1.0):
            return gaussian_flow_affine(self.unconditional if w == 0.0 else self.conditional, sf, st)
        self._require_closed_form()
        mu = self.unconditional.mean
        if sf == st:
            return torch.eye(self.d, dtype=DTYPE), torch.zeros(self.d, dtype=DTYPE)
        lt = self._log_phi(st, w)
        r = torch.as_tensor(np.exp(lt - self._log_phi(sf, w)), dtype=DTYPE)
        shift = -w * self._delta * torch.as_tensor(np.exp(lt) * self._J(sf, st, w), dtype=DTYPE)
        M = _sym((self._U * r) @ self._U.T)
        return M, mu - M @ mu + self._U @ shift

    def guided_flow_map(self, x, w, sigma_from, sigma_to) -> torch.Tensor:
        """The exact guided PF-ODE flow map applied to x (B, d)."""
        x = check_points(x, self.d)
        M, v = self.guided_flow_affine(w, sigma_from, sigma_to)
        return x @ M.T + v

    def _start(self, start) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(start, str):
            if start not in ("conditional", "unconditional"):
                raise ValueError(f"start: expected 'conditional', 'unconditional' or (mean, cov), got {start!r}")
            g = self.conditional if start == "conditional" else self.unconditional
            return g.mean, g.covariance
        if not isinstance(start, (tuple, list)) or len(start) != 2:
            raise ValueError("start: expected 'conditional', 'unconditional' or a pair (mean, cov)")
        g = _gaussian(start[0], start[1], "start", "start", self.d)
        return g.mean, g.covariance

    def guided_flow_law(self, w, sigma_from, sigma_to, start="conditional") -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, cov) at sigma_to of the guided flow started from the exact noisy law N(m, S + sigma_from^2 I),
        (m, S) = the conditional law, the unconditional one, or a given pair. sigma_from = inf gives the limit
        (independent of the start): N(mu_u - U (w delta phi(t) J(inf, t)), U diag(phi(t)^2) U^T)."""
        w = check_guidance_scale(w)
        if isinstance(sigma_from, numbers.Real) and not isinstance(sigma_from, bool) and sigma_from == math.inf:
            st = float(check_sigma(sigma_to, "sigma_to", scalar=True))
            if not self.commute and w in (0.0, 1.0):
                g = self.unconditional if w == 0.0 else self.conditional
                return g.mean.clone(), g.covariance + st**2 * torch.eye(self.d, dtype=DTYPE)
            self._require_closed_form()
            lt = self._log_phi(st, w)
            shift = -w * self._delta * torch.as_tensor(np.exp(lt) * self._J(math.inf, st, w), dtype=DTYPE)
            var = torch.as_tensor(np.exp(2 * lt), dtype=DTYPE)
            return self.unconditional.mean + self._U @ shift, _sym((self._U * var) @ self._U.T)
        m, S = self._start(start)
        M, v = self.guided_flow_affine(w, sigma_from, sigma_to)
        sf = float(sigma_from)
        return M @ m + v, _sym(M @ (S + sf**2 * torch.eye(self.d, dtype=DTYPE)) @ M.T)

    # ------------------------------------------------------------------ the tilted law and the gap
    def tilted_law(self, w) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, cov) of p(x | c)^w p(x)^(1 - w), normalised: precision P = w P_c + (1 - w) P_u, mean P^-1 (w P_c
        mu_c + (1 - w) P_u mu_u). P is positive definite for every w >= 0 when P_c >= P_u (C_c <= C_u, as for any
        joint Gaussian); otherwise it is checked and a w that breaks it is refused."""
        w = check_guidance_scale(w)
        nat = []
        for g in (self.unconditional, self.conditional):
            lam, U = g.eigvals[0], g.eigvecs[0]
            P = _sym((U / lam) @ U.T)
            nat.append((P, U @ ((U.T @ g.mean) / lam)))
        (Pu, hu), (Pc, hc) = nat
        P = _sym(w * Pc + (1.0 - w) * Pu)
        e, V = torch.linalg.eigh(P)
        if not float(e.min()) > 1e-12 * float(e.abs().max()):
            raise ValueError(f"w: the tilted precision w P_c + (1 - w) P_u is not positive definite at w = {w} "
                             f"(smallest eigenvalue {float(e.min()):.3g}): p(x | c)^w p(x)^(1 - w) is not normalisable")
        cov = _sym((V / e) @ V.T)
        return cov @ (w * hc + (1.0 - w) * hu), cov

    def cfg_tilted_gap(self, w, sigma_max=80.0, start="conditional") -> float:
        """Bures W2 between the guided flow's output law at sigma = 0 (started at sigma_max from the exact noisy
        law, see guided_flow_law; sigma_max = inf for the limit) and the tilted law. 0 at w = 1 from the conditional
        start (both are p(x | c)); nonzero in general: CFG does not sample the tilted law."""
        mean, cov = self.guided_flow_law(w, sigma_max, 0.0, start)
        tm, tc = self.tilted_law(w)
        return bures_w2(mean, cov, tm, tc)

    def __repr__(self) -> str:
        return f"JointGaussianGuidance(d={self.d}, commute={self.commute})"
