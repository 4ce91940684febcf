"""Explicit single-step (Runge-Kutta type) methods in one of the normalized update forms (solvers/forms.py).

One step sigma_s -> sigma_t with h = step_size(form) and (weights, nodes) = update_rule(h): v_0 = value at
(x_s, sigma_s); stage j = 1, 2, ... with (a_j, .) = stage_rules(h)[j - 1] at node c_j is
    x_j = apply(form, x_s, a_j, v_0..v_{j-1}),   v_j = value(form, x_j, D(x_j, sigma_j)),
    sigma_j = sigma_s e^{-c_j h} (lambda forms)  or  sigma_s + c_j H (noise-sigma);  c_j = 1 is sigma_t itself,
and the output is apply(form, x_s, weights, v). This is an explicit Runge-Kutta method (Butcher 2016, Numerical
Methods for ODEs, Sec. 23) for noise-sigma and an explicit exponential Runge-Kutta method (Hochbruck & Ostermann
2010, Acta Numerica, Sec. 2.3) for the lambda forms. Terms with a weight of exactly 0 are skipped.
A step into sigma = 0 (h infinite in lambda) is `into_zero`, one denoiser call.
"""

from __future__ import annotations

import math

import torch

from . import forms
from .base import MATH_OPS, Solver, StepContext


class SingleStep(Solver):
    """The stage loop of a single-step method; subclasses give `update_rule`, `stage_rules` and `into_zero`."""

    #: a step into sigma = 0 takes one denoiser call
    final_step_nfe = 1

    def into_zero(self, denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The step from sigma to 0 (a first-order step: the higher stages would need D at sigma = 0)."""
        raise NotImplementedError

    def node_sigma(self, s: float, t: float, h: float, c) -> float:
        """The noise level of node c (a multiple of the step h in the form's variable)."""
        if c == 1:
            return t
        if self.symbolic_form == "noise-sigma":
            return s + c * h
        return s * math.exp(-c * h)

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        if t == 0:
            return self.into_zero(denoiser, x, s)
        form = self.symbolic_form
        h = forms.step_size(form, s, t)
        weights, nodes = self.update_rule(h, [], MATH_OPS)
        values = [forms.value(form, x, denoiser(x, s), s)]
        for (a, _), c in zip(self.stage_rules(h, MATH_OPS), nodes[1:], strict=True):
            sigma_c = self.node_sigma(s, t, h, c)
            x_c = _apply(form, x, s, math.exp(-c * h) if form == "data-lambda" else 1.0, a, values)
            values.append(forms.value(form, x_c, denoiser(x_c, sigma_c), sigma_c))
        # the linear part of the output uses the grid's sigma_t/sigma_s, not e^{-h}
        return _apply(form, x, s, t / s, weights, values)


def _apply(form, x, s, scale, weights, values):
    """forms.apply without the terms whose weight is exactly 0 (e.g. RK4's zero entries of its tableau)."""
    kept = [(w, v) for w, v in zip(weights, values, strict=True) if w != 0]
    return forms.apply(form, x, s, scale, [w for w, _ in kept], [v for _, v in kept])
