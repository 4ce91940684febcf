"""The committed baseline (reports/theory/) is what `sdm-verify report` produces from the committed results store."""

import shutil
from pathlib import Path

from sdm_verify.cli import main

BASELINE = Path(__file__).resolve().parent.parent / "reports" / "theory"


def test_committed_report_is_reproduced_from_its_store(tmp_path):
    db = tmp_path / "results.sqlite"
    shutil.copy(BASELINE / "results.sqlite", db)  # a copy: opening the store must not touch the repository
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.md").read_text() == (BASELINE / "index.md").read_text()
    for png in BASELINE.glob("*.png"):
        assert (tmp_path / "out" / png.name).exists()
