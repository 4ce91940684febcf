"""The registered stochastic samplers against their claims, measured on the exact output law of a Gaussian target
(probe columns; the oracle's Bures W2), and the stochastic verdict of `validate` (docs/stochastic.md)."""

import pytest
import torch

import sdm_verify.solvers as solvers
from sdm_verify.conformance import check
from sdm_verify.harness import targets
from sdm_verify.harness.stochastic import weak_gaussian

pytestmark = pytest.mark.theory

CLAIMED = [n for n in solvers.available(stochastic=True) if solvers.get(n).weak_order is not None]


def test_the_issue_samplers_exist():
    names = set(solvers.available(stochastic=True))
    assert {"euler_maruyama", "ddpm", "ddim_eta", "euler_ancestral", "edm_stochastic", "dpmpp_sde_1",
            "dpmpp_2m_sde", "dpmpp_3m_sde"} <= names
    assert not names & set(solvers.available())  # ODE listings never include a sampler that needs noise


@pytest.mark.parametrize("name", CLAIMED)
def test_weak_order_on_the_exact_law(name):
    """Weak order within 0.2 of the claim, fitted on the exact W2 to p_sigma_min (EDM grids, N = 16..256)."""
    sampler = solvers.get(name)
    m = weak_gaussian(sampler, targets.get("gauss-4d"), ns=(16, 32, 64, 128, 256), to_zero=False)
    assert m.fit.ok, m.fit.reason
    assert abs(m.order - sampler.weak_order) <= 0.2, (m.order, m.errors)


def test_euler_maruyama_and_ddpm_reach_weak_order_one():
    for name in ("euler_maruyama", "ddpm"):
        m = weak_gaussian(solvers.get(name), targets.get("gauss-4d"), ns=(32, 64, 128, 256), to_zero=False)
        assert abs(m.fit.slopes[-1] - 1.0) < 0.1, (name, m.fit.slopes)


def test_noise_scaled_by_1_05_fails_the_verdict():
    """The same sampler with its noise scaled by 1.05 (s_noise): its W2 stops shrinking and validate says FAIL (the
    true sampler's items pass: test_weak_order_on_the_exact_law, tests/test_pytest_plugin.py)."""
    bad = check(solvers.get("euler_maruyama", s_noise=1.05), progress=False, quick=True)
    assert not bad.ok and "exact_law" in bad.failed, bad.table()
    ratios = bad.items["exact_law"].data["ratios"]
    good = weak_gaussian(solvers.get("euler_maruyama"), targets.get("gauss-4d"), ns=(64, 128), to_zero=False,
                         min_slopes=1)
    assert good.errors[1] / good.errors[0] < 0.55 < 0.75 < ratios[-1]  # the true sampler halves; the scaled one not


def test_verdict_json_records_every_n():
    r = check(solvers.get("ddpm"), progress=False, quick=True)
    doc = r.to_json()
    weak = doc["measurements"]["weak_order"]
    assert len(weak["ns"]) == len(weak["w2_to_sigma_min"]) == len(weak["nfe"]) >= 4
    assert doc["verdict"] == "pass" and doc["stochastic"] is True


def test_a_heuristic_reports_its_bias():
    """EDM's S_noise = 1.003 claims nothing: the exact-law item is information (the W2 at the finest N), never a
    failure; the same sampler with S_churn = 0 is the deterministic Heun and draws no noise at all."""
    r = check(solvers.get("edm_stochastic"), progress=False, quick=True)
    assert r.items["exact_law"].status == "info" and r.ok
    heun = solvers.get("edm_stochastic", S_churn=0.0)
    x = torch.zeros(2, 4, dtype=torch.float64)
    calls = []

    def noise(i, s, t):
        calls.append(i)
        return torch.zeros_like(x)

    heun(targets.get("gauss-4d").denoiser, x, torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64), noise)
    assert calls == [0]  # only the loop's up-front check of the source
