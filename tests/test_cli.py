"""The command line: check-oracle passes and prints its table; bad usage exits with status 2."""

import subprocess
import sys

from analytic.selfcheck import run_checks
from sdm_verify.cli import main


def test_every_oracle_self_check_passes():
    rows = run_checks()
    assert rows and all(r.ok for r in rows), [str(r) for r in rows if not r.ok]


def test_check_oracle_command(capsys):
    assert main(["check-oracle"]) == 0
    out = capsys.readouterr().out
    assert "reference_flow floor" in out and "oracle self-checks passed" in out


def test_bad_usage_exits_2():
    proc = subprocess.run([sys.executable, "-m", "sdm_verify.cli", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
