"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes", NeurIPS, arXiv
2306.14878; official code github.com/Newbeeer/diffusion_restart_sampling, benchmarks/generate_restart.py).

The main sampler is EDM's Heun (Karras et al. 2022, Alg. 1; registered `heun`) over the given grid: a step t -> t' is
    d = (x - D(x, t))/t,  x_e = x + (t' - t) d,  x' = x + (t' - t)(d + (x_e - D(x_e, t'))/t')/2,
and Euler (x' = x_e = D(x, t) up to rounding) into t' = 0. One restart interval [t_min, t_max]: when the main grid
reaches t_min, the sampler K times
    (1) jumps forward:  x <- x + S_noise sqrt(t_max^2 - t_min^2) z,    z ~ N(0, I)  (a fresh draw each time),
    (2) runs Heun from t_max back to t_min on EDM's rho = 7 grid of n_restart steps,
        t_max = s_0 > s_1 > ... > s_n = t_min,  s_j = (t_max^(1/7) + j/n (t_min^(1/7) - t_max^(1/7)))^7,
and then continues the main grid. With S_noise = 1 the jump is the forward process of canonical variables itself
(x_t = x0 + t n): an exact sample of p_t_min becomes an exact sample of p_t_max, so with an exact ODE solver every
restart maps p_t_min to itself, and the discretisation errors made before t_min are contracted by the noise.

Where t_min is not a grid point: as the official code, the restart is placed at the grid point nearest to t_min
(`argmin |sigma_i - t_min|`, the first on a tie), and that point's sigma is the restart's lower end (the jump's
variance t_max^2 - sigma_i^2 and the sub-grid end there), so the grid is not changed and the jump stays exact.
A configuration under which no restart can happen on the given grid (the nearest point is the first one, is 0, or
is not below t_max) is refused before any denoiser call (the official code would skip it silently).

Noise draws (keys of the noise source, sdm_verify.solvers.stochastic): the main Heun steps draw nothing; the k-th
jump (k = 0..K-1) is ctx.draw(N + k, hi_k, lo_k), N = len(sigmas) - 1 the number of main steps, with the restart
interval [sigma_i, t_max] (sigma_i the grid point it starts from) split into K equal parts, lo_k = sigma_i + k delta,
hi_k = lo_k + delta (hi_{K-1} = t_max), delta = (t_max - sigma_i)/K. The indices N + k are no step index, so a
source keyed by index (GaussianNoise) gives K independent draws; the intervals are disjoint, so a source keyed by
interval (BrownianNoise, whose draws over the same interval coincide) also gives K independent standard normals
(increments over disjoint intervals, normalised).
Each draw is N(0, I); the intervals are labels, not the jump's variance.

Defaults: t_min = 0.06, t_max = 0.30, K = 2 and n_restart = 2 Heun steps are the official CIFAR-10 (VP) setting
(benchmarks/params_cifar10_vp.txt, first line `18 {"0": [3, 2, 0.06, 0.30]}`: the code's first number counts the
sub-grid's points, 3, i.e. 2 steps); S_noise = 1 (the official runs use S_noise = 1.003 together with a small EDM
churn inside the restart, restart_gamma = 0.05; neither is modelled: S_noise != 1 biases the law by design).
Only one restart interval is supported (the official code allows several, e.g. for ImageNet-64). The sub-grid has
n_restart steps whatever the main grid's N, so refining the main grid does not refine the restarts: the output law's
error has a floor set by n_restart (measured on a 4-d Gaussian: W2 to p_0.002 ~0.01 from N = 128 with the defaults).
Cost: 2N NFE on a grid ending above 0 (2N - 1 into 0: the last main step is Euler), plus 2 n_restart per restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from .registry import register
from .sde import check_number, heun_step
from .stochastic import StochasticSolver, checked_noise

__all__ = ["Restart", "restart_grid"]

XU_2023 = "Xu et al. 2023 (Restart sampling, NeurIPS, arXiv 2306.14878)"
RHO = 7.0


def restart_grid(t_max: float, t_min: float, n: int) -> list[float]:
    """EDM's rho = 7 grid from t_max down to t_min in n steps (n + 1 points, the ends exact)."""
    a, b = t_max ** (1 / RHO), t_min ** (1 / RHO)
    return [t_max] + [(a + j / n * (b - a)) ** RHO for j in range(1, n)] + [t_min]


@dataclass
class RestartState:
    """Per-run state: the index of the main grid point where the restarts happen (None: no restart)."""

    index: int | None = None


def _count(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name}: must be an integer >= {low} (got {value!r})")
    return value


class Restart(StochasticSolver):
    """EDM Heun over the grid with K restarts on [t_min, t_max] (module docstring): at the grid point nearest to
    t_min, K times: jump to t_max with fresh noise, Heun back in n_restart steps. K = 0 is `heun`."""

    name = "restart"
    nfe_per_step = 2
    final_step_nfe = 1
    final_step = "Euler into 0 (x <- D(x, sigma) up to rounding), no noise, 1 NFE (the main grid's Heun)"
    point_mass_exact = False
    point_mass_note = "a stochastic sampler (the restarts add noise): its path is not the ODE flow; K = 0 is heun"
    weak_order = None
    strong_order = None
    claim_source = (f"no order in the step size claimed: {XU_2023} (Sec. 4, their theorem on Restart) bound the W1 "
                    "distance of the output law at t_min by a term in which the error accumulated before the "
                    "restart interval is contracted by the restarts' noise (geometrically in K) plus the "
                    "discretisation / approximation error of the ODE runs inside the interval; an error bound, not "
                    "a convergence order")

    def __init__(self, t_min: float = 0.06, t_max: float = 0.30, K: int = 2,  # noqa: N803 (the paper's names)
                 n_restart: int = 2, S_noise: float = 1.0):
        self.t_min = check_number(t_min, "t_min", low=0.0, low_open=True, rule="must be a finite number > 0")
        self.t_max = check_number(t_max, "t_max", low=self.t_min, low_open=True,
                                  rule=f"must be a finite number > t_min = {self.t_min:g}")
        self.K = _count(K, "K", 0)
        self.n_restart = _count(n_restart, "n_restart", 1)
        self.S_noise = check_number(S_noise, "S_noise", low=0.0, low_open=True, rule="must be a finite number > 0")
        self.notes = (
            f"{self.K} restart(s) on [{self.t_min:g}, {self.t_max:g}], {self.n_restart} Heun step(s) each (EDM rho = "
            "7 sub-grid); placed at the grid point nearest to t_min (official code)",
            "the restarts' sub-grid does not refine with the main grid's N: their discretisation error is a floor",
        ) + ((f"S_noise = {self.S_noise:g} != 1 scales the jumps: the limit law is biased by design",)
             if self.S_noise != 1 else ())

    def params(self) -> dict:
        return {"t_min": self.t_min, "t_max": self.t_max, "K": self.K, "n_restart": self.n_restart,
                "S_noise": self.S_noise}

    # ------------------------------------------------------------------------------------------------ cost
    def restart_nfe(self) -> int:
        return 2 * self.n_restart * self.K

    def nfe(self, n_steps: int) -> int:
        return 2 * n_steps + self.restart_nfe()

    def nfe_to_zero(self, n_steps: int) -> int:
        return 2 * n_steps - 1 + self.restart_nfe()

    # ------------------------------------------------------------------------------------------- the run
    def init_state(self) -> RestartState:
        return RestartState()

    def restart_index(self, sigmas: list[float]) -> int:
        """The main grid point where the restarts happen: the nearest to t_min (first on a tie); InputError when
        no restart can happen there."""
        index = min(range(len(sigmas)), key=lambda j: abs(sigmas[j] - self.t_min))
        level = sigmas[index]
        if index == 0 or level == 0 or level >= self.t_max:
            why = ("is the grid's first point" if index == 0 else "is 0" if level == 0 else
                   f"is not below t_max = {self.t_max:g}")
            raise InputError(f"t_min: the grid point nearest to t_min = {self.t_min:g} (sigma {level:.6g}, index "
                             f"{index}) {why}: no restart can happen on this grid")
        return index

    def draw_intervals(self, low: float) -> list[tuple[float, float]]:
        """(hi_k, lo_k) labelling the k-th jump's draw (module docstring): disjoint parts of [low, t_max]."""
        delta = (self.t_max - low) / self.K
        return [(self.t_max if k == self.K - 1 else low + (k + 1) * delta, low + k * delta) for k in range(self.K)]

    def jump(self, x: torch.Tensor, z: torch.Tensor, low: float) -> torch.Tensor:
        """The forward jump from sigma = low to t_max: x + S_noise sqrt(t_max^2 - low^2) z."""
        return torch.add(x, z, alpha=self.S_noise * math.sqrt((self.t_max - low) * (self.t_max + low)))

    def _bind_noise(self, noise, x, ctx) -> None:
        draw = checked_noise(noise, x, self.name)
        if self.K > 0:
            ctx.state.index = self.restart_index(ctx.sigmas)
            hi, lo = self.draw_intervals(ctx.sigmas[ctx.state.index])[0]
            draw(len(ctx.sigmas) - 1, hi, lo)  # the first draw, checked before any denoiser call (sources are pure)
        ctx.noise = draw

    #: one EDM Heun step s -> t (sdm_verify.solvers.sde.heun_step)
    heun = staticmethod(heun_step)

    def step(self, denoiser, x, i, ctx):
        sig = ctx.sigmas
        x = self.heun(denoiser, x, sig[i], sig[i + 1])
        if ctx.state.index != i + 1:
            return x
        low, n_main = sig[i + 1], len(sig) - 1
        sub = restart_grid(self.t_max, low, self.n_restart)
        for k, (hi_k, lo_k) in enumerate(self.draw_intervals(low)):
            x = self.jump(x, ctx.draw(n_main + k, hi_k, lo_k), low)
            for j in range(self.n_restart):
                x = self.heun(denoiser, x, sub[j], sub[j + 1])
        return x


register("restart", Restart)
