"""The bad-input tables together (tests/test_bad_inputs_*.py): at least 100 distinct rows across the oracle, the
solvers and schedules, the store, the loaders and every command, with unique ids."""

import importlib
from pathlib import Path

from _bad_inputs import Bad

AREAS = ("oracle", "solvers", "harness", "validate", "store", "real", "stochastic")


def tables() -> dict[str, list[Bad]]:
    here = Path(__file__).parent
    out = {}
    for area in AREAS:
        assert (here / f"test_bad_inputs_{area}.py").is_file(), f"missing table for {area}"
        out[area] = importlib.import_module(f"test_bad_inputs_{area}").CASES
    return out


def test_at_least_100_rows_over_every_area():
    found = tables()
    for area, rows in found.items():
        assert rows and all(isinstance(r, Bad) for r in rows), area
    assert sum(len(rows) for rows in found.values()) >= 100


def test_every_command_is_tried():
    """Every subcommand has at least one row (a row's id names the command it tries)."""
    from sdm_verify.cli.main import build_parser

    ids = [r.id for rows in tables().values() for r in rows]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [c for c in sub.choices if not any(c in i for i in ids)]
    assert not missing, f"commands without a bad-input row: {missing}"
