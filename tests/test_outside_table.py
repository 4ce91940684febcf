"""The outside-sampler table (issue 17): k-diffusion coverage, its as-shipped pass, the table builder and its store."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchsde")
pytest.importorskip("diffusers")

from sdm_verify.adapters.kdiffusion import load_sampling  # noqa: E402
from sdm_verify.adapters.kdiffusion_coverage import coverage  # noqa: E402
from sdm_verify.conformance import shipped_kdiffusion as sk  # noqa: E402
from sdm_verify.harness import targets  # noqa: E402
from sdm_verify.report import outside  # noqa: E402

STATUSES = {"driven-ode", "driven-stochastic", "driven-shipped", "refused"}


def _sample_functions_in_source() -> set[str]:
    """The sample_* functions defined in k-diffusion's sampling.py, read from its syntax tree (not imported)."""
    tree = ast.parse(Path(load_sampling().__file__).read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("sample_")}


def test_coverage_names_every_sample_function_and_refusals_have_a_reason():
    rows = coverage()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert set(names) == _sample_functions_in_source()
    for name, status, reason in rows:
        assert status in STATUSES, (name, status)
        assert isinstance(reason, str) and reason.strip() and "\n" not in reason, name
    assert dict((n, s) for n, s, _ in rows)["sample_dpm_adaptive"] == "refused"
    assert dict((n, s) for n, s, _ in rows)["sample_euler"] == "driven-ode"
    assert dict((n, s) for n, s, _ in rows)["sample_euler_ancestral"] == "driven-stochastic"


def _euler_w2(n: int) -> float:
    """Independent: k-diffusion's Euler on gauss-4d from the exact p_80, in each eigendirection of C (eigenvalue c),
    scales x - mu by prod_i (1 + s_i (s_{i+1} - s_i) / (c + s_i^2)) (the last factor, into 0, is c / (c + s^2));
    the output law is N(mu, sum a_c^2 e e^T), so W2^2 = sum_c (a_c - sqrt(c))^2."""
    t = targets.get(sk.TARGET)
    cs = torch.linalg.eigvalsh(torch.as_tensor(t.covariance, dtype=torch.float64)).tolist()
    sig = [float(s) for s in sk.karras(n)]
    total = 0.0
    for c in cs:
        a = math.sqrt(c + sig[0] ** 2)
        for s, s_next in zip(sig[:-1], sig[1:], strict=True):
            a *= 1.0 + s * (s_next - s) / (c + s * s)
        total += (a - math.sqrt(c)) ** 2
    return math.sqrt(total)


def test_euler_and_heun_as_shipped_converge_and_pass():
    euler = sk.as_shipped("sample_euler", ns=(5, 25))
    heun = sk.as_shipped("sample_heun", ns=(5, 25))
    for result in (euler, heun):
        assert result.verdict == "pass", result.failures
        w = {r.n: r.w2_to_zero for r in result.rows}
        assert w[25] < w[5]
        assert all(r.method.startswith("affine probe") for r in result.rows)
    for r in euler.rows:  # the affine probe's W2 against the closed-form Euler map (float32 run: 1e-4 relative)
        assert r.w2_to_zero == pytest.approx(_euler_w2(r.n), rel=1e-4)
        assert r.nfe == r.n  # N model calls: N - 1 Euler steps and the step into 0


def test_as_shipped_catches_a_sampler_that_goes_non_finite():
    sampling = load_sampling()

    def exploding(model, x, sigmas, callback=None, disable=None):  # Euler whose network blows up below sigma 1
        def bad(y, s):
            out = model(y, s)
            return out * math.inf if float(s.reshape(-1)[0]) < 1.0 else out

        return sampling.sample_euler(bad, x, sigmas, callback=callback, disable=disable)

    result = sk.as_shipped(exploding, ns=(10,))
    assert result.verdict == "fail"
    sig = [float(s) for s in sk.karras(10)]
    first = next(i for i, s in enumerate(sig) if s < 1.0)  # its first call below 1 is in step `first`
    assert len(result.failures) == 1
    text = result.failures[0]
    assert "non-finite" in text and f"after step {first} " in text and f"sigma {sig[first]:.6g} ->" in text
    assert result.rows[0].w2 is None


