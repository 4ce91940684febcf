"""The real-model harness, judged on an exact mixture posing as a model (its flow is known to the oracle)."""

import math

import pytest
import torch
from _real_fixtures import MixtureModel

from analytic import reference_flow
from sdm_verify.harness.store import ResultStore
from sdm_verify.harness.targets import get
from sdm_verify.real.harness import RealCase, RealHarness, RealSettings, error_at_nfe, start_points
from sdm_verify.real.reference import check_reference, reference_solution

pytestmark = pytest.mark.real

SHAPE = (2, 2, 2)  # gmm-8d as 2x2x2 "images"


@pytest.fixture(scope="module")
def model():
    return MixtureModel(get("gmm-8d"), SHAPE)


def test_reference_solution_matches_the_oracle(model):
    x = start_points(SHAPE, range(4), 80.0)
    ref, info = reference_solution(model, x, 80.0, 0.002, rtol=1e-10)
    exact = reference_flow(model.gm, x.reshape(4, -1), 80.0, 0.002)  # DOP853 at 1e-12, floor ~3e-13
    err = float(((ref.reshape(4, -1) - exact) ** 2).mean().sqrt())
    # rtol 1e-10 on |x| ~ 1..80: the global error of a tolerance-controlled DOP853 run is a small multiple of it
    assert err < 1e-8, err
    assert info["nfev"] > 100


def test_reference_check_bounds_the_true_error(model):
    x = start_points(SHAPE, range(4), 80.0)
    r = check_reference(model, x, 80.0, 0.002, rtol=1e-7)
    exact = reference_flow(model.gm, x.reshape(4, -1), 80.0, 0.002)
    true_err = float(((r.x.reshape(4, -1) - exact) ** 2).mean().sqrt())
    # the estimate is the coarse (1e-7) run's error; the kept run is the 100x finer one, so it must be smaller
    assert true_err < r.estimate
    assert r.estimate < 1e-4  # a 1e-7-tolerance run is accurate far beyond the errors the harness judges


def test_reference_rejects_bad_ranges(model):
    x = start_points(SHAPE, range(2), 80.0)
    with pytest.raises(ValueError, match="sigma_from"):
        reference_solution(model, x, 0.002, 80.0)
    with pytest.raises(ValueError, match="sigma_from"):
        reference_solution(model, x, 80.0, 0.0)


def test_start_points_do_not_depend_on_sharding():
    a = start_points(SHAPE, range(6), 80.0)
    b = start_points(SHAPE, [1, 3, 5], 80.0)
    assert torch.equal(a[1::2], b)


@pytest.fixture(scope="module")
def measured(model, tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("real") / "r.sqlite")
    h = RealHarness(model, RealSettings(seeds=8, rtol=1e-8), store=store, progress=False)
    cases = h.run([("euler", "edm"), ("heun", "edm")], [64, 128, 256, 512])
    return h, cases, store


def test_harness_errors_are_the_rms_against_the_exact_flow(measured, model):
    h, cases, _ = measured
    exact = reference_flow(model.gm, h._x.reshape(8, -1), 80.0, 0.002)
    from sdm_verify import schedules, solvers

    for c in cases:
        for n, e in zip(c.ns, c.errors, strict=True):
            grid = schedules.get(c.schedule)(n, 0.002, 80.0)
            out = solvers.get(c.solver)(model, h._x.clone(), grid)
            direct = float(((out.reshape(8, -1) - exact) ** 2).mean().sqrt())
            # the harness's reference (1e-10 tolerance) differs from the oracle's by < 1e-8 (test above), far
            # below these errors (> 1e-5)
            assert e == pytest.approx(direct, rel=1e-4, abs=1e-8)


def test_harness_orders(measured):
    _, cases, _ = measured
    orders = {c.solver: c.fit.order for c in cases}
    # the theory part measures euler 1 and heun 2 on gmm-8d; the real-model verdict tolerance is 0.25
    assert orders["heun"] == pytest.approx(2.0, abs=0.25)
    assert orders["euler"] == pytest.approx(1.0, abs=0.25)


