"""The published schedule optimisers (sdm_verify.studies.schedules: cos, ays, gits, oss): valid grids, GITS's DP against
a brute force over all paths, determinism, exact errors against EDM rho = 7, bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sdm_verify import schedules, solvers
from sdm_verify.errors import InputError
from sdm_verify.harness import targets
from sdm_verify.harness.meters import meter_for
from sdm_verify.studies.schedules import published
from sdm_verify.studies.schedules.gits import teacher_trajectory
from sdm_verify.studies.schedules.published import PUBLISHED, klub, min_cost_path

SMIN, SMAX = 0.002, 80.0
#: reduced settings for the fast tests (the defaults are the documented ones)
FAST = {
    "cos": dict(probe_steps=16, samples=256),
    "ays": dict(samples=64, quad=4, sweeps=2),
    "gits": dict(teacher_steps=20, batch=16),
    "oss": dict(teacher_steps=20, batch=16),
}


def _valid(g: torch.Tensor, n: int):
    assert g.dtype == torch.float64 and g.shape == (n + 1,)
    assert torch.isfinite(g).all()
    assert (g[1:] < g[:-1]).all()
    assert g[0].item() == SMAX and g[-1].item() == SMIN


@pytest.mark.parametrize("name", list(PUBLISHED))
@pytest.mark.parametrize("target", ["gauss-4d", "gmm-1d"])
@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_valid_grids(name, target, solver):
    for n in (5, 10):
        _valid(PUBLISHED[name](solver, targets.get(target), n, SMIN, SMAX, **FAST[name]), n)


def _brute(cost, n, coeff=1.0):
    M = cost.shape[0] - 1
    best, arg = math.inf, None
    for inner in itertools.combinations(range(1, M), n - 1):
        path = (0, *inner, M)
        total = sum(coeff**m * cost[a, b] for m, (a, b) in enumerate(zip(path[:-1], path[1:], strict=True)))
        if total < best - 1e-12:
            best, arg = total, list(path)
    return best, arg


@pytest.mark.parametrize("seed", range(5))
def test_gits_dp_is_the_brute_force_minimum(seed):
    rng = np.random.default_rng(seed)
    M = 7
    cost = rng.uniform(0.1, 2.0, (M + 1, M + 1))
    for n in range(1, M + 1):
        for coeff in (1.0, 1.15):
            best, arg = _brute(cost, n, coeff)
            path = min_cost_path(cost, n, coeff)
            assert path[0] == 0 and path[-1] == M and len(path) == n + 1
            total = sum(coeff**m * cost[a, b] for m, (a, b) in enumerate(zip(path[:-1], path[1:], strict=True)))
            assert total == pytest.approx(best, rel=1e-12)
            assert path == arg  # random costs: the minimiser is unique


def test_gits_dp_hand_built():
    # 0 -> 2 -> 4 is cheap; the direct path 0 -> 4 and every other 2-step path cost more
    c = np.full((5, 5), 10.0)
    c[0, 2], c[2, 4], c[0, 4] = 1.0, 1.0, 3.0
    assert min_cost_path(c, 2) == [0, 2, 4]
    assert min_cost_path(c, 1) == [0, 4]
    assert min_cost_path(c, 4) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_deterministic(name):
    t = targets.get("gauss-4d")
    a = PUBLISHED[name]("euler", t, 5, SMIN, SMAX, **FAST[name])
    b = PUBLISHED[name]("euler", t, 5, SMIN, SMAX, **FAST[name])
    assert torch.equal(a, b)


def _error(target, solver, grid):
    run = solvers.get(solver)
    return meter_for(target, SMAX, SMIN).measure(lambda x: run(target.denoiser, x, grid))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_exact_error_gauss4d_euler(name):
    t = targets.get("gauss-4d")
    g = PUBLISHED[name]("euler", t, 10, SMIN, SMAX, **FAST[name])
    err, edm = _error(t, "euler", g), _error(t, "euler", schedules.edm(10, SMIN, SMAX))
    assert math.isfinite(err) and err > 0
    if name in ("gits", "oss"):  # the EDM 10-step grid is a candidate path of the 20-interval teacher grid
        assert err <= edm


def test_cos_uniform_cost_on_its_own_grid():
    # equidistribution: re-measuring the COS cost on the returned grid's intervals gives near-equal shares
    t = targets.get("gauss-4d")
    g = published.cos("euler", t, 8, SMIN, SMAX, probe_steps=256, samples=2048)
    fine = published.cos_costs(t, schedules.edm(256, SMIN, SMAX).flip(0), 2048, 0)
    lam = np.concatenate([[0.0], np.cumsum(fine)])
    probe = schedules.edm(256, SMIN, SMAX).flip(0).numpy()
    at_nodes = np.interp(np.log(g.flip(0).numpy()), np.log(probe), lam)
    shares = np.diff(at_nodes) / lam[-1]
    assert np.allclose(shares, 1 / 8, atol=0.02)


def test_ays_lowers_its_objective():
    t = targets.get("gauss-4d")
    g = published.ays("euler", t, 5, SMIN, SMAX, samples=64, quad=4, sweeps=2)
    assert klub(t, g, samples=64, quad=4) < klub(t, schedules.edm(5, SMIN, SMAX), samples=64, quad=4)


def test_oss_path_reaches_the_teacher_with_an_exact_solver():
    # with n = 2 the recursion's last step compares every 2-step path's final error: it must pick the least one
    # (an independent enumeration of the 5 paths 0 -> j -> 6 with Euler)
    t = targets.get("gauss-4d")
    grid = schedules.edm(6, SMIN, SMAX)
    traj = teacher_trajectory(t, grid, 8, 0)
    run = solvers.get("euler")
    path = published.oss_path(run, t.denoiser, grid, traj, 2)
    finals = {}
    for j in range(1, 6):
        x = run(t.denoiser, traj[0].clone(), torch.tensor([grid[0], grid[j]], dtype=torch.float64))
        x = run(t.denoiser, x, torch.tensor([grid[j], grid[6]], dtype=torch.float64))
        finals[j] = float((x - traj[6]).pow(2).sum(-1).mean())
    assert path[0] == 0 and path[2] == 6
    assert finals[path[1]] == pytest.approx(min(finals.values()), rel=1e-12)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_bad_inputs(name):
    t, f = targets.get("gauss-4d"), PUBLISHED[name]
    with pytest.raises(InputError, match="^n:"):
        f("euler", t, 0, SMIN, SMAX)
    with pytest.raises(InputError, match="^sigma_min:"):
        f("euler", t, 5, SMAX, SMIN)
    with pytest.raises(InputError, match="^sigma_min:"):
        f("euler", t, 5, 1.0, 1.0)
    with pytest.raises(InputError, match="^target:"):
        f("euler", object(), 5, SMIN, SMAX)
    with pytest.raises(InputError, match="^params:"):
        f("euler", t, 5, SMIN, SMAX, bogus=1)
    with pytest.raises(InputError, match="^name:"):
        f("no_such_solver", t, 5, SMIN, SMAX)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gits", "oss"])
def test_exact_error_defaults_not_worse_than_edm(name):
    t = targets.get("gauss-4d")
    g = PUBLISHED[name]("euler", t, 10, SMIN, SMAX)
    assert _error(t, "euler", g) <= _error(t, "euler", schedules.edm(10, SMIN, SMAX))
