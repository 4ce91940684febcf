"""`sdm-verify validate SPEC --guidance W` (sdm_verify.conformance.guided): the conformance check on the guided field.

The independent computations: the unguided harness (harness.run.measure_run with the harness's own meters on the
conditional law p(x | c)) for w = 1; the oracle's guided laws (analytic.guidance_joint, analytic.guidance) through
convergence to them at the claimed order; the oracle's guided denoiser for the diffusers combination.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sdm_verify import schedules, solvers
from sdm_verify.cli.main import main
from sdm_verify.cli.validate import validation_json
from sdm_verify.conformance import check, guided
from sdm_verify.errors import InputError
from sdm_verify.harness.convergence import fit_rows
from sdm_verify.harness.meters import meter_for
from sdm_verify.harness.run import measure_run

LO, HI = 0.002, 80.0


class Forgetful:
    """A sampler that forgets the guidance: handed the guided pair, it runs Euler on one branch only (D_c, or D_u);
    handed a plain denoiser (the items on the unguided targets), it is Euler."""

    order = 1

    def __init__(self, branch: str):
        self.branch, self.name = branch, f"forgetful_euler_{branch}"

    def __call__(self, denoiser, x, sigmas):
        if hasattr(denoiser, "conditional"):
            d = denoiser.conditional if self.branch == "c" else (lambda y, s: denoiser.branches(y, s)[0])
        else:
            d = denoiser
        return solvers.get("euler")(d, x, sigmas)


class OwnConditional:
    """An outside sampler that ignores the denoiser it is handed and runs Euler on its own conditional model D_c (the
    oracle's p(x | c) of the guided mixture or of the joint Gaussian, by dimension): guidance forgotten."""

    order = 1
    name = "own_conditional_euler"

    def __call__(self, denoiser, x, sigmas):
        target = guided.JOINT if x.shape[-1] == 4 else guided.MIXTURE
        law = guided._laws(target)[1]
        return solvers.get("euler")(lambda y, s: law.denoiser(y, s).to(y.dtype), x, sigmas)


class NeverCalled:
    """A solver that records any call (and whose denoiser would never be reached)."""

    order = 1
    name = "never_called"

    def __init__(self):
        self.calls = 0

    def __call__(self, denoiser, x, sigmas):
        self.calls += 1
        raise AssertionError("the solver ran")


def _conditional_rows(solver, target: str, schedule: str, ns) -> list[dict]:
    """The unguided harness on p(x | c): the conditional check's rows, with the harness's own meter."""
    cond = guided._laws(target)[1]
    meter = meter_for(cond, HI, LO)
    return [measure_run(solver, cond, schedules.get(schedule)(n, LO, HI), LO, meter=meter) for n in ns]


def test_guidance_one_is_exactly_the_conditional_check():
    result = check("euler", guidance=1.0, quick=True, progress=False)
    assert result.verdict == "pass" and result.guidance["effective_scale"] == 1.0
    euler = solvers.get("euler")
    for case in result.to_json()["cases"]:
        rows = _conditional_rows(euler, case["target"], case["schedule"], case["ns"])
        assert case["errors"] == [r["error"] for r in rows]  # bit for bit: (1 - 1) D_u + 1 D_c == D_c
        assert case["nfe"] == [r["nfe"] for r in rows]
        fit = fit_rows(case["ns"], rows)
        assert fit.ok and case["measured_order"] == fit.order


@pytest.mark.parametrize("spec", ["kdiffusion:sample_heun", "diffusers:EulerDiscreteScheduler"])
@pytest.mark.parametrize("w", [1.0, 0.5])
def test_outside_samplers_at_scale_one_or_below(spec, w):
    """k-diffusion at w = 1 and diffusers at g <= 1 (the pipeline runs the conditional branch alone): one guided run
    equals the unguided run on p(x | c) bit for bit, one model call per step for diffusers' conditional branch."""
    from sdm_verify.adapters import spec as specs

    solver = specs.load(spec).solver
    path, w_eff, how = guided.applied(solver, w)
    if path == "k-diffusion" and w != 1.0:
        assert w_eff == w
        return
    assert w_eff == 1.0
    if path == "diffusers":
        assert "conditional branch alone" in how
    sigmas = schedules.get("edm")(32, LO, HI)
    row = guided.run_row(solver, guided.MIXTURE, w, sigmas, LO)
    (ref,) = _conditional_rows(solver, guided.MIXTURE, "edm", [32])
    assert row["error"] == ref["error"] and row["nfe"] == ref["nfe"]


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_registered_solvers_keep_their_orders_at_7_5(name):
    result = check(name, guidance=7.5, quick=True, progress=False)
    claimed = solvers.get(name).order
    assert result.verdict == "pass", result.table()
    assert {c.measurement.target for c in result.cases} == {guided.JOINT, guided.MIXTURE}
    for c in result.cases:
        assert c.verdict == "agree" and abs(c.measurement.order - claimed) <= 0.2
        assert c.measurement.errors[-1] < c.measurement.errors[0] * 2.0 ** (-claimed * 3)  # converges to the law
    assert result.items["guidance"].status == "pass"
    assert result.items["nfe"].status == "pass"


@pytest.mark.parametrize("branch, which", [("c", "conditional law (w = 1)"), ("u", "unguided flow's law (w = 0)")])
def test_a_solver_that_forgets_the_guidance_fails(branch, which):
    result = check(Forgetful(branch), guidance=7.5, quick=True, progress=False)
    assert result.verdict == "fail"
    assert set(result.failed) == {"order", "guidance"}
    reason = result.items["guidance"].detail
    assert "\n" not in reason and which in reason and "does not apply the guidance" in reason
    for c in result.cases:  # a plateau: the error does not converge to 0
        assert c.verdict != "agree"
        assert c.measurement.errors[-1] > 0.3 * c.measurement.errors[0]


def test_cli_fails_the_forgetful_solver(capsys, monkeypatch, tmp_path):
    import sys
    import types

    module = types.ModuleType("_forgetful_guidance")
    module.sampler = OwnConditional()
    monkeypatch.setitem(sys.modules, "_forgetful_guidance", module)
    out = tmp_path / "v.json"
    assert main(["validate", "_forgetful_guidance:sampler", "--quick", "--guidance", "7.5", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "VERDICT: FAIL" in text and "does not apply the guidance" in text
    doc = json.loads(out.read_text())
    assert doc["guidance"]["scale"] == 7.5 and doc["verdict"] == "fail" and "guidance" in doc["failed"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["diffusers:EulerDiscreteScheduler", "kdiffusion:sample_heun"])
def test_outside_samplers_pass_at_3(spec):
    result = check(spec, guidance=3.0, quick=True, progress=False)
    assert result.verdict == "pass", result.table()
    assert result.guidance["effective_scale"] == 3.0


@pytest.mark.parametrize("spec, claimed", [("diffusers:EulerDiscreteScheduler", 1), ("kdiffusion:sample_heun", 2)])
def test_outside_samplers_orders_at_3(spec, claimed):
    """The fast version: the mixture's order on the EDM grid, through the pipeline's own combination."""
    from sdm_verify.adapters import spec as specs

    solver = specs.load(spec).solver
    ns = (32, 64, 128, 256)
    rows = [guided.run_row(solver, guided.MIXTURE, 3.0, schedules.get("edm")(n, LO, HI), LO) for n in ns]
    fit = fit_rows(ns, rows)
    assert fit.ok and abs(fit.order - claimed) <= 0.2
    assert [r["nfe"] for r in rows] == [claimed * n for n in ns]  # both branches batched: one call per evaluation


def test_diffusers_is_driven_with_the_combined_network_output():
    """g > 1: the scheduler's fake network calls both branches once per model call (never the combined denoiser) and
    returns eps_u + g (eps_c - eps_u); the run agrees with one handed the oracle's guided denoiser to rounding."""
    from sdm_verify.adapters import spec as specs

    solver = specs.load("diffusers:EulerDiscreteScheduler").solver

    class Spy(guided.Guided):
        def __call__(self, x, sigma):
            raise AssertionError("the combined denoiser was called")

    lm = guided.labelled_target()
    x = lm.conditional(1).sample(8, sigma=HI, generator=torch.Generator().manual_seed(1))
    sigmas = schedules.get("edm")(16, LO, HI)
    spy = Spy(guided.MIXTURE, 7.5)
    out = solver(spy, x.clone(), sigmas)
    assert spy.nfe == 16
    plain = solver(lm.guided_field(1, 7.5), x.clone(), sigmas)
    assert float((out - plain).abs().max()) <= 1e-12 * float(plain.abs().max())


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, True, "3"])
def test_bad_scale_refused_before_any_call(bad):
    solver = NeverCalled()
    with pytest.raises(InputError, match="^guidance: the guidance scale must be a finite number >= 0"):
        check(solver, guidance=bad, progress=False)
    assert solver.calls == 0


@pytest.mark.parametrize("bad", ["nan", "-1", "inf"])
def test_cli_refuses_bad_scale_in_one_line(bad, capsys):
    assert main(["validate", "heun", "--quick", "--guidance", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--guidance" in err and "finite number >= 0" in err


def test_stochastic_sampler_refused_under_guidance():
    with pytest.raises(InputError, match="^guidance: .*stochastic"):
        check("euler_a", guidance=3.0, progress=False) if "euler_a" in solvers.available() else check(
            "kdiffusion:sample_euler_ancestral", guidance=3.0, progress=False)


def test_json_states_scale_convention_and_targets():
    result = check("euler", guidance=7.5, quick=True, progress=False)
    doc = json.loads(json.dumps(validation_json(result)))
    g = doc["guidance"]
    assert g["scale"] == 7.5 and g["effective_scale"] == 7.5
    assert "D_u + w (D_c - D_u)" in g["convention"] and "guidance_scale" in g["convention"]
    assert "both branches" in g["nfe_counting"]
    assert {t["name"] for t in g["targets"]} == {guided.JOINT, guided.MIXTURE}
    assert {c["target"] for c in doc["cases"]} == {guided.JOINT, guided.MIXTURE}
    assert doc["verdict"] == "pass" and any(i["name"] == "guidance" for i in doc["items"])
    table = result.table()
    assert table.startswith("guidance: w = 7.5") and "applied as: the guided denoiser" in table
