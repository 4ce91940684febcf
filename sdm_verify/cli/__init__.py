"""The `sdm-verify` command line: one module per command (theory, report, real, validate, check-oracle) and the
dispatcher (`main`). Exit status: 0 success, 1 a checked claim failed (or, for `theory`, a verdict changed against
the baseline), 2 bad usage (one-line message)."""

from __future__ import annotations

from .common import UsageError
from .main import build_parser, main

__all__ = ["main", "build_parser", "UsageError"]
