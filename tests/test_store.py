"""sdm_verify.harness.store: keys, round trips, resume after SIGKILL, concurrent writers."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sdm_verify.harness.store import SCHEMA_VERSION, ResultStore, config_key, run_pending

REPO = Path(__file__).resolve().parents[1]

# Shared by the test and its subprocesses (exec'd in both): the sweep and the row each config must produce.
HELPERS = textwrap.dedent(
    """
    def make_configs(n):
        return [{"i": i, "sigma": 0.1 * i, "name": f"cell{i}", "grid": [i, i + 1.5]} for i in range(n)]

    def expected_row(c):
        return {"value": c["i"] ** 2 + c["sigma"] / 7, "tag": c["name"].upper(), "vec": [x / 3 for x in c["grid"]]}
    """
)
H: dict = {}
exec(HELPERS, H)


def sub_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(HELPERS + textwrap.dedent(body))
    return path


# ---------------------------------------------------------------- keys


def test_key_is_sha256_of_canonical_json():
    config = {"b": [1, 2.5, "x"], "a": {"y": None, "x": True}, "c": 0.1}
    canonical = '{"a":{"x":true,"y":null},"b":[1,2.5,"x"],"c":0.1}'  # sorted keys, no spaces, repr floats
    assert config_key(config) == hashlib.sha256(canonical.encode()).hexdigest()


def test_key_stable_across_orderings_and_exact_in_floats():
    a = {"solver": "heun", "N": 64, "grid": {"rho": 7.0, "sigma_min": 0.002, "sigma_max": 80.0}}
    b = {"grid": {"sigma_max": 80.0, "sigma_min": 0.002, "rho": 7.0}, "N": 64, "solver": "heun"}
    assert config_key(a) == config_key(b)
    assert config_key({"x": 1.0}) != config_key({"x": 1.0000000001})
    assert config_key({"x": 1.0}) != config_key({"x": 1.0 + 2.0**-52})  # one ulp apart
    assert config_key({"x": 1}) != config_key({"x": 1.0})  # int and float are different configs
    assert config_key({"x": 0.0}) != config_key({"x": -0.0})
    # numpy scalars are the Python numbers they hold; tuples are lists
    assert config_key({"x": np.float64(0.1), "n": np.int64(3)}) == config_key({"x": 0.1, "n": 3})
    assert config_key({"t": (1, 2)}) == config_key({"t": [1, 2]})


@pytest.mark.parametrize(
    "config",
    [
        {"x": np.zeros(3)},
        {"x": torch.zeros(3)},
        {"x": torch.tensor(1.0)},
        {"nested": {"x": [np.ones(2)]}},
        {"x": {1, 2}},
        {1: "a"},
        {"x": float("nan")},
        {"key": "reserved"},
        [("a", 1)],
    ],
)
def test_bad_configs_are_refused(config):
    with pytest.raises(ValueError, match="^config:"):
        config_key(config)


# ---------------------------------------------------------------- store


def test_round_trip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"  # parent folder is created
    cfg = {"solver": "dpm++2m", "N": 32, "sigma_min": 0.002, "tags": ["a", "b"]}
    row = {"w2": 1.234e-7, "nfe": 64, "ok": True, "trace": [0.5, float("inf")], "nan": float("nan")}
    with ResultStore(path) as s:
        assert s.get(cfg) is None and not s.has(cfg) and s.keys() == set()
        key = s.put(cfg, row)
        assert key == config_key(cfg) and s.has(cfg) and s.keys() == {key} and len(s) == 1
    with ResultStore(path) as s:  # reopened: the row was committed
        got = s.get(dict(reversed(list(cfg.items()))))
        assert got["w2"] == row["w2"] and got["trace"] == row["trace"] and np.isnan(got["nan"])
        assert {k: got[k] for k in ("nfe", "ok")} == {"nfe": 64, "ok": True}
        s.put(cfg, {"w2": 2.0})  # replaces
        assert s.get(cfg) == {"w2": 2.0} and len(s) == 1
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_rows_and_filters(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        for solver in ("euler", "heun"):
            for n in (8, 16):
                s.put({"solver": solver, "N": n}, {"err": 1.0 / n})
        rows = s.rows()
        assert len(rows) == 4 and all(r["key"] == config_key({"solver": r["solver"], "N": r["N"]}) for r in rows)
        heun = s.rows(solver="heun")
        assert sorted(r["N"] for r in heun) == [8, 16] and all(r["solver"] == "heun" for r in heun)
        assert s.rows(solver="heun", N=16) == [{"solver": "heun", "N": 16, "err": 1 / 16, "key": heun[1]["key"]}]
        assert s.rows(solver="dpm") == [] and s.rows(absent=1) == []


def test_bad_rows_are_refused(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        for row in ({"x": np.zeros(2)}, {"key": 1}, [1, 2], {2: "a"}):
            with pytest.raises(ValueError, match="^row:"):
                s.put({"a": 1}, row)
        assert len(s) == 0


def test_blobs(tmp_path):
    path = tmp_path / "r.sqlite"
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 3))
    with ResultStore(path) as s:
        assert s.get_blob("ref") is None
        s.put_blob("ref", a.T)  # non-contiguous
        s.put_blob("ints", np.arange(4, dtype=np.int32))
        s.put_blob("t", torch.linspace(0, 1, 5, dtype=torch.float64))
    with ResultStore(path) as s:
        b = s.get_blob("ref")
        assert b.dtype == np.float64 and b.shape == (3, 5) and np.array_equal(b, a.T)  # bit-exact
        assert s.get_blob("ints").dtype == np.int32
        assert np.array_equal(s.get_blob("t"), np.linspace(0, 1, 5))  # same float64 values from both
        s.put_blob("ref", np.ones(2))
        assert np.array_equal(s.get_blob("ref"), np.ones(2))
        with pytest.raises(ValueError, match="^name:"):
            s.put_blob("", a)
        with pytest.raises(ValueError, match="^array:"):
            s.put_blob("o", np.array([{}, 1], dtype=object))


def test_meta_and_schema_version(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as s:
        assert s.get_meta("schema_version") == SCHEMA_VERSION
        assert s.get_meta("torch") is None and s.get_meta("torch", "?") == "?"
        s.set_meta("env", {"torch": torch.__version__, "float": "float64"})
        assert s.get_meta("env") == {"torch": torch.__version__, "float": "float64"}
        with pytest.raises(ValueError, match="^k:"):
            s.set_meta("schema_version", 2)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET v = '999' WHERE k = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="schema version 999"):
        ResultStore(path)


# ---------------------------------------------------------------- run_pending


def test_run_pending_counts_and_duplicates(tmp_path):
    configs = H["make_configs"](6)
    seen = []

    def compute(c):
        seen.append(c["i"])
        return H["expected_row"](c)

    with ResultStore(tmp_path / "r.sqlite") as s:
        s.put(configs[2], H["expected_row"](configs[2]))
        out = run_pending(configs + [configs[0]], compute, s, progress=False)
        assert out == {"computed": 5, "skipped": 2, "failed": 0}  # configs[2] stored, configs[0] repeated
        assert seen == [0, 1, 3, 4, 5]
        assert run_pending(configs, compute, s, progress=False) == {"computed": 0, "skipped": 6, "failed": 0}


def test_run_pending_errors(tmp_path):
    configs = H["make_configs"](5)

    def compute(c):
        if c["i"] == 2:
            raise RuntimeError("boom")
        return H["expected_row"](c)

    with ResultStore(tmp_path / "r.sqlite") as s:
        with pytest.raises(RuntimeError, match="boom"):
            run_pending(configs, compute, s, progress=False)
        assert s.keys() == {config_key(c) for c in configs[:2]}  # what finished before the failure is kept

        out = run_pending(configs, compute, s, progress=False, on_error="record")
        assert out == {"computed": 2, "skipped": 2, "failed": 1}
        assert s.get(configs[2]) == {"status": "error", "error": "RuntimeError: boom"}
        assert run_pending(configs, compute, s, progress=False, on_error="record")["skipped"] == 5

        out = run_pending(configs, H["expected_row"], s, progress=False, retry_errors=True)
        assert out == {"computed": 1, "skipped": 4, "failed": 0}
        assert s.get(configs[2]) == H["expected_row"](configs[2])

        with pytest.raises(ValueError, match="^compute:"):
            run_pending(H["make_configs"](6), lambda c: 1.0, s, progress=False)
        with pytest.raises(ValueError, match="^on_error:"):
            run_pending(configs, compute, s, on_error="ignore")
        with pytest.raises(ValueError, match="^config:"):
            run_pending([{"x": np.zeros(1)}], compute, s)


RESUME_SCRIPT = """
import os, sys, time
from sdm_verify.harness.store import ResultStore, config_key, run_pending

