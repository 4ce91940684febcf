"""The conformance check (sdm_verify.conformance) and `sdm-verify validate`: every item can fail, and fails for the
defect it targets, with the numbers:

- identities: every consistent registered solver reproduces the point-mass flow x0 + (sigma'/sigma)(x - x0) and is
  affine on a Gaussian target to rounding; a solver adding 1e-6 x^2 fails both; ipndm_v, whose weights do not sum to
  the step (verdicts.KNOWN_DEVIATIONS), fails the point-mass identity;
- float32 drift, determinism, the final step, NFE declarations: a defect of each kind is caught;
- end to end: a Heun with corrector weights 0.6/0.4 fails the order and symbolic items (exit status 1, the JSON says
  which); a DPM-Solver++(2M) with an inverted step ratio keeps order 2 but fails the differential check;
  k-diffusion's 2M passes, its 3M-SDE(eta=0) fails its claimed order 3 with the measured order of the symbolic 3M
  update (2); a diffusers scheduler runs end to end;
- exit status 2 with one line for a missing optional package.
The expected values come from the mathematics (closed-form flows, symbolic orders), never from the check itself.
"""

import json
import statistics
import textwrap

import pytest
import torch

from sdm_verify import conformance, schedules, solvers
from sdm_verify.adapters import kdiffusion
from sdm_verify.cli import main
from sdm_verify.conformance import Context
from sdm_verify.conformance.items import affine, determinism, final_step, float32, point_mass, symbolic
from sdm_verify.harness import targets
from sdm_verify.harness.symbolic_order import symbolic_order
from sdm_verify.harness.verdicts import TOL

GMM = targets.get("gmm-8d")


def _item(module, solver, claimed=1.0):
    """One conformance item (conformance.items.<module>) run alone on `solver`."""
    return module.item(solver, Context.of(solver, claimed))


def euler(denoiser, x, sigmas):
    """Explicit Euler on dx/dsigma = (x - D)/sigma, written here (independent of sdm_verify's solvers)."""
    for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        x = x + (t - s) * (x - denoiser(x, s)) / s
    return x


def euler_plus_square(denoiser, x, sigmas):
    """Euler plus a 1e-6 x^2 term per step: consistent-looking, but neither exact for constant D nor affine."""
    for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        x = x + (t - s) * (x - denoiser(x, s)) / s + 1e-6 * x**2
    return x


# ------------------------------------------------------------------------------------------- identities


CANONICAL = [n for n in solvers.available() if not solvers.needs_process(n)]


@pytest.mark.parametrize("name", CANONICAL)
def test_registered_solvers_and_the_point_mass_and_affine_identities(name):
    solver = solvers.get(name)
    ok_pm, err_pm, detail, _ = point_mass.probe(solver)
    ok_af, err_af, _, _ = affine.probe(solver)
    assert ok_af and err_af < conformance.IDENTITY_RTOL  # every solver's map is affine on a Gaussian target
    if name == "ipndm_v":
        # its 4-point weights sum to the step only when r0 r2 = r1^2 (verdicts.KNOWN_DEVIATIONS): not consistent on a
        # non-uniform grid, so it misses even the constant-D flow by far more than rounding
        assert not ok_pm and err_pm > 1e-8, detail
    elif name == "bdia":
        # exact on a point mass in exact arithmetic (every trajectory is linear in sigma, and the step is exact on
        # such lines), but at gamma = 1 the two-step recurrence has a root of modulus 1: rounding is carried
        # undamped (tests/test_solvers_common.py, float32 finding); measured 2.7e-12 on the irregular grid, N = 11
        assert err_pm < 1e-10, detail
    else:
        assert ok_pm and err_pm < conformance.IDENTITY_RTOL, detail


def test_point_mass_reference_is_the_closed_form_flow():
    """Euler written here against the closed form: the identity's reference is x0 + (sigma_N/sigma_0)(x - x0)."""
    x0 = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x = x0 + 80.0 * torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigmas = schedules.edm(9, 0.002, 80.0)
    out = euler(lambda y, s: x0.expand_as(y), x, sigmas)
    exact = x0 + (0.002 / 80.0) * (x - x0)
    assert float((out - exact).abs().max()) < 1e-12 * float(x.abs().max())  # rounding of |x| ~ 200 over 9 steps


def test_a_nonlinear_perturbation_fails_both_identities():
    ok_pm, err_pm, _, _ = point_mass.probe(euler_plus_square)
    ok_af, err_af, _, _ = affine.probe(euler_plus_square)
    assert not ok_pm and not ok_af
    # 1e-6 x^2 adds ~6e-3 at |x| ~ 80 in the first step, contracted by the flow (sigma_N/sigma_0 = 2.5e-5 for the
    # point mass) but never to rounding: at least 1000x the 1e-12 limit (measured 8e-8 and larger)
    assert err_pm > 1e3 * conformance.IDENTITY_RTOL and err_af > 1e3 * conformance.IDENTITY_RTOL


