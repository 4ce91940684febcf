"""Bad inputs to `sdm-verify validate`, conformance.check and adapters.spec.load (issue: reliability): each is refused
on one line naming the argument and the rule, exit status 2, before any measurement and without writing anything.

CLI rows forbid the conformance check (`sdm_verify.cli.validate.check`); rows refused before the solver is loaded
also forbid `load_solver`; Python API rows forbid the order measurements (`conformance.items.order.measure`).
"""

from __future__ import annotations

import pytest
from _bad_inputs import Bad, CliExit, check, parametrize

from sdm_verify import conformance
from sdm_verify.adapters import spec
from sdm_verify.adapters.spec import SpecError
from sdm_verify.cli.common import UsageError
from sdm_verify.errors import InputError


def _forbid_check(p):
    p.forbid("sdm_verify.cli.validate.check")


def _forbid_load(p):
    p.forbid("sdm_verify.cli.validate.check")
    p.forbid("sdm_verify.cli.validate.load_solver")


def _forbid_measure(p):
    p.forbid("sdm_verify.conformance.items.order.measure")


def cli(*argv, before_load: bool = False, setup=None):
    """(call, setup) of a `sdm-verify validate ...` row; an argv item may be a function of the probe."""
    def call(p):
        p.cli(["validate", *[a(p) if callable(a) else a for a in argv]])

    def prepare(p):
        (_forbid_load if before_load else _forbid_check)(p)
        if setup is not None:
            setup(p)

    return call, prepare


def row(id, argv, names, before_load=False, setup=None):
    call, prepare = cli(*argv, before_load=before_load, setup=setup)
    return Bad(f"validate-{id}", call, CliExit, names, setup=prepare)


def _write(name, text):
    def setup(p):
        (p.tmp / name).write_text(text)
    return setup


def _plain(denoiser, x, sigmas):
    return x


def api(id, call, error, names):
    return Bad(id, call, error, names, setup=_forbid_measure)


