"""The pytest plugin (sdm_verify.pytest_plugin), run on throwaway solver projects with pytester: a correct solver
passes every conformance item, a solver with a wrong corrector weight fails exactly the order item (with its
numbers), and without --sdm-verify the plugin adds nothing. The orders are those of the underlying mathematics:
explicit Euler is first order, a Heun step with weights 0.6/0.4 is consistent but only first order (its second-order
condition b2 c2 = 1/2 reads 0.4 != 1/2)."""

import sys
import textwrap

import pytest

from sdm_verify import pytest_plugin

pytest_plugins = ["pytester"]

SOLVERS = textwrap.dedent('''
    """Solvers written independently of sdm_verify, on dx/dsigma = (x - D(x, sigma))/sigma."""

    def euler(denoiser, x, sigmas):
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x = x + (t - s) * (x - denoiser(x, s)) / s
        return x


    def heun_wrong(denoiser, x, sigmas):
        """Heun with corrector weights 0.6 / 0.4 instead of 1/2 / 1/2: consistent, first order."""
        for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            d = (x - denoiser(x, s)) / s
            xp = x + (t - s) * d
            if t == 0:  # the step into sigma = 0 is Euler (D at sigma = 0 would divide by 0)
                x = xp
                continue
            d2 = (xp - denoiser(xp, t)) / t
            x = x + (t - s) * (0.6 * d + 0.4 * d2)
        return x
''')

#: the quick check on one target keeps each inner run to a few seconds
QUICK = ["--sdm-verify-quick", "-p", "no:cacheprovider", "-p", "no:randomly"]


@pytest.fixture(scope="module")
def preloaded():
    """pytester's in-process runs restore sys.modules afterwards, and extension modules first imported inside one
    run (numpy's, scipy's) cannot be imported again in the next: import everything the check uses out here."""
    from sdm_verify.conformance import check

    check("euler", 1, targets=["gmm-8d"], quick=True, progress=False)


@pytest.fixture
def project(pytester, preloaded):
    pytester.makepyfile(plugin_solvers=SOLVERS)
    pytester.syspathinsert()
    pytester.makepyfile(test_unrelated="def test_unrelated():\n    assert True\n")
    yield pytester
    sys.modules.pop("plugin_solvers", None)


def test_items_match_the_conformance_items():
    from sdm_verify.conformance import ITEMS

    assert pytest_plugin.ITEMS == ITEMS


def test_stochastic_items_match_the_stochastic_check():
    from sdm_verify.conformance.stochastic import ITEMS

    assert pytest_plugin.STOCHASTIC_ITEMS == ITEMS


def test_a_stochastic_sampler_gets_the_stochastic_items(project):
    """A registered sampler that needs noise: its six items (strong order n/a for DDPM: skipped)."""
    result = project.runpytest("--sdm-verify", "ddpm", "-v", *QUICK)
    result.assert_outcomes(passed=6, skipped=1)
    out = result.stdout.str()
    assert "sdm-verify::weak_order PASSED" in out and "sdm-verify::strong_order SKIPPED" in out
    assert "sdm-verify::order" not in out


def test_without_the_option_nothing_is_added(project):
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "sdm-verify::" not in result.stdout.str()


def test_correct_solver_passes(project):
    result = project.runpytest("--sdm-verify", "plugin_solvers:euler", "--claimed-order", "1", "-v", *QUICK)
    # 6 judged items pass, nfe and final_step are reported (pass), symbolic does not apply (skipped)
    result.assert_outcomes(passed=8, skipped=1)
    out = result.stdout.str()
    assert "sdm-verify::order PASSED" in out and "sdm-verify::symbolic SKIPPED" in out
    assert "VERDICT: PASS" in out  # the terminal summary's table


def test_wrong_coefficient_fails_the_order_item(project):
    result = project.runpytest("--sdm-verify", "plugin_solvers:heun_wrong", "--sdm-verify-claimed-order", "2", "-v",
                               "-k", "sdm or unrelated", *QUICK)
    result.assert_outcomes(passed=7, failed=1, skipped=1)
    out = result.stdout.str()
    assert "sdm-verify::order FAILED" in out and "sdm-verify::point_mass PASSED" in out
    assert "sdm-verify order FAILED for plugin_solvers:heun_wrong (claimed order 2)" in out
    assert "0/2 cases agree" in out and "VERDICT: FAIL (failed: order)" in out


def test_bad_spec_fails_every_item_with_one_message(project):
    result = project.runpytest("--sdm-verify", "plugin_solvers:nope", *QUICK)
    result.assert_outcomes(passed=1, failed=len(pytest_plugin.ITEMS))
    assert "sdm-verify could not run the check: SpecError: SPEC: module 'plugin_solvers' has no attribute" in \
        result.stdout.str()


def test_fixture_returns_the_check(project):
    project.makepyfile(test_fixture=textwrap.dedent('''
        def test_fixture(sdm_verify_check):
            from sdm_verify.conformance import check
            assert sdm_verify_check is check
    '''))
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_plugin_module_imports_only_pytest():
    """Loaded in every pytest run: the module itself must not import torch or the suite (loaded here from its file,
    without the sdm_verify package __init__, which is not the plugin's to keep light)."""
    import subprocess

    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('plugin_alone', {pytest_plugin.__file__!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'sdm_verify', 'numpy', 'analytic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args, named", [
    (["--sdm-verify-config", "{not json"], "--sdm-verify-config"),
    (["--sdm-verify-config", "[1, 2]"], "--sdm-verify-config"),
    (["--sdm-verify-claimed-order", "nan"], "--sdm-verify-claimed-order"),
    (["--sdm-verify-claimed-order", "-2"], "--sdm-verify-claimed-order"),
    (["--sdm-verify-claimed-nfe-per-step", "0"], "--sdm-verify-claimed-nfe-per-step"),
    (["--sdm-verify-targets", " , "], "--sdm-verify-targets"),
])
def test_bad_option_is_a_usage_error_before_any_check(project, args, named):
    result = project.runpytest("--sdm-verify", "plugin_solvers:euler", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert named in result.stderr.str() and "sdm-verify::" not in result.stdout.str()