def test_native_time_euler_is_exact_for_a_point_mass_only_where_its_trajectory_is_affine_in_t():
    """Euler in process time t is exact for trajectories affine in t; a point mass's is s(t)(x0 + sigma(t) c):
    affine for VE (1, t) and FM (1 - t, t), not for VP. The family declares it, so VP is reported, not judged."""
    from sdm_verify.adapters.spec import ProcessFamily

    family = ProcessFamily("euler_t")
    for process, exact in (("ve", True), ("fm", True), ("vp", False)):
        ok, err, _, data = point_mass.probe(family.with_process(process))
        assert ok and data["judged"] == exact
        assert (err < conformance.IDENTITY_RTOL) == exact, (process, err)


def test_spec_forms():
    from sdm_verify.adapters.spec import SpecError, load

    assert load("heun").registered == "heun" and load("heun").solver.order == 2
    for prefix in ("kdiffusion:", "k-diffusion:"):
        loaded = load(prefix + "sample_heun")
        assert loaded.solver.order == 2 and loaded.name == "kdiffusion:sample_heun"
    assert load("kdiffusion:lms", {"order": 3}).solver.order == 3
    assert load("kdiffusion:sample_dpmpp_sde").solver.needs_noise  # its default eta = 1: a stochastic sampler
    with pytest.raises(SpecError, match="^--config: kdiffusion:sample_dpmpp_sde: eta: "):
        load("kdiffusion:sample_dpmpp_sde", {"eta": -1.0})
    with pytest.raises(SpecError, match="^--config: only diffusers: and kdiffusion: specs"):
        load("heun", {})


# ------------------------------------------------------------------------------------- float32, determinism, final


def test_float32_drift_passes_euler_and_catches_half_precision():
    ok, drift, _, data = float32.probe(solvers.get("euler"))
    assert ok and drift < 1e-5  # ~N u = 128 x 6e-8 = 8e-6 at most (conformance.F32_LIMIT's derivation)

    def bf16_state(denoiser, x, sigmas):  # in float32 it keeps its state in bfloat16 (u = 3.9e-3), as autocast might
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
            x = x + (t - s) * (x - denoiser(x, s)) / s
            x = x.bfloat16().float() if x.dtype == torch.float32 else x
        return x

    ok, drift, _, _ = float32.probe(bf16_state)
    assert not ok and drift > conformance.F32_LIMIT

    ok, _, detail, _ = float32.probe(lambda d, x, s: euler(d, x.double(), s))
    assert not ok and "came back as torch.float64" in detail


def test_determinism_catches_noise_and_in_place_updates():
    assert determinism.probe(euler)[0]

    def noisy(denoiser, x, sigmas):
        return euler(denoiser, x, sigmas) + 1e-14 * torch.randn_like(x)

    def in_place(denoiser, x, sigmas):
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
            x += (t - s) * (x - denoiser(x, s)) / s
        return x

    ok, _, _, data = determinism.probe(noisy)
    assert not ok and not data["identical"]
    ok, _, _, data = determinism.probe(in_place)
    assert not ok and data["identical"] and not data["input_unmodified"]


def test_final_step_reports_and_fails_only_when_not_finite():
    item = _item(final_step, solvers.get("heun"))
    assert item.status == "info" and item.data["finite"]
    # counted NFE into 0: Heun's last step is Euler, 2N - 1 calls
    assert [r["nfe"] for r in item.data["runs"]] == [2 * n - 1 for n in conformance.FINAL_NS]

    def naive_heun(denoiser, x, sigmas):  # evaluates D and divides by sigma' = 0 on the last step
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
            d = (x - denoiser(x, s)) / s
            xp = x + (t - s) * d
            x = x + (t - s) * 0.5 * (d + (xp - denoiser(xp, t)) / t)
        return x

    item = _item(final_step, naive_heun)
    assert item.status == "fail" and not item.data["finite"]


def test_symbolic_check_of_an_update_rule_against_the_claim():
    # dpmpp_3m's own coefficients expand to order 2 (the authors' D2 weight; verdicts.KNOWN_DEVIATIONS)
    item = _item(symbolic, solvers.get("dpmpp_3m"), 3)
    assert item.status == "fail" and item.value == "2"
    assert _item(symbolic, solvers.get("dpmpp_3m_lagrange"), 3).status == "pass"


