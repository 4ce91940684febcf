"""The schedule study's additions: the full sampler into 0 against an independent brute force, the results store
(reuse, and recomputation when the code's fingerprint changes), steps-to-match against a plain scan, and the exact
curvature kappa against its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from analytic import Gaussian
from sdm_verify import schedules
from sdm_verify.errors import InputError
from sdm_verify.studies.schedules import cells, curvature, match, study
from sdm_verify.studies.schedules.optimum import grid_error, optimal_grid

V, SMAX = 0.25, 80.0
GAUSS_1D = Gaussian([0.0], [[V]])


def euler_into_zero_w2(log_s: float) -> float:
    """Euler on N(0, v) over (80, s, 0), written from the step formula: one Euler step 80 -> s multiplies x by
    1 + (s - 80) 80 / (v + 80^2); the step into 0 is x <- D(x, s) = v / (v + s^2) x. From p_80 = N(0, v + 80^2) the
    output is N(0, a^2 (v + 80^2)); its W2 to the data law N(0, v) is |a| sqrt(v + 80^2) - sqrt(v) in absolute value."""
    s = math.exp(log_s)
    a = (1.0 + (s - SMAX) * SMAX / (V + SMAX**2)) * V / (V + s * s)
    return abs(abs(a) * math.sqrt(V + SMAX**2) - math.sqrt(V))


def test_full_sampler_into_zero_matches_brute_force():
    u = np.linspace(math.log(1e-4), math.log(SMAX), 4001)[1:-1]
    k = int(np.argmin([euler_into_zero_w2(x) for x in u]))
    ref = minimize_scalar(euler_into_zero_w2, bounds=(u[k - 1], u[k + 1]), method="bounded",
                          options={"xatol": 1e-12})
    opt = optimal_grid("euler", GAUSS_1D, 2, 0.002, SMAX, final_zero=True)
    assert opt.optimal and float(opt.grid[-1]) == 0.0
    assert opt.error == pytest.approx(ref.fun, rel=1e-6)
    assert math.log(float(opt.grid[1])) == pytest.approx(ref.x, abs=1e-3)
    # the harness's meter agrees with the closed form on the optimum
    assert grid_error("euler", GAUSS_1D, opt.grid) == pytest.approx(euler_into_zero_w2(math.log(float(opt.grid[1]))),
                                                                     rel=1e-9)


def test_into_zero_needs_two_steps():
    with pytest.raises(InputError, match="n"):
        optimal_grid("euler", GAUSS_1D, 1, 0.002, SMAX, final_zero=True)


def _small(monkeypatch):
    plan = study.plan
    monkeypatch.setattr(study, "plan", lambda quick, *a: plan(True, ("euler",), ("gauss-1d",), (2,)))


def test_store_reuses_cells_and_recomputes_on_new_code(tmp_path, monkeypatch):
    _small(monkeypatch)
    db = tmp_path / "s.sqlite"
    first = study.run(store=db, with_published=False, progress=False)
    calls = []
    real = cells.compute

    def counted(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(study, "compute", counted)
    again = study.run(store=db, with_published=False, progress=False)
    assert calls == [] and [r.to_dict() for r in again] == [r.to_dict() for r in first]
    code = study.code()
    monkeypatch.setattr(study, "code", lambda solver=None: {**code, "schedules": "another version of the code"})
    study.run(store=db, with_published=False, progress=False)
    assert len(calls) == 1


def test_steps_to_match_agrees_with_a_scan():
    edm = schedules.get("edm")
    goal = grid_error("heun", GAUSS_1D, edm(12, 0.002, SMAX)) * 1.0000001
    got = match.steps_to_match("heun", GAUSS_1D, lambda m: edm(m, 0.002, SMAX), goal, 3, 40)
    errs = {m: grid_error("heun", GAUSS_1D, edm(m, 0.002, SMAX)) for m in range(3, 41)}
    ok = [m for m, e in errs.items() if e <= goal]
    assert got in ok and got <= 12
    assert all(errs[m] > goal for m in range(3, got) if m in (3, 6, 12) and m < got)  # doubling never skipped a hit
    assert match.steps_to_match("heun", GAUSS_1D, lambda m: edm(m, 0.002, SMAX), 1e-12, 3, 12) is None


def test_grid_nfe_counts_calls():
    g = schedules.get("edm")(6, 0.002, SMAX)
    assert match.grid_nfe("euler", GAUSS_1D, g) == 6
    assert match.grid_nfe("heun", GAUSS_1D, g) == 12
    assert match.grid_nfe("heun", GAUSS_1D, torch.cat([g[:-1], torch.zeros(1, dtype=g.dtype)])) == 11  # 5 Heun + 1


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 50.0])
def test_kappa_matches_the_isotropic_closed_form(sigma):
    """N(mu, c^2 I): x' = sigma (x - mu)/(c^2 + sigma^2), x'' = c^2 (x - mu)/(c^2 + sigma^2)^2, so
    ||x''|| / ||x'|| = c^2 / (sigma (c^2 + sigma^2)) for every x (docs/sdm.md §6)."""
    c2 = 0.3
    tgt = Gaussian(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), c2 * torch.eye(3, dtype=torch.float64))
    assert curvature.kappa(tgt, sigma, n=64) == pytest.approx(c2 / (sigma * (c2 + sigma**2)), rel=1e-10)


def test_allocation_of_a_curvature_grid_has_slope_minus_one():
    """A grid that takes h = 0.2 / kappa(sigma) steps (closed-form kappa of N(0, c^2), from sigma 0.6, where such a
    step is below half of sigma) reads back slope -1 (to the midpoint's distortion) and rank correlation 1."""
    c2 = 0.25
    g = [0.6]
    while g[-1] > 0.01:
        s = g[-1]
        g.append(s - 0.2 * s * (c2 + s * s) / c2)
    a = curvature.allocation(torch.tensor(g, dtype=torch.float64), Gaussian([0.0], [[c2]]), n=16)
    assert a.rank_corr == pytest.approx(1.0, abs=1e-12)
    # h is set from kappa at the step's start and read against kappa at its geometric midpoint, a distortion that
    # grows with h / sigma (0.2 to 0.35 here): a few hundredths of slope
    assert a.slope == pytest.approx(-1.0, abs=0.1)


def test_warm_start_interpolates_log_sigma():
    g = torch.tensor([80.0, 8.0, 0.8, 0.08, 0.002], dtype=torch.float64)
    w = cells.warm_start(g, 8)
    assert w.numel() == 9 and float(w[0]) == 80.0 and float(w[-1]) == 0.002
    assert float(w[2]) == pytest.approx(8.0, rel=1e-12) and float(w[4]) == pytest.approx(0.8, rel=1e-12)
    z = cells.warm_start(torch.cat([g, torch.zeros(1, dtype=g.dtype)]), 5, "zero")
    assert z.numel() == 6 and float(z[-1]) == 0.0 and float(z[-2]) == pytest.approx(0.002)


def test_a_budget_skips_cells_and_says_so(tmp_path, monkeypatch):
    plan = study.plan
    monkeypatch.setattr(study, "plan", lambda quick, *a: plan(True, ("euler",), ("gauss-1d",), (2, 3)))
    rows = study.run(store=tmp_path / "s.sqlite", with_published=False, progress=False, budget_s=0.0)
    missing = [r for r in rows if r.status.startswith("not computed")]
    assert {r.N for r in missing} == {2, 3} and all(r.schedule == "optimal" and not r.grid for r in missing)
