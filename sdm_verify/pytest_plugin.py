"""pytest plugin: the sdm-verify conformance check as test items, in any solver repository.

    pytest --sdm-verify mypkg.samplers:MySolver --claimed-order 3 [--sdm-verify-config JSON] [--sdm-verify-quick]

adds one test item per conformance item (sdm_verify.conformance: order, symbolic, nfe, point_mass, affine, float32,
final_step, determinism), named `sdm-verify::<item>`. The check runs once, on the first item; an item fails with
its numbers when the check judges it failed, is skipped when it does not apply (n/a), and passes otherwise
(reported-only items pass). The verdict table is printed in the terminal summary. Without --sdm-verify nothing is
added. The fixture `sdm_verify_check` returns `sdm_verify.conformance.check` for custom tests.

The plugin is loaded in every pytest run (entry point pytest11), so this module imports only pytest; torch and the
suite are imported when the check runs.
"""

from __future__ import annotations

import json

import pytest

#: the conformance items, in order (sdm_verify.conformance.ITEMS; repeated here to keep the import cheap)
ITEMS = ("order", "symbolic", "nfe", "point_mass", "affine", "float32", "final_step", "determinism")
#: the items of a stochastic sampler's check (sdm_verify.conformance.stochastic.ITEMS), collected instead of ITEMS when
#: the SPEC loads as a sampler that declares needs_noise
STOCHASTIC_ITEMS = ("weak_order", "exact_law", "strong_order", "mixture_weak", "nfe", "reproducible")
_RESULT = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("sdm-verify", "conformance check of a diffusion ODE solver (sdm-verify)")
    group.addoption("--sdm-verify", dest="sdm_verify", metavar="SPEC", default=None,
                    help="run the sdm-verify conformance check on SPEC (module:attr, a registered name, "
                    "diffusers:Class or kdiffusion:sample_name) as test items")
    group.addoption("--sdm-verify-claimed-order", "--claimed-order", dest="sdm_verify_claimed_order", type=float,
                    metavar="P", default=None, help="the order SPEC claims (default: its declared `order`)")
    group.addoption("--sdm-verify-config", dest="sdm_verify_config", metavar="JSON", default=None,
                    help="diffusers config / k-diffusion keyword arguments for SPEC, as a JSON object")
    group.addoption("--sdm-verify-claimed-nfe-per-step", dest="sdm_verify_nfe", type=float, metavar="K",
                    default=None, help="check counted NFE = K N exactly")
    group.addoption("--sdm-verify-quick", dest="sdm_verify_quick", action="store_true", default=False,
                    help="measure orders on gmm-8d (EDM and logSNR grids) only")
    group.addoption("--sdm-verify-guidance", dest="sdm_verify_guidance", type=float, metavar="W", default=None,
                    help="run the check on the classifier-free-guided field D_u + W (D_c - D_u) (W finite, >= 0; "
                    "adds the item sdm-verify::guidance; sdm_verify.conformance.guided)")
    group.addoption("--sdm-verify-targets", dest="sdm_verify_targets", metavar="T1,T2", default=None,
                    help="restrict the order measurements to these comma-separated targets")


class ConformanceFailure(Exception):
    """A conformance item judged failed; carries the text shown as the failure."""


