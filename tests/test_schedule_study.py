"""The schedule study's rows and JSON (sdm_verify.studies.schedules.study) on a tiny matrix: the keys the issue
names, the optimum never worse than a scored schedule beyond the optimiser's tolerance, efficiency <= 1."""

import json

import pytest

from sdm_verify.cli.main import main
from sdm_verify.studies.schedules import report, study

pytestmark = pytest.mark.theory


def test_rows_and_efficiency():
    rows = study.run(solvers=("euler",), target_names=("gauss-1d",), ns=(2, 3), with_published=False,
                     progress=False)
    assert {r.schedule for r in rows} == {"edm", "logsnr", "uniform_t", "optimal"}
    for n in (2, 3):
        opt = next(r for r in rows if r.N == n and r.schedule == "optimal")
        assert opt.status == "ok"
        for r in rows:
            if r.N == n:
                assert opt.error <= r.error * (1 + 1e-6)
    eff = study.efficiency(rows)
    assert all(v is None or 0 < v <= 1 + 1e-6 for v in eff.values())
    text = report.markdown(rows)
    assert "## euler on gauss-1d" in text and "| optimal |" in text


def test_cli_json_rows(tmp_path, monkeypatch):
    plan = study.plan
    monkeypatch.setattr(study, "plan", lambda quick, *a: plan(quick, ("euler",), ("gauss-1d",), (2,)))
    out = tmp_path / "rows.json"
    args = ["schedules", "--quick", "--no-published", "--json", str(out), "--out", str(tmp_path / "r"),
            "--store", str(tmp_path / "s.sqlite")]
    assert main(args) == 0
    rows = json.loads(out.read_text())
    assert {"solver", "target", "process", "N", "schedule", "grid", "error"} <= set(rows[0])
    assert {r["schedule"] for r in rows} == {"edm", "logsnr", "uniform_t", "optimal"}
    assert (tmp_path / "r" / "index.md").is_file() and (tmp_path / "r" / "grids.png").is_file()


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="ns"):
        study.run(ns=(0,), with_published=False, progress=False)
