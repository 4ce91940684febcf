"""`sdm-verify check-oracle`: the oracle's self-checks against independent closed forms, as a table."""

from __future__ import annotations

from analytic.selfcheck import run_checks


def add_parser(sub) -> None:
    c = sub.add_parser("check-oracle", help="print the oracle's self-checks (reference floor, W2 agreements)",
                       description="Run the oracle's self-checks against independent closed forms and print them.")
    c.set_defaults(func=run)


def run(args) -> int:
    rows = run_checks()
    w = max(len(r.name) for r in rows)
    print(f"{'check':<{w}}  {'value':>9}  {'limit':>7}  ok    detail")
    for r in rows:
        print(f"{r.name:<{w}}  {r.value:>9.2e}  {r.limit:>7.0e}  {'yes' if r.ok else 'NO ':<4}  {r.detail}")
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} oracle self-checks passed")
    return 1 if failed else 0
