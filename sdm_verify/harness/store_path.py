"""Where a results store may live: the checks on a store's path made before anything is opened or created."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError

__all__ = ["check_store_path"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_store_path(path, *, name: str = "path", writable: bool = True, must_exist: bool = False) -> Path:
    """`path` as a Path, if it can be a results store: str or os.PathLike, non-empty, not a directory; an existing
    file must be readable and start as an SQLite file; a store that is written needs write access to its file and
    folder (the -wal journal is created beside it), a new one a writable folder to be created in. Reads a file's first
    16 bytes at most; creates nothing. Raises StoreError naming `name` (the argument: "path", "--db", ...)."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise StoreError(f"{name}: must be a file path (str or os.PathLike), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise StoreError(f"{name}: must be a file path (str or os.PathLike), got a {type(text).__name__} path")
    if not text.strip():
        raise StoreError(f"{name}: must be a non-empty file path (got {text!r})")
    if "\x00" in text:
        raise StoreError(f"{name}: must not contain a NUL character (got {text!r})")
    p = Path(text)
    try:
        exists = p.exists()
        if exists:
            if p.is_dir():
                raise StoreError(f"{name}: {p} is a directory, not a results store file (e.g. {p / 'results.sqlite'})")
            if not p.is_file():
                raise StoreError(f"{name}: {p} is not a regular file")
            if not os.access(p, os.R_OK):
                raise StoreError(f"{name}: {p} is not readable (permission denied): chmod u+r {p}")
            with open(p, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"{name}: cannot access {p} ({exc.strerror or exc})") from None
    if exists:
        if head and head != _SQLITE_MAGIC[: len(head)] or 0 < len(head) < len(_SQLITE_MAGIC):
            raise StoreError(f"{name}: {p} is not an SQLite database (it does not start with 'SQLite format 3'): "
                             "give a results store written by sdm-verify, or a new file name")
        if writable:
            folder = p.parent
            if not os.access(p, os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
                what = "the file" if not os.access(p, os.W_OK) else f"its folder {folder}"
                raise StoreError(f"{name}: {p} is read-only ({what} is not writable) and this command writes to it "
                                 "(rows and its -wal journal beside it): make both writable, or give another file")
        return p
    if must_exist:
        raise StoreError(f"{name}: no such file {p}")
    if writable:
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise StoreError(f"{name}: {p} cannot be created: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"{name}: {p} cannot be created: the folder {folder} is not writable")
    return p
