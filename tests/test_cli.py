"""The command line: check-oracle passes and prints its table; bad usage exits with status 2 and one line;
`validate` confirms a true claimed order (exit 0) and rejects a false one (exit 1), for registered solvers and for
outside module:attr solvers. (`theory` and `report` run end to end in tests/test_report.py.)"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from analytic.selfcheck import run_checks
from sdm_verify.cli import main


def test_every_oracle_self_check_passes():
    rows = run_checks()
    assert rows and all(r.ok for r in rows), [str(r) for r in rows if not r.ok]


def test_check_oracle_command(capsys):
    assert main(["check-oracle"]) == 0
    out = capsys.readouterr().out
    assert "reference_flow floor" in out and "oracle self-checks passed" in out


def test_bad_usage_exits_2():
    proc = subprocess.run([sys.executable, "-m", "sdm_verify.cli", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ------------------------------------------------------------------------------------------- theory, report, validate


def _usage_error(capsys, argv) -> str:
    """Run main(argv), expect exit status 2 and a one-line message on stderr; return that line."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    assert err and "\n" not in err, err
    return err


def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path):
    assert "not allowed with" in _usage_error(capsys, ["theory", "--quick", "--full"])
    assert "--solvers: unknown solver 'nope'" in _usage_error(capsys, ["theory", "--solvers", "nope", "--out",
                                                                       str(tmp_path)])
    assert "--jobs" in _usage_error(capsys, ["theory", "--jobs", "0", "--out", str(tmp_path)])
    assert "--db: no such file" in _usage_error(capsys, ["report", "--db", str(tmp_path / "none.sqlite")])
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert "--db:" in _usage_error(capsys, ["report", "--db", str(tmp_path / "junk.sqlite")])
    assert "SPEC: unknown solver 'nope'" in _usage_error(capsys, ["validate", "nope"])
    assert "cannot import module" in _usage_error(capsys, ["validate", "no_such_module_xyz:f"])
    assert "has no attribute" in _usage_error(capsys, ["validate", "math:no_such_attr"])
    assert "solver(denoiser, x, sigmas)" in _usage_error(capsys, ["validate", "math:sqrt"])
    assert "--claimed-order: must be a positive" in _usage_error(capsys, ["validate", "heun", "--claimed-order", "-1"])
    assert "invalid choice" in _usage_error(capsys, ["validate", "heun", "--targets", "moon"])
    assert not (tmp_path / "results.sqlite").exists()  # refused before any work


def test_bad_baseline_arguments_exit_2_before_any_work(capsys, tmp_path):
    work = tmp_path / "work.sqlite"
    theory = ["theory", "--out", str(tmp_path), "--db", str(work)]
    assert "not allowed with --no-baseline" in _usage_error(capsys, [*theory, "--no-baseline", "--update-baseline"])
    assert "not allowed with" in _usage_error(capsys, [*theory, "--no-baseline", "--baseline", "x.sqlite"])
    assert "--baseline: no such file" in _usage_error(capsys, [*theory, "--baseline", str(tmp_path / "none.sqlite")])
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert "--baseline:" in _usage_error(capsys, [*theory, "--baseline", str(tmp_path / "junk.sqlite")])
    # the baseline is compared with, never computed into
    assert "also the working store" in _usage_error(capsys, ["theory", "--db", str(work), "--baseline", str(work)])
    assert not work.exists()


def test_help_on_every_command(capsys):
    for cmd in ("check-oracle", "theory", "report", "validate"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.lower().split())
    assert "exit status 0 whenever it ran" in text
    # the main job: a working store, a baseline to compare with, and a failing exit status on a changed verdict
    assert "--baseline" in text and "--update-baseline" in text and "--no-baseline" in text
    assert "1 when a verdict (agree / deviates / no window) changed against the baseline" in text


@pytest.fixture(scope="module")
def heun_json(tmp_path_factory):
    """validate heun against its true order 2 and a false claim of 3 on the mixture target (4 configs)."""
    d = tmp_path_factory.mktemp("validate")
    rc2 = main(["validate", "heun", "--claimed-order", "2", "--targets", "gmm-8d", "--json", str(d / "p2.json")])
    rc3 = main(["validate", "heun", "--claimed-order", "3", "--targets", "gmm-8d", "--json", str(d / "p3.json")])
    return rc2, rc3, json.loads((d / "p2.json").read_text()), json.loads((d / "p3.json").read_text())


def test_validate_heun_order_2_passes_and_3_fails(heun_json):
    rc2, rc3, p2, p3 = heun_json
    assert (rc2, rc3) == (0, 1)
    assert p2["verdict"] == "pass" and p3["verdict"] == "fail"
    # Heun's tableau expands symbolically to order 2 (docs/theory.md §9), so a claim of 3 fails that item too; every
    # other item holds whatever the claimed order
    assert p2["failed"] == [] and p3["failed"] == ["order", "symbolic"]
    assert p2["claimed_order"] == 2 and p3["claimed_order"] == 3
    # Heun is second order: 0.1 = the fitted window's slope tolerance (sdm_verify.harness.orders)
    assert abs(p2["measured_order"]["overall"] - 2) < 0.1
    assert p2["nfe_per_step"] == 2  # trapezoid predictor + corrector, no step into sigma = 0
    # a canonical solver on sigma-defined grids gives the same numbers for every process: VE stands for all
    assert {(c["target"], c["process"], c["schedule"]) for c in p2["cases"]} == {
        ("gmm-8d", "ve", "edm"), ("gmm-8d", "ve", "logsnr")}
    assert all(not c["agrees"] for c in p3["cases"])
    assert p2["symbolic"]["uniform"] == 2  # the trapezoidal weights of its Butcher tableau (stages taken exact)


SOLVER_MODULE = textwrap.dedent('''
    """An outside solver written independently of sdm_verify: explicit Euler on dx/dsigma = (x - D(x, sigma))/sigma."""

    def euler(denoiser, x, sigmas):
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x = x + (t - s) * (x - denoiser(x, s)) / s
        return x


    class Euler:
        order = 1

        def __call__(self, denoiser, x, sigmas):
            return euler(denoiser, x, sigmas)
''')


def test_validate_module_function(tmp_path):
    (tmp_path / "my_euler_solver.py").write_text(SOLVER_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "v.json"
    proc = subprocess.run([sys.executable, "-m", "sdm_verify.cli", "validate", "my_euler_solver:euler",
                           "--claimed-order", "1", "--targets", "gauss-4d", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    # explicit Euler is first order; on the linear (Gaussian) target the rule is measured >= claimed - 0.2
    assert data["verdict"] == "pass" and abs(data["measured_order"]["overall"] - 1) < 0.1
    assert data["nfe_per_step"] == 1


def test_validate_solver_class_uses_its_declared_order(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_euler_cls.py").write_text(SOLVER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["validate", "my_euler_cls:Euler", "--targets", "gauss-4d"]) == 0
    out = capsys.readouterr().out
    assert "claimed order 1" in out and "VERDICT: PASS" in out
    assert "--claimed-order: required" in _usage_error(capsys, ["validate", "my_euler_cls:euler"])
