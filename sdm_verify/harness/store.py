"""A resumable results store: one SQLite file (WAL), one row per configuration, written as each cell finishes.

A sweep is a list of configs (JSON dicts); each config's key is the sha256 of its canonical JSON. A config says
everything that decides its numbers: the theory sweep puts the fingerprint of the code that computes a cell into
its config (`sdm_verify.harness.sweep.Cell.config`, `sdm_verify.harness.fingerprint`), so a row is never reused
for other code. `run_pending` computes only the configs whose key is not stored yet and commits every row on its
own, so a killed sweep loses at most the cell in progress and a rerun resumes it. Several processes may write to
one file at once: WAL journal, a 30 s busy timeout and one short BEGIN IMMEDIATE transaction per write. A store
opened with readonly=True (a baseline to compare with) is never written, and leaves no journal files behind.

Tables: results(key, config, row, created), blobs(name, data) for cached arrays (np.save bytes, e.g. reference
solutions), meta(k, v) for environment info and the schema version.

Bad input is refused on one line naming the argument (`StoreError`/`InputError`, ValueErrors) before anything is
written: the path (harness.store_path), damaged pages (PRAGMA quick_check on open, a few ms per MB), an SQLite
database whose tables are not this store's (checked against TABLES, never altered: a foreign database is not
initialised), another schema version, and configs, rows and meta values that are not plain JSON (harness.canonical).
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import InputError, StoreError
from .canonical import MAX_DEPTH, canonical, config_key, plain, row_json
from .progress import Progress
from .store_path import check_store_path

__all__ = ["MAX_DEPTH", "SCHEMA_VERSION", "ResultStore", "check_store_path", "config_key", "run_pending"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
#: the tables of a results store and their columns, checked on open
TABLES = {"results": ("key", "config", "row", "created"), "blobs": ("name", "data"), "meta": ("k", "v")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, config TEXT NOT NULL, row TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


# ---------------------------------------------------------------- the store

class ResultStore:
    """Results keyed by config, cached arrays and metadata in one SQLite file; usable as a context manager.

    readonly=True opens an existing store for reading only (writes raise sqlite3.OperationalError); a store with no
    pending journal is opened immutable, so reading it creates no -wal/-shm files beside it and changes no byte of
    it (nor its journal mode). Opening checks the path (check_store_path), the pages (PRAGMA quick_check), the tables
    and the schema version before anything is written; `name` is the argument the errors name (e.g. "--db")."""

    #: the path checks of __init__, without opening anything (check_store_path)
    check_path = staticmethod(check_store_path)

    def __init__(self, path, *, readonly: bool = False, name: str = "path"):
        self.name = name if isinstance(name, str) and name else "path"
        self.readonly = bool(readonly)
        self.path = check_store_path(path, name=self.name, writable=not self.readonly, must_exist=self.readonly)
        if self.readonly:
            if self.path.stat().st_size == 0:
                raise StoreError(f"{self.name}: {self.path} is empty (0 bytes), not a results store: give the store "
                                 "a run wrote")
            wal = Path(f"{self.path}-wal")
            flags = "mode=ro" if wal.is_file() and wal.stat().st_size > 0 else "mode=ro&immutable=1"
            uri = f"file:{quote(str(self.path.resolve()))}?{flags}"
            self._con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            fresh = not self.path.exists()
            if fresh:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._retry(self._check_schema if self.readonly else self._init_schema)
        except sqlite3.DatabaseError as exc:
            self._con.close()
            raise self._damaged(exc) from None
        except BaseException:
            self._con.close()
            raise

    def _damaged(self, exc: sqlite3.DatabaseError) -> StoreError:
        """The one-line refusal of a store SQLite cannot read, with how to recover."""
        msg = str(exc)
        if "unable to open" in msg and Path(f"{self.path}-wal").is_file():
            return StoreError(f"{self.name}: {self.path} cannot be opened read-only ({msg}): it has an unfinished "
                              f"write-ahead log ({self.path.name}-wal) in a folder that is not writable; copy the "
                              "store with its -wal file to a writable folder and read the copy")
        return StoreError(f"{self.name}: {self.path} is damaged ({msg}): move it aside and rerun (a working store's "
                          "cells are recomputed; restore a committed baseline with `git checkout -- "
                          f"{self.path}`)")

    def _retry(self, fn):
        """Run fn, retrying on 'locked'/'busy' errors that SQLite reports without waiting (e.g. the WAL switch)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc)
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _loads(self, text, what: str):
        """json.loads of a stored value; a value that is not JSON is a damaged store."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.name}: {self.path} is damaged ({what} is not valid JSON: {exc}): move it "
                             "aside and rerun (a working store's cells are recomputed; restore a committed baseline "
                             f"with `git checkout -- {self.path}`)") from None

    def _check_tables(self) -> bool:
        """Check the pages and this store's tables and columns; False for an empty database (no tables yet)."""
        con = self._con
        problems = [r[0] for r in con.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("quick_check: " + "; ".join(str(p) for p in problems))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return False
        for table, columns in TABLES.items():
            have = tuple(r[1] for r in con.execute(f"PRAGMA table_info({table})"))
            if table not in tables:
                raise StoreError(f"{self.name}: {self.path} is an SQLite database but not a results store (no table "
                                 f"{table!r}; tables: {', '.join(sorted(tables))}): give a store written by "
                                 "sdm-verify, or a new file name")
            if set(columns) - set(have):
                raise StoreError(f"{self.name}: {self.path} has a table {table!r} with columns ({', '.join(have)}), "
                                 f"not ({', '.join(columns)}): not a results store of this code; give a store "
                                 "written by sdm-verify, or a new file name")
        return True

    def _schema_version(self):
        row = self._con.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
        return None if row is None else self._loads(row[0], "the schema version")

    def _check_schema(self) -> None:
        if not self._check_tables():
            raise StoreError(f"{self.name}: {self.path} is an empty SQLite database, not a results store: give the "
                             "store a run wrote")
        found = self._schema_version()
        if found != SCHEMA_VERSION:
            raise StoreError(f"{self.name}: {self.path} has schema version {'none' if found is None else found}, "
                             f"this code reads {SCHEMA_VERSION}")

    def _init_schema(self) -> None:
        con = self._con
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self._check_tables():  # before anything is written: a foreign or damaged database is left as it is
            found = self._schema_version()
            if found is not None and found != SCHEMA_VERSION:  # none: set below, as before
                raise StoreError(f"{self.name}: {self.path} has schema version {found}, this code writes "
                                 f"{SCHEMA_VERSION}")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"database is busy: journal_mode is {mode}, not wal")
        con.execute("PRAGMA synchronous = NORMAL")  # with WAL: a committed row survives a killed process
        with self._write():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    con.execute(stmt)
            row = con.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta (k, v) VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))
            elif self._loads(row[0], "the schema version") != SCHEMA_VERSION:
                raise StoreError(f"{self.name}: {self.path} has schema version {json.loads(row[0])}, this code "
                                 f"writes {SCHEMA_VERSION}")

    class _Txn:
        def __init__(self, con):
            self.con = con

        def __enter__(self):
            self.con.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock on lock upgrade
            return self.con

        def __exit__(self, exc_type, exc, tb):
            if exc_type is not None:
                self.con.execute("ROLLBACK")
                return False
            try:
                self.con.execute("COMMIT")
            except BaseException:
                if self.con.in_transaction:
                    self.con.execute("ROLLBACK")
                raise
            return False

    def _write(self):
        return self._Txn(self._con)

    # -- results

    def put(self, config: dict, row: dict) -> str:
        """Store row for config (replacing any previous row) in one committed transaction; returns the key."""
        _, canon = canonical(config)
        key = hashlib.sha256(canon.encode("utf-8")).hexdigest()
        row_text = row_json(row)

        def write():
            with self._write() as con:
                con.execute(
                    "INSERT INTO results (key, config, row, created) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET config = excluded.config, row = excluded.row, "
                    "created = excluded.created",
                    (key, canon, row_text, time.time()),
                )

        self._retry(write)
        return key

    def get(self, config: dict) -> dict | None:
        """The stored row for config, or None."""
        r = self._con.execute("SELECT row FROM results WHERE key = ?", (config_key(config),)).fetchone()
        return None if r is None else self._loads(r[0], "a stored row")

    def has(self, config: dict) -> bool:
        return self.has_key(config_key(config))

    def has_key(self, key: str) -> bool:
        return self._con.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def keys(self) -> set[str]:
        return {r[0] for r in self._con.execute("SELECT key FROM results")}

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def records(self) -> Iterator[tuple[str, dict, dict]]:
        """(key, config, row) of every stored result, in insertion order."""
        for key, cfg, row in self._con.execute("SELECT key, config, row FROM results ORDER BY rowid").fetchall():
            yield key, self._loads(cfg, f"the config of row {key}"), self._loads(row, f"row {key}")

    def rows(self, **filters) -> list[dict]:
        """All rows as {**config, **row, "key": key}, in insertion order; filters keep rows whose config has
        field == value for every given field (Python equality, so 64 matches 64.0)."""
        out = []
        for key, cfg, row in self._con.execute("SELECT key, config, row FROM results ORDER BY rowid"):
            config = self._loads(cfg, f"the config of row {key}")
            if all(f in config and config[f] == v for f, v in filters.items()):
                out.append({**config, **self._loads(row, f"row {key}"), "key": key})
        return out

    # -- blobs

    def put_blob(self, name: str, array) -> None:
        """Cache an array under name (np.save format, no pickles); replaces an existing blob."""
        if not isinstance(name, str) or not name:
            raise InputError(f"name: must be a non-empty string (got {name!r})")
        if hasattr(array, "detach"):  # a torch tensor
            array = array.detach().cpu().numpy()
        a = np.asarray(array)
        if a.dtype == object:
            raise InputError(f"array: object arrays cannot be stored (got {type(array).__name__})")
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        data = buf.getvalue()

        def write():
            with self._write() as con:
                con.execute(
                    "INSERT INTO blobs (name, data) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET data = excluded.data",
                    (name, data),
                )

        self._retry(write)

    def blob_names(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT name FROM blobs ORDER BY name")]

    def get_blob(self, name: str) -> np.ndarray | None:
        r = self._con.execute("SELECT data FROM blobs WHERE name = ?", (name,)).fetchone()
        if r is None:
            return None
        try:
            return np.load(io.BytesIO(r[0]), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise StoreError(f"{self.name}: {self.path} is damaged (blob {name!r} is not an array: {exc}): move it "
                             "aside and rerun") from None

    # -- meta

    def set_meta(self, k: str, v) -> None:
        """Store a JSON-serialisable value (environment info, versions) under k."""
        if not isinstance(k, str) or not k:
            raise InputError(f"k: must be a non-empty string (got {k!r})")
        if k == "schema_version":
            raise InputError("k: 'schema_version' is managed by the store")
        v_json = json.dumps(plain(v, "v", "", allow_nan=True))

        def write():
            with self._write() as con:
                con.execute(
                    "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (k, v_json)
                )

        self._retry(write)

    def meta_keys(self) -> list[str]:
        """The meta keys set with set_meta (the store's schema_version left out)."""
        return [r[0] for r in self._con.execute("SELECT k FROM meta WHERE k != 'schema_version' ORDER BY k")]

    def get_meta(self, k: str, default=None):
        r = self._con.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return default if r is None else self._loads(r[0], f"meta {k!r}")

    # -- lifetime

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"


# ---------------------------------------------------------------- the resumable loop


def run_pending(
    configs: Iterable[dict],
    compute: Callable[[dict], dict],
    store: ResultStore,
    *,
    progress: bool = True,
    desc: str = "cells",
    on_error: str = "raise",
    retry_errors: bool = False,
) -> dict:
    """Compute compute(config) -> row for every config not yet in the store, committing each row as it finishes.

    A config is skipped when its key is stored at the moment its turn comes (so several processes can share one
    sweep); duplicates in configs are computed once. on_error="raise" (default) re-raises the first exception
    after everything before it was stored; on_error="record" stores {"status": "error", "error": "Type: msg"} for
    the cell and goes on. Recorded errors count as done on a later run unless retry_errors=True.
    progress: a bar with an ETA over the configs to compute (harness.progress: tqdm on a terminal, a few plain
    lines elsewhere). Returns {"computed": n, "skipped": m, "failed": k}.
    """
    if on_error not in ("raise", "record"):
        raise InputError(f"on_error: must be 'raise' or 'record' (got {on_error!r})")
    if not callable(compute):
        raise InputError("compute: must be callable as compute(config) -> dict")
    if not isinstance(store, ResultStore):
        raise InputError(f"store: must be an open ResultStore (got {type(store).__name__})")
    if isinstance(configs, (dict, str, bytes)) or not isinstance(configs, Iterable):
        raise InputError(f"configs: must be an iterable of config dicts (got {type(configs).__name__})")
    configs = list(configs)
    keys = [config_key(c) for c in configs]  # validates every config before any work

    def pending(config: dict, key: str) -> bool:
        if not store.has_key(key):
            return True
        return retry_errors and (store.get(config) or {}).get("status") == "error"

    todo = {k for c, k in zip(configs, keys, strict=True) if pending(c, k)}  # counted once per key
    counts = {"computed": 0, "skipped": 0, "failed": 0}
    with Progress(len(todo), desc, enabled=progress) as bar:
        for config, key in zip(configs, keys, strict=True):
            tick = 1 if key in todo else 0  # the first turn of a counted key moves the bar, done or skipped
            todo.discard(key)
            if not pending(config, key):
                counts["skipped"] += 1
                bar.update(tick)
                continue
            try:
                row = compute(config)
                if not isinstance(row, dict):
                    raise ValueError(f"compute: must return a dict (got {type(row).__name__})")
            except Exception as exc:
                if on_error == "raise":
                    raise
                msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                store.put(config, {"status": "error", "error": msg})
                counts["failed"] += 1
                bar.update(tick)
                continue
            store.put(config, row)
            counts["computed"] += 1
            bar.update(tick)
    return counts
