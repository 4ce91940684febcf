"""Solvers that step in a process's own time t instead of canonical sigma (EulerT, HeunT).

A process in EDM's general form x_t = s(t) (x0 + sigma(t) n) has the PF-ODE (Karras et al. 2022, Eq. 4)
    dx/dt = (sigma'(t)/sigma(t) + s'(t)/s(t)) x - sigma'(t) s(t)/sigma(t) D(x/s(t); sigma(t)).
In canonical variables (x/s, sigma) every process gives the same ODE, but a Runge-Kutta step taken in (x, t) is a
different map from the same step taken in (x/s, sigma) unless t = sigma and s = 1 (VE): Euler in VP-t is not Euler
in sigma. These solvers keep the suite's interface (canonical x in and out, a sigma grid): each step maps
x -> x_n = s(t_i) x, steps in t from t_i = sigma_inv(sigma_i) to t_{i+1}, and returns x_n / s(t_{i+1}); the
multiplications cancel, so this equals converting once at the start and once at the end.

The process is duck-typed (sigma, sigma_inv, scale, sigma_deriv, scale_deriv taking and returning float64 tensors);
solvers never import the oracle. The denoiser is called at the grid's own sigma_i (t_i is only used for s, s' and
sigma'), so in VE both solvers reproduce Euler and EDM Heun to round-off.

Final step into sigma = 0: Euler in t to t_end = sigma_inv(0), as EDM's Algorithm 1 does in its general form
(VE, VP, VP-cosine and FM all have sigma_inv(0) = 0 and s(0) = 1, so the result is x + (0 - t) dx/dt at t_i).
Only in VE does this coincide with the suite's x <- D(x, sigma); a process whose sigma_inv(0) is not finite, or
whose s(t_end) is not finite and positive, raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .base import Solver, StepContext
from .registry import register

_PROCESS_METHODS = ("sigma", "sigma_inv", "scale", "sigma_deriv", "scale_deriv")


def _f(fn, value: float) -> float:
    return float(fn(torch.tensor(value, dtype=torch.float64)))


@dataclass(frozen=True)
class TimeNode:
    """A grid point in the process's own time: sigma, t = sigma_inv(sigma), s(t) and, where sigma > 0, sigma'(t)
    and s'(t)."""

    sigma: float
    t: float
    s: float
    dsigma: float | None = None
    ds: float | None = None


@dataclass
class NativeState:
    """Per-run state: the time nodes of the grid points computed so far, by grid index."""

    nodes: dict[int, TimeNode] = field(default_factory=dict)


class _NativeTime(Solver):
    """Shared part: the process, its time nodes and the native velocity dx/dt (Karras et al. 2022, Eq. 4)."""

    needs_process = True

    def __init__(self, process=None):
        if process is None:
            raise InputError(f"process: {self.name!r} integrates in a process's own time t and needs process=")
        missing = [m for m in _PROCESS_METHODS if not callable(getattr(process, m, None))]
        if missing:
            raise InputError(f"process: expected an object with {', '.join(_PROCESS_METHODS)}; missing {missing}")
        self.process = process

    def params(self):
        return {"process": getattr(self.process, "name", type(self.process).__name__)}

    def init_state(self) -> NativeState:
        return NativeState()

    def _node(self, sigma: float) -> TimeNode:
        """t, s(t) and, where sigma > 0, the derivatives sigma'(t) and s'(t) at t = sigma_inv(sigma), as floats."""
        p = self.process
        t = _f(p.sigma_inv, sigma)
        node = {"sigma": sigma, "t": t, "s": _f(p.scale, t) if math.isfinite(t) else math.nan}
        if sigma > 0:
            node["dsigma"], node["ds"] = _f(p.sigma_deriv, t), _f(p.scale_deriv, t)
        if not all(math.isfinite(v) for v in node.values()) or node["s"] <= 0:
            raise InputError(f"process: non-finite time, scale or derivative at sigma = {sigma:.6g}: {node}")
        return TimeNode(**node)

    def _nodes(self, i: int, ctx: StepContext) -> tuple[TimeNode, TimeNode]:
        nodes = ctx.state.nodes
        for j in (i, i + 1):
            if j not in nodes:
                nodes[j] = self._node(ctx.sigmas[j])
        return nodes[i], nodes[i + 1]

    @staticmethod
    def velocity(xn: torch.Tensor, denoised: torch.Tensor, node: TimeNode) -> torch.Tensor:
        """dx/dt = (sigma'/sigma + s'/s) x - sigma' s/sigma D, with x the native (scaled) state."""
        sig, s = node.sigma, node.s
        return (node.dsigma / sig + node.ds / s) * xn - (node.dsigma * s / sig) * denoised


class EulerT(_NativeTime):
    """Euler in process time: x_n' = x_n + (t' - t) dx/dt(x_n, t). Order 1, 1 NFE per step (also into sigma = 0)."""

    name, order, nfe_per_step = "euler_t", 1, 1
    final_step = "Euler in t to t = sigma_inv(0) (EDM Alg. 1, general form), 1 NFE; equals x <- D only in VE"

    def step(self, denoiser, x, i, ctx: StepContext):
        a, b = self._nodes(i, ctx)
        xn = a.s * x
        xn_next = xn + (b.t - a.t) * self.velocity(xn, denoiser(x, a.sigma), a)
        return xn_next / b.s


class HeunT(_NativeTime):
    """EDM Heun in process time (Karras et al. 2022, Alg. 1 general form): x_n' = x_n + (t' - t)(d + d')/2, d' at
    the Euler predictor. Order 2, 2 NFE per step; the step into sigma = 0 is Euler in t (1 NFE): total 2N - 1."""

    name, order, nfe_per_step = "heun_t", 2, 2
    final_step = "Euler in t to t = sigma_inv(0) (EDM Alg. 1, general form), 1 NFE: total 2N - 1"

    final_step_nfe = 1

    def step(self, denoiser, x, i, ctx: StepContext):
        a, b = self._nodes(i, ctx)
        dt = b.t - a.t
        xn = a.s * x
        d = self.velocity(xn, denoiser(x, a.sigma), a)
        xn_pred = xn + dt * d
        if b.sigma == 0:
            return xn_pred / b.s
        x_pred = xn_pred / b.s
        d2 = self.velocity(xn_pred, denoiser(x_pred, b.sigma), b)
        return (xn + dt * 0.5 * (d + d2)) / b.s


register("euler_t", EulerT)
register("heun_t", HeunT)
