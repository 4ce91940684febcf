"""The grid loop every registered solver shares: solver(denoiser, x, sigmas) -> x, one `step` at a time.

A solver is a `Solver` subclass: it declares what `SolverInterface` lists (name, order, cost, coefficient
functions, ...) and implements one step; the integration loop, the grid checks and the divergence check live here
(diffrax's split between the step and the loop). Steps see only the denoiser D(x, sigma) (posterior mean of x0
given x = x0 + sigma n) and the sigma grid: solvers never import the oracle. Per-run state (a multistep history, a
latched decision) is a typed object the solver creates in `init_state()`, handed to each step in the StepContext.

Conventions used by every step:
    EDM ODE          dx/dsigma = (x - D(x, sigma)) / sigma                      (Karras et al. 2022, Eq. 3)
    half log-SNR     lambda = -log sigma;  h = lambda_next - lambda = log(sigma / sigma_next) > 0
    data prediction  x_next = (sigma_next/sigma) x + sigma_next * int_lambda^lambda_next e^l D dl  (DPM-Solver++)
Coefficients are computed in float64 Python floats from the float64 grid, then applied in the dtype of x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import DenoiserOutputError, SolverDivergedError
from ..grid import check_callback, check_denoiser, check_grid, check_x, denoiser_output_error
from .interface import SolverInterface

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class StepContext:
    """What a step may read: the grid as Python floats and the solver's per-run state (its `init_state()`)."""

    sigmas: list[float]
    state: Any = None
    #: a stochastic sampler's checked noise source, noise(i, sigma, sigma_next) -> standard normal like x; else None
    noise: Any = None

    def draw(self, i: int, sigma: float | None = None, sigma_next: float | None = None) -> torch.Tensor:
        """The noise draw of step i (by default over the step's own interval sigmas[i] -> sigmas[i + 1])."""
        s = self.sigmas[i] if sigma is None else sigma
        t = self.sigmas[i + 1] if sigma_next is None else sigma_next
        return self.noise(i, s, t)

    def h(self, i: int) -> float:
        """Step size in lambda = -log sigma; inf for a step into sigma = 0."""
        s, t = self.sigmas[i], self.sigmas[i + 1]
        return math.inf if t == 0 else math.log(s / t)


class Solver(SolverInterface):
    """The grid loop: a subclass declares what differs from SolverInterface's defaults and implements `step` (and
    `init_state` when it keeps per-run state). An adapter that runs its own loop overrides `__call__` instead."""

    def init_state(self) -> Any:
        """A fresh per-run state object for StepContext.state (None: the steps keep no state)."""
        return None

    def _check_run(self, x: torch.Tensor, ctx: StepContext) -> None:
        """Checks of this configuration against the run's x and grid, before any denoiser call (default none)."""

    def step(self, denoiser: Denoiser, x: torch.Tensor, i: int, ctx: StepContext) -> torch.Tensor:
        """x at sigmas[i + 1] from x at sigmas[i] (ctx.sigmas); may update ctx.state."""
        raise NotImplementedError(f"{type(self).__name__}: implement step(), or override __call__ to run a loop")

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, sigmas, callback=None) -> torch.Tensor:
        return self._loop(denoiser, x, sigmas, callback)

    def _bind_noise(self, noise, x: torch.Tensor, ctx: StepContext) -> None:
        """Hook of a stochastic sampler (`sdm_verify.solvers.stochastic`): check its noise source before any denoiser
        call and put the checked source in ctx.noise. An ODE solver takes none."""

    def _loop(self, denoiser: Denoiser, x: torch.Tensor, sigmas, callback=None, noise=None) -> torch.Tensor:
        check_denoiser(denoiser)
        grid = check_grid(sigmas)
        check_x(x, all_finite)
        check_callback(callback)
        ctx = StepContext(sigmas=grid.tolist(), state=self.init_state())
        self._bind_noise(noise, x, ctx)
        self._check_run(x, ctx)
        step_index, checked = 0, x

        def guarded(y, sigma, *args, **kwargs):
            # a stage that already left the finite numbers stops the run here, naming the step (the step's own
            # input was checked when the previous step produced it)
            if y is not checked and not all_finite(y):
                raise SolverDivergedError(self.name, step_index, float(sigma), "non-finite input to the denoiser")
            try:
                out = denoiser(y, sigma, *args, **kwargs)
            except DenoiserOutputError as exc:  # refused by a wrapper inside (CountedDenoiser): add the step
                if getattr(exc, "solver", None) is not None:
                    raise
                err = DenoiserOutputError(f"{exc} (solver {self.name!r}, step {step_index})")
                err.solver = self.name
                raise err from None
            # the output must be a floating tensor of y's shape on y's device (a (B, 1) or (1, d) output would be
            # broadcast); grid.bad_output inlined: a tuple compare and three attribute reads, ~1 us per call
            if not (torch.is_tensor(out) and out.shape == y.shape and out.is_floating_point()
                    and out.device == y.device):
                where = f"solver {self.name!r}, step {step_index}, sigma {float(sigma):.6g}"
                err = denoiser_output_error(out, y, where)
                err.solver = self.name
                raise err
            return out

        for i in range(len(ctx.sigmas) - 1):
            step_index = i
            x = self.step(guarded, x, i, ctx)
            if not all_finite(x):
                raise SolverDivergedError(self.name, i, ctx.sigmas[i + 1])
            checked = x
            if callback is not None:
                callback({"i": i, "sigma": ctx.sigmas[i], "sigma_next": ctx.sigmas[i + 1], "x": x})
        return x

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({p})" if p else f"{type(self).__name__}()"


def combine(x: torch.Tensor, weights, values) -> torch.Tensor:
    """x + sum_j weights[j] * values[j] (weights Python floats, values tensors in x's dtype), one fused add each."""
    for w, v in zip(weights, values, strict=True):
        x = torch.add(x, v, alpha=w)
    return x


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in t. A sum is one cheap pass and is non-finite whenever an entry is; only an overflowing sum
    falls back to the elementwise check (torch.isfinite(t).all() measured ~30x slower than t.sum() on CPU)."""
    t = t.detach()  # x may require grad (differentiating through a sampler): no graph node, no warning
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def ode_derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """d = dx/dsigma = (x - D)/sigma of the EDM ODE (k-diffusion's `to_d`)."""
    return (x - denoised) / sigma


#: The math namespace solvers use for their coefficient functions. A solver that exposes `update_rule(h, ratios,
#: ops)` evaluates it with MATH_OPS in `step`; the harness evaluates the same function with sympy's namespace
#: (analytic.symbolic.SYMPY_OPS) to derive the order symbolically from the code that actually runs.
MATH_OPS = SimpleNamespace(exp=math.exp, expm1=math.expm1, log=math.log, sqrt=math.sqrt)
