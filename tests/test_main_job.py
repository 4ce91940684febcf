"""The main job, `sdm-verify theory`, as a user meets it: on a fresh clone it computes (the committed store is a
baseline to compare with, not a cache); after a solver's code is edited it computes that solver's cells again and
reports what moved, with exit status 1 when a verdict changed; killed mid-sweep, it resumes from its working store."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdm_verify.cli import main
from sdm_verify.harness import cases as theory
from sdm_verify.harness.store import ResultStore

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "reports" / "theory" / "results.sqlite"


def _fresh_clone(dest: Path) -> Path:
    """The files a clone of this working tree would hold once committed: tracked and untracked files that git does
    not ignore, as they are now (no results store of earlier runs, no caches)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git working tree")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # listed but deleted in the working tree: not in the next commit
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run(args, cwd: Path, pythonpath: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "sdm_verify.cli", "theory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _check_fresh_clone(tmp_path: Path, args: list[str]) -> str:
    clone = _fresh_clone(tmp_path / "clone")
    committed = (clone / "reports/theory/results.sqlite").read_bytes()
    assert not (clone / "results").exists()
    proc = _run(args, clone, clone)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    n, computed = map(int, re.search(r"^(\d+) cells \((\d+) computed\)", out, re.M).groups())
    assert n > 0 and computed == n, out  # nothing reused: the clone has no working store yet
    assert (clone / "results/theory.sqlite").is_file()  # the working store (gitignored)
    m = re.search(r"^baseline reports/theory/results.sqlite: (\d+) cells compared \((\d+) without", out, re.M)
    assert m and int(m.group(1)) > 0, out  # compared with the committed baseline
    assert "verdicts changed: 0" in out, out  # the same code as the committed report: its findings stand
    assert (clone / "reports/theory/results.sqlite").read_bytes() == committed  # the baseline is only read
    return out


def test_fresh_clone_computes_and_compares_with_the_baseline(tmp_path):
    out = _check_fresh_clone(tmp_path, ["--solvers", "heun", "--jobs", "2"])
    assert "25 cells (25 computed)" in out and "33 cells compared (0 without a baseline row)" in out


@pytest.mark.slow
def test_fresh_clone_quick(tmp_path):
    _check_fresh_clone(tmp_path, ["--quick", "--jobs", "2"])


#: where Heun's trapezoid weights (1/2, 1/2) are written, in the forms rk.py has had: (pattern, replacement with the
#: weights (0.6, 0.4) -- still consistent, but first order)
HEUN_WEIGHTS = [
    (r'("heun"\s*:\s*ButcherTableau\([^\n]*?\bb=\()[^)]*(\))', r'\1"3/5", "2/5"\2'),  # a Butcher tableau
    (r"torch\.add\(x, d \+ d2, alpha=0\.5 \* \(t - s\)\)", "torch.add(x, 1.2 * d + 0.8 * d2, alpha=0.5 * (t - s))"),
]


def _edit_heun(rk: Path) -> None:
    source = rk.read_text()
    for pattern, replacement in HEUN_WEIGHTS:
        edited, n = re.subn(pattern, replacement, source)
        if n == 1:
            rk.write_text(edited)
            return
    pytest.fail(f"Heun's weights not found in {rk}: teach HEUN_WEIGHTS the file's new form")


def test_edited_solver_is_computed_again_and_its_verdicts_change(tmp_path, capsys):
    store, baseline = tmp_path / "work.sqlite", tmp_path / "baseline.sqlite"
    # the old store: Heun's cells computed by this code (in this process, from the repository)
    assert main(["theory", "--solvers", "heun", "--jobs", "2", "--db", str(store), "--out", str(tmp_path / "old"),
                 "--no-baseline"]) == 0
    assert "25 cells (25 computed)" in capsys.readouterr().out
    shutil.copy(store, baseline)
    # a copy of the package with Heun's weights edited, first on PYTHONPATH
    pkg = tmp_path / "pkg"
    for name in ("sdm_verify", "analytic"):
        shutil.copytree(REPO / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    _edit_heun(pkg / "sdm_verify/solvers/rk.py")
    proc = _run(["--solvers", "heun", "--jobs", "2", "--db", str(store), "--baseline", str(baseline), "--out",
                 str(tmp_path / "new")], tmp_path, pkg)
    out = proc.stdout
    assert "25 cells (25 computed) and 8 full-sampler cells (8 computed)" in out, out + proc.stderr
    # only the solver's code differs (the copy's other files fingerprint as the repository's), and the report says
    # which file
    code = out.split("code that differs from the baseline's", 1)[1].split("  cells moved", 1)[0]
    assert [line.strip() for line in code.strip().splitlines()[1:]] == ["solver heun: sdm_verify/solvers/rk.py"], out
    moved = int(re.search(r"cells moved \(beyond [^)]*\): (\d+)", out).group(1))
    assert moved >= 25, out  # every cell above the floor moved (a first-order error instead of a second-order one)
    verdicts = int(re.search(r"verdicts changed: (\d+)", out).group(1))
    assert verdicts >= 1 and "agree -> " in out, out
    assert proc.returncode == 1 and f"exit status 1: {verdicts} verdict(s) changed" in out, (proc.returncode, out)


KILLED_SCRIPT = """
import sys
from sdm_verify.cli import main
from sdm_verify.harness import cases as theory

theory.DEFAULT_CONFIGS = [("gmm-8d", "ve", "edm", theory._all)]
theory.NS = {"gmm-8d": ((256, 512, 1024, 2048, 4096),) * 2}
theory.FULL_SAMPLER_NS = (16,)
sys.exit(main(["theory", "--solvers", "heun", "--jobs", "2", "--db", sys.argv[1], "--out", sys.argv[2],
               "--no-baseline"]))
"""


def test_killed_main_job_resumes_from_its_working_store(tmp_path, monkeypatch, capsys):
    """kill -9 of `theory --jobs 2` (parent and workers) mid-sweep: the rerun computes only what was not stored."""
    db, script = tmp_path / "work.sqlite", tmp_path / "job.py"
    script.write_text(KILLED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(tmp_path / "out")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stored, deadline = 0, time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if db.exists():
                try:
                    with ResultStore(db, readonly=True) as s:
                        stored = len(s)
                except Exception:  # mid-creation
                    continue
                if stored >= 2:
                    break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed: make its cells slower"
    with ResultStore(db, readonly=True) as s:
        stored = len(s)
    assert 2 <= stored < 5
    monkeypatch.setattr(theory, "DEFAULT_CONFIGS", [("gmm-8d", "ve", "edm", theory._all)])
    monkeypatch.setattr(theory, "NS", {"gmm-8d": ((256, 512, 1024, 2048, 4096),) * 2})
    monkeypatch.setattr(theory, "FULL_SAMPLER_NS", (16,))
    assert main(["theory", "--solvers", "heun", "--jobs", "2", "--db", str(db), "--out", str(tmp_path / "out"),
                 "--no-baseline"]) == 0
    assert f"5 cells ({5 - stored} computed)" in capsys.readouterr().out
