"""Bad inputs to the results store, `report`, `theory`'s stores and outputs, the baseline comparison and the code
fingerprints (issue: reliability): each refused on one line naming the argument, before any work or write
(tests/_bad_inputs.py). Below the table: reading a store never changes it (bytes and journal mode), also read-only.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from _bad_inputs import Bad, CliExit, check, parametrize

from sdm_verify.cli import main
from sdm_verify.errors import InputError, OutputPathError, StoreError
from sdm_verify.harness import fingerprint
from sdm_verify.harness.baseline import compare, write_baseline
from sdm_verify.harness.store import MAX_DEPTH, ResultStore, config_key, run_pending
from sdm_verify.report.page import Report

THEORY_WORK = "sdm_verify.cli.theory.run_cells"  # the sweep: must never start before a refusal
REPORT_WORK = "sdm_verify.report.write_report"


# ------------------------------------------------------------------------------------------- helpers


def make_store(path: Path, n: int = 200) -> Path:
    """A closed results store of n rows (WAL, no journal left beside it)."""
    with ResultStore(path) as s:
        for i in range(n):
            s.put({"i": i}, {"error": 1.0 / (i + 1), "pad": "x" * 400})
        s.set_meta("env", {"a": 1})
    return path


def truncated(p) -> Path:
    """A store whose last 20 kB were cut off (a copy interrupted, a full disk)."""
    path = make_store(p.tmp / "r.sqlite")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20000])
    return path


def tail_overwritten(p) -> Path:
    """A store whose last page was overwritten with junk."""
    path = make_store(p.tmp / "r.sqlite")
    data = path.read_bytes()
    path.write_bytes(data[:-4096] + b"\xa5" * 4096)
    return path


def sqlite_file(path: Path, *statements: str) -> Path:
    con = sqlite3.connect(path)
    for stmt in statements:
        con.execute(stmt)
    con.commit()
    con.close()
    return path


def wrong_columns(p) -> Path:
    """A database with the store's table names but other columns (the old report: "no such column: key")."""
    return sqlite_file(p.tmp / "r.sqlite", "CREATE TABLE results (id INTEGER, payload TEXT)",
                       "CREATE TABLE blobs (name TEXT, data BLOB)", "CREATE TABLE meta (k TEXT, v TEXT)")


def foreign(p) -> Path:
    """Some other program's SQLite database."""
    return sqlite_file(p.tmp / "r.sqlite", "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('a')")


def schema_999(p) -> Path:
    path = make_store(p.tmp / "r.sqlite", 3)
    return sqlite_file(path, "UPDATE meta SET v = '999' WHERE k = 'schema_version'")


def text_file(p, name="r.sqlite") -> Path:
    path = p.tmp / name
    path.write_text("key,config,row\n1,2,3\n")
    return path


def empty_file(p) -> Path:
    path = p.tmp / "r.sqlite"
    path.write_bytes(b"")
    return path


def deny_write(p, *paths: Path) -> None:
    """os.access says `paths` are not writable (tests may run as root, whom file modes do not stop)."""
    denied = {os.path.abspath(x) for x in paths}
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and os.path.abspath(path) in denied:
            return False
        return real(path, mode, *args, **kwargs)

    p.monkeypatch.setattr(os, "access", access)


def deep(levels: int) -> dict:
    d: dict = {}
    x = d
    for _ in range(levels):
        x["a"] = {}
        x = x["a"]
    return d


def with_store(p, fn) -> None:
    """fn(store) on the store p.tmp/s.sqlite made by setup."""
    with ResultStore(p.tmp / "s.sqlite") as s:
        fn(s)


def store_setup(p) -> None:
    make_store(p.tmp / "s.sqlite", 3)


def self_containing() -> dict:
    d: dict = {"solver": "heun"}
    d["params"] = d
    return d


def theory(p, *extra, db=None, out=None, baseline=None):
    """`theory` on one solver into the scratch dir, the sweep forbidden."""
    p.forbid(THEORY_WORK)
    argv = ["theory", "--solvers", "heun", "--jobs", "1", "--out", str(p.tmp / "out" if out is None else out),
            "--db", str(p.tmp / "work.sqlite" if db is None else db)]
    argv += ["--baseline", str(baseline)] if baseline is not None else (["--no-baseline"] if "--update-baseline"
                                                                         not in extra else [])
    p.cli([*argv, *extra])