# ------------------------------------------------------------------------------------------- end to end

BROKEN = textwrap.dedent('''
    """Two solvers with a wrong coefficient, each declaring the registered solver it means to implement."""
    import math


    class WrongRatio2M:
        order = 2
        equivalent = "dpmpp_2m"

        def nfe(self, n):
            return n

        def __call__(self, denoiser, x, sigmas):
            s_ = sigmas.tolist()
            prev = h_prev = None
            for s, t in zip(s_[:-1], s_[1:]):
                d = denoiser(x, s)
                if t == 0:
                    x, prev = d, d
                    continue
                h = math.log(s / t)
                if prev is None:
                    dd = d
                else:
                    r = h / h_prev  # should be h_prev / h
                    dd = (1 + 1 / (2 * r)) * d - prev / (2 * r)
                x = (t / s) * x - math.expm1(-h) * dd
                prev, h_prev = d, h
            return x


    class WrongHeun:
        """EDM Heun with corrector weights 0.6 / 0.4 instead of 1/2 / 1/2: consistent but first order."""
        order = 2
        equivalent = "heun"

        def __call__(self, denoiser, x, sigmas):
            s_ = sigmas.tolist()
            for s, t in zip(s_[:-1], s_[1:]):
                d = (x - denoiser(x, s)) / s
                xp = x + (t - s) * d
                if t == 0:
                    x = xp
                    continue
                x = x + (t - s) * (0.6 * d + 0.4 * (xp - denoiser(xp, t)) / t)
            return x
''')


@pytest.fixture(scope="module")
def broken_json(tmp_path_factory):
    """validate --quick of both broken solvers: (exit status, JSON) per class name."""
    d = tmp_path_factory.mktemp("broken")
    (d / "broken_solvers.py").write_text(BROKEN)
    import sys

    sys.path.insert(0, str(d))
    out = {}
    try:
        for cls in ("WrongRatio2M", "WrongHeun"):
            rc = main(["validate", f"broken_solvers:{cls}", "--quick", "--json", str(d / f"{cls}.json")])
            out[cls] = rc, json.loads((d / f"{cls}.json").read_text())
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("broken_solvers", None)
    return out


def test_wrong_corrector_weight_fails_order_and_symbolic_with_exit_1(broken_json):
    rc, data = broken_json["WrongHeun"]
    assert rc == 1 and data["verdict"] == "fail"
    assert data["failed"] == ["order", "symbolic"]  # identities, float32, final step, determinism still hold
    # the second-order condition b2 c2 = 1/2 fails (0.4 x 1): first order
    assert abs(data["measured_order"]["overall"] - 1) <= TOL
    assert all(not c["agrees"] for c in data["cases"])
    assert data["symbolic"]["equivalent"] == "heun" and data["symbolic"]["max_relative_difference"] > 1e-6


def test_wrong_step_ratio_is_caught_by_the_differential_check_only(broken_json):
    """Inverting r = h_prev/h changes the extrapolation of D by (r - 1/r) (D - D_prev) = O(h) O(h) on a smooth grid
    (r = 1 + O(h)): an O(h^3) local change, so the measured order stays 2; the equivalence check sees it."""
    rc, data = broken_json["WrongRatio2M"]
    assert rc == 1 and data["failed"] == ["symbolic"]
    assert data["symbolic"]["equivalent"] == "dpmpp_2m"
    assert data["symbolic"]["max_relative_difference"] > 1e-6  # a coefficient error, far above rounding (1e-10)
    assert abs(data["measured_order"]["overall"] - 2) <= TOL


def test_json_schema_and_medians(broken_json):
    _, data = broken_json["WrongRatio2M"]
    for key in ("claimed_order", "measured_order", "nfe", "symbolic", "identities", "float32_drift", "final_step",
                "determinism", "verdict", "cases", "items", "failed"):
        assert key in data, key
    assert set(data["identities"]) == {"point_mass", "affine"}
    assert [i["name"] for i in data["items"]] == list(conformance.ITEMS)
    # measured orders: medians over the cases with a window, recomputed here from the per-case numbers
    orders = [c["measured_order"] for c in data["cases"] if c["window"] is not None]
    assert data["measured_order"]["overall"] == statistics.median(orders)
    for schedule, value in data["measured_order"]["per_schedule"].items():
        assert value == statistics.median(c["measured_order"] for c in data["cases"]
                                          if c["schedule"] == schedule and c["window"] is not None)
    assert data["nfe"]["source"] == "nfe(n)" and data["nfe"]["mismatches"] == []
    assert set(data["float32_drift"]["drift"]) == {str(n) for n in conformance.F32_NS}