db, log = sys.argv[1], sys.argv[2]

def compute(c):
    time.sleep(0.05)
    with open(log, "a") as f:  # logged BEFORE the row is returned (and stored)
        f.write(config_key(c) + "\\n")
        f.flush()
        os.fsync(f.fileno())
    return expected_row(c)

with ResultStore(db) as s:
    run_pending(make_configs(40), compute, s, progress=False)
"""


def test_resume_after_sigkill(tmp_path):
    db, log = tmp_path / "r.sqlite", tmp_path / "log.txt"
    script = write_script(tmp_path, "sweep.py", RESUME_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(log)], env=sub_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not db.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        with ResultStore(db) as s:
            while len(s) < 10 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"sweep ended before the kill (rc={proc.returncode}): {err}"

    configs = H["make_configs"](40)
    by_key = {config_key(c): c for c in configs}
    with ResultStore(db) as s:
        rows = s.rows()
        stored = {r["key"] for r in rows}
        assert 10 <= len(stored) < 40
        for r in rows:  # every stored row is whole and right
            c = by_key[r["key"]]
            assert r == {**c, **H["expected_row"](c), "key": r["key"]}
        logged = set(log.read_text().split())
        assert stored <= logged and len(logged - stored) <= 1  # at most the cell in progress is lost

        recomputed = []

        def compute(c):
            recomputed.append(config_key(c))
            return H["expected_row"](c)

        out = run_pending(configs, compute, s, progress=False)
        assert out == {"computed": 40 - len(stored), "skipped": len(stored), "failed": 0}
        assert sorted(recomputed) == sorted(set(by_key) - stored)
        assert len(s) == 40
        for c in configs:
            assert s.get(c) == H["expected_row"](c)


WRITER_SCRIPT = """
import sys, time
from pathlib import Path
from sdm_verify.harness.store import ResultStore

db, w, tmp = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
(tmp / f"ready{w}").touch()
t0 = time.monotonic()
while not (tmp / "go").exists():
    if time.monotonic() - t0 > 30:
        sys.exit("no go signal")
    time.sleep(0.001)
with ResultStore(db) as s:  # all three open (and create) the file at once
    for j in range(50):
        s.put({"writer": w, "j": j}, {"v": w * 1000 + j, "x": [j / 7]})
"""


def test_concurrent_writers(tmp_path):
    db = tmp_path / "shared.sqlite"
    script = write_script(tmp_path, "writer.py", WRITER_SCRIPT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(w), str(tmp_path)],
            env=sub_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{w}").exists() for w in range(3)) and time.monotonic() < deadline:
            time.sleep(0.005)
        (tmp_path / "go").touch()
        results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.stderr.close()
    for rc, err in results:
        assert rc == 0 and "locked" not in err, err
    with ResultStore(db) as s:
        assert len(s) == 150
        for w in range(3):
            for j in range(50):
                assert s.get({"writer": w, "j": j}) == {"v": w * 1000 + j, "x": [j / 7]}
