"""The comparison with the baseline (sdm_verify.harness.baseline) and the `theory` command around it: tolerances,
verdict changes, the refreshed baseline, and the exit status."""

import math
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

import sdm_verify.harness.sweep as sw
from sdm_verify.cli import main
from sdm_verify.errors import StoreError
from sdm_verify.harness import cases as theory
from sdm_verify.harness import fingerprint
from sdm_verify.harness.baseline import (
    CELL_RTOL,
    FLOOR_FACTOR,
    ORDER_TOL,
    compare,
    identity,
    is_sweep_cell,
    write_baseline,
)
from sdm_verify.harness.results import results_from
from sdm_verify.harness.store import ResultStore, config_key
from sdm_verify.harness.sweep import CODE_META, Cell

NS = (32, 64, 128, 256)


def _row(error, nfe=64, status="ok", floor=1e-13):
    return {"error": error, "nfe": nfe, "status": status, "floor": floor, "metric": "bures_w2"}


def _cfg(n, solver="heun", code=None):
    cfg = Cell("gauss-4d", solver, "edm", n).config()
    if code is not None:
        cfg = {**cfg, "code": {**cfg["code"], **code}}
    return cfg


def _case(solver, errors, claimed=2.0):
    case = {"solver": solver, "target": "gmm-8d", "process": "ve", "schedule": "edm", "claimed": claimed}
    return case, [{"n": n, **_row(e)} for n, e in zip(NS, errors, strict=True)]


def test_identity_ignores_only_the_code():
    a, b = _cfg(32), _cfg(32, code={"solver": "other"})
    assert config_key(a) != config_key(b) and identity(a) == identity(b)
    assert identity(_cfg(64)) != identity(a)
    assert is_sweep_cell(a) and not is_sweep_cell({"kind": "real", "solver": "heun", "schedule": "edm", "n": 8})


def test_cells_move_beyond_rounding_only(tmp_path):
    base_rows = {32: _row(1e-3), 64: _row(1e-3), 128: _row(1e-12), 256: _row(2e-4), 512: _row(math.inf, 64,
                                                                                                 "diverged")}
    with ResultStore(tmp_path / "b.sqlite") as b:
        for n, row in base_rows.items():
            b.put(_cfg(n), row)
        run = [(_cfg(32), _row(1e-3 * (1 + CELL_RTOL / 2))),  # within rounding: not moved
               (_cfg(64), _row(1e-3 * (1 + 2 * CELL_RTOL))),  # beyond: moved
               (_cfg(128), _row(1e-12 + FLOOR_FACTOR * 1e-13 / 2)),  # within 100x floor: round-off, not moved
               (_cfg(256), _row(2e-4, nfe=96)),  # the same error with another NFE: moved
               (_cfg(512), _row(math.inf, 64, "diverged")),  # diverged in both: not moved
               (_cfg(1024), _row(1e-9))]  # no baseline row
        c = compare(run, [], b, None)
    assert (c.cells, c.unmatched) == (5, 1)
    assert [m.label for m in c.moved] == ["heun gauss-4d/any/edm N=64", "heun gauss-4d/any/edm N=256"]
    assert "NFE 64 -> 96" in c.moved[1].line()
    assert c.code == {}  # the same code on both sides
    assert c.changed_verdicts == 0


def test_code_differences_name_their_files(tmp_path):
    with ResultStore(tmp_path / "b.sqlite") as b:
        b.put(_cfg(32, code={"solver": "s-old"}), _row(1e-3))
        b.put({k: v for k, v in _cfg(64).items() if k != "code"}, _row(1e-4))  # a row from before fingerprints
        b.set_meta(CODE_META, {"s-old": {"part": "solver", "files": {"rk.py": "1", "base.py": "2"}}})
        run = [(_cfg(32, code={"solver": "s-new"}), _row(2e-3)), (_cfg(64), _row(1e-4))]
        files = {"s-new": {"part": "solver", "files": {"rk.py": "9", "base.py": "2"}}}
        c = compare(run, [], b, None, files)
    assert c.code["solver heun"] == ["rk.py"]
    assert any(k.startswith("unrecorded") for k in c.code)
    assert c.moved[0].code == ("solver",) and "code: solver" in c.moved[0].line()


