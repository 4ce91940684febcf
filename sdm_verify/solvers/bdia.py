"""BDIA-DDIM: bi-directional integration approximation (Zhang, Lewis & Kleijn 2023, arXiv 2307.10829, ECCV 2024).

For an ODE dz = d(z, t) dt, BDIA estimates the next state from the two latest ones: the integral over the last slot
is replaced by a mix of the step actually taken and a backward integration approximation from the current state,
the integral over the next slot by a forward one (the authors' README, guoqiang-zhang-x/BDIA). With DDIM as both
approximations and in canonical variables (dx/dsigma = eps = (x - D)/sigma; DDIM from sigma_k to any sigma is
x_k + (sigma - sigma_k) eps_k), the step k -> k + 1 (k >= 1) reads (docs/solvers_more.md §4)
    x_{k+1} = gamma x_{k-1} + (1 - gamma) x_k + [(sigma_{k+1} - sigma_k) - gamma (sigma_{k-1} - sigma_k)] eps_k,
one NFE; the first step is DDIM. gamma = 0 is DDIM throughout; gamma = 1 (default: the paper's exact-inversion
setting, recommended by the authors at 40 steps) is the leapfrog x_{k+1} = x_{k-1} + (sigma_{k+1} - sigma_{k-1}) eps_k.
This is the paper's formula applied to the EDM ODE in (x, sigma), as the paper does for EDM; for a VP model run in
its own variables z = alpha x, the paper's BDIA-DDIM differs from this by a factor alpha_{k+1}/alpha_{k-1} on the
gamma term.

The step into sigma = 0 uses the same formula with sigma_{k+1} = 0 (1 NFE; it needs no D at 0), so that a run
ending at 0 stays exactly invertible. For gamma > 0 the map (x_{k-1}, x_k) -> (x_k, x_{k+1}) is inverted explicitly:
    x_{k-1} = (x_{k+1} - (1 - gamma) x_k - c_k eps_k)/gamma,   c_k as in `bdia_coefficient` (the weight of eps_k),
which `bdia_invert` runs from the last pair back to the first (one NFE per step, no fixed-point iteration).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..grid import check_denoiser, check_grid, check_x
from .base import Solver, StepContext, ode_derivative
from .registry import register


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise InputError(f"gamma: must be a number in [0, 1] (got {gamma!r})")
    return float(gamma)


def bdia_coefficient(gamma: float, s_prev: float, s: float, s_next: float) -> float:
    """c_k, the weight of eps_k in the BDIA step from sigma_k = s (previous point s_prev, next s_next)."""
    return (s_next - s) - gamma * (s_prev - s)


def bdia_step(gamma: float, x_prev: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, s_prev, s, s_next):
    """x_{k+1} from x_{k-1}, x_k and eps_k = eps(x_k, sigma_k)."""
    out = torch.add(x, eps, alpha=bdia_coefficient(gamma, s_prev, s, s_next))
    if gamma == 0.0:
        return out
    return torch.add(out, x_prev - x, alpha=gamma)


@dataclass
class BDIAState:
    """Per-run state: the state at the previous grid point (None before the first step)."""

    previous: torch.Tensor | None = None


class BDIA(Solver):
    """BDIA-DDIM with parameter gamma in [0, 1] (default 1): DDIM first step, then the two-step BDIA update."""

    name = "bdia"
    order = None
    claim_source = ("no order claimed: Zhang et al. 2023 (arXiv 2307.10829) propose BDIA for exact inversion and "
                    "state no convergence order (docs/solvers_more.md §4: a two-step method, consistent for every "
                    "gamma; its local error is (1 - gamma) H^2 x''/2 + O(H^3))")
    nfe_per_step = 1
    final_step_nfe = 1
    final_step = ("the BDIA step with sigma_next = 0 (DDIM, i.e. x <- D(x, sigma), when it is the first step), "
                  "1 NFE; it keeps a run ending at 0 exactly invertible")

    def __init__(self, gamma: float = 1.0):
        self.gamma = _check_gamma(gamma)
        self.notes = ("canonical variables: the paper's BDIA applied to dx/dsigma = eps (as for EDM); a VP model's "
                      "BDIA-DDIM in its own variables differs by alpha_{k+1}/alpha_{k-1} on the gamma term",
                      "gamma = 1 is the leapfrog (explicit midpoint two-step) method: weakly stable, its parasitic "
                      "root -1 is not damped")
        self.equivalent = "ddim" if self.gamma == 0.0 else None

    def params(self) -> dict:
        return {"gamma": self.gamma}

    def init_state(self) -> BDIAState:
        return BDIAState()

    def step(self, denoiser, x, i, ctx: StepContext):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        eps = ode_derivative(x, denoiser(x, s), s)
        state = ctx.state
        if state.previous is None:
            out = torch.add(x, eps, alpha=t - s)  # DDIM
        else:
            out = bdia_step(self.gamma, state.previous, x, eps, ctx.sigmas[i - 1], s, t)
        state.previous = x
        return out

    def from_pair(self, denoiser, x0: torch.Tensor, x1: torch.Tensor, sigmas) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the two-step recurrence from the pair (x at sigmas[0], x at sigmas[1]); return the states at
        (sigmas[-2], sigmas[-1]). NFE = len(sigmas) - 2."""
        check_denoiser(denoiser)
        grid = check_grid(sigmas).tolist()
        _check_pair(x0, x1, grid)
        prev, cur = x0, x1
        for k in range(1, len(grid) - 1):
            eps = ode_derivative(cur, denoiser(cur, grid[k]), grid[k])
            prev, cur = cur, bdia_step(self.gamma, prev, cur, eps, grid[k - 1], grid[k], grid[k + 1])
        return prev, cur


def _check_pair(a, b, grid) -> None:
    check_x(a)
    check_x(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise InputError(f"x: the two states of a pair must share shape and dtype (got {tuple(a.shape)} {a.dtype} "
                         f"and {tuple(b.shape)} {b.dtype})")
    if len(grid) < 3:
        raise InputError(f"sigmas: a BDIA pair needs a grid of at least 3 points (got {len(grid)})")


def bdia_invert(denoiser, x_last: torch.Tensor, x_prev: torch.Tensor, sigmas, gamma: float = 1.0):
    """Exact inversion of BDIA: from the states at sigmas[-1] (x_last) and sigmas[-2] (x_prev) of a BDIA run on
    `sigmas`, recover the states at sigmas[0] and sigmas[1], running the update backwards (gamma > 0 needed).
    NFE = len(sigmas) - 2 (eps at sigmas[1..-2]); sigmas[-1] may be 0."""
    gamma = _check_gamma(gamma)
    if gamma == 0.0:
        raise InputError("gamma: exact inversion needs gamma > 0 (gamma = 0 is DDIM, whose step is not explicitly "
                         "invertible)")
    check_denoiser(denoiser)
    grid = check_grid(sigmas).tolist()
    _check_pair(x_prev, x_last, grid)
    nxt, cur = x_last, x_prev
    for k in range(len(grid) - 2, 0, -1):
        eps = ode_derivative(cur, denoiser(cur, grid[k]), grid[k])
        c = bdia_coefficient(gamma, grid[k - 1], grid[k], grid[k + 1])
        prev = torch.add(nxt, cur, alpha=-(1.0 - gamma))
        prev = torch.add(prev, eps, alpha=-c) / gamma
        nxt, cur = cur, prev
    return cur, nxt


register("bdia", BDIA)
