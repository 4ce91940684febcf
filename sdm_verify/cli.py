"""The `sdm-verify` command line. Exit status: 0 success, 1 a check failed, 2 bad usage."""

from __future__ import annotations

import argparse
import sys


def _cmd_check_oracle(args) -> int:
    from analytic.selfcheck import run_checks

    rows = run_checks()
    w = max(len(r.name) for r in rows)
    print(f"{'check':<{w}}  {'value':>9}  {'limit':>7}  ok    detail")
    for r in rows:
        print(f"{r.name:<{w}}  {r.value:>9.2e}  {r.limit:>7.0e}  {'yes' if r.ok else 'NO ':<4}  {r.detail}")
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} oracle self-checks passed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm-verify", description="Verification suite for diffusion ODE samplers.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("check-oracle", help="print the oracle's self-checks (reference floor, W2 agreements)",
                       description="Run the oracle's self-checks against independent closed forms and print them.")
    c.set_defaults(func=_cmd_check_oracle)
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


if __name__ == "__main__":
    sys.exit(main())
