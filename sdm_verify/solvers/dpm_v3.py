"""DPM-Solver-v3 (Zheng, Lu, Chen & Zhu 2023, "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model
Statistics", arXiv 2310.13268; official code thu-ml/DPM-Solver-v3 `dpm_solver_v3.py`), in canonical variables.

With alpha = 1, lambda = -log sigma and the EMS l, s, b (solvers/ems.py; the same functions of lambda for every
process), the PF-ODE dx/dlambda = D - x reads dx/dlambda = -l x - f with f = (1 - l) x - D. Variation of constants
with L = int l, S = int s and, on a step lambda_s -> lambda_t (h = lambda_t - lambda_s),
    beta(lambda) = int_s^lambda e^{-(S_r - S_s)} b_r dr,   g(lambda) = e^{-(S_lambda - S_s)} f(lambda) - beta(lambda)
gives exactly  x_t = e^{-(L_t - L_s)} x_s - int_s^t e^{-(L_t - L_l) + (S_l - S_s)} (g(l) + beta(l)) dl.
g' = e^{-(S - S_s)} (f' - s f - b) is what the EMS make small. The step replaces g by a polynomial in
u = (lambda - lambda_s)/h through the values g_j at the history nodes u_j, g(u) ~ g_0 + sum_k c_k u^k:
    x_t = e^{-dL} x_s - g_0 phi_0 - sum_k c_k phi_k - psi,
    phi_k = int_s^t e^{-(L_t - L_l) + (S_l - S_s)} u^k dl,  psi = the same weight times beta.
c_k solve the Vandermonde system sum_k c_k u_j^k = g_j - g_0 (the paper's Taylor estimate of g^(k) h^k/k!), or
with pseudo=True (the code's "pseudo-order") are the Newton divided differences of g over u_0..u_k.
Multistep predictor-corrector as the official `sample`: step i predicts with order min(order, i + 1) (with
lower_order_final also <= N - i, N = len(sigmas) - 1, on every grid as the official code); when corrector=True the
next call's value f(x_pred) redoes the step from the same start with order (previous predictor order + c_pseudo),
nodes (s, t, older...), pseudo if c_pseudo; the history keeps f at the predicted point. No corrector after the
last step. A step into sigma = 0 is x <- D(x, sigma) at the predicted point, 1 NFE.

Integrals: ems=None is the degenerate EMS l = 1, s = b = 0 in closed form (phi_k = m_k(h) = h int_0^1 e^{-h(1-u)}
u^k du, psi = 0): DPM-Solver++ with exact integrals of the interpolant. With an EMS: composite Gauss-Legendre (8
nodes per piece, pieces split at the EMS grid points and at most 0.5 long) of the cubic-interpolated l, s, b, the
inner integrals (L, S, beta at the nodes) by the exact integration matrix of the nodes' interpolant. snap=True
moves every grid point to the nearest EMS grid point first (the official `convert_to_indexes(...).round()`; the
run then ends at the snapped last sigma); quadrature="trapezoid" (needs snap) uses the official cumulative
trapezoid sums on the EMS grid instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..grid import check_grid
from .base import Solver, StepContext
from .ems import EMS
from .registry import register

_GL_NODES = 8
_MAX_PIECE = 0.5


def _gauss_legendre(m: int):
    """Nodes t, weights w on [0, 1] and the matrix Q with int_0^{t_i} p = sum_j Q_ij p(t_j) for deg p < m."""
    x, w = np.polynomial.legendre.leggauss(m)
    vinv = np.linalg.inv(np.polynomial.legendre.legvander(x, m - 1))  # column j: Legendre coeffs of basis l_j
    q = np.stack([np.polynomial.legendre.legval(x, np.polynomial.legendre.legint(vinv[:, j], lbnd=-1))
                  for j in range(m)], axis=1)
    as64 = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return as64((x + 1) / 2), as64(w / 2), as64(q / 2)


_T, _W, _Q = _gauss_legendre(_GL_NODES)


def _exp(v):
    """e^v for a Python float or a float64 tensor, as a float64 tensor."""
    return torch.exp(torch.as_tensor(v, dtype=torch.float64))


def exp_moments(h: float, kmax: int) -> list[float]:
    """m_k(h) = h int_0^1 e^{-h(1-u)} u^k du, k = 0..kmax: series for h <= 1, m_k = 1 - (k/h) m_{k-1} beyond."""
    if h <= 1.0:
        out = []
        for k in range(kmax + 1):
            term, total, n = h / (k + 1), 0.0, 0
            while abs(term) > 1e-18 * max(abs(total), 1e-300) or n < 2:
                total += term
                n += 1
                term *= -h / (n + k + 1)
            out.append(total)
        return out
    out = [-math.expm1(-h)]
    for k in range(1, kmax + 1):
        out.append(1.0 - (k / h) * out[-1])
    return out


@dataclass
class Segment:
    """Integrals over [lambda_a, lambda_b]: dL, dS, beta (b's term) and phi_k, psi (see the module docstring)."""

    h: float
    dl: object
    ds: object
    beta: object
    phis: list = field(default_factory=list)
    psi: object = 0.0



def _coefficient_matrix(nodes: list[float], pseudo: bool) -> np.ndarray:
    """M with c = M @ (g_1 - g_0, ..., g_n - g_0): Vandermonde solve, or divided differences (pseudo)."""
    n = len(nodes) - 1
    if not pseudo:
        return np.linalg.inv(np.array([[nodes[j] ** k for k in range(1, n + 1)] for j in range(1, n + 1)]))
    out = np.zeros((n, n))
    for col in range(n):  # divided differences of the unit vector g_j - g_0 = delta_{j, col+1}
        table = [0.0] + [1.0 if j == col + 1 else 0.0 for j in range(1, n + 1)]
        for k in range(1, n + 1):
            table = [(table[j + 1] - table[j]) / (nodes[j + k] - nodes[j]) for j in range(n + 1 - k)]
            out[k - 1, col] = table[0]
    return out


@dataclass
class V3State:
    """History (lambda_j, f_j) newest first, the step awaiting its corrector and the segments computed so far."""

    history: list = field(default_factory=list)
    x: torch.Tensor | None = None
    order: int = 0
    segments: dict = field(default_factory=dict)


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise InputError(f"{name}: must be a bool (got {value!r})")
    return value


class DPMSolverV3(Solver):
    """DPM-Solver-v3 multistep predictor (order 1..3) with the optional (pseudo-order) corrector."""

    name = "dpm_solver_v3"
    final_step = "x <- D(x, sigma) at the predicted point (no corrector into sigma = 0), 1 NFE"
    claim_source = ("Zheng et al. 2023, arXiv 2310.13268, Sec. 3.2-3.3: (n+1)-th order local approximation of g from "
                    "n extra values in the multistep predictor-corrector; pseudo-order options claim no order")
    quadratures = ("gauss", "trapezoid")

    def __init__(self, ems: EMS | None = None, order: int = 3, corrector: bool = True, p_pseudo: bool = False,
                 c_pseudo: bool = True, lower_order_final: bool = True, snap: bool = False,
                 quadrature: str = "gauss"):
        if ems is not None and not isinstance(ems, EMS):
            raise InputError(f"ems: expected an sdm_verify.solvers.ems.EMS or None, got {type(ems).__name__}")
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 3:
            raise InputError(f"order: must be an integer in 1..3 (got {order!r})")
        for name, value in (("corrector", corrector), ("p_pseudo", p_pseudo), ("c_pseudo", c_pseudo),
                            ("lower_order_final", lower_order_final), ("snap", snap)):
            _check_bool(value, name)
        if quadrature not in self.quadratures:
            raise InputError(f"quadrature: must be one of {self.quadratures} (got {quadrature!r})")
        if snap and ems is None:
            raise InputError("snap: needs an EMS grid to snap to (ems is None)")
        if quadrature == "trapezoid" and not snap:
            raise InputError("quadrature: 'trapezoid' sums over the EMS grid and needs snap=True")
        self.ems, self.predictor_order, self.corrector = ems, order, corrector
        self.p_pseudo, self.c_pseudo, self.lower_order_final = p_pseudo, c_pseudo, lower_order_final
        self.snap, self.quadrature = snap, quadrature
        self.order = order  # the claimed global order (see claim_source and notes)
        if ems is not None:
            lo, hi = ems.lambda_range
            self.sigma_range = (math.exp(-hi), math.exp(-lo))
            self.point_mass_exact = False
            self.point_mass_note = "with non-degenerate EMS g is not polynomial on a point mass (f = (1-l) x - D)"
        notes = ["ems=None: the degenerate EMS l = 1, s = b = 0 (DPM-Solver++ with exact interpolant integrals)"]
        if lower_order_final:
            notes.append("lower_order_final (official, on every grid): the last step is first order, which caps the "
                         "global order at 2")
        if corrector and c_pseudo and order >= 2:
            notes.append("pseudo-order corrector (order + 1 by divided differences): local error O(h^3)")
        if p_pseudo and order >= 3:
            notes.append("pseudo-order predictor: local error O(h^3)")
        self.notes = tuple(notes)

    def params(self) -> dict:
        ems = "degenerate" if self.ems is None else \
            f"EMS(G={self.ems.lambdas.numel()}, lambda in [{self.ems.lambda_range[0]:.4g}, " \
            f"{self.ems.lambda_range[1]:.4g}])"
        return {"ems": ems, "order": self.predictor_order, "corrector": self.corrector, "p_pseudo": self.p_pseudo,
                "c_pseudo": self.c_pseudo, "lower_order_final": self.lower_order_final, "snap": self.snap,
                "quadrature": self.quadrature}

    def init_state(self) -> V3State:
        return V3State()

    # ------------------------------------------------------------------------------------------ the grid
    def __call__(self, denoiser, x, sigmas, callback=None):
        if self.snap:
            sigmas = self.snapped(check_grid(sigmas))
        return self._loop(denoiser, x, sigmas, callback)

    def snapped(self, grid: torch.Tensor) -> torch.Tensor:
        """Each positive sigma moved to the EMS grid point nearest in lambda; InputError where two merge."""
        lam = self.ems.lambdas
        pos = grid[grid > 0]
        idx = (-torch.log(pos))[:, None].sub(lam[None]).abs().argmin(1)
        if bool((idx[1:] == idx[:-1]).any()):
            raise InputError(f"sigmas: snapping to the {lam.numel()}-point EMS grid merges consecutive grid points "
                             f"(steps shorter than the EMS spacing): use fewer steps or a finer EMS grid")
        return torch.cat([torch.exp(-lam[idx]), grid[grid == 0]])

    def _check_run(self, x, ctx: StepContext) -> None:
        if self.ems is None:
            return
        if tuple(x.shape[1:]) != self.ems.feature_shape:
            raise InputError(f"ems: statistics of per-sample shape {self.ems.feature_shape} do not match x's "
                             f"{tuple(x.shape[1:])}")
        lo, hi = self.ems.lambda_range
        lams = [-math.log(s) for s in ctx.sigmas if s > 0]
        slack = 1e-9 * max(1.0, abs(lo), abs(hi))
        if min(lams) < lo - slack or max(lams) > hi + slack:
            raise InputError(f"ems: the EMS grid covers lambda in [{lo:.6g}, {hi:.6g}] but the sigmas need "
                             f"[{min(lams):.6g}, {max(lams):.6g}] (sigma {max(ctx.sigmas):.6g} .. "
                             f"{min(s for s in ctx.sigmas if s > 0):.6g})")

    # ------------------------------------------------------------------------------------ the integrals
    def segment(self, la: float, lb: float, kmax: int) -> Segment:
        """The integrals over [la, lb] (la < lb), phi_k for k <= kmax."""
        h = lb - la
        if self.ems is None:
            return Segment(h, h, 0.0, 0.0, exp_moments(h, kmax), 0.0)
        if self.quadrature == "trapezoid":
            return self._segment_trapezoid(la, lb, kmax)
        lam_grid = self.ems.lambdas
        inner = lam_grid[(lam_grid > la) & (lam_grid < lb)].tolist()
        pts = [la]
        for p in inner + [lb]:
            pieces = max(1, math.ceil((p - pts[-1]) / _MAX_PIECE))
            pts += [pts[-1] + (p - pts[-1]) * (j + 1) / pieces for j in range(pieces)]
            pts[-1] = p
        a = torch.tensor(pts[:-1], dtype=torch.float64)
        width = torch.tensor(pts[1:], dtype=torch.float64) - a  # (P,)
        nodes = a[:, None] + width[:, None] * _T[None]  # (P, m)
        l, s, b = self.ems.interp(nodes.reshape(-1))
        shape = (*nodes.shape, *self.ems.feature_shape)
        l, s, b = l.reshape(shape), s.reshape(shape), b.reshape(shape)
        wid = width.reshape(-1, 1, *(1,) * len(self.ems.feature_shape))

        def cumulative(v):  # int_la^node v at every node, and the total
            within = torch.einsum("ij,pj...->pi...", _Q, v) * wid
            piece = torch.einsum("j,pj...->p...", _W, v) * wid[:, 0]
            offset = torch.cumsum(piece, 0) - piece
            return within + offset[:, None], piece.sum(0)

        lcum, dl = cumulative(l)
        scum, ds = cumulative(s)
        bcum, beta = cumulative(torch.exp(-scum) * b)
        weight = torch.exp(scum - (dl - lcum)) * _W.reshape(1, -1, *(1,) * len(self.ems.feature_shape)) * wid
        u = ((nodes - la) / h).reshape(*nodes.shape, *(1,) * len(self.ems.feature_shape))
        phis = [(weight * u**k).sum((0, 1)) for k in range(kmax + 1)]
        return Segment(h, dl, ds, beta, phis, (weight * bcum).sum((0, 1)))

    def _segment_trapezoid(self, la: float, lb: float, kmax: int) -> Segment:
        lam = self.ems.lambdas
        ia, ib = int((lam - la).abs().argmin()), int((lam - lb).abs().argmin())
        x = lam[ia: ib + 1]
        extra = (1,) * len(self.ems.feature_shape)
        dx = (x[1:] - x[:-1]).reshape(-1, *extra)

        def cumtrapz(v):
            steps = 0.5 * dx * (v[1:] + v[:-1])
            return torch.cat([torch.zeros_like(v[:1]), torch.cumsum(steps, 0)])

        lcum, scum = cumtrapz(self.ems.l[ia: ib + 1]), cumtrapz(self.ems.s[ia: ib + 1])
        bcum = cumtrapz(torch.exp(-scum) * self.ems.b[ia: ib + 1])
        e = torch.exp(scum - (lcum[-1] - lcum))
        u = ((x - la) / (lb - la)).reshape(-1, *extra)
        phis = [cumtrapz(e * u**k)[-1] for k in range(kmax + 1)]
        return Segment(lb - la, lcum[-1], scum[-1], bcum[-1], phis, cumtrapz(e * bcum)[-1])

    def _seg(self, st: V3State, lams: list[float], i: int) -> Segment:
        """The segment of grid interval i (lams[i] -> lams[i + 1]), computed once per run."""
        if i not in st.segments:
            st.segments[i] = self.segment(lams[i], lams[i + 1], self.predictor_order + 1)
        return st.segments[i]

    # ---------------------------------------------------------------------------------------- the step
    def _span(self, st: V3State, lams: list[float], j: int, i: int) -> tuple:
        """(dS, beta) over [lams[j], lams[i]], j < i, folded from the grid intervals' segments."""
        seg = self._seg(st, lams, j)
        ds, beta = seg.ds, seg.beta
        for k in range(j + 1, i):
            nxt = self._seg(st, lams, k)
            ds, beta = ds + nxt.ds, beta + _exp(-ds) * nxt.beta
        return ds, beta

    def _update(self, x_s, st: V3State, lams: list[float], i: int, entries: list, pseudo: bool):
        """x at lams[i + 1] from x_s at lams[i]; entries: (grid index j, f_j), the first at j = i."""
        seg = self._seg(st, lams, i)
        h = seg.h
        gs = []
        for j, f in entries:
            if j == i:
                gs.append(f)
            elif j == i + 1:  # the corrector's new point: g = e^{-dS} f - beta over [s, t]
                gs.append(_exp(-seg.ds) * f - seg.beta)
            else:  # an older point: g = e^{dS} (f + beta), dS and beta over [lambda_j, lambda_s]
                ds, beta = self._span(st, lams, j, i)
                gs.append(_exp(ds) * (f + beta))
        out = _exp(-seg.dl) * x_s - gs[0] * seg.phis[0] - seg.psi
        if len(entries) > 1:
            nodes = [(lams[j] - lams[i]) / h for j, _ in entries]
            mat = _coefficient_matrix(nodes, pseudo)
            for k in range(1, len(entries)):
                c = sum(float(mat[k - 1, j - 1]) * (gs[j] - gs[0]) for j in range(1, len(entries)))
                out = out - c * seg.phis[k]
        return out.to(x_s.dtype)

    def step(self, denoiser, x, i, ctx: StepContext):
        st, sig = ctx.state, ctx.sigmas
        s, t = sig[i], sig[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        lams = [-math.log(v) if v > 0 else math.inf for v in sig]
        lval = 1.0 if self.ems is None else self.ems.interp(torch.tensor([lams[i]]))[0][0].to(x.dtype)
        f = (1 - lval) * x - d
        st.history.insert(0, (i, f))
        del st.history[self.predictor_order + 1:]
        if self.corrector and i > 0:
            q = st.order + int(self.c_pseudo)
            if q > 1:
                entries = [st.history[1], st.history[0]] + st.history[2:q]
                x = self._update(st.x, st, lams, i - 1, entries, self.c_pseudo)
        p = min(self.predictor_order, i + 1)
        if self.lower_order_final:
            p = min(p, len(sig) - 1 - i)
        st.x, st.order = x, p
        return self._update(x, st, lams, i, st.history[:p], self.p_pseudo)


register("dpm_solver_v3", DPMSolverV3)
register("dpm_solver_v3_p2", DPMSolverV3, order=2)
register("dpm_solver_v3_plain", DPMSolverV3, order=3, corrector=False, lower_order_final=False)
