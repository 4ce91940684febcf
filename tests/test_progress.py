"""Progress with an ETA (sdm_verify.harness.progress): plain lines off a terminal, silence for short sweeps, and the
parent's report of a sweep computed by worker processes."""

import io

import sdm_verify.harness.progress as progress
from sdm_verify.harness.progress import Progress, format_seconds
from sdm_verify.harness.store import ResultStore
from sdm_verify.harness.sweep import Cell, run_cells


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_with_eta_off_a_terminal():
    clock, out = _Clock(), io.StringIO()
    with Progress(20, "cells", stream=out, clock=clock) as p:
        for _ in range(20):
            clock.t += 2.0  # 2 s a cell: 40 s in all
            p.update()
    lines = out.getvalue().splitlines()
    # one line per tenth once past the quiet start (5 s), then one at the end
    assert 5 <= len(lines) <= 10, lines
    assert lines[0].startswith("cells: 4/20 (20%), 8 s elapsed, about 32 s left"), lines[0]
    assert all("left" in line for line in lines[:-1])
    assert lines[-1] == "cells: 20/20 in 40 s"


def test_short_sweep_stays_silent_and_disabled_is_silent():
    clock, out = _Clock(), io.StringIO()
    with Progress(50, "cells", stream=out, clock=clock) as p:
        for _ in range(50):
            clock.t += 0.05
            p.update()
    assert out.getvalue() == ""
    clock, out = _Clock(), io.StringIO()
    with Progress(5, "cells", stream=out, clock=clock, enabled=False) as p:
        for _ in range(5):
            clock.t += 100
            p.update()
    assert out.getvalue() == ""


def test_slow_cells_report_at_least_every_minute():
    clock, out = _Clock(), io.StringIO()
    with Progress(1000, "cells", stream=out, clock=clock) as p:
        for _ in range(3):
            clock.t += 70.0
            p.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "3/1000" in lines[2] and "left" in lines[2]  # 3 timed lines and the end


def test_format_seconds():
    assert (format_seconds(12.4), format_seconds(185), format_seconds(3720)) == ("12 s", "3 min 05 s", "1 h 02 min")


def test_parallel_sweep_reports_progress_from_the_parent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    cells = [Cell("gauss-4d", "euler", "edm", n) for n in (4, 8, 16, 32, 64, 128)]
    with ResultStore(tmp_path / "r.sqlite") as store:
        rows = run_cells(cells, store, jobs=2, desc="test cells")
    assert len(rows) == 6
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("test cells: ") and "left" in line for line in err), err
    assert err[-1].startswith("test cells: 6/6 in ")
