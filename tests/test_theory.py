"""`pytest -m theory`: every registered solver reaches its claimed order on exact targets, or the deviation is a
recorded finding (strict xfail: if the finding stops being true, the test fails and the record must be updated).

The rules (tolerance, grids, Gaussian vs mixture targets) are in sdm_verify/harness/cases.py. All cells of the
selected cases are computed once per session, in 2 worker processes, into a results store (SDM_VERIFY_STORE=path
keeps it between runs; by default a temporary file): the session fixture `theory_results` (tests/conftest.py) starts
that sweep in the background as soon as the tests are collected.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytic import GaussianMixture
from sdm_verify import solvers
from sdm_verify.harness.cases import Case, default_cases
from sdm_verify.harness.convergence import measure_order
from sdm_verify.harness.symbolic_order import has_rule, symbolic_order
from sdm_verify.harness.verdicts import SYMBOLIC_DEVIATIONS, TOL, known_deviation, verdict

pytestmark = pytest.mark.theory
CASES = default_cases()


def _param(case: Case):
    reason = known_deviation(case)
    marks = [pytest.mark.xfail(reason=f"finding: {reason}", strict=True)] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_measured_order_matches_claim(case, theory_results):
    m = theory_results[case]
    ok, why = verdict(m, case.target)
    detail = " ".join(f"{s:.2f}" for s in m.slopes)
    assert ok, f"{case.id}: {why}; local slopes {detail}; errors {[f'{e:.2e}' for e in m.errors]} at N={m.ns}"


#: findings stated as orders (README findings 2): the measured order of a deviating solver, per grid. diff-sampler's
#: ipndm_v is third order on logSNR grids, which are geometric in sigma, so r0 r2 = r1^2 holds exactly and its
#: weights are consistent there (exact to degree 2: third order); on EDM rho = 7 and time-quadratic grids it is second.
FINDING_ORDERS = {
    Case("ipndm_v", "gmm-8d", "ve", "logsnr"): 3,
    Case("ipndm_v", "gmm-8d", "ve", "edm"): 2,
    Case("ipndm_v", "gauss-4d", "vp", "time_quadratic"): 2,
    Case("ipndm", "gmm-8d", "ve", "logsnr"): 2,
    Case("ipndm", "gmm-8d", "ve", "edm"): 2,
}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in FINDING_ORDERS])
def test_finding_orders(case, theory_results):
    """The published findings' orders hold on exactly the grids they name."""
    m = theory_results[case]
    expected = FINDING_ORDERS[case]
    assert m.ok and abs(m.order - expected) <= TOL, f"{case.id}: measured {m.order}, finding says {expected}"


RULED = [n for n in solvers.available() if not solvers.needs_process(n) and has_rule(solvers.get(n))]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.xfail(reason=f"finding: {SYMBOLIC_DEVIATIONS[n]}", strict=True)]
                 if n in SYMBOLIC_DEVIATIONS else []) for n in RULED])
def test_symbolic_order_matches_claim(name):
    """The order derived by sympy from the solver's own coefficient functions (uniform steps) equals its claim."""
    s = solvers.get(name)
    sym = symbolic_order(s)
    assert sym.uniform == s.order, f"{name}: symbolic {sym.uniform} (leading {sym.leading_uniform}), claimed {s.order}"


@pytest.mark.parametrize("name", RULED)
def test_measured_order_matches_symbolic(name, theory_results):
    """Where the rule is exact for any step ratios (general order == uniform order), the order measured on the
    8-d mixture with the EDM grid must equal it; otherwise the measured order may lie anywhere between."""
    sym = symbolic_order(solvers.get(name))
    m = theory_results.get(Case(name, "gmm-8d", "ve", "edm"))
    if m is None:
        pytest.skip("its theory case was not selected")
    if sym.general != sym.uniform:
        msg = f"{name}: measured {m.order}, symbolic {sym.general} (any ratios) .. {sym.uniform} (uniform)"
        assert m.ok and sym.general - TOL <= m.order, msg
        return
    assert m.ok and abs(m.order - sym.uniform) <= TOL, f"{name}: measured {m.order}, symbolic {sym.uniform}"


@st.composite
def small_mixtures(draw):
    seed, d, K = draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(seed)
    covs = []
    for _ in range(K):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        covs.append((q * rng.uniform(0.1, 1.0, d)) @ q.T)  # variances >= 0.1: asymptotic by N ~ 64
    return GaussianMixture(rng.dirichlet(np.ones(K) * 2), rng.standard_normal((K, d)), np.stack(covs))


@pytest.mark.parametrize("name", ["euler", "heun", "ddim", "dpmpp_2m"])
# derandomize: the same examples on every run (CI must not depend on the seed); grids to N = 1024 because a random
# mixture can stay pre-asymptotic to N ~ 256 (seen: Euler slopes 2.05, 1.17, 1.06 on N = 64..512)
@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=small_mixtures())
def test_low_order_solvers_on_random_mixtures(name, target):
    torch.set_num_threads(1)
    m = measure_order(name, target, ns=(64, 128, 256, 512, 1024), sigma_min=0.01)
    ok = m.ok and abs(m.order - m.claimed) <= TOL
    assert ok, f"{name} on a random mixture: {m}; errors {m.errors}"
