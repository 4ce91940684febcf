"""The committed baseline (reports/theory/) is what `sdm-verify report` produces from the committed results store.

The default run checks index.md byte for byte and that `sdm-verify report` writes every committed figure (the same
code path, each figure built with its data and handed to savefig), with matplotlib's drawing of the PNG pixels
replaced by an empty file: drawing the 13 figures was ~85% of the test's time (constrained layout and tick labels of
the log-log panels) and its bytes were never compared. Drawing itself is covered in the default run by
tests/test_report.py (convergence figures) and tests/test_real_harness.py (the real-model figures); the
same check with every PNG drawn for real is the `slow` test below.
"""

import shutil
from pathlib import Path

import pytest

from sdm_verify.cli import main

BASELINE = Path(__file__).resolve().parent.parent / "reports" / "theory"


def _report(tmp_path) -> Path:
    db = tmp_path / "results.sqlite"
    shutil.copy(BASELINE / "results.sqlite", db)  # a copy: opening the store must not touch the repository
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "out")]) == 0
    return tmp_path / "out"


def _check(out: Path) -> None:
    assert (out / "index.md").read_text() == (BASELINE / "index.md").read_text()
    for png in BASELINE.glob("*.png"):
        assert (out / png.name).exists()


def test_committed_report_is_reproduced_from_its_store(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []

    def savefig(fig, fname, *args, **kwargs):  # the file the report names, without drawing its pixels
        assert fig.axes, "a figure with nothing drawn on it"
        saved.append(Path(fname).name)
        Path(fname).write_bytes(b"")

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = _report(tmp_path)
    _check(out)
    assert sorted(saved) == sorted({*saved}), "a figure written twice"
    assert {p.name for p in BASELINE.glob("*.png")} <= set(saved)


@pytest.mark.slow
def test_committed_report_is_reproduced_with_its_figures_drawn(tmp_path):
    out = _report(tmp_path)
    _check(out)
    for png in BASELINE.glob("*.png"):
        assert (out / png.name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