def test_claimed_nfe_per_step_mismatch_fails_only_the_nfe_item():
    result = conformance.check("euler", 1, claimed_nfe_per_step=2, targets=["gmm-8d"], quick=True, progress=False)
    assert result.failed == ["nfe"]
    assert "counted 32, declared 64" in result.items["nfe"].detail  # N = 32: one call per Euler step, not two


def test_kdiffusion_dpmpp_2m_passes_and_its_verdict_follows_from_the_numbers():
    result = conformance.check("kdiffusion:sample_dpmpp_2m", targets=["gmm-8d"], quick=True, progress=False)
    expected = symbolic_order(solvers.get("dpmpp_2m")).general
    assert result.items["symbolic"].data["equivalent"] == "dpmpp_2m" and result.items["symbolic"].value == "2"
    for case in result.cases:  # the verdict rule on a mixture, applied here to the reported numbers
        assert case.measurement.ok and abs(case.measurement.order - expected) <= TOL
    judged = [i for i in result.items.values() if i.judged]
    assert result.verdict == ("pass" if all(i.status == "pass" for i in judged) else "fail") == "pass"


def test_kdiffusion_3m_sde_fails_its_claimed_order_3():
    result = conformance.check("kdiffusion:sample_dpmpp_3m_sde", config={"eta": 0}, targets=["gmm-8d"], quick=True,
                               progress=False)
    assert result.claimed_order == 3 and result.failed == ["order"]
    # its full steps are the authors' 3M update, whose symbolic order is 2 (the warm-up does not change the order)
    sym = symbolic_order(solvers.get("dpmpp_3m")).general
    assert sym == 2 and abs(result.measured_orders()["overall"] - sym) <= TOL


def test_diffusers_scheduler_end_to_end():
    try:
        from sdm_verify.adapters import diffusers  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"diffusers adapter not importable: {exc}")
    result = conformance.check("diffusers:FlowMatchEulerDiscreteScheduler", targets=["gmm-8d"], quick=True,
                               progress=False)
    assert result.verdict == "pass", result.table()
    assert abs(result.measured_orders()["overall"] - 1) <= TOL  # Euler in flow time is first order
    assert result.items["symbolic"].data["equivalent"] == "euler"


# ------------------------------------------------------------------------------------------- usage