class ConformanceItem(pytest.Item):
    def __init__(self, *, item_name: str, **kwargs):
        super().__init__(**kwargs)
        self.item_name = item_name

    def runtest(self) -> None:
        result = _run_check(self.config)
        item = result.items[self.item_name]
        self.user_properties.append(("sdm_verify_value", item.value))
        if item.status == "fail":
            raise ConformanceFailure(_failure_text(result, item))
        if item.status == "n/a":
            pytest.skip(f"sdm-verify {item.name}: {item.detail}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"sdm-verify::{self.item_name}"


def _failure_text(result, item) -> str:
    claimed = result.claimed_order
    lines = [f"sdm-verify {item.name} FAILED for {result.name} (claimed order "
             f"{'none' if claimed is None else format(claimed, 'g')})",
             f"  value {item.value}   limit {item.limit}", f"  {item.detail}"]
    if item.name == "order":
        lines += ["", result.case_table()]
    return "\n".join(lines)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Bad option values are pytest usage errors (one line, exit status 4), before any collection or check."""
    if not config.getoption("sdm_verify", None):
        return
    import math

    raw = config.getoption("sdm_verify_config")
    if raw:
        try:
            cfg = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise pytest.UsageError(f"--sdm-verify-config: not valid JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(cfg, dict):
            raise pytest.UsageError(f"--sdm-verify-config: expected a JSON object, got {type(cfg).__name__}")
    for option, dest in (("--sdm-verify-claimed-order", "sdm_verify_claimed_order"),
                         ("--sdm-verify-claimed-nfe-per-step", "sdm_verify_nfe")):
        value = config.getoption(dest)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise pytest.UsageError(f"{option}: must be a finite number > 0 (got {value})")
    guidance = config.getoption("sdm_verify_guidance")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise pytest.UsageError(f"--sdm-verify-guidance: the guidance scale must be a finite number >= 0 (got "
                                f"{guidance})")
    targets = config.getoption("sdm_verify_targets")
    if targets is not None and not [t for t in targets.split(",") if t.strip()]:
        raise pytest.UsageError(f"--sdm-verify-targets: expected comma-separated target names (got {targets!r})")


def pytest_collection_modifyitems(session, config, items):
    """Append the conformance items (before -k / -m deselection, which then applies to them too)."""
    if not config.getoption("sdm_verify"):
        return
    names = STOCHASTIC_ITEMS if _stochastic(config) else ITEMS
    if config.getoption("sdm_verify_guidance") is not None and names is ITEMS:  # the guided check's own item
        names = (*ITEMS, "guidance")
    for name in names:
        items.append(ConformanceItem.from_parent(session, name=f"sdm-verify::{name}",
                                                 nodeid=f"sdm-verify::{name}", item_name=name))


def _stochastic(config) -> bool:
    """Whether the SPEC loads as a stochastic sampler (needs_noise). A SPEC that does not load is not: its error is
    then raised by every (ODE) item when the check runs."""
    try:
        from sdm_verify.adapters.spec import load

        raw = config.getoption("sdm_verify_config")
        return bool(getattr(load(config.getoption("sdm_verify"), json.loads(raw) if raw else None).solver,
                            "needs_noise", False))
    except Exception:  # noqa: BLE001  reported by the check itself
        return False


def _run_check(config):
    """The conformance result, computed once per session (an error in the check is raised by every item)."""
    stash = config.stash.setdefault(_RESULT, {})
    if "result" not in stash and "error" not in stash:
        from sdm_verify.conformance import check

        raw = config.getoption("sdm_verify_config")
        targets = config.getoption("sdm_verify_targets")
        try:
            cfg = json.loads(raw) if raw else None
            if cfg is not None and not isinstance(cfg, dict):
                raise ValueError(f"--sdm-verify-config: expected a JSON object, got {type(cfg).__name__}")
            stash["result"] = check(config.getoption("sdm_verify"), config.getoption("sdm_verify_claimed_order"),
                                    cfg, claimed_nfe_per_step=config.getoption("sdm_verify_nfe"),
                                    targets=[t.strip() for t in targets.split(",")] if targets else None,
                                    quick=config.getoption("sdm_verify_quick"), progress=False,
                                    guidance=config.getoption("sdm_verify_guidance"))
        except json.JSONDecodeError as exc:
            stash["error"] = ValueError(f"--sdm-verify-config: not valid JSON ({exc})")
        except Exception as exc:
            stash["error"] = exc
    if "error" in stash:
        exc = stash["error"]
        raise ConformanceFailure(f"sdm-verify could not run the check: {type(exc).__name__}: {exc}")
    return stash["result"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    result = config.stash.get(_RESULT, {}).get("result")
    if result is not None:
        terminalreporter.section("sdm-verify conformance")
        terminalreporter.write_line(result.table())


@pytest.fixture
def sdm_verify_check():
    """`sdm_verify.conformance.check(spec_or_solver, claimed_order=None, config=None, ...)`."""
    from sdm_verify.conformance import check

    return check
