"""Stochastic samplers under guidance on the joint Gaussian: exact output laws (harness.stochastic_law).

On the joint Gaussian the guided denoiser is affine, so every registered stochastic sampler's output is affine in
its start point and its noise draws and its law is read off exactly with probe columns (`output_law`; start: the
exact p_80(. | c); noise model: Brownian, the default of stochastic_law). Two numbers per (sampler, w, N):

    self     W2(law_N, law_Nref): the weak error against the same sampler on a grid 8x finer than the largest N
             (Nref = 8 max N): for w != 0, 1 the guided field is not a score of one family of marginals, so each
             sampler's N -> infinity limit is its own (the guided reverse SDE it discretises), not the ODE's law.
             The weak order is fitted on it (fit_order; the reference's own error biases the finest point by at
             most (1/8)^p relative).
    ode_gap  W2(law_Nref, guided ODE law): how far that limit sits from the guided probability-flow ODE's exact law
             (closed form). At w = 1 both are p_sigma_min(. | c) and the gap is the sampler's own error at Nref.
"""

from __future__ import annotations

from analytic.wasserstein import bures_w2

from ... import solvers
from ...harness.meters import _sqrtm
from ...harness.orders import fit_order
from ...harness.stochastic_law import output_law
from .orders import edm_grid
from .targets import JointMeter, joint_2d

WS = (1.0, 3.0, 7.5)
NS_FULL, NS_QUICK = (8, 16, 32, 64, 128), (8, 16, 32)


def _w2(a, b) -> float:
    return bures_w2(a.mean, None, b.mean, None, factors=(a.factor, b.factor))


def sampler_rows(name: str, ws=WS, ns=NS_FULL) -> list[dict]:
    out = []
    jg = joint_2d()
    for w in ws:
        meter = JointMeter(jg, w)
        sampler = solvers.get(name)
        ref = output_law(sampler, meter.field, meter.mean, meter.root_from, edm_grid(8 * max(ns)))
        laws = [output_law(sampler, meter.field, meter.mean, meter.root_from, edm_grid(n)) for n in ns]
        errors = [_w2(law, ref) for law in laws]
        fit = fit_order(list(ns), errors, floor=meter.floor, min_slopes=1)
        ode_gap = bures_w2(ref.mean, None, meter.ref_mean, None, factors=(ref.factor, meter.root_to))
        exact = [bures_w2(law.mean, None, meter.ref_mean, None, factors=(law.factor, meter.root_to)) for law in laws]
        out.append({"sampler": name, "w": w, "ns": list(ns), "nfe": [law.nfe for law in laws], "self": errors,
                    "to_ode": exact, "ode_gap": ode_gap, "fit": fit.to_dict(),
                    "claimed": getattr(sampler, "weak_order", None)})
    return out


def root_of(cov):
    return _sqrtm(cov)