def test_harness_resumes_from_the_store(measured, model, monkeypatch):
    h, cases, store = measured
    h2 = RealHarness(model, RealSettings(seeds=8, rtol=1e-8), store=store, progress=False)
    calls = []
    monkeypatch.setattr(h2, "measure", lambda *c: calls.append(c) or {})
    again = h2.run([("euler", "edm"), ("heun", "edm")], [64, 128, 256, 512])
    assert calls == []  # every cell and the reference come from the store
    assert [c.errors for c in again] == [c.errors for c in cases]


def test_error_at_nfe_is_exact_for_a_power_law():
    nfe = [8, 16, 32, 64]
    errors = [3.0 * n ** -2.0 for n in nfe]
    case = RealCase("x", "edm", nfe, [dict(error=e, nfe=n) for n, e in zip(nfe, errors, strict=True)], 2.0,
                    None, nfe)
    assert error_at_nfe(case, 20) == pytest.approx(3.0 * 20 ** -2.0, rel=1e-12)  # log-log linear is exact
    assert error_at_nfe(case, 4) is None and error_at_nfe(case, 100) is None


def test_float32_precision_floor_is_measured(model):
    h = RealHarness(model, RealSettings(seeds=4, dtype="float32"), progress=False)
    floor = h.precision_floor(n=64)
    # float32 eps 6e-8 relative on |x| ~ 1..80 accumulated over 127 calls: between 1e-8 and 1e-4 per pixel
    assert 1e-8 < floor < 1e-4
    assert not math.isnan(floor)


DIST_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from _real_fixtures import MixtureModel
from sdm_verify.real.distributed import context
from sdm_verify.real.harness import RealSettings
from sdm_verify.real.run import run_real
from sdm_verify.harness.store import ResultStore
from sdm_verify.harness.targets import get

torch.set_num_threads(1)
ctx = context("cpu")
with ResultStore({db!r}) as store:
    run_real(MixtureModel(get("gmm-8d"), (2, 2, 2)), store, settings=RealSettings(seeds=6, rtol=1e-8),
             pairs=[("heun", "edm"), ("dpmpp_2m", "logsnr")], ns=[8, 16, 32], samples=0, ctx=ctx, progress=False)
ctx.close()
"""


def _rows(db):
    with ResultStore(db) as store:
        return {(r["solver"], r["schedule"], r["n"]): r for r in store.rows(kind="real", what="cell")}


def test_torchrun_sharding_merges_to_the_one_process_result(tmp_path):
    import os
    import subprocess
    import sys

    tests = os.path.dirname(__file__)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    one, two = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    for db, launch in ((one, [sys.executable]),
                       (two, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", "29533"])):
        script = tmp_path / f"run_{db.stem}.py"
        script.write_text(DIST_SCRIPT.format(tests=tests, db=str(db)))
        proc = subprocess.run([*launch, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _rows(one), _rows(two)
    assert a.keys() == b.keys() and len(a) == 6
    for k in a:
        # the solver runs are per seed and identical; the reference is not: DOP853 controls the error norm of the
        # whole batch, so each shard's reference takes its own steps and differs by up to its accuracy (rtol 1e-10
        # for the kept run on |x| <= ~5 at sigma_min: < 1e-9)
        assert b[k]["error"] == pytest.approx(a[k]["error"], abs=1e-9), k
        assert b[k]["nfe"] == a[k]["nfe"]


def test_report_sections_rebuild_from_the_store(tmp_path, model):
    from sdm_verify.cli import main
    from sdm_verify.real.run import run_real
    from sdm_verify.report.real import real_sections

    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        record = run_real(model, store, settings=RealSettings(seeds=4, rtol=1e-8),
                          pairs=[("heun", "edm"), ("euler", "edm"), ("heun", "sdm")], ns=[16, 32, 64],
                          samples=0, progress=False)
        [(title, md, figs)] = real_sections(store, [], tmp_path / "out")
    assert record["model"] in title and "float64" in title
    assert "| heun | 2 |" in md and "NFE 20" in md and "heun / sdm" in md
    assert all(p.is_file() for p, _ in figs)
    # `report` works on a store holding only real-model runs
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "rep")]) == 0
    assert "Real model" in (tmp_path / "rep" / "index.md").read_text()
