"""The table format of the bad-input tests (tests/test_bad_inputs_*.py, issue: reliability).

Each row is one bad or adversarial input to a public entry point. `check(case, probe)` runs the row's `setup`, takes
a snapshot of the scratch directory, runs `call`, and asserts:
  - the refusal is the named error class (for the command line: exit status 2 and exactly one line on stderr,
    `sdm-verify: error: ...` or argparse's usage line);
  - the message names the argument (every string of `names`, case-insensitive);
  - nothing was computed before the refusal: the probe denoiser was called at most `calls` times (0 by default:
    refused before any model call), no forbidden function ran (`probe.forbid`), and the scratch directory is
    byte-identical to its snapshot (no file written, none changed, none created).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


class CliExit(Exception):
    """A command-line run that did not exit 0: its exit status and its stderr."""

    def __init__(self, code: int, stderr: str):
        self.code, self.stderr = code, stderr
        super().__init__(stderr.strip())


class Work(AssertionError):
    """Raised by a forbidden function: expensive work started before the refusal."""


class Probe:
    """What a row may use: a scratch directory `tmp`, a counting denoiser, monkeypatch, and `cli(argv)`."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp, self.monkeypatch = tmp, monkeypatch
        self.calls = 0

    def denoiser(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x, sigma) = x / (1 + sigma^2), the exact denoiser of N(0, I); counts its calls."""
        self.calls += 1
        return x / (1.0 + torch.as_tensor(sigma, dtype=x.dtype) ** 2)

    def forbid(self, target: str) -> None:
        """Replace the function at dotted path `target` with one that fails the test if it is ever called."""
        def forbidden(*args, **kwargs):
            raise Work(f"{target} ran before the refusal")
        self.monkeypatch.setattr(target, forbidden)

    def cli(self, argv: list[str]) -> None:
        """Run `sdm-verify argv` in process; raise CliExit unless it exits 0."""
        from sdm_verify.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
        if code != 0:
            raise CliExit(code, err.getvalue())


@dataclass(frozen=True)
class Bad:
    """One bad input: `call(probe)` must raise `error` naming every string of `names`."""

    id: str
    call: Callable[[Probe], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    names: str | tuple[str, ...]
    setup: Callable[[Probe], None] | None = None
    calls: int = 0  # denoiser calls allowed before the refusal


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root with its mode and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(root))] = (p.lstat().st_mode, digest)
    return out


def check(case: Bad, probe: Probe) -> None:
    """Run one row and assert all of the above."""
    if case.setup is not None:
        case.setup(probe)
    before = snapshot(probe.tmp)
    calls_before = probe.calls
    with pytest.raises(case.error) as info:
        case.call(probe)
    exc = info.value
    assert not isinstance(exc, Work), str(exc)
    message = str(exc)
    if isinstance(exc, CliExit):
        assert exc.code == 2, f"exit status {exc.code}, expected 2: {exc.stderr}"
        lines = [ln for ln in exc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{exc.stderr}"
        assert "Traceback" not in exc.stderr
    names = (case.names,) if isinstance(case.names, str) else case.names
    for name in names:
        assert name.lower() in message.lower(), f"message does not name {name!r}: {message}"
    assert probe.calls - calls_before <= case.calls, f"the denoiser was called {probe.calls - calls_before} times"
    assert snapshot(probe.tmp) == before, "files were written or changed before the refusal"


def parametrize(cases: list[Bad]):
    """pytest.mark.parametrize over the rows, with their ids (which must be unique)."""
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    return pytest.mark.parametrize("case", cases, ids=ids)
