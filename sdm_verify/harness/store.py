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
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .progress import Progress

__all__ = ["SCHEMA_VERSION", "ResultStore", "config_key", "run_pending"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, config TEXT NOT NULL, row TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


# ---------------------------------------------------------------- canonical JSON and keys


def _plain(obj, arg: str, path: str, allow_nan: bool):
    """A copy of obj made of dict/list/str/int/float/bool/None only; numpy scalars become Python scalars."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            obj = float(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj) and not allow_nan:
            raise ValueError(f"{arg}: NaN is not allowed (at {path or 'top level'}): it never compares equal")
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{arg}: keys must be strings (got {k!r} at {path or 'top level'})")
            out[k] = _plain(v, arg, f"{path}.{k}" if path else k, allow_nan)
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v, arg, f"{path}[{i}]", allow_nan) for i, v in enumerate(obj)]
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__"):
        raise ValueError(
            f"{arg}: arrays and tensors are not allowed (got {type(obj).__name__} at {path or 'top level'}); "
            "use lists of numbers, or put_blob for data"
        )
    raise ValueError(f"{arg}: {type(obj).__name__} is not JSON-serialisable (at {path or 'top level'})")


def _canonical(config: dict) -> tuple[dict, str]:
    if not isinstance(config, dict):
        raise ValueError(f"config: must be a dict (got {type(config).__name__})")
    if "key" in config:
        raise ValueError("config: the field name 'key' is reserved for the store's key")
    plain = _plain(config, "config", "", allow_nan=False)
    # json writes floats with float.__repr__, the shortest string that round-trips: equal strings <=> equal floats
    # (1.0 and 1 stay distinct, as do 0.0 and -0.0); infinities are written as Infinity.
    return plain, json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def config_key(config: dict) -> str:
    """sha256 (hex) of the canonical JSON of config: sorted keys, no spaces, floats written exactly (repr).

    Tuples hash as lists; int and float stay distinct (1 != 1.0); NaN, non-string keys, arrays and tensors are
    refused with ValueError.
    """
    return hashlib.sha256(_canonical(config)[1].encode("utf-8")).hexdigest()


def _row_json(row: dict) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"row: must be a dict (got {type(row).__name__})")
    if "key" in row:
        raise ValueError("row: the field name 'key' is reserved for the store's key")
    return json.dumps(_plain(row, "row", "", allow_nan=True), allow_nan=True)


# ---------------------------------------------------------------- the store


class ResultStore:
    """Results keyed by config, cached arrays and metadata in one SQLite file; usable as a context manager.

    readonly=True opens an existing store for reading only (writes raise sqlite3.OperationalError); a store with no
    pending journal is opened immutable, so reading it creates no -wal/-shm files beside it."""

    def __init__(self, path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = bool(readonly)
        if self.readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"path: no such results store {self.path}")
            wal = Path(f"{self.path}-wal")
            flags = "mode=ro" if wal.is_file() and wal.stat().st_size > 0 else "mode=ro&immutable=1"
            uri = f"file:{quote(str(self.path.resolve()))}?{flags}"
            self._con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._retry(self._check_schema if self.readonly else self._init_schema)
        except BaseException:
            self._con.close()
            raise

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

    def _check_schema(self) -> None:
        row = self._con.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
        if row is None or json.loads(row[0]) != SCHEMA_VERSION:
            found = "none" if row is None else json.loads(row[0])
            raise ValueError(f"path: {self.path} has schema version {found}, this code reads {SCHEMA_VERSION}")

    def _init_schema(self) -> None:
        con = self._con
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
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
            elif json.loads(row[0]) != SCHEMA_VERSION:
                raise ValueError(
                    f"path: {self.path} has schema version {json.loads(row[0])}, this code writes {SCHEMA_VERSION}"
                )

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
        plain, canon = _canonical(config)
        key = hashlib.sha256(canon.encode("utf-8")).hexdigest()
        row_json = _row_json(row)

        def write():
            with self._write() as con:
                con.execute(
                    "INSERT INTO results (key, config, row, created) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET config = excluded.config, row = excluded.row, "
                    "created = excluded.created",
                    (key, canon, row_json, time.time()),
                )

        self._retry(write)
        return key

    def get(self, config: dict) -> dict | None:
        """The stored row for config, or None."""
        r = self._con.execute("SELECT row FROM results WHERE key = ?", (config_key(config),)).fetchone()
        return None if r is None else json.loads(r[0])

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
            yield key, json.loads(cfg), json.loads(row)

    def rows(self, **filters) -> list[dict]:
        """All rows as {**config, **row, "key": key}, in insertion order; filters keep rows whose config has
        field == value for every given field (Python equality, so 64 matches 64.0)."""
        out = []
        for key, cfg, row in self._con.execute("SELECT key, config, row FROM results ORDER BY rowid"):
            config = json.loads(cfg)
            if all(f in config and config[f] == v for f, v in filters.items()):
                out.append({**config, **json.loads(row), "key": key})
        return out

    # -- blobs

    def put_blob(self, name: str, array) -> None:
        """Cache an array under name (np.save format, no pickles); replaces an existing blob."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: must be a non-empty string (got {name!r})")
        if hasattr(array, "detach"):  # a torch tensor
            array = array.detach().cpu().numpy()
        a = np.asarray(array)
        if a.dtype == object:
            raise ValueError(f"array: object arrays cannot be stored (got {type(array).__name__})")
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
        return None if r is None else np.load(io.BytesIO(r[0]), allow_pickle=False)

    # -- meta

    def set_meta(self, k: str, v) -> None:
        """Store a JSON-serialisable value (environment info, versions) under k."""
        if not isinstance(k, str) or not k:
            raise ValueError(f"k: must be a non-empty string (got {k!r})")
        if k == "schema_version":
            raise ValueError("k: 'schema_version' is managed by the store")
        v_json = json.dumps(_plain(v, "v", "", allow_nan=True))

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
        return default if r is None else json.loads(r[0])

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
        raise ValueError(f"on_error: must be 'raise' or 'record' (got {on_error!r})")
    if not callable(compute):
        raise ValueError("compute: must be callable as compute(config) -> dict")
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