DPM = "diffusers:DPMSolverMultistepScheduler"
CASES = [
    # ----------------------------------------------------------------------------------------- SPEC
    row("spec-empty", [""], "SPEC"),
    row("spec-module-without-attr", ["os:"], ("SPEC", "module:attr")),
    row("spec-no-such-module", ["nosuchmodule_sdm:x"], ("SPEC", "nosuchmodule_sdm")),
    row("spec-no-such-attr", ["os:no_such_attr_sdm"], ("SPEC", "no_such_attr_sdm")),
    row("spec-not-callable", ["os:sep"], ("SPEC", "not callable")),
    row("spec-class-needs-arguments", ["argparse:Action"], ("SPEC", "without arguments")),
    row("spec-wrong-signature", ["math:sqrt"], ("SPEC", "solver(denoiser, x, sigmas)")),
    row("spec-unknown-registered-name", ["no_such_solver"], ("SPEC", "no_such_solver")),
    row("diffusers-no-such-scheduler", ["diffusers:NoSuchScheduler"], ("SPEC", "NoSuchScheduler")),
    row("diffusers-empty-class", ["diffusers:"], ("SPEC", "diffusers:ClassName")),
    row("diffusers-stochastic-scheduler", ["diffusers:DDPMScheduler"], ("SPEC", "DDPMScheduler")),
    row("kdiffusion-no-such-sampler", ["kdiffusion:sample_nosuch"], ("SPEC", "sample_nosuch")),
    row("kdiffusion-empty-sampler", ["kdiffusion:"], ("SPEC", "kdiffusion:sample_name")),
    # ------------------------------------------------------------------------------------- numbers
    row("claimed-order-nan", ["heun", "--claimed-order", "nan"], "--claimed-order", before_load=True),
    row("claimed-order-inf", ["heun", "--claimed-order", "inf"], "--claimed-order", before_load=True),
    row("claimed-order-negative", ["heun", "--claimed-order=-2"], "--claimed-order", before_load=True),
    row("claimed-order-zero", ["heun", "--claimed-order", "0"], "--claimed-order", before_load=True),
    row("claimed-order-not-a-number", ["heun", "--claimed-order", "two"], "--claimed-order", before_load=True),
    row("claimed-nfe-zero", ["heun", "--claimed-nfe-per-step", "0"], "--claimed-nfe-per-step", before_load=True),
    row("claimed-nfe-nan", ["heun", "--claimed-nfe-per-step", "nan"], "--claimed-nfe-per-step", before_load=True),
    row("targets-unknown", ["heun", "--targets", "gmm-99d"], "--targets", before_load=True),
    row("no-order-and-none-claimed", ["sdm_verify.conformance.probing:irregular_grid"], ("--claimed-order", "order")),
    # -------------------------------------------------------------------------------------- --config
    row("config-missing-file", ["kdiffusion:heun", "--config", lambda p: str(p.tmp / "nope.json")],
        ("--config", "no such file"), before_load=True),
    row("config-missing-relative-json", ["kdiffusion:heun", "--config", "surely_missing_sdm.json"],
        ("--config", "no such file"), before_load=True),
    row("config-is-a-directory", ["kdiffusion:heun", "--config", lambda p: str(p.tmp)], ("--config", "directory"),
        before_load=True),
    row("config-file-invalid-json", ["kdiffusion:heun", "--config", lambda p: str(p.tmp / "c.json")],
        ("--config", "line 2 column"), before_load=True, setup=_write("c.json", '{"eta": 0,\n "s_noise": }')),
    row("config-file-not-an-object", ["kdiffusion:heun", "--config", lambda p: str(p.tmp / "c.json")],
        ("--config", "an array"), before_load=True, setup=_write("c.json", "[1, 2]")),
    row("config-inline-invalid-json", ["kdiffusion:heun", "--config", "{nope"], ("--config", "column 2"),
        before_load=True),
    row("config-inline-string", ["kdiffusion:heun", "--config", '"eta=0"'], ("--config", "a string"),
        before_load=True),
    row("config-nested-5000-deep", ["kdiffusion:heun", "--config", "[" * 5000 + "]" * 5000], ("--config", "nested"),
        before_load=True),
    row("config-nan-value", ["kdiffusion:heun", "--config", '{"s_noise": NaN}'], ("--config", "NaN"),
        before_load=True),
    row("config-duplicate-key", ["kdiffusion:heun", "--config", '{"s_noise": 1, "s_noise": 0}'],
        ("--config", "duplicate", "s_noise"), before_load=True),
    row("config-for-a-registered-solver", ["heun", "--config", "{}"], ("--config", "only diffusers")),
    row("diffusers-negative-solver-order", [DPM, "--config", '{"solver_order": -1}'],
        ("--config", "DPMSolverMultistepScheduler", "solver_order")),
    row("diffusers-unknown-key", [DPM, "--config", '{"solver_ordr": 2}'], ("--config", "solver_ordr")),
    row("diffusers-wrong-type", [DPM, "--config", '{"lower_order_final": "yes"}'],
        ("--config", "DPMSolverMultistepScheduler", "lower_order_final")),
    row("diffusers-constructor-refuses", [DPM, "--config", '{"algorithm_type": "bogus"}'],
        ("--config", "DPMSolverMultistepScheduler", "algorithm_type", "bogus")),
    row("diffusers-set-timesteps-refuses", ["diffusers:EulerDiscreteScheduler", "--config",
                                            '{"timestep_spacing": "nope"}'],
        ("--config", "EulerDiscreteScheduler", "timestep_spacing", "set_timesteps")),
    row("kdiffusion-unknown-keyword", ["kdiffusion:sample_heun", "--config", '{"bogus": 1}'], ("--config", "bogus")),
    row("kdiffusion-wrong-type", ["kdiffusion:sample_heun", "--config", '{"s_noise": "x"}'],
        ("--config", "s_noise")),
    row("kdiffusion-bad-solver-type", ["kdiffusion:sample_dpmpp_2m_sde", "--config",
                                       '{"eta": 0, "solver_type": "rk4"}'], ("--config", "solver_type")),
    row("kdiffusion-lms-fractional-order", ["kdiffusion:sample_lms", "--config", '{"order": 2.5}'],
        ("--config", "order")),
    # ---------------------------------------------------------------------------------------- --json
    row("json-is-a-directory", ["heun", "--json", lambda p: str(p.tmp)], ("--json", "directory"), before_load=True),
    row("json-trailing-slash", ["heun", "--json", lambda p: str(p.tmp / "out") + "/"], ("--json", "directory"),
        before_load=True),
    row("json-parent-is-a-file", ["heun", "--json", lambda p: str(p.tmp / "f.txt" / "out.json")],
        ("--json", "not a directory"), before_load=True, setup=_write("f.txt", "x")),
    row("json-unwritable-directory", ["heun", "--json", "/proc/sdm-verify-out.json"], ("--json", "writable"),
        before_load=True),
    row("json-empty", ["heun", "--json", ""], "--json", before_load=True),
    # ------------------------------------------------------------------------------------ Python API
    api("check-claimed-order-nan", lambda p: conformance.check("euler", float("nan")), InputError, "claimed_order"),
    api("check-claimed-order-bool", lambda p: conformance.check("euler", True), InputError, "claimed_order"),
    api("check-claimed-nfe-inf", lambda p: conformance.check("euler", claimed_nfe_per_step=float("inf")),
        InputError, "claimed_nfe_per_step"),
    api("check-targets-a-string", lambda p: conformance.check("euler", targets="gmm-8d"), InputError, "targets"),
    api("check-targets-unknown", lambda p: conformance.check("euler", targets=["gmm-99d"]), InputError,
        ("targets", "gmm-99d")),
    api("check-quick-not-bool", lambda p: conformance.check("euler", quick="yes"), InputError, "quick"),
    api("check-config-with-a-callable", lambda p: conformance.check(_plain, 1, config={"eta": 0}), InputError,
        "config"),
    api("check-not-a-solver", lambda p: conformance.check(5), SpecError, "SPEC"),
    api("check-no-order-declared", lambda p: conformance.check(_plain), InputError, "claimed_order"),
    api("load-not-a-string", lambda p: spec.load(123), SpecError, "SPEC"),
    api("load-config-not-a-dict", lambda p: spec.load("kdiffusion:heun", [1]), SpecError, "--config"),
    api("load-lms-order-zero", lambda p: spec.load("kdiffusion:sample_lms", {"order": 0}), SpecError,
        ("--config", "order")),
    api("load-kdiffusion-nan", lambda p: spec.load("kdiffusion:sample_heun", {"s_churn": float("nan")}), SpecError,
        ("--config", "s_churn")),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_the_table_is_large_and_its_errors_are_input_errors():
    assert len(CASES) >= 30
    assert issubclass(SpecError, InputError) and issubclass(UsageError, ValueError)


@pytest.mark.parametrize("argv", [["validate", "heun", "--claimed-order", "nan"]])
def test_a_refusal_writes_no_json(tmp_path, probe, argv):
    out = tmp_path / "sub" / "v.json"
    with pytest.raises(CliExit):
        probe.cli([*argv, "--json", str(out)])
    assert not out.exists() and not out.parent.exists()