def test_orders_and_verdicts(tmp_path):
    before = results_from([_case("heun", [3.0 * n**-2 for n in NS]), _case("euler", [3.0 * n**-1 for n in NS], 1),
                           _case("midpoint", [3.0 * n**-2 for n in NS])])
    after = results_from([_case("heun", [3.0 * n**-1 for n in NS]), _case("euler", [3.3 * n**-1 for n in NS], 1),
                          _case("rk4", [3.0 * n**-4 for n in NS], 4)])
    with ResultStore(tmp_path / "b.sqlite") as b:
        c = compare([], after, b, before)
    assert (c.cases, c.new_cases) == (2, 1)  # rk4 is new; midpoint is not in this run
    assert [x.label for x in c.orders] == ["heun gmm-8d/ve/edm"]  # euler: another constant, the same order
    assert c.verdicts[0].verdict == ("agree", "deviates") and c.changed_verdicts == 1
    assert abs(c.orders[0].order[0] - 2) < ORDER_TOL and abs(c.orders[0].order[1] - 1) < ORDER_TOL
    text = "\n".join(c.lines())
    assert "verdicts changed: 1" in text and "heun gmm-8d/ve/edm: order 2.00 -> 1.00, agree -> deviates" in text


def test_write_baseline_keeps_real_runs(tmp_path):
    work, path = tmp_path / "work.sqlite", tmp_path / "base.sqlite"
    real = {"kind": "real", "model": "m", "what": "cell", "solver": "heun", "schedule": "edm", "n": 8}
    with ResultStore(path) as old:
        old.put(_cfg(32), _row(1.0))  # a theory cell of the old run: replaced
        old.put(real, {"error": 0.5})
        old.set_meta("theory_run", {"old": True})
        old.set_meta("real_runs", ["r1"])
        old.put_blob("ref-1", torch.arange(3.0))
    with ResultStore(work) as w:
        keep = [w.put(_cfg(n), _row(n * 1e-6)) for n in (32, 64)]
        w.put(_cfg(128), _row(0.1))  # computed by an earlier run, not this one: not carried
        w.set_meta("theory_run", {"old": False})
        w.set_meta("baseline_comparison", {"stale": True})
        w.set_meta(CODE_META, {"d": {"part": "solver", "files": {}}})
        assert write_baseline(w, keep, path, theory_meta=("theory_run",)) == 3
    with ResultStore(path, readonly=True) as new:
        assert {r["n"]: r["error"] for r in new.rows() if "target" in r} == {32: 32e-6, 64: 64e-6}
        assert new.get(real) == {"error": 0.5} and new.get_meta("real_runs") == ["r1"]
        assert new.get_meta("theory_run") == {"old": False} and new.get_meta("baseline_comparison") is None
        assert new.get_meta(CODE_META) and new.get_blob("ref-1").tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.sqlite", "work.sqlite"]  # no temporary, no journal


