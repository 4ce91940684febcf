"""The declared solver interface (sdm_verify/solvers/interface.py): listed once, declared by every solver, and what
`adapters.spec.load` hands back; the typed per-run state and the one multistep base with its step ratios."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch

from analytic import processes
from sdm_verify import solvers
from sdm_verify.adapters import spec
from sdm_verify.harness.symbolic_order import has_rule, symbolic_order
from sdm_verify.solvers.base import Solver, StepContext
from sdm_verify.solvers.interface import DECLARED, SolverInterface, has_coefficients
from sdm_verify.solvers.multistep import Multistep, MultistepState

F64 = torch.float64
ALL = solvers.available()


def make(name):
    return solvers.get(name, **({"process": processes.get("vp")} if solvers.needs_process(name) else {}))


def test_every_declaration_is_on_the_interface_with_its_default():
    for attr in DECLARED:
        assert hasattr(SolverInterface, attr), attr
    assert len(set(DECLARED)) == len(DECLARED)
    d = SolverInterface
    assert (d.order, d.order_conditions, d.needs_noise, d.weak_order, d.strong_order, d.accepts_guidance) == (
        None, "", False, None, None, False)
    assert (d.symbolic_form, d.corrector, d.equivalent, dict(d.equivalent_params), d.processes, d.sigma_range) == (
        None, False, None, {}, (), None)
    assert (d.needs_process, d.point_mass_exact, d.steps_into_zero, d.nfe_exact, d.data_dependent) == (
        False, True, True, True, False)


def test_the_interface_is_abstract():
    with pytest.raises(TypeError):
        SolverInterface()


#: solvers whose claimed order holds only under a condition (the paper's, stated with the claim)
PAPER_TIME = "uniform steps in the paper's time (DDPM timestep index)"
ORDER_CONDITIONS = {"ipndm": "uniform steps", "ipndm_v": "uniform steps", "hb_plms": "uniform steps",
                    "ghvb": "uniform steps", "pndm": PAPER_TIME + ", exact warm-up", "plms": PAPER_TIME,
                    "s_pndm": PAPER_TIME}


@pytest.mark.parametrize("name", ALL)
def test_every_registered_solver_declares_through_the_interface(name):
    s = make(name)
    # a heuristic without a claimed order declares None and says so in its claim source
    assert isinstance(s, Solver) and (isinstance(s.order, (int, float)) and s.order >= 1
                                      or s.order is None and s.claim_source.startswith("no order claimed"))
    assert has_coefficients(s) == (s.symbolic_form is not None) == has_rule(s)
    assert s.needs_process == solvers.needs_process(name) and s.stage_rules is not None
    assert not s.needs_noise and not s.accepts_guidance and s.weak_order is None
    assert s.order_conditions == ORDER_CONDITIONS.get(name, "")
    twin = s.equivalent_solver()
    assert (twin is None) == (s.equivalent is None)


def test_multi_stage_runge_kutta_declares_a_one_call_final_step():
    for name, stages in (("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)):
        s = solvers.get(name)
        assert (s.nfe(10), s.nfe_to_zero(10)) == (stages * 10, stages * 9 + 1)
        assert s.final_step.startswith("Euler") and s.symbolic_form == "noise-sigma"


def test_a_solver_without_processes_refuses_with_process():
    with pytest.raises(ValueError, match="^process: heun runs in sigma space"):
        solvers.get("heun").with_process("vp")


def test_a_declared_twin_is_built_from_the_registry():
    class Twin(Solver):
        name, order, equivalent, equivalent_params = "twin", 2, "dpmpp_3m", {"lower_order_final": True}

    twin = Twin().equivalent_solver()
    assert type(twin).__name__ == "DPMSolverPP3M" and twin.lower_order_final


# ------------------------------------------------------------------------------------------- typed per-run state


@pytest.mark.parametrize("name, state", [("dpmpp_2m", "MultistepState"), ("deis_tab2", "MultistepState"),
                                         ("ipndm", "MultistepState"), ("unipc", "UniPCState"), ("sdm", "SDMState"),
                                         ("sdm_dpmpp", "SDMState"), ("euler_t", "NativeState"), ("heun", "NoneType")])
def test_each_family_creates_its_typed_state(name, state):
    assert type(make(name).init_state()).__name__ == state


def test_multistep_families_share_one_history_newest_first():
    x = torch.ones(2, 3, dtype=F64)
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.5]
    for name, size in (("dpmpp_3m", 3), ("unipc_bh2_p3", 3), ("deis_tab3", 4), ("ipndm", 4), ("deis_tab1", 2)):
        s = solvers.get(name)
        assert isinstance(s, Multistep) and s.history_size == size
        ctx = StepContext(sigmas, s.init_state())
        for i in range(4):
            s.step(lambda y, sig, i=i: torch.full_like(y, float(i)), x, i, ctx)
        assert isinstance(ctx.state, MultistepState) and len(ctx.state.history) == min(size, 4)
        if s.symbolic_form == "data-lambda":  # D values, newest first
            assert [float(v[0, 0]) for v in ctx.state.history] == [3.0, 2.0, 1.0]
        else:  # eps = (x - D)/sigma, newest first
            assert [float(v[0, 0]) for v in ctx.state.history] == [(1 - i) / sigmas[i] for i in (3, 2, 1, 0)][:size]


def test_step_ratios_in_the_familys_variable():
    sigmas = [10.0, 5.0, 2.0, 1.0]
    lam = [-math.log(s) for s in sigmas]
    r_lambda = solvers.get("dpmpp_3m").ratios(sigmas, 2, 2)
    r_sigma = solvers.get("deis_tab3").ratios(sigmas, 2, 2)
    assert r_lambda == pytest.approx([(lam[2] - lam[1]) / (lam[3] - lam[2]), (lam[1] - lam[0]) / (lam[3] - lam[2])],
                                     rel=1e-14)
    assert r_sigma == [(2.0 - 5.0) / (1.0 - 2.0), (5.0 - 10.0) / (1.0 - 2.0)]
    assert solvers.get("unipc").ratios(sigmas, 2, 2) == r_lambda
    assert solvers.get("ipndm").ratios(sigmas, 2, 2) == r_sigma


# ------------------------------------------------------------------------------------------- spec.load


OUTSIDE = textwrap.dedent('''
    """Outside solvers, written without sdm_verify."""
    import math


    def euler(denoiser, x, sigmas):
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x = x + (t - s) * (x - denoiser(x, s)) / s
        return x


    class DDIMWithRule:
        order, symbolic_form, equivalent = 1, "data-lambda", "ddim"

        def nfe(self, n):
            return n

        def update_rule(self, h, ratios, ops):
            return [-ops.expm1(-h)], [0]

        def __call__(self, denoiser, x, sigmas):
            s_ = sigmas.tolist()
            for s, t in zip(s_[:-1], s_[1:]):
                x = (t / s) * x + (1 - t / s) * denoiser(x, s)
            return x


    class WrongRule(DDIMWithRule):
        def update_rule(self, h, ratios, ops):
            return [2 * h], [0]  # inconsistent: twice the step
''')


@pytest.fixture
def outside(tmp_path, monkeypatch):
    (tmp_path / "outside_solvers.py").write_text(OUTSIDE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "outside_solvers"
    sys.modules.pop("outside_solvers", None)


def test_load_always_hands_back_the_interface(outside):
    for s in ("heun", "euler_t", f"{outside}:euler", f"{outside}:DDIMWithRule", "sdm_verify.solvers.rk:RK4"):
        assert isinstance(spec.load(s).solver, SolverInterface), s


def test_a_plain_callable_declares_the_defaults(outside):
    loaded = spec.load(f"{outside}:euler")
    s = loaded.solver
    assert type(s) is spec.CallableSolver and s.name == "euler" and loaded.name == f"{outside}:euler"
    assert s.order is None and s.nfe is None and s.nfe_to_zero is None and not has_rule(s)
    assert s.processes == () and s.equivalent is None and s.equivalent_solver() is None
    x = torch.ones(3, 2, dtype=F64)
    grid = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    den = lambda y, sig: 0.5 * y  # noqa: E731
    assert torch.equal(s(den, x, grid), spec.load(f"{outside}:euler").solver.fn(den, x, grid))


def test_an_outside_objects_declarations_are_carried_over(outside):
    s = spec.load(f"{outside}:DDIMWithRule").solver
    assert (s.order, s.equivalent, s.nfe(7), s.nfe_to_zero) == (1, "ddim", 7, None)
    assert symbolic_order(s).general == 1
    assert symbolic_order(spec.load(f"{outside}:WrongRule").solver).general == 0  # not cached under one key


def test_native_time_solvers_load_as_a_process_family():
    family = spec.load("heun_t").solver
    assert type(family) is spec.ProcessFamily and family.processes == ("ve", "vp", "fm")
    vp = family.with_process("vp")
    assert vp.order == 2 and (vp.nfe(5), vp.nfe_to_zero(5)) == (10, 9) and not vp.point_mass_exact
    with pytest.raises(spec.SpecError, match="^process: heun_t supports"):
        family.with_process("edm")