def _one_line_exit_2(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err and "\n" not in err, (rc, err)
    return err


def test_missing_extras_exit_2_with_the_pip_line(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    err = _one_line_exit_2(capsys, ["validate", "diffusers:EulerDiscreteScheduler"])
    assert err.endswith("diffusers is not installed: pip install 'sdm-verify[diffusers]'")

    def missing(*args, **kwargs):
        raise kdiffusion.MissingKDiffusionError(f"k-diffusion is not installed: {kdiffusion.INSTALL_HINT}")

    monkeypatch.setattr(kdiffusion, "kdiffusion_solver", missing)
    err = _one_line_exit_2(capsys, ["validate", "kdiffusion:sample_heun"])
    assert err.endswith("pip install --no-deps k-diffusion torchsde torchdiffeq trampoline (see README)")


def test_bad_options_exit_2(capsys):
    assert "--config: not a JSON object" in _one_line_exit_2(capsys, ["validate", "kdiffusion:heun", "--config",
                                                                       "{nope"])
    assert "--config: only diffusers: and kdiffusion: specs" in _one_line_exit_2(
        capsys, ["validate", "heun", "--config", "{}"])
    assert "--claimed-nfe-per-step: must be a positive" in _one_line_exit_2(
        capsys, ["validate", "heun", "--claimed-nfe-per-step", "0"])
    assert "eta: sample_dpmpp_3m_sde needs a finite eta >= 0" in _one_line_exit_2(
        capsys, ["validate", "kdiffusion:sample_dpmpp_3m_sde", "--config", '{"eta": -1}'])


def test_final_step_is_not_applicable_to_a_solver_defined_only_above_zero():
    class AboveZero:
        order, steps_into_zero, final_step = 1, False, "none: ends at the smallest sigma of its table"

        def __call__(self, denoiser, x, sigmas):
            raise AssertionError("must not be run into sigma = 0")

    item = _item(final_step, AboveZero())
    assert item.status == "n/a" and not item.judged and "smallest sigma" in item.detail


def test_every_item_is_one_function_of_the_solver_and_the_context():
    import inspect

    from sdm_verify.conformance.items import CHECKS, RUN_ORDER

    assert tuple(CHECKS) == conformance.ITEMS and sorted(RUN_ORDER) == sorted(conformance.ITEMS)
    for name, fn in CHECKS.items():
        assert list(inspect.signature(fn).parameters) == ["solver", "ctx"], name


# ------------------------------------------------------------------------------------------- unreadable claims


def _declaring(**declarations):
    """An Euler solver (above) declaring order 1 plus `declarations` (attributes and methods)."""
    return type("Declaring", (), {"order": 1, "__call__": lambda self, d, x, s: euler(d, x, s), **declarations})()


def _raises(self, *args):
    raise RuntimeError("boom")


class _OrderRaises:
    @property
    def order(self):
        raise RuntimeError("no order today")

    def __call__(self, denoiser, x, sigmas):
        return euler(denoiser, x, sigmas)


@pytest.mark.parametrize("solver, item, words", [
    (_declaring(nfe=_raises), "nfe", ("nfe(", "RuntimeError", "boom")),
    (_declaring(nfe=lambda self, n: 1.5 * n), "nfe", ("nfe(", "not a non-negative integer")),
    (_declaring(nfe=lambda self, n: True), "nfe", ("nfe(", "bool")),
    (_declaring(nfe=lambda self, n: -n), "nfe", ("nfe(", "-")),
    (_declaring(nfe=5), "nfe", ("nfe", "not a method")),
    (_declaring(nfe=lambda self, n: n, nfe_to_zero=_raises), "nfe", ("nfe_to_zero(", "boom")),
    (_declaring(order=float("nan")), "order", ("order", "nan")),
    (_declaring(order="2"), "order", ("order", "'2'")),
    (_declaring(order=-1), "order", ("order", "-1")),
    (_declaring(order=True), "order", ("order", "bool")),
    (_OrderRaises(), "order", ("order", "no order today")),
    (_declaring(equivalent="no_such_twin"), "symbolic", ("equivalent", "no_such_twin")),
    (_declaring(equivalent=5), "symbolic", ("equivalent", "int")),
    (_declaring(equivalent="euler", equivalent_params={"bogus": 1}), "symbolic", ("equivalent", "bogus")),
    (_declaring(processes=("ve", "nowhere"), with_process=lambda self, p: {"ve": euler}[p]), "point_mass",
     ("processes", "nowhere")),
    (_declaring(processes="ve", with_process=lambda self, p: euler), "point_mass", ("processes", "'ve'")),
    (_declaring(processes=("ve",)), "point_mass", ("processes", "with_process")),
    (_declaring(sigma_range=(5.0, 1.0)), "point_mass", ("sigma_range", "lowest < highest")),
    (_declaring(sigma_range=(100.0, 200.0)), "determinism", ("sigma_range", "nothing")),
    (_declaring(point_mass_exact="yes"), "point_mass", ("point_mass_exact", "True or False")),
    (_declaring(steps_into_zero="no"), "final_step", ("steps_into_zero", "True or False")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_an_unreadable_claim_is_a_failed_item_not_a_missing_one(solver, item, words):
    result = conformance.check(solver, targets=["gmm-8d"], quick=True, progress=False)
    assert result.verdict == "fail" and item in result.failed, result.item_table()
    detail = result.items[item].detail
    for word in words:
        assert word in detail, (word, detail)
    json.dumps(result.to_json())  # the document is still written (claimed_order None when unreadable)


def test_a_raising_nfe_declaration_fails_validate_with_exit_1(tmp_path, monkeypatch, capsys):
    (tmp_path / "raising_nfe.py").write_text(textwrap.dedent('''
        class Euler:
            order = 1

            def nfe(self, n):
                raise RuntimeError("cannot count")

            def __call__(self, denoiser, x, sigmas):
                for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
                    x = x + (t - s) * (x - denoiser(x, s)) / s
                return x
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = tmp_path / "v.json"
        assert main(["validate", "raising_nfe:Euler", "--quick", "--targets", "gmm-8d", "--json", str(out)]) == 1
    finally:
        import sys

        sys.modules.pop("raising_nfe", None)
    data = json.loads(out.read_text())
    assert data["verdict"] == "fail" and data["failed"] == ["nfe"] and "cannot count" in data["nfe"]["unreadable"]
    assert "VERDICT: FAIL (failed: nfe)" in capsys.readouterr().out


def test_unreadable_declared_order_fails_but_a_given_claim_is_judged():
    nan_order = _declaring(order=float("nan"))
    result = conformance.check(nan_order, targets=["gmm-8d"], quick=True, progress=False)
    assert result.failed == ["order"] and result.to_json()["claimed_order"] is None and not result.cases
    given = conformance.check(nan_order, 1, targets=["gmm-8d"], quick=True, progress=False)
    assert given.verdict == "pass"  # --claimed-order given: the declaration is not read
