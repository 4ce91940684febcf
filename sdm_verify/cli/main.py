"""The `sdm-verify` dispatcher: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import sys

from . import oracle, real, report, theory, validate
from .common import Parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sdm-verify", description="Verification suite for diffusion ODE samplers. Exit status: 0 "
               "success, 1 a checked claim failed (theory: a verdict changed against the baseline), 2 bad usage.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in (oracle, theory, report, real, validate):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with status 2 on bad usage
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sdm-verify: error: {exc}", file=sys.stderr)
        return 2
