"""The oracle's self-checks: each row compares one oracle computation with an independent closed form.

`sdm-verify check-oracle` prints them as a table; tests/test_selfcheck.py asserts every row passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch

from . import symbolic
from .flows import gaussian_flow_map, reference_floor
from .gmm import Gaussian, GaussianMixture
from .wasserstein import bures_w2, bures_w2_trace, pot_w2, w2_1d, w2_1d_laws

__all__ = ["Check", "run_checks"]


@dataclass
class Check:
    name: str
    value: float
    limit: float
    detail: str

    @property
    def ok(self) -> bool:
        return bool(self.value <= self.limit)


def _spd(rng, d, lo=1e-2, hi=2.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.exp(rng.uniform(np.log(lo), np.log(hi), d))) @ q.T


def check_reference_floor() -> list[Check]:
    out = []
    for d in (1, 4, 16):
        err = reference_floor(d=d, n=64)
        out.append(Check(f"reference_flow floor, d={d}", err, 1e-10,
                         "DOP853 (rtol=atol=1e-12) vs closed-form Gaussian flow, sigma 80 -> 0.002, max |error|"))
    return out


def check_bures() -> list[Check]:
    rng = np.random.default_rng(0)
    d = 6
    S1, S2 = _spd(rng, d), _spd(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    agree = abs(bures_w2(m1, S1, m2, S2) - bures_w2_trace(m1, S1, m2, S2))
    # commuting case with a tiny difference: exact W2^2 = sum((a - b)/(sqrt a + sqrt b))^2, no cancellation
    a = np.exp(rng.uniform(-3, 1, d))
    b = a * (1 + 1e-7 * rng.standard_normal(d))
    exact = math.sqrt(np.sum(((a - b) / (np.sqrt(a) + np.sqrt(b))) ** 2))
    z = np.zeros(d)
    rel = abs(bures_w2(z, np.diag(a), z, np.diag(b)) - exact) / exact
    rel_trace = abs(bures_w2_trace(z, np.diag(a), z, np.diag(b)) - exact) / exact
    return [
        Check("Bures W2: Procrustes vs trace form", agree, 1e-10, f"random SPD d={d}, W2 ~ 1 (both accurate there)"),
        Check(f"Bures W2 at W2={exact:.1e}: Procrustes rel. error", rel, 1e-6,
              f"commuting closed form; the trace form's rel. error here is {rel_trace:.1e}"),
    ]


def check_w2_1d() -> list[Check]:
    g = Gaussian([0.3], [[0.5]])
    # exact flow map pushes p_2 onto p_0.1: W2 = 0
    push = lambda x: gaussian_flow_map(g, x, 2.0, 0.1)  # noqa: E731
    zero = w2_1d(push, g.marginal(2.0), g.marginal(0.1))
    # two 1-D Gaussians: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    g2 = Gaussian([-0.4], [[0.2]])
    exact = math.sqrt(0.7**2 + (math.sqrt(0.5) - math.sqrt(0.2)) ** 2)
    quad = abs(w2_1d_laws(g, g2) - exact)
    mix = GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [[[0.1]], [[0.3]]])
    ref = Gaussian([0.0], [[1.0]])
    n = 4000
    gen = torch.Generator().manual_seed(0)
    emp = [pot_w2(mix.sample(n, generator=gen), ref.sample(n, generator=gen)) for _ in range(3)]
    exact_mix = w2_1d_laws(mix, ref)
    return [
        Check("w2_1d of the exact Gaussian flow map", zero, 1e-10, "push = closed-form flow 2.0 -> 0.1; exact W2 = 0"),
        Check("w2_1d vs closed-form Gaussian W2", quad, 1e-12, f"exact W2 = {exact:.6f}"),
        Check("w2_1d (mixture vs Gaussian) vs POT on samples", abs(np.mean(emp) - exact_mix), 0.05,
              f"exact {exact_mix:.4f}, POT n={n} x3: {np.mean(emp):.4f} (sampling error ~ n^-1/4 in 1-D)"),
    ]


def check_symbolic() -> list[Check]:
    h = symbolic.h
    ops = symbolic.SYMPY_OPS
    ddim = symbolic.local_error([-ops.expm1(-h)], [0], form="data-lambda")
    r0 = sp.Symbol("r0", positive=True)
    e = ops.expm1(-h)
    dpmpp2m = symbolic.local_error([-e - e / (2 * r0), e / (2 * r0)], [0, -r0], form="data-lambda")
    return [
        Check("symbolic: DDIM / DPM-Solver++(1) global order", abs(ddim.global_order - 1), 0,
              str(ddim.leading_factored())),
        Check("symbolic: DPM-Solver++(2M) global order", abs(dpmpp2m.global_order - 2), 0,
              str(dpmpp2m.leading_factored())),
    ]


def run_checks() -> list[Check]:
    """All self-checks, in a stable order. Takes a few seconds."""
    return check_reference_floor() + check_bures() + check_w2_1d() + check_symbolic()
