"""GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling", ICML 2024, §4 "Geometry-
Inspired Time Scheduling"; official code zju-pi/diff-sampler, gits-main), and the helpers the published schedules
share (argument checks, the cached teacher trajectory, a memoising denoiser, the grid assembly).

GITS in this suite's variables (EDM: x = x0 + sigma n, D(x, sigma) = E[x0 | x]):
    teacher grid   s_0 = sigma_max > s_1 > ... > s_M = sigma_min, EDM rho = 7 with M = n * ceil(teacher_steps / n)
                   intervals (teacher_steps = 100 by default). Choice: M a multiple of n, so that the EDM rho = 7
                   n-step grid is one of the candidate paths (EDM grids nest: u = i/n = (i M/n)/M) and the DP can
                   never return a path whose proxy cost exceeds EDM's. The paper/code uses 61 timestamps (60 steps)
                   of the same polynomial (rho = 7) schedule.
    teacher        x_0^b ~ p_{sigma_max} exactly (batch B = 256 by default, as GITS's num_warmup = 256, fixed seed),
                   x_{k+1} = Phi(x_k; s_k -> s_{k+1}) with the exact-to-1e-12 reference flow (DOP853) of the oracle
                   in place of the paper's many-step teacher solver (iPNDM): the teacher has no error of its own.
    cost           c_ij = mean_b || S(x_i^b; s_i -> s_j) - x_j^b ||_2  (i < j), S the solver's ONE step from the
                   teacher state, run from a fresh start (a multistep solver takes its first, low-order step). This
                   is GITS's "l2" metric (per-sample L2 norm, batch mean); the paper uses Euler for S, here S is the
                   solver being scheduled (the brief); with solver="euler" it is the paper's cost exactly.
    DP             the path 0 = j_0 < j_1 < ... < j_n = M minimising sum_m coeff^m c_{j_m j_(m+1)}; GITS's recursion
                   V_k(j) = min_{j < i < M} c_ji + coeff V_(k-1)(i), V_1(j) = c_jM. coeff = 1 by default (the plain
                   total cost; the official default 1.15 belongs to its "dev" metric, not used here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

import numpy as np
import torch

from analytic import reference_flow

from ... import schedules, solvers
from ...errors import InputError
from ...grid import check_grid
from ...schedules.grids import _check_args

F64 = torch.float64
_TEACHERS: dict = {}  # (id(target), grid, batch, seed) -> (target, trajectory (M + 1, B, d)); the DOP853 solves


# ------------------------------------------------------------------------------------------------ shared helpers
def check_common(n, sigma_min, sigma_max, target, solver, options: dict, allowed: dict):
    """Validate the common arguments (InputError naming the argument) and fill the options with their defaults."""
    unknown = set(options) - set(allowed)
    n, sigma_min, sigma_max = _check_args(n, sigma_min, sigma_max, False, unknown)
    for method in ("denoiser", "sample"):
        if not callable(getattr(target, method, None)):
            raise InputError(f"target: expected an oracle target with denoiser(x, sigma) and sample(n, sigma=, "
                             f"generator=), got {type(target).__name__}")
    run = solvers.get(solver) if isinstance(solver, str) else solver
    if not callable(run):
        raise InputError(f"solver: expected a solver name or a solver callable, got {solver!r}")
    opts = {**allowed, **options}
    return n, float(sigma_min), float(sigma_max), run, opts


def positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name}: expected an int >= {low} (got {value!r})")
    return int(value)


def positive_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}: expected a finite number > 0 (got {value!r})")
    return float(value)


def finish(sigmas, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """float64 grid with the endpoints set exactly, checked strictly decreasing and finite."""
    s = torch.as_tensor(np.asarray(sigmas, dtype=np.float64), dtype=F64).clone()
    s[0], s[-1] = sigma_max, sigma_min
    return check_grid(s)


class MemoDenoiser:
    """D(x, sigma) remembering its last call: the one-step costs of GITS/OSS start many steps from the same (x, s_i),
    whose first evaluation is then computed once. Exact (same values), only faster."""

    def __init__(self, denoiser: Callable):
        self.denoiser, self.last = denoiser, None

    def __call__(self, x, sigma):
        key = float(sigma) if not torch.is_tensor(sigma) or sigma.numel() == 1 else None
        last = self.last
        if key is not None and last is not None and last[0] == key and last[1].shape == x.shape \
                and torch.equal(last[1], x):
            return last[2].clone()
        out = self.denoiser(x, sigma)
        if key is not None:
            self.last = (key, x.clone(), out.clone())
        return out


def one_step(run, denoiser, x: torch.Tensor, s_from: float, s_to: float) -> torch.Tensor:
    return run(denoiser, x.clone(), torch.tensor([s_from, s_to], dtype=F64))


def teacher_grid(n: int, sigma_min: float, sigma_max: float, teacher_steps: int) -> torch.Tensor:
    """EDM rho = 7 grid of M = n * ceil(teacher_steps / n) intervals: contains the EDM n-step grid."""
    M = n * max(1, math.ceil(teacher_steps / n))
    return schedules.edm(M, sigma_min, sigma_max)


def teacher_trajectory(target, grid: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    """(M + 1, B, d): x_0 ~ p_{grid[0]} exactly, then the reference flow (DOP853) node to node. Cached per process."""
    key = (id(target), tuple(grid.tolist()), batch, seed)
    hit = _TEACHERS.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]
    x = target.sample(batch, sigma=float(grid[0]), generator=torch.Generator().manual_seed(seed)).to(F64)
    traj = [x]
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        x = reference_flow(target, x, a, b)
        traj.append(x)
    out = torch.stack(traj)
    if len(_TEACHERS) > 32:
        _TEACHERS.clear()
    _TEACHERS[key] = (target, out)
    return out


# ------------------------------------------------------------------------------------------------------------ DP
def min_cost_path(cost, n: int, coeff: float = 1.0) -> list[int]:
    """Indices 0 = j_0 < ... < j_n = M (M = cost.shape[0] - 1) minimising sum_m coeff^m cost[j_m, j_(m+1)].
    Only the upper triangle (i < j) of cost is read. Ties go to the smallest next index (deterministic)."""
    c = np.asarray(cost, dtype=np.float64)
    M = c.shape[0] - 1
    n = positive_int("n", n)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise InputError(f"cost: expected a square matrix, got shape {c.shape}")
    if n > M:
        raise InputError(f"n: at most {M} steps on a grid of {M + 1} nodes (got {n})")
    V = np.full((n + 1, M + 1), np.inf)  # V[k, j]: least cost from node j to node M in exactly k steps
    nxt = np.full((n + 1, M + 1), -1, dtype=np.int64)
    V[0, M] = 0.0
    for k in range(1, n + 1):
        for j in range(M):
            cand = c[j, j + 1:] + coeff * V[k - 1, j + 1:]
            i = int(np.argmin(cand))
            if np.isfinite(cand[i]):
                V[k, j], nxt[k, j] = cand[i], j + 1 + i
    path, j = [0], 0
    for k in range(n, 0, -1):
        j = int(nxt[k, j])
        path.append(j)
    return path


def gits_cost_matrix(run, target, grid: torch.Tensor, batch: int, seed: int) -> np.ndarray:
    """c_ij = mean_b ||S(x_i; s_i -> s_j) - x_j||_2 for i < j (inf elsewhere), against the cached teacher."""
    traj = teacher_trajectory(target, grid, batch, seed)
    M, g = grid.numel() - 1, grid.tolist()
    den = MemoDenoiser(target.denoiser)
    cost = np.full((M + 1, M + 1), np.inf)
    for i in range(M):
        for j in range(i + 1, M + 1):
            y = one_step(run, den, traj[i], g[i], g[j])
            cost[i, j] = float(torch.linalg.vector_norm(y - traj[j], dim=-1).mean())
    return cost


def gits(solver, target, n, sigma_min, sigma_max, **options) -> torch.Tensor:
    """GITS grid (module docstring): DP over the cost matrix of one-step errors against the teacher trajectory.

    options: teacher_steps (100), batch (256), seed (0), coeff (1.0). Returns n + 1 float64 sigmas, sigma_max ->
    sigma_min. Cost: M(M+1)/2 one-step solver runs on B points plus M DOP853 solves (cached)."""
    n, sigma_min, sigma_max, run, o = check_common(n, sigma_min, sigma_max, target, solver, options,
                                                   dict(teacher_steps=100, batch=256, seed=0, coeff=1.0))
    grid = teacher_grid(n, sigma_min, sigma_max, positive_int("teacher_steps", o["teacher_steps"]))
    cost = gits_cost_matrix(run, target, grid, positive_int("batch", o["batch"], 2),
                            positive_int("seed", o["seed"], 0))
    path = min_cost_path(cost, n, positive_real("coeff", o["coeff"]))
    return finish(grid[path], sigma_min, sigma_max)