def test_readonly_store_leaves_no_trace(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as s:
        s.put({"a": 1}, {"b": 2})
    data = path.read_bytes()
    with ResultStore(path, readonly=True) as s:
        assert s.get({"a": 1}) == {"b": 2}
        with pytest.raises(sqlite3.OperationalError):
            s.put({"a": 2}, {"b": 3})
    assert path.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == ["r.sqlite"]
    with pytest.raises(StoreError, match="no such file"):  # was FileNotFoundError: now the store's one-line refusal
        ResultStore(tmp_path / "none.sqlite", readonly=True)


# ------------------------------------------------------------------------------------------- the command


@pytest.fixture
def small_matrix(monkeypatch):
    """Heun's theory cases cut to one configuration on the Gaussian target, N = 32..512."""
    monkeypatch.setattr(theory, "DEFAULT_CONFIGS", [("gauss-4d", "ve", "edm", theory._all)])
    monkeypatch.setattr(theory, "NS", {"gauss-4d": ((32, 64, 128, 256, 512),) * 2})
    monkeypatch.setattr(theory, "FULL_SAMPLER_NS", (16,))


def test_theory_compares_and_fails_on_a_changed_verdict(tmp_path, small_matrix, monkeypatch, capsys):
    work, base, out = tmp_path / "work.sqlite", tmp_path / "base.sqlite", tmp_path / "out"
    argv = ["theory", "--solvers", "heun", "--jobs", "1", "--out", str(out), "--db", str(work), "--baseline", str(base)]
    assert main([*argv, "--update-baseline"]) == 0
    text = capsys.readouterr().out
    assert "5 cells (5 computed)" in text and f"no baseline compared (no store at {base})" in text
    assert f"baseline updated: {base}" in text and base.is_file()

    assert main(argv) == 0  # the same code: every cell reused, nothing moved
    text = capsys.readouterr().out
    assert "5 cells (0 computed)" in text and "7 cells compared (0 without a baseline row)" in text
    assert "cells moved (beyond 1e-06 relative + 100x floor): 0" in text and "verdicts changed: 0" in text

    # the measure-run changed (every error scaled by N: one order lower) and, as an edited module's would, the
    # harness fingerprint with it: every cell is computed again and Heun's verdict changes
    measure_run = sw.measure_run

    def scaled(solver, target, sigmas, sigma_to, meter=None):
        row = measure_run(solver, target, sigmas, sigma_to, meter)
        return {**row, "error": row["error"] * (len(sigmas) - 1)}

    harness, oracle = fingerprint.harness_parts()
    monkeypatch.setattr(sw, "measure_run", scaled)
    monkeypatch.setattr(fingerprint, "harness_parts",
                        lambda: (fingerprint.Part("harness", "edited", harness.files), oracle))
    sw._code.cache_clear()
    try:
        assert main(argv) == 1
        text = capsys.readouterr().out
        assert "5 cells (5 computed)" in text and "\n    harness\n" in text
        assert "cells moved (beyond 1e-06 relative + 100x floor): 7" in text
        assert "verdicts changed: 1" in text and "agree -> deviates" in text
        assert "exit status 1: 1 verdict(s) changed against the baseline" in text
        assert main([*argv, "--update-baseline"]) == 0  # accepted: the baseline now holds the changed run
        text = capsys.readouterr().out
        assert "5 cells (0 computed)" in text and "verdicts changed: 1" in text and "baseline updated" in text
        with ResultStore(base, readonly=True) as b:
            assert all(r["code"]["harness"] == "edited" for r in b.rows() if "target" in r)
    finally:
        sw._code.cache_clear()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_theory_leaves_the_baseline_unchanged(tmp_path, small_matrix, journal, capsys):
    """The comparison reads the baseline only: its bytes, its journal mode and its folder stay as they were."""
    work, base, out = tmp_path / "work.sqlite", tmp_path / "b" / "base.sqlite", tmp_path / "out"
    base.parent.mkdir()
    argv = ["theory", "--solvers", "heun", "--jobs", "1", "--out", str(out), "--db", str(work), "--baseline", str(base)]
    assert main([*argv, "--update-baseline"]) == 0
    if journal == "delete":
        con = sqlite3.connect(base)
        assert con.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
        con.close()
    data, files = base.read_bytes(), sorted(base.parent.iterdir())
    assert data[18:20] == (b"\x02\x02" if journal == "wal" else b"\x01\x01")  # the header's journal mode
    assert main(argv) == 0
    assert "verdicts changed: 0" in capsys.readouterr().out
    assert base.read_bytes() == data and sorted(base.parent.iterdir()) == files


def test_refreshed_baseline_reproduces_the_report_and_keeps_real_runs(tmp_path, small_matrix, capsys):
    """`theory --update-baseline` on (a copy of) the committed store: the real-model runs stay, and `report` on the
    new baseline rebuilds exactly the report `theory` wrote (tests/test_committed_report.py's check)."""
    committed = Path(__file__).resolve().parents[1] / "reports" / "theory" / "results.sqlite"
    base, out = tmp_path / "base.sqlite", tmp_path / "out"
    shutil.copy(committed, base)
    with ResultStore(base, readonly=True) as b:
        real_rows, real_runs = len(b.rows(kind="real")), b.get_meta("real_runs")
    assert real_rows and real_runs
    assert main(["theory", "--solvers", "heun", "--jobs", "1", "--out", str(out), "--db", str(tmp_path / "w.sqlite"),
                 "--baseline", str(base), "--update-baseline"]) == 0
    text = capsys.readouterr().out
    assert "7 cells compared (0 without a baseline row)" in text and "verdicts changed: 0" in text
    with ResultStore(base, readonly=True) as b:
        assert len(b.rows(kind="real")) == real_rows and b.get_meta("real_runs") == real_runs
        assert len([r for r in b.rows() if "target" in r]) == 7  # this run's cells only
    shutil.copy(base, tmp_path / "copy.sqlite")
    assert main(["report", "--db", str(tmp_path / "copy.sqlite"), "--out", str(tmp_path / "again")]) == 0
    md = (out / "index.md").read_text(encoding="utf-8")
    assert "digits" in md  # the real-model sections, from the baseline
    assert (tmp_path / "again" / "index.md").read_text(encoding="utf-8") == md