def test_as_shipped_reports_a_sampler_that_raises():
    def broken(model, x, sigmas, callback=None, disable=None):
        raise RuntimeError("boom")

    result = sk.as_shipped(broken, ns=(5,))
    assert result.verdict == "fail" and "RuntimeError: boom" in result.failures[0]


def test_as_shipped_fails_a_sampler_that_does_not_converge():
    def frozen(model, x, sigmas, callback=None, disable=None):  # returns D at sigma_max: the mean, whatever N
        return model(x, sigmas[0] * x.new_ones([x.shape[0]]))

    result = sk.as_shipped(frozen, ns=(5, 25))
    assert result.verdict == "fail" and "no convergence" in result.failures[0]


def test_table_has_one_row_per_entry_with_the_columns():
    only = [("k-diffusion", "sample_euler"), ("k-diffusion", "sample_dpm_adaptive"),
            ("diffusers", "VQDiffusionScheduler")]
    rows = outside.run(quick=True, progress=False, only=only)
    assert [(r["library"], r["sampler"]) for r in rows] == only
    for r in rows:
        assert set(outside.COLUMNS) <= set(r)
    euler, adaptive, vq = rows
    assert euler["verdict"] == "PASS" and euler["claimed"] == 1 and abs(euler["measured"] - 1) < 0.2
    assert euler["w2_10"] == pytest.approx(_euler_w2(10), rel=1e-4)
    assert euler["w2_25"] == pytest.approx(_euler_w2(25), rel=1e-4)
    assert adaptive["verdict"] == vq["verdict"] == "refused" and adaptive["reason"] and vq["reason"]
    page = outside.markdown(rows, quick=True)
    table = [line for line in page.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header + one line per row
    assert "`sample_euler`" in page and "refused: adaptive step size" in page


def test_plan_covers_every_class_and_sampler():
    from sdm_verify.adapters.diffusers.coverage import coverage as diffusers_coverage

    entries = outside.plan()
    assert len(entries) == len(diffusers_coverage()) + len(coverage())
    assert len({(e.library, e.name) for e in entries}) == len(entries)
    assert {e.name for e in entries if e.library == "k-diffusion"} == _sample_functions_in_source()


def test_rows_are_reused_from_the_store_and_recomputed_for_other_code(tmp_path, monkeypatch):
    calls = []
    real = outside.compute

    def counting(entry, quick=False):
        calls.append(entry.name)
        return real(entry, quick)

    monkeypatch.setattr(outside, "compute", counting)
    only = [("k-diffusion", "sample_dpm_fast"), ("k-diffusion", "sample_dpm_adaptive")]
    store = tmp_path / "outside.sqlite"
    first = outside.run(quick=True, store=store, progress=False, only=only)
    assert calls == ["sample_dpm_fast", "sample_dpm_adaptive"]
    second = outside.run(quick=True, store=store, progress=False, only=only)
    assert calls == ["sample_dpm_fast", "sample_dpm_adaptive", "sample_dpm_adaptive"]  # refused rows: not stored
    assert second[0]["cached"] and not first[0]["cached"]
    assert second[0]["w2_10"] == first[0]["w2_10"] and second[0]["measured"] == first[0]["measured"]
    code = outside.code()
    monkeypatch.setattr(outside, "code", lambda: {**code, "outside": "other code"})
    outside.run(quick=True, store=store, progress=False, only=only[:1])
    assert calls[-1] == "sample_dpm_fast" and len(calls) == 4


def test_readme_carries_the_committed_table_verbatim():
    """The README's table is the suite's output: compact() of the committed rows, character for character."""
    import json
    from pathlib import Path

    from sdm_verify.report import outside

    root = Path(__file__).resolve().parent.parent
    rows = json.loads((root / "reports" / "outside" / "rows.json").read_text(encoding="utf-8"))
    table = outside.compact(rows)
    assert (root / "reports" / "outside" / "table.md").read_text(encoding="utf-8") == table
    assert table in (root / "README.md").read_text(encoding="utf-8")
