"""The harness: meters against closed forms, NFE counting, process keying, order fitting end to end, the
symbolic cross-check, and an interrupted real sweep that resumes without recomputing or losing rows."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from analytic import Gaussian, gaussian_flow_map, reference_flow
from sdm_verify import schedules, solvers
from sdm_verify.harness import targets
from sdm_verify.harness.convergence import measure_order
from sdm_verify.harness.meters import GaussianMeter, Quantile1DMeter, SyncMeter
from sdm_verify.harness.run import measure_run
from sdm_verify.harness.store import ResultStore, config_key
from sdm_verify.harness.sweep import Cell, compute_cell, run_cells
from sdm_verify.harness.symbolic_order import symbolic_order
from sdm_verify.solvers import Solver, ode_derivative

F64 = torch.float64


def _exact(target, s_from, s_to):
    return lambda x: reference_flow(target, x, s_from, s_to)


def test_gaussian_meter_is_exact():
    g = targets.get("gauss-4d")
    meter = GaussianMeter(g, 80.0, 0.01)
    exact = lambda x: gaussian_flow_map(g, x, 80.0, 0.01)  # noqa: E731
    assert meter.measure(exact) < 1e-13  # Procrustes Bures of identical laws: round-off only
    shift = torch.tensor([3e-6, -4e-6, 0.0, 0.0], dtype=F64)
    # a translated law: W2 = |shift| exactly
    assert meter.measure(lambda x: exact(x) + shift) == pytest.approx(5e-6, rel=1e-7)
    # a scaled map about the mean in 1-D: N(m, c) -> N(m, a^2 c): W2 = |a - 1| sqrt(c)
    g1 = Gaussian([0.3], [[0.5]])
    m1 = GaussianMeter(g1, 10.0, 0.1)
    ex1 = lambda x: gaussian_flow_map(g1, x, 10.0, 0.1)  # noqa: E731
    w = m1.measure(lambda x: 0.3 + (1 + 1e-5) * (ex1(x) - 0.3))
    assert w == pytest.approx(1e-5 * math.sqrt(0.5 + 0.01), rel=1e-6)


def test_quantile_meter_shift_and_exact_map():
    gm = targets.get("gmm-1d")
    meter = Quantile1DMeter(gm, 20.0, 0.05)
    exact = _exact(gm, 20.0, 0.05)
    assert meter.measure(exact) < 1e-9  # reference floor (~1e-12) + quantile inversion of a steep map
    assert meter.measure(lambda x: exact(x) + 1e-4) == pytest.approx(1e-4, rel=1e-5)  # translation: W2 = shift


def test_sync_meter_shift():
    gm = targets.get("gmm-8d")
    meter = SyncMeter(gm, 80.0, 0.01, n=16)
    v = torch.zeros(8, dtype=F64)
    v[3] = 2e-5
    assert meter.measure(lambda x: meter.reference + v) == pytest.approx(2e-5, rel=1e-9)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "rk4", "unipc"])
def test_counted_nfe_in_rows(name):
    cfg = Cell("gmm-8d", name, "edm", 8).config()
    row = compute_cell(cfg)
    assert row["nfe"] == solvers.get(name).nfe(8)
    cfg0 = Cell("gmm-8d", name, "edm", 8, final=True).config()
    assert compute_cell(cfg0)["nfe"] == solvers.get(name).nfe_to_zero(8)


def test_process_enters_only_where_it_matters():
    assert Cell("gauss-4d", "heun", "edm", 8, process="vp").config()["process"] == "any"
    assert Cell("gauss-4d", "heun", "uniform_t", 8, process="vp").config()["process"] == "vp"
    assert Cell("gauss-4d", "euler_t", "edm", 8, process="fm").config()["process"] == "fm"
    a = compute_cell(Cell("gauss-4d", "euler_t", "edm", 16, process="vp").config())["error"]
    b = compute_cell(Cell("gauss-4d", "euler", "edm", 16, process="vp").config())["error"]
    assert abs(a - b) > 1e-6 * b  # Euler in VP time is a different method from Euler in sigma


class _Diverging(Solver):
    name, order = "diverging", 1

    def step(self, denoiser, x, i, ctx):
        return x * math.inf if i == 2 else x


def test_divergence_is_recorded_not_raised():
    row = measure_run(_Diverging(), "gauss-4d", torch.tensor([80.0, 10.0, 1.0, 0.1, 0.01], dtype=F64), 0.01)
    assert row["status"] == "diverged" and math.isinf(row["error"])
    assert "step 2" in row["detail"]


class _BrokenHeun(Solver):
    """Heun with the trapezoid weights (1/2, 1/2) replaced by (0.6, 0.4): consistent, but first order."""

    name, order, nfe_per_step = "broken_heun", 2, 2

    def step(self, denoiser, x, i, ctx):
        s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
        d = ode_derivative(x, denoiser(x, s), s)
        xp = x + (t - s) * d
        return x + (t - s) * (0.6 * d + 0.4 * ode_derivative(xp, denoiser(xp, t), t))


@pytest.mark.theory
def test_measure_order_catches_a_wrong_coefficient():
    good = measure_order("heun", "gmm-8d", ns=(32, 64, 128, 256))
    bad = measure_order(_BrokenHeun(), targets.get("gmm-8d"), ns=(128, 256, 512, 1024, 2048))
    assert good.agrees(0.2), str(good)
    # the wrong weight leaves an O(h) local defect: first order, settled by N ~ 512 on this target
    assert bad.ok and abs(bad.order - 1.0) < 0.2 and not bad.agrees(0.2), str(bad)


@pytest.mark.theory
def test_measure_order_says_when_there_is_no_window():
    exactish = lambda den, x, sig: reference_flow(targets.get("gauss-4d"), x, float(sig[0]), float(sig[-1]))  # noqa
    m = measure_order(exactish, targets.get("gauss-4d"), ns=(8, 16, 32), claimed=1)
    assert not m.ok and m.order is None and "floor" in m.fit.reason


def test_symbolic_crosscheck_reads_the_solvers_own_rules():
    assert symbolic_order(solvers.get("dpmpp_2m")).uniform == 2
    assert symbolic_order(solvers.get("unipc_bh2_p2")).uniform == 3  # corrector raises the order
    assert symbolic_order(solvers.get("unip_bh2_p2")).uniform == 2
    # Runge-Kutta: the Butcher tableau's weights are its rule (issue 12: the symbolic item covers them too)
    assert symbolic_order(solvers.get("euler")).uniform == 1
    assert symbolic_order(solvers.get("heun")).uniform == 2


SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from sdm_verify.harness.store import ResultStore, config_key
    from sdm_verify.harness.sweep import Cell, run_cells, compute_cell
    import sdm_verify.harness.sweep as sw
    log = open(sys.argv[2], "a")
    original = sw.compute_cell
    def logged(cfg):
        row = original(cfg)
        log.write(json.dumps([cfg["solver"], cfg["n"]]) + "\\n"); log.flush()
        return row
    sw.compute_cell = logged
    solvers = ("euler", "heun", "dpmpp_2m", "midpoint")
    cells = [Cell("gmm-1d", s, "edm", n) for s in solvers for n in (16, 32, 64, 128, 256)]
    run_cells(cells, ResultStore(sys.argv[1]), progress=False)
    """
)


