"""The multistep base: one history and one set of step ratios for DPM-Solver++ multistep, UniPC, DEIS and iPNDM.

A k-value multistep step from sigma_i combines the values v at the current and k - 1 previous grid points, in the
family's update form (solvers/forms.py):
    x_{i+1} = apply(form, x_i, w, [v_i, v_{i-1}, ..., v_{i-k+1}]),    (w, nodes) = update_rule(h_i, r),
with v = D (data-lambda: steps in lambda = -log sigma) or eps = (x - D)/sigma (noise-sigma: steps in sigma),
h_i = step_size(form, sigma_i, sigma_{i+1}) and the step ratios r_j = h_{i-1-j} / h_i, j < k - 1, so that the
previous points sit at nodes 0, -r_0, -(r_0 + r_1), ... (Lu et al. 2022, DPM-Solver++ Alg. 2; Zhao et al. 2023,
UniPC Alg. 1; Zhang & Chen 2023, DEIS Eq. 14).
Warm-up as in the papers: step i uses k = min(history_size, i + 1) values. With `lower_order_final`, on a grid of
fewer than `lower_order_final_below` steps (N = len(sigmas) - 1, counting a step into 0), also k <= N - i.
A step into sigma = 0 is x <- D(x, sigma), 1 NFE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import forms
from .base import Solver, StepContext


@dataclass
class MultistepState:
    """Per-run state of a multistep solver: the values at the grid points so far, newest first."""

    history: list[torch.Tensor] = field(default_factory=list)


class Multistep(Solver):
    """History, step ratios, warm-up and the update of a multistep family. A subclass declares `symbolic_form`
    (data-lambda or noise-sigma), sets `history_size` (values kept) and implements `weights(h, ratios, k)`."""

    #: the number of values kept (the most a step combines)
    history_size: int = 1
    #: whether the last steps lower their order (see the module docstring); off by default
    lower_order_final: bool = False
    lower_order_final_below: float = math.inf
    final_step = "x <- D(x, sigma), 1 NFE"

    def init_state(self) -> MultistepState:
        return MultistepState()

    def weights(self, h: float, ratios: list[float], k: int) -> list[float]:
        """The weights of a step combining k values (newest first), from this family's update_rule."""
        raise NotImplementedError

    def remember(self, state: MultistepState, value: torch.Tensor) -> None:
        """Put `value` first in the history and drop what is older than history_size values."""
        state.history.insert(0, value)
        del state.history[self.history_size :]

    def step_order(self, i: int, n_steps: int) -> int:
        """k, the number of values step i of an n_steps grid combines (warm-up, lower_order_final)."""
        k = min(self.history_size, i + 1)
        if self.lower_order_final and n_steps < self.lower_order_final_below:
            k = min(k, n_steps - i)
        return k

    def ratios(self, sigmas: list[float], i: int, k: int) -> list[float]:
        """r_j = h_{i-1-j} / h_i, j < k: the previous step sizes over the current one, in the form's variable."""
        form = self.symbolic_form
        h = forms.step_size(form, sigmas[i], sigmas[i + 1])
        return [forms.step_size(form, sigmas[i - 1 - j], sigmas[i - j]) / h for j in range(k)]

    def update(self, x: torch.Tensor, sigmas: list[float], i: int, history: list, k: int) -> torch.Tensor:
        """x at sigmas[i + 1] from x at sigmas[i] with the k newest values of `history` (newest first)."""
        s, t = sigmas[i], sigmas[i + 1]
        w = self.weights(forms.step_size(self.symbolic_form, s, t), self.ratios(sigmas, i, k - 1), k)
        return forms.apply(self.symbolic_form, x, s, t / s, w, history[: len(w)])

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = denoiser(x, s)
        if t == 0:
            return d
        self.remember(ctx.state, forms.value(self.symbolic_form, x, d, s))
        return self.update(x, ctx.sigmas, i, ctx.state.history, self.step_order(i, len(ctx.sigmas) - 1))
