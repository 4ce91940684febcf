"""Shared test configuration.

The oracle's tensors are tiny (batches of tens of points, d <= 8): torch's intra-op threads only add overhead there
(one denoiser call measured 0.3 ms on 1 thread, 8 ms on 2 threads of a loaded 2-core machine), so tests run
single-threaded.
"""

import torch

torch.set_num_threads(1)

# CI (CI=true) runs hypothesis with fixed examples, so a run's verdict never depends on the random seed; local runs
# keep exploring new examples.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# numpy/scipy BLAS threads compete on a loaded 2-core machine (numpy-heavy tests measured ~10x slower): one thread.
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(limits=1, user_api="blas")


# symbolic expansions are cached on disk (analytic.symbolic.cached): the tests use a fresh folder of their own, never
# the user's cache (CLI subprocesses inherit it)
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["SDM_VERIFY_CACHE"] = _cache = tempfile.mkdtemp(prefix="sdm-verify-test-cache-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The bad-input tests' probe (tests/_bad_inputs.py): scratch dir, counting denoiser, forbid(), cli()."""
    from _bad_inputs import Probe

    return Probe(tmp_path, monkeypatch)


# ---------------------------------------------------------------- the theory sweep, started at collection
# tests/test_theory.py's session fixture `theory_results` needs every cell of the selected theory cases. Its sweep is
# started in a subprocess (its own 2-worker pool, forked from that process's main thread) as soon as the selection is
# known, so that it runs beside the tests that come before test_theory.py; the fixture then waits for it and reads
# the rows from the shared store, computing any that are missing itself (a failed or interrupted subprocess costs
# time, never a result). SDM_VERIFY_THEORY_BACKGROUND=0 turns this off: the fixture computes everything.
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

THEORY_JOBS = min(2, os.cpu_count() or 1)
_SWEEP = """
import json, sys, torch
torch.set_num_threads(1)
from threadpoolctl import threadpool_limits
threadpool_limits(limits=1, user_api="blas")
from sdm_verify.harness.cases import Case, measure_cases
from sdm_verify.harness.store import ResultStore
cases = [Case(**c) for c in json.loads(sys.argv[1])]
with ResultStore(sys.argv[2]) as store:
    measure_cases(cases, store, jobs=int(sys.argv[3]), progress=False)
"""
_theory = {}  # "store": the session's store path; "proc": the background sweep


def theory_cases(items) -> list:
    """The theory cases (harness.cases.Case) parametrising the selected tests that use `theory_results`."""
    from sdm_verify.harness.cases import Case

    return [it.callspec.params["case"] for it in items if "theory_results" in getattr(it, "fixturenames", ())
            and hasattr(it, "callspec") and isinstance(it.callspec.params.get("case"), Case)]


def theory_store() -> str:
    """The session's theory store: SDM_VERIFY_STORE, or a file in a temporary folder removed at exit."""
    if "store" not in _theory:
        path = os.environ.get("SDM_VERIFY_STORE")
        if not path:
            folder = tempfile.mkdtemp(prefix="sdm-verify-theory-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = os.path.join(folder, "results.sqlite")
        _theory["store"] = path
    return _theory["store"]


def pytest_collection_finish(session):
    if (os.environ.get("SDM_VERIFY_THEORY_BACKGROUND", "1") == "0" or os.environ.get("PYTEST_XDIST_WORKER")
            or session.config.option.collectonly):
        return
    cases = theory_cases(session.items)
    if not cases:
        return
    spec = json.dumps([dict(solver=c.solver, target=c.target, process=c.process, schedule=c.schedule, wide=c.wide)
                       for c in dict.fromkeys(cases)])
    log = _theory.setdefault("log", tempfile.TemporaryFile())  # a file, not a pipe: its writes never block
    _theory["proc"] = subprocess.Popen([sys.executable, "-c", _SWEEP, spec, theory_store(), str(THEORY_JOBS)],
                                       stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


@pytest.fixture(scope="session")
def theory_results(request):
    """{Case: OrderMeasurement} of the selected theory cases (so `-k heun` computes only Heun's cells): every cell
    computed once in this session, by the background sweep where it ran (pytest_collection_finish), else here."""
    from sdm_verify.harness.cases import measure_cases
    from sdm_verify.harness.store import ResultStore

    proc = _theory.pop("proc", None)
    if proc is not None:
        proc.wait()  # a failure leaves cells missing: computed below (its stderr is in _theory["log"])
    with ResultStore(theory_store()) as store:
        return measure_cases(theory_cases(request.session.items), store, jobs=THEORY_JOBS, progress=False)


def pytest_sessionfinish(session):
    proc = _theory.pop("proc", None)
    if proc is not None and proc.poll() is None:  # the session ended first (-x, interrupt): stop it and its workers
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait()