def report(p, *argv):
    p.forbid(REPORT_WORK)
    p.cli(["report", *argv])


def schedules_study(p, *argv):
    p.forbid("sdm_verify.studies.schedules.study.run")
    p.cli(["schedules", *argv])


def guidance_study(p, *argv):
    p.forbid("sdm_verify.studies.guidance.study.run")
    p.cli(["guidance", *argv])


def outside_table(p, *argv):
    p.forbid("sdm_verify.report.outside.run")
    p.cli(["outside", *argv])


def stochastic_report(p, *argv):
    p.forbid("sdm_verify.report.stochastic.measure")
    p.cli(["stochastic", *argv])


# ------------------------------------------------------------------------------------------- the table

CASES = [
    # ResultStore: the path
    Bad("store-path-none", lambda p: ResultStore(None), StoreError, ("path", "NoneType")),
    Bad("store-path-int", lambda p: ResultStore(123), StoreError, ("path", "int")),
    Bad("store-path-empty", lambda p: ResultStore(""), StoreError, ("path", "non-empty")),
    Bad("store-path-bytes", lambda p: ResultStore(b"r.sqlite"), StoreError, ("path", "bytes")),
    Bad("store-path-nul", lambda p: ResultStore(str(p.tmp / "a\x00b.sqlite")), StoreError, ("path", "NUL")),
    Bad("store-path-directory", lambda p: ResultStore(p.tmp), StoreError, ("path", "directory")),
    Bad("store-parent-is-a-file", lambda p: ResultStore(p.tmp / "notes.txt" / "r.sqlite"), StoreError,
        ("path", "not a folder"), setup=lambda p: (p.tmp / "notes.txt").write_text("x")),
    Bad("store-readonly-missing", lambda p: ResultStore(p.tmp / "none.sqlite", readonly=True), StoreError,
        ("path", "no such file")),
    Bad("store-readonly-empty-file", lambda p: ResultStore(p.tmp / "r.sqlite", readonly=True), StoreError,
        ("path", "empty"), setup=empty_file),
    Bad("store-not-sqlite", lambda p: ResultStore(p.tmp / "r.sqlite"), StoreError, ("path", "not an SQLite"),
        setup=text_file),
    Bad("store-truncated", lambda p: ResultStore(p.tmp / "r.sqlite"), StoreError,
        ("path", "damaged", "move it aside"), setup=truncated),
    Bad("store-tail-overwritten", lambda p: ResultStore(p.tmp / "r.sqlite", readonly=True), StoreError,
        ("path", "damaged"), setup=tail_overwritten),
    Bad("store-foreign-database-not-initialised", lambda p: ResultStore(p.tmp / "r.sqlite"), StoreError,
        ("path", "not a results store", "users"), setup=foreign),
    Bad("store-wrong-columns", lambda p: ResultStore(p.tmp / "r.sqlite", readonly=True), StoreError,
        ("path", "results", "key, config, row, created"), setup=wrong_columns),
    Bad("store-schema-999", lambda p: ResultStore(p.tmp / "r.sqlite", readonly=True), StoreError,
        ("path", "schema version 999"), setup=schema_999),
    Bad("store-file-read-only", lambda p: ResultStore(p.tmp / "r.sqlite"), StoreError, ("path", "read-only"),
        setup=lambda p: deny_write(p, make_store(p.tmp / "r.sqlite", 3))),
    Bad("store-folder-read-only", lambda p: ResultStore(p.tmp / "new.sqlite"), StoreError,
        ("path", "not writable"), setup=lambda p: deny_write(p, p.tmp)),
    # configs, rows, meta values
    Bad("config-5000-levels-deep", lambda p: config_key(deep(5000)), InputError, ("config", str(MAX_DEPTH))),
    Bad("config-contains-itself", lambda p: config_key(self_containing()), InputError, ("config", "nested")),
    Bad("config-nan", lambda p: config_key({"sigma": float("nan")}), InputError, ("config", "NaN")),
    Bad("config-object", lambda p: config_key({"solver": object()}), InputError, ("config", "object")),
    Bad("config-lone-surrogate", lambda p: config_key({"name": "x\ud800"}), InputError, ("config", "Unicode")),
    Bad("config-surrogate-key", lambda p: config_key({"\udcff": 1}), InputError, ("config", "Unicode")),
    Bad("row-deep", lambda p: with_store(p, lambda s: s.put({"a": 1}, {"trace": deep(100)})), InputError,
        ("row", "nested"), setup=store_setup),
    Bad("meta-deep", lambda p: with_store(p, lambda s: s.set_meta("env", deep(100))), InputError,
        ("v", "nested"), setup=store_setup),
    Bad("blob-empty-name", lambda p: with_store(p, lambda s: s.put_blob("", np.ones(2))), InputError, "name",
        setup=store_setup),
    Bad("run-pending-on-error", lambda p: with_store(p, lambda s: run_pending([{"a": 1}], dict, s, on_error="skip")),
        InputError, "on_error", setup=store_setup),
    Bad("run-pending-store-is-a-path", lambda p: run_pending([{"a": 1}], dict, str(p.tmp / "s.sqlite")), InputError,
        "store"),
    # the baseline comparison and its refresh
    Bad("compare-baseline-is-a-path", lambda p: compare([], [], "reports/theory/results.sqlite", None), InputError,
        "baseline"),
    Bad("compare-run-not-pairs", lambda p: with_store(p, lambda s: compare([{"a": 1}], [], s, None)), InputError,
        "run", setup=store_setup),
    Bad("write-baseline-onto-working", lambda p: with_store(p, lambda s: write_baseline(s, [], s.path,
                                                                                        theory_meta=())),
        InputError, ("path", "working store"), setup=store_setup),
    Bad("write-baseline-damaged-old", lambda p: with_store(p, lambda s: write_baseline(s, [], p.tmp / "r.sqlite",
                                                                                       theory_meta=())),
        StoreError, ("path", "damaged"), setup=lambda p: (store_setup(p), truncated(p))),
    # fingerprints (arguments only)
    Bad("fingerprint-class-part-instance", lambda p: fingerprint.class_part("model", object()), InputError, "cls"),
    Bad("fingerprint-modules-part-str", lambda p: fingerprint.modules_part("real", "sdm_verify.real", ("x",)),
        InputError, "starts"),
    Bad("fingerprint-file-digest-missing", lambda p: fingerprint.file_digest(p.tmp / "none.py"), InputError, "path"),
    # report
    Bad("report-db-missing", lambda p: report(p, "--db", str(p.tmp / "none.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "no such file")),
    Bad("report-db-empty-string", lambda p: report(p, "--db", "", "--out", str(p.tmp / "o")), CliExit,
        ("--db", "non-empty")),
    Bad("report-db-directory", lambda p: report(p, "--db", str(p.tmp), "--out", str(p.tmp / "o")), CliExit,
        ("--db", "directory")),
    Bad("report-db-empty-file", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "empty"), setup=empty_file),
    Bad("report-db-csv", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")), CliExit,
        ("--db", "not an SQLite"), setup=text_file),
    Bad("report-db-truncated", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "damaged", "move it aside"), setup=truncated),
    Bad("report-db-wrong-columns", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "key"), setup=wrong_columns),
    Bad("report-db-foreign", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "not a results store"), setup=foreign),
    Bad("report-db-schema-999", lambda p: report(p, "--db", str(p.tmp / "r.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--db", "schema version"), setup=schema_999),
    Bad("report-run-record-malformed",
        lambda p: report(p, "--db", str(p.tmp / "s.sqlite"), "--out", str(p.tmp / "o")), CliExit,
        ("--db", "run record"),
        setup=lambda p: with_store(p, lambda s: s.set_meta("theory_run", "not a record")) if store_setup(p) is None
        else None),
    Bad("report-out-is-a-file", lambda p: report(p, "--db", str(p.tmp / "s.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--out", "not a folder"), setup=lambda p: (store_setup(p), (p.tmp / "o").write_text("x"))),
    Bad("report-out-read-only", lambda p: report(p, "--db", str(p.tmp / "s.sqlite"), "--out", str(p.tmp / "o")),
        CliExit, ("--out", "not writable"),
        setup=lambda p: (store_setup(p), (p.tmp / "o").mkdir(), deny_write(p, p.tmp / "o"))),
    Bad("report-out-index-is-a-folder",
        lambda p: report(p, "--db", str(p.tmp / "s.sqlite"), "--out", str(p.tmp / "o")), CliExit,
        ("--out", "index.md"), setup=lambda p: (store_setup(p), (p.tmp / "o" / "index.md").mkdir(parents=True))),
    Bad("report-out-empty-string", lambda p: report(p, "--db", str(p.tmp / "s.sqlite"), "--out", ""), CliExit,
        ("--out", "non-empty"), setup=store_setup),
    # stochastic (its report folder, checked before any measurement)
    Bad("stochastic-out-is-a-file", lambda p: stochastic_report(p, "--out", str(p.tmp / "o")), CliExit,
        ("--out", "not a folder"), setup=lambda p: (p.tmp / "o").write_text("x")),
    Bad("stochastic-out-empty-string", lambda p: stochastic_report(p, "--out", ""), CliExit, ("--out", "non-empty")),
    Bad("stochastic-out-read-only", lambda p: stochastic_report(p, "--out", str(p.tmp / "o")), CliExit,
        ("--out", "not writable"), setup=lambda p: ((p.tmp / "o").mkdir(), deny_write(p, p.tmp / "o"))),
    # schedules (its report folder and --json file, checked before the study runs)
    Bad("schedules-out-is-a-file", lambda p: schedules_study(p, "--quick", "--out", str(p.tmp / "o")), CliExit,
        ("--out", "not a folder"), setup=lambda p: (p.tmp / "o").write_text("x")),
    Bad("schedules-json-is-a-directory", lambda p: schedules_study(p, "--quick", "--json", str(p.tmp)), CliExit,
        ("--json", "directory")),
    Bad("schedules-budget-negative", lambda p: schedules_study(p, "--quick", "--no-store", "--out", str(p.tmp / "o"),
                                                               "--budget", "-1"), CliExit, "--budget"),
    # guidance and outside (report folder and --json file, checked before anything is computed)
    Bad("guidance-out-is-a-file", lambda p: guidance_study(p, "--quick", "--out", str(p.tmp / "o")), CliExit,
        ("--out", "not a folder"), setup=lambda p: (p.tmp / "o").write_text("x")),
    Bad("guidance-json-is-a-directory", lambda p: guidance_study(p, "--quick", "--json", str(p.tmp)), CliExit,
        ("--json", "directory")),
    Bad("outside-out-is-a-file", lambda p: outside_table(p, "--quick", "--out", str(p.tmp / "o")), CliExit,
        ("--out", "not a folder"), setup=lambda p: (p.tmp / "o").write_text("x")),
    Bad("outside-json-is-a-directory", lambda p: outside_table(p, "--quick", "--json", str(p.tmp)), CliExit,
        ("--json", "directory")),
    Bad("report-page-write-into-a-file", lambda p: Report("t").write(p.tmp / "o"), OutputPathError,
        ("out_dir", "not a folder"), setup=lambda p: (p.tmp / "o").write_text("x")),
    # theory: checked before the sweep
    Bad("theory-jobs-negative", lambda p: theory(p, "--jobs", "-3"), CliExit, "--jobs"),
    Bad("theory-jobs-not-a-number", lambda p: theory(p, "--jobs", "two"), CliExit, "--jobs"),
    Bad("theory-solver-unknown", lambda p: theory(p, "--solvers", "heun", "hune"), CliExit, ("--solvers", "hune")),
    Bad("theory-db-empty-string", lambda p: theory(p, db=""), CliExit, "--db"),
    Bad("theory-db-directory", lambda p: theory(p, db=p.tmp), CliExit, ("--db", "directory")),
    Bad("theory-db-parent-is-a-file", lambda p: theory(p, db=p.tmp / "notes.txt" / "w.sqlite"), CliExit,
        ("--db", "not a folder"), setup=lambda p: (p.tmp / "notes.txt").write_text("x")),
    Bad("theory-db-read-only-file", lambda p: theory(p, db=p.tmp / "r.sqlite"), CliExit, ("--db", "read-only"),
        setup=lambda p: deny_write(p, make_store(p.tmp / "r.sqlite", 3))),
    Bad("theory-db-read-only-folder", lambda p: theory(p, db=p.tmp / "ro" / "w.sqlite"), CliExit,
        ("--db", "read-only"), setup=lambda p: deny_write(p, make_store(p.tmp / "ro" / "w.sqlite", 3).parent)),
    Bad("theory-db-truncated", lambda p: theory(p, db=p.tmp / "r.sqlite"), CliExit, ("--db", "damaged"),
        setup=truncated),
    Bad("theory-db-foreign", lambda p: theory(p, db=p.tmp / "r.sqlite"), CliExit, ("--db", "not a results store"),
        setup=foreign),
    Bad("theory-out-is-a-file", lambda p: theory(p, out=p.tmp / "o"), CliExit, ("--out", "not a folder"),
        setup=lambda p: (p.tmp / "o").write_text("x")),
    Bad("theory-out-read-only", lambda p: theory(p, out=p.tmp / "o" / "sub"), CliExit, ("--out", "not writable"),
        setup=lambda p: ((p.tmp / "o").mkdir(), deny_write(p, p.tmp / "o"))),
    Bad("theory-baseline-truncated", lambda p: theory(p, baseline=p.tmp / "r.sqlite"), CliExit,
        ("--baseline", "damaged", "git checkout"), setup=truncated),
    Bad("theory-baseline-directory", lambda p: theory(p, baseline=p.tmp), CliExit, ("--baseline", "directory")),
    Bad("theory-baseline-wrong-columns", lambda p: theory(p, baseline=p.tmp / "r.sqlite"), CliExit,
        ("--baseline", "columns"), setup=wrong_columns),
    Bad("theory-update-read-only-baseline", lambda p: theory(p, "--update-baseline", baseline=p.tmp / "b.sqlite"),
        CliExit, ("--baseline", "read-only"), setup=lambda p: deny_write(p, make_store(p.tmp / "b.sqlite", 3))),
    # check-oracle takes no arguments
    Bad("check-oracle-extra-argument", lambda p: p.cli(["check-oracle", "--fast"]), CliExit, "--fast"),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 30


# ------------------------------------------------------------------------------------------- reading changes nothing


def _state(path: Path) -> tuple[bytes, str, list[str]]:
    """(bytes, journal mode from the file header, files in its folder)."""
    data = path.read_bytes()
    mode = "wal" if data[18:20] == b"\x02\x02" else "rollback"
    return data, mode, sorted(p.name for p in path.parent.iterdir())


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A store written by `theory` (Heun on one Gaussian configuration, N = 32..512): a WAL store, closed."""
    from sdm_verify.harness import cases as matrix

    tmp = tmp_path_factory.mktemp("small")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matrix, "DEFAULT_CONFIGS", [("gauss-4d", "ve", "edm", matrix._all)])
        mp.setattr(matrix, "NS", {"gauss-4d": ((32, 64, 128, 256, 512),) * 2})
        mp.setattr(matrix, "FULL_SAMPLER_NS", (16,))
        assert main(["theory", "--solvers", "heun", "--jobs", "1", "--no-baseline", "--db", str(tmp / "w.sqlite"),
                     "--out", str(tmp / "out")]) == 0
    return tmp / "w.sqlite"


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_report_leaves_the_store_unchanged(tmp_path, small_run, journal, capsys):
    """`report` reads a store: the same bytes, the same journal mode (WAL or rollback), no -wal/-shm left beside."""
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "results.sqlite"
    db.write_bytes(small_run.read_bytes())
    if journal == "delete":
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
        con.close()
    before = _state(db)
    assert before[1] == ("wal" if journal == "wal" else "rollback") and before[2] == ["results.sqlite"]
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "out")]) == 0
    assert _state(db) == before
    assert "heun" in (tmp_path / "out" / "index.md").read_text(encoding="utf-8")


def test_report_reads_a_read_only_store(tmp_path, small_run, capsys):
    """A store in a read-only folder (file 444, folder 555) is read (it was "not a results database (unable to open
    database file)") and left as it was. As root the modes stop nothing: there the test shows that nothing is
    written; as another user, that a read-only store is readable."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "results.sqlite"
    db.write_bytes(small_run.read_bytes())
    before = _state(db)
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        assert main(["report", "--db", str(db), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
        assert _state(db) == before
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


def test_readonly_wal_store_with_live_writer_is_read(tmp_path):
    """A store another process is writing (a non-empty -wal beside it) is read through its journal (mode=ro), and
    reading it leaves the main file's bytes alone."""
    db = make_store(tmp_path / "r.sqlite", 3)
    writer = ResultStore(db)
    try:
        writer.put({"i": 99}, {"error": 0.0})
        assert Path(f"{db}-wal").stat().st_size > 0
        data = db.read_bytes()
        with ResultStore(db, readonly=True) as r:
            assert r.get({"i": 99}) == {"error": 0.0} and len(r) == 4
        assert db.read_bytes() == data
    finally:
        writer.close()
