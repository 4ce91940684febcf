"""OSS: Optimal Stepsize Distillation (Pei, Hu & Gu 2025, "Optimal Stepsize for Diffusion Sampling", arXiv 2503.21774,
§3 "dynamic programming" over a many-step teacher; official code bebebe666/OptimalSteps, OSS/OSS.py search_OSS).

Like GITS it selects the n-step path from a fine teacher grid, but its recursion carries the STUDENT's own state
along the path instead of restarting every step from the teacher ("recursive error minimisation"):

    teacher        the same grid and trajectory as GITS (`gits.teacher_grid`, `gits.teacher_trajectory`): EDM rho = 7
                   with M = n * ceil(teacher_steps / n) intervals, x_j^b the exact reference flow from x_0^b ~
                   p_{sigma_max} (the paper's teacher is a 100- or 200-step Euler flow-matching solve; here exact).
    state          z_0(0) = x_0 (all B samples).  For k = 1..n and teacher node j:
                       E_k(j) = min_i  mean_b || S(z_(k-1)(i)^b; s_i -> s_j) - x_j^b ||^2     over reachable i < j,
                       z_k(j) = S(z_(k-1)(i*); s_i* -> s_j),   back_k(j) = i*,
                   S the solver's one step from a fresh start (the paper: the Euler/flow step x_j = x_i + v (t_j - t_i);
                   here the scheduled solver; a multistep solver takes its first, low-order step).
    result         the path traced back from (k = n, j = M): node j at step k is the best student state reachable
                   in k steps, and the schedule is the path that produced the final state (optimal substructure in the
                   sense of the paper: each stored state is the least-error one at its (k, j)).

Choices:
  * reachability is exact: at step k only nodes reached at step k - 1 start a step, and a step k may only end where
    n - k further steps remain possible (j <= M - (n - k)); step n ends at M. (The official code initialises every
    node with the start noise and copies dp rows from k to k + 1, which lets unreachable starts and shorter paths
    compete; the paper's recursion does not, and neither does this.)
  * one DP on the whole batch, cost = batch mean of the squared per-sample L2 error (the official code searches each
    sample separately with the element-mean squared error and takes a per-step median over samples; a batch DP gives
    one grid by construction). batch = 256 and seed = 0 by default, shared with GITS's cached teacher.
  * the amplitude calibration of the paper's section 3.4 (a renormalisation of the latent, not part of the schedule) is
    left out.
"""

from __future__ import annotations

import numpy as np
import torch

from .gits import MemoDenoiser, check_common, finish, one_step, positive_int, teacher_grid, teacher_trajectory

__all__ = ["oss", "oss_path"]


def oss_path(run, denoiser, grid: torch.Tensor, traj: torch.Tensor, n: int) -> list[int]:
    """The OSS recursion (module docstring) on a teacher trajectory traj (M + 1, B, d) over grid (M + 1,)."""
    M, g = grid.numel() - 1, grid.tolist()
    den = MemoDenoiser(denoiser)
    reach = {0: traj[0]}
    back: list[dict[int, int]] = []
    for k in range(1, n + 1):
        err = np.full(M + 1, np.inf)
        states, choice = {}, {}
        last = M - (n - k)
        for i in sorted(reach):
            z = reach[i]
            js = [M] if k == n else range(i + 1, last + 1)
            for j in js:
                y = one_step(run, den, z, g[i], g[j])
                e = float((y - traj[j]).pow(2).sum(-1).mean())
                if e < err[j]:
                    err[j], states[j], choice[j] = e, y, i
        reach = states
        back.append(choice)
    path = [M]
    for k in range(n - 1, -1, -1):
        path.append(back[k][path[-1]])
    return path[::-1]


def oss(solver, target, n, sigma_min, sigma_max, **options) -> torch.Tensor:
    """OSS grid: n + 1 float64 sigmas, sigma_max -> sigma_min, from the student-state DP against the teacher.

    options: teacher_steps (100), batch (256), seed (0). Cost: about n M^2 / 2 one-step solver runs on B points
    (the first denoiser call of each start is shared), plus the teacher's M DOP853 solves (cached, shared with
    GITS)."""
    n, sigma_min, sigma_max, run, o = check_common(n, sigma_min, sigma_max, target, solver, options,
                                                   dict(teacher_steps=100, batch=256, seed=0))
    grid = teacher_grid(n, sigma_min, sigma_max, positive_int("teacher_steps", o["teacher_steps"]))
    traj = teacher_trajectory(target, grid, positive_int("batch", o["batch"], 2), positive_int("seed", o["seed"], 0))
    path = oss_path(run, target.denoiser, grid, traj, n)
    return finish(grid[path], sigma_min, sigma_max)
