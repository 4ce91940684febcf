"""The `sdm-verify` dispatcher: one subcommand per module of this package.

Exit status: 0 success; 1 a checked claim failed (and nothing else); 2 bad usage or bad input, reported on one line
naming the argument and the rule; 3 a genuine internal error, reported with its traceback and a request to report
it. Bad input is a ValueError (sdm_verify.errors.InputError and its kin) or an OSError on a path the user named.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import traceback

from . import guidance, oracle, real, report, schedules, stochastic, theory, validate
from .common import Parser

#: exit status of an internal error (a bug in sdm-verify, not in its input)
INTERNAL_ERROR = 3
ISSUES_URL = "the project's issue tracker"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sdm-verify", description="Verification suite for diffusion ODE samplers. Exit status: 0 "
               "success, 1 a checked claim failed (theory: a verdict changed against the baseline), 2 bad usage "
               "or bad input (one line naming the argument), 3 an internal error (please report it).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in (oracle, theory, report, real, validate, stochastic, schedules, guidance):
        command.add_parser(sub)
    __import__(__package__ + ".outside", fromlist=["add_parser"]).add_parser(sub)  # sdm-verify outside (issue 17)
    return p


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a multi-line message is joined with '; ')."""
    text = str(exc) or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with status 2 on bad usage
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("sdm-verify: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, sqlite3.DatabaseError) as exc:
        # ImportError: a missing optional package (diffusers, k-diffusion), named by the adapters' own errors
        print(f"sdm-verify: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug in sdm-verify: say so, keep the traceback
        traceback.print_exc()
        print(f"sdm-verify: internal error (a bug in sdm-verify, not in your input): please report it to "
              f"{ISSUES_URL} with the command line and the traceback above", file=sys.stderr)
        return INTERNAL_ERROR
