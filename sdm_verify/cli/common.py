"""What the `sdm-verify` commands share: the one-line usage error (exit status 2), a parser that reports bad usage
on one line, opening a results store, checking a positive number, and the summary of judged cases."""

from __future__ import annotations

import argparse
import math
import sqlite3
from pathlib import Path

from ..harness.results import VERDICTS
from ..harness.store import ResultStore


class UsageError(ValueError):
    """Bad command-line usage: reported on one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with bad usage reported on one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def open_store(db: Path, must_exist: bool) -> ResultStore:
    """The results store at `db`; a missing file (when it must exist) or a non-database is a usage error."""
    if must_exist and not db.is_file():
        raise UsageError(f"--db: no such file {db}")
    try:
        return ResultStore(db)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--db: {db} is not a results database ({exc})") from None


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
