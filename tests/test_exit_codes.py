"""Exit status of the command line: 0 success, 1 a checked claim failed, 2 bad usage or bad input (one line), 3 an
internal error (the traceback and a request to report it), 130 interrupted."""

import pytest

from sdm_verify.cli import main
from sdm_verify.errors import InputError


def run_with(monkeypatch, capsys, raised):
    def command(args):
        raise raised

    monkeypatch.setattr("sdm_verify.cli.oracle.run", command, raising=True)
    code = main(["check-oracle"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("exc", [InputError("--x: must be positive (got 0)"), ValueError("x: bad"),
                                 FileNotFoundError("no such file: a"), PermissionError("read-only: b")])
def test_bad_input_is_exit_2_on_one_line(monkeypatch, capsys, exc):
    code, err = run_with(monkeypatch, capsys, exc)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sdm-verify: error: ") and "Traceback" not in err


def test_multi_line_message_is_folded(monkeypatch, capsys):
    code, err = run_with(monkeypatch, capsys, ValueError("first\nsecond"))
    assert code == 2 and err == "sdm-verify: error: first; second\n"


@pytest.mark.parametrize("exc", [KeyError("k"), ZeroDivisionError(), AttributeError("a"), TypeError("t")])
def test_internal_error_is_exit_3_and_says_so(monkeypatch, capsys, exc):
    code, err = run_with(monkeypatch, capsys, exc)
    assert code == 3
    assert "Traceback" in err and "internal error" in err and "please report" in err


def test_interrupt_is_130(monkeypatch, capsys):
    code, err = run_with(monkeypatch, capsys, KeyboardInterrupt())
    assert code == 130 and "interrupted" in err
