"""What the `sdm-verify` commands share: the one-line usage error (exit status 2), a parser that reports bad usage
on one line, opening a results store, checking an output folder, checking a positive number, and the summary of
judged cases."""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from ..errors import OutputPathError
from ..harness.results import VERDICTS
from ..harness.store import ResultStore
from ..report.page import check_output_dir

__all__ = ["Parser", "UsageError", "check_output_dir", "open_store", "positive", "print_summary"]


class UsageError(ValueError):
    """Bad command-line usage: reported on one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with bad usage reported on one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def open_store(db: Path, must_exist: bool, *, readonly: bool = False, name: str = "--db") -> ResultStore:
    """The results store at `db`, its errors naming the option `name`. must_exist: a missing file is refused;
    readonly: opened for reading only (it must exist; no byte of it, nor its journal mode, changes). A path that
    cannot be a store, a damaged store, or one with other tables is refused with a StoreError (exit status 2)."""
    if must_exist and not readonly:
        ResultStore.check_path(db, name=name, must_exist=True, writable=True)
    return ResultStore(db, readonly=readonly, name=name)


def positive(value, option: str) -> None:
    """A usage error unless `value` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{option}: must be a positive number (got {value})")


def print_summary(results, md: Path) -> None:
    """How many cases agree, deviate or have no window, and where the report is."""
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    print(f"{len(results)} cases: {counts['agree']} agree, {counts['deviates']} deviate, "
          f"{counts['no window']} without an asymptotic window")
    print(f"report: {md} and {md.with_suffix('.html')}")


def add_store_options(parser, default: str) -> None:
    """--store FILE (default `default`) and --no-store, for a study whose cells are kept in a results store."""
    parser.add_argument("--store", default=default, help="results store: each cell is written as it finishes and "
                        f"reused by a rerun of the same code (default: {default})")
    parser.add_argument("--no-store", action="store_true", help="compute everything in memory, store nothing")


def store_path(args) -> Path | None:
    """The checked --store path (its folder created if missing), or None with --no-store."""
    from ..harness.store_path import check_store_path

    if args.no_store:
        return None
    if args.store and not Path(args.store).parent.exists():
        Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    return check_store_path(args.store, name="--store")


def check_output(text: str | None) -> Path | None:
    """--json: a file that can be written after the run. Checked before it (nothing is created): not a directory,
    and its nearest existing parent a writable directory (missing parents are created after the run)."""
    if text is None:
        return None
    if not text.strip():
        raise OutputPathError("--json: empty path")
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise OutputPathError(f"--json: {text} is a directory; give the path of a file to write")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"--json: {text} exists and is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"--json: {text} cannot be created: {parent} is not a directory")
    try:  # os.access is not enough (root, read-only file systems): create and remove a probe file
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".sdm-verify-probe-"):
            pass
    except OSError as exc:
        raise OutputPathError(f"--json: {text} cannot be written: {parent} is not a writable directory "
                              f"({exc.strerror or exc})") from None
    return path


def study_outputs(args) -> tuple[Path | None, Path, Path | None]:
    """A study command's outputs, checked before any work: (--json file or None, --out folder, --store path or None);
    the study then runs on one thread (its numbers do not depend on the thread count, its cost is stated per core)."""
    out_json = check_output(args.json)
    out = check_output_dir(args.out, "--out")
    torch.set_num_threads(1)
    return out_json, out, store_path(args)


def write_json(path: Path, obj) -> None:
    """Write obj as indented JSON to a path checked by check_output (its missing parents created now)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