def test_killed_sweep_resumes_without_loss(tmp_path):
    db, log = tmp_path / "sweep.sqlite", tmp_path / "computed.log"
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(log)], env=env)
    deadline = time.time() + 120
    n_rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with ResultStore(db) as st:
                    n_rows = len(st)
            except Exception:  # the file may be mid-creation
                continue
            if n_rows >= 6:
                break
    assert proc.poll() is None, "the sweep finished before it could be killed; make its cells slower"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = ("euler", "heun", "dpmpp_2m", "midpoint")
    cells = [Cell("gmm-1d", s, "edm", n) for s in names for n in (16, 32, 64, 128, 256)]
    with ResultStore(db) as st:
        stored = set(st.keys())
        assert 6 <= len(stored) < len(cells)
        # every stored row is intact: recomputing a few gives identical errors and NFE (the sweep is deterministic)
        done = [c for c in cells if st.has(c.config())]
        for c in done[:3]:
            row, fresh = st.get(c.config()), compute_cell(c.config())
            assert row["error"] == fresh["error"] and row["nfe"] == fresh["nfe"]
        computed = []
        import sdm_verify.harness.sweep as sw

        original = sw.compute_cell
        sw.compute_cell = lambda cfg: computed.append(cfg) or original(cfg)
        try:
            rows = run_cells(cells, st, progress=False)
        finally:
            sw.compute_cell = original
        assert len(computed) == len(cells) - len(stored)
        assert not any(config_key(c) in stored for c in computed)
        assert len(st) == len(cells) and all(math.isfinite(r["error"]) for r in rows)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) >= len(stored)  # the killed run computed every row it stored (and at most one more)


def test_decision_run_measures_like_the_replayed_probes():
    """A solver that decides on the data, on a Gaussian: the meter reads the frozen map off its decision run (one run)
    and gets the probes' W2 up to round-off, with the same counted NFE; and the affine fit is exact on an affine map."""
    from sdm_verify.harness.run import replayed

    g = targets.get("gauss-4d")
    meter = GaussianMeter(g, 80.0, 0.002)
    M0, c0 = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(1)), torch.arange(4.0, dtype=F64)
    x = g.sample(64, sigma=80.0, generator=torch.Generator().manual_seed(2))
    M, c = meter.affine_of(x, x @ M0.T + c0)
    torch.testing.assert_close(M, M0, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(c, c0, rtol=1e-12, atol=1e-12)
    sigmas = schedules.get("edm")(64, 0.002, 80.0)
    row = measure_run(solvers.get("sdm"), "gauss-4d", sigmas, 0.002)
    probes = meter.measure(lambda p: replayed(solvers.get("sdm"), g, sigmas)(g.denoiser, p, sigmas))
    assert row["runs"] == 1 and row["nfe"] > 64 and row["status"] == "ok"
    assert row["error"] == pytest.approx(probes, rel=1e-7)


def test_longest_cells_first():
    from sdm_verify.harness.sweep import cost_estimate, lpt_order

    cfgs = [Cell("gauss-4d", "euler", "edm", 32).config(), Cell("gmm-1d", "heun", "edm", 256).config(),
            Cell("gmm-8d", "rk4", "edm", 64).config()]
    assert [c["target"] for c in lpt_order(cfgs)] == ["gmm-1d", "gmm-8d", "gauss-4d"]
    assert cost_estimate({**cfgs[0], "solver": "no-such-solver"}) == 0.0
