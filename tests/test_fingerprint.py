"""Code fingerprints (sdm_verify.harness.fingerprint): what a cell's key says about the code that computed it.

A file's digest follows its code, not its comments or docstrings; a solver's part covers its class's modules and the
siblings they import; a cell's config carries the parts; and a store never serves a row computed by other code."""

import re
import sys
import textwrap
from pathlib import Path

import pytest

import sdm_verify.harness.sweep as sw
from sdm_verify import solvers
from sdm_verify.harness import fingerprint
from sdm_verify.harness.store import ResultStore
from sdm_verify.harness.sweep import CODE_META, Cell, code_for, run_cells


def _digest(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return fingerprint.file_digest(path)


def test_file_digest_follows_code_not_comments_or_docstrings(tmp_path):
    base = _digest(tmp_path, "a.py", '''
        """Module doc."""
        def f(x):
            """Weights of the trapezoid."""
            return 0.5 * x + 0.5 * x  # the corrector
        ''')
    docs = _digest(tmp_path, "b.py", '''
        """Another module doc, see docs/theory.md."""
        def f(x):
            """Other words."""

            return 0.5 * x + 0.5 * x  # another comment
        ''')
    code = _digest(tmp_path, "c.py", '''
        """Module doc."""
        def f(x):
            """Weights of the trapezoid."""
            return 0.6 * x + 0.4 * x  # the corrector
        ''')
    assert base == docs  # comments, docstrings and blank lines do not count
    assert code != base  # a changed coefficient does


def _files(part):
    return {path for path, _ in part.files}


def _rel(module: str) -> str:
    return module.replace(".", "/") + ".py"


def test_solver_part_covers_its_modules_and_the_siblings_they_import():
    for name in ("heun", "ipndm", "dpmpp_3m", "unipc"):
        cls = type(solvers.get(name))
        files = _files(fingerprint.solver_part(cls))
        # every class of its MRO inside the package
        assert {_rel(c.__module__) for c in cls.__mro__ if c.__module__.startswith("sdm_verify.")} <= files, name
        # and every sibling its module imports (read here with a regex, independently of the ast scan)
        source = Path(sys.modules[cls.__module__].__file__).read_text()
        siblings = {f"sdm_verify/solvers/{m}.py" for m in re.findall(r"^from \.(\w+) import", source, re.M)}
        assert siblings and siblings <= files, (name, siblings - files)
    heun = fingerprint.solver_part(type(solvers.get("heun")))
    assert "sdm_verify/solvers/dpm.py" not in _files(heun)  # another family's module is not Heun's code
    assert fingerprint.solver_part(type(solvers.get("dpmpp_2m"))).digest != heun.digest


def test_harness_and_oracle_parts():
    harness, oracle = fingerprint.harness_parts()
    assert {"sdm_verify/harness/sweep.py", "sdm_verify/harness/run.py", "sdm_verify/harness/meters.py"} \
        <= _files(harness)
    assert not any(f.startswith("analytic/") for f in _files(harness))
    assert {"analytic/wasserstein/bures.py", "analytic/flows.py", "analytic/gmm.py"} <= _files(oracle)
    # bookkeeping (storing, fingerprinting, progress) computes no number: editing it recomputes nothing
    assert not {"sdm_verify/harness/store.py", "sdm_verify/harness/progress.py"} & _files(harness)


def test_cell_config_carries_the_fingerprint():
    cfg = Cell("gmm-8d", "heun", "edm", 16).config()
    code = cfg["code"]
    heun = fingerprint.solver_part(type(solvers.get("heun")))
    assert code["solver"] == heun.digest and code["harness"] == fingerprint.harness_parts()[0].digest
    assert set(code) == {"solver", "schedule", "harness", "oracle", "torch", "numpy", "scipy", "sdm_verify"}
    assert Cell("gmm-8d", "dpmpp_2m", "edm", 16).config()["code"]["solver"] != code["solver"]
    assert Cell("gmm-8d", "heun", "logsnr", 16).config()["code"]["schedule"] == code["schedule"]  # one module
    assert code_for(cfg) == code
    # an unregistered name has no code to fingerprint (such a cell cannot be computed)
    assert Cell("-", "no_such_solver", "edm", 4).config()["code"]["solver"] is None


def test_other_code_is_computed_again(tmp_path, monkeypatch):
    cells = [Cell("gauss-4d", "euler", "edm", n) for n in (8, 16)]
    computed = []
    original = sw.compute_cell
    monkeypatch.setattr(sw, "compute_cell", lambda cfg: computed.append(cfg["n"]) or original(cfg))
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = run_cells(cells, store, progress=False)
        assert computed == [8, 16]
        run_cells(cells, store, progress=False)
        assert computed == [8, 16]  # the same code: reused
        manifest = store.get_meta(CODE_META)
        assert manifest[first[0]["code"]["solver"]]["files"]["sdm_verify/solvers/rk.py"]
        sw._code.cache_clear()
        try:  # the same configuration under another torch: a new key, computed again
            monkeypatch.setattr(fingerprint, "versions", lambda: {"torch": "0.0-other"})
            again = run_cells(cells, store, progress=False)
        finally:
            sw._code.cache_clear()
        assert computed == [8, 16, 8, 16] and len(store) == 4
        assert [r["error"] for r in again] == [r["error"] for r in first]  # deterministic: same numbers


@pytest.mark.parametrize("cfg", [{"target": "gauss-4d", "solver": "euler", "schedule": "edm", "n": 8,
                                  "process": "any", "sigma_min": 0.002, "sigma_max": 80.0, "final": False}])
def test_a_config_without_code_gets_it(tmp_path, cfg):
    with ResultStore(tmp_path / "r.sqlite") as store:
        (row,) = run_cells([cfg], store, progress=False)
    assert row["code"] == code_for(cfg) and row["code"]["solver"]
