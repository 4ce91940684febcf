"""The theory report end to end on a tiny matrix (2 solvers, 1 config, short nested grids), and its parts.

Expected orders come from the mathematics of the methods: Heun (EDM's 2nd-order trapezoid) has order 2; the
published DPM-Solver++(3M) is second order (verdicts.KNOWN_DEVIATIONS, derived symbolically in analytic.symbolic),
so its claim of 3 must be reported as a deviation. Synthetic errors C N^-p have local slopes exactly p.
"""

import math
import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sdm_verify import report, solvers  # noqa: E402
from sdm_verify.cli import main  # noqa: E402
from sdm_verify.harness import cases as theory  # noqa: E402
from sdm_verify.harness import sweep, verdicts  # noqa: E402
from sdm_verify.harness.results import results_from  # noqa: E402
from sdm_verify.harness.store import ResultStore  # noqa: E402
from sdm_verify.harness.sweep import Cell, run_cells  # noqa: E402
from sdm_verify.harness.symbolic_order import symbolic_order  # noqa: E402

CONFIG = ("gmm-8d", "ve", "edm", theory._all)
NS = (16, 32, 64, 128, 256)
SOLVERS = ("heun", "dpmpp_3m")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """`sdm-verify theory` on 2 solvers x 1 config with grids N = 16..256 (theory's constants patched)."""
    out = tmp_path_factory.mktemp("theory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(theory, "DEFAULT_CONFIGS", [CONFIG])
        mp.setattr(theory, "NS", {"gmm-8d": (NS, NS)})
        assert main(["theory", "--solvers", *SOLVERS, "--out", str(out), "--jobs", "1",
                     "--db", str(out / "results.sqlite"), "--no-baseline"]) == 0
        # the same cases through theory.measure_cases: an independent fit of the same stored rows
        with ResultStore(out / "results.sqlite") as store:
            reference = theory.measure_cases(theory.default_cases(SOLVERS), store, progress=False)
    return out, reference


def _tables(md: str) -> list[str]:
    """Every Markdown pipe table, as one string each."""
    blocks, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append("\n".join(cur))
            cur = []
    return blocks + (["\n".join(cur)] if cur else [])


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.imgs, self.tables = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append(0)
        if tag in ("td", "th"):
            self.tables[-1][-1] += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def test_files_exist(tiny):
    out, _ = tiny
    for name in ("index.md", "index.html", "results.sqlite", "convergence-gmm-8d-ve-edm.png"):
        assert (out / name).is_file(), name


def test_html_parses_and_links_its_figures(tiny):
    out, _ = tiny
    p = _Checker()
    p.feed((out / "index.html").read_text(encoding="utf-8"))
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert p.imgs == ["convergence-gmm-8d-ve-edm.png"]
    assert all((out / src).is_file() for src in p.imgs)
    md = (out / "index.md").read_text(encoding="utf-8")
    assert len(p.tables) == len(_tables(md))
    for rows, table in zip(p.tables, _tables(md), strict=True):  # every row has as many cells as the Markdown header
        assert set(rows) == {table.splitlines()[0].count(" | ") + 1}, table.splitlines()[0]
    assert md.count("<details>") == md.count("</details>") == len(SOLVERS)


def test_pngs_are_valid_images(tiny):
    out, _ = tiny
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[1] >= 800 and img.shape[0] >= 300, img.shape
        assert img[..., :3].std() > 0.05  # not blank: axes, lines and text on white


def test_orders_and_verdicts_follow_the_mathematics(tiny):
    out, reference = tiny
    with ResultStore(out / "results.sqlite") as store:
        results, run = report.load_results(store)
    by = {r.measurement.solver: r for r in results}
    # Heun is second order; 0.1 = the window's slope tolerance (sdm_verify.harness.orders), well inside verdicts.TOL
    assert by["heun"].verdict == "agree" and abs(by["heun"].measurement.order - 2) < 0.1
    # DPM-Solver++(3M) as published is second order: its claim of 3 must not be confirmed
    assert by["dpmpp_3m"].verdict != "agree"
    assert by["dpmpp_3m"].symbolic == symbolic_order(solvers.get("dpmpp_3m")).to_dict()
    # the report's refit from stored rows matches theory.measure_cases (the same rows, theory's own fit)
    for case, m in reference.items():
        assert by[case.solver].measurement.order == m.order and by[case.solver].measurement.ci == m.ci
    assert run["n_cells"] == len(SOLVERS) * len(NS) and run["environment"]["dtype"] == "float64"


def test_report_states_findings_and_tables(tiny):
    out, _ = tiny
    md = (out / "index.md").read_text(encoding="utf-8")
    findings = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "`dpmpp_3m`" in findings and verdicts.KNOWN_DEVIATIONS["dpmpp_3m"] in findings
    assert "`heun`" not in findings.split("Symbolic order below")[0]
    assert md.index("## Findings") < md.index("## Order table") < md.index("## Environment")
    table = _tables(md.split("## Order table", 1)[1])[0]
    head = table.splitlines()[0]
    assert all(c in head for c in ("solver", "claimed", "symbolic", "measured", "verdict", "note"))
    heun_row = next(line for line in table.splitlines() if line.startswith("| `heun`"))
    assert "| 2 |" in heun_row and "agree (1/1)" in heun_row
    for version in ("python", "torch", "numpy", "scipy", "sympy", "POT"):
        assert f"| {version} |" in md
    assert "distinct cells" in md and "float64" in md and "manual_seed(0)" in md
    assert "Orders are fitted on the asymptotic window" in md  # the rules, copied from theory.py


def test_report_command_reproduces_the_tables(tiny, tmp_path, monkeypatch):
    out, _ = tiny
    # rows are found by their stored keys: a later sweep version (new cells' keys differ) does not orphan them
    monkeypatch.setattr(sweep, "SWEEP_VERSION", sweep.SWEEP_VERSION + 1000)
    assert main(["report", "--db", str(out / "results.sqlite"), "--out", str(tmp_path)]) == 0
    first = (out / "index.md").read_text(encoding="utf-8")
    again = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert _tables(again) and _tables(again) == _tables(first)  # byte-identical tables
    assert again == first  # and in fact the whole page: nothing in it depends on when it was written
    assert (tmp_path / "convergence-gmm-8d-ve-edm.png").is_file()


def test_report_without_run_record_groups_the_rows(tmp_path):
    """A store filled by run_cells alone (no `theory` run record): each row group becomes a case."""
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_cells([Cell("gauss-4d", "euler", "edm", n) for n in NS], store, progress=False)
        results, run = report.load_results(store)
    assert run == {} and len(results) == 1
    m = results[0].measurement
    assert (m.solver, m.target, m.process, m.claimed) == ("euler", "gauss-4d", "any", 1.0)
    # Euler is first order; 0.1 as above
    assert results[0].verdict == "agree" and abs(m.order - 1) < 0.1


def _synthetic(target: str, claimed: float, p: float, errors=None):
    ns = [32, 64, 128, 256]
    errors = errors or [3.0 * n**-p for n in ns]
    rows = [dict(n=n, error=e, nfe=n, metric="test", floor=1e-14, status="ok" if math.isfinite(e) else "diverged")
            for n, e in zip(ns, errors, strict=True)]
    case = dict(solver="s", target=target, process="ve", schedule="edm", claimed=claimed, family="rk")
    return results_from([(case, rows)])[0]


def test_verdicts_on_synthetic_errors():
    # errors 3 N^-2 have local slopes exactly 2: the fit returns 2 (to round-off, 1e-9)
    r = _synthetic("gmm-8d", 2.0, 2.0)
    assert r.verdict == "agree" and abs(r.measurement.order - 2) < 1e-9
    assert _synthetic("gmm-8d", 3.0, 2.0).verdict == "deviates"
    # the Gaussian (linear) target may converge faster than claimed
    assert _synthetic("gauss-4d", 1.0, 2.0).verdict == "agree"
    assert _synthetic("gauss-4d", 3.0, 2.0).verdict == "deviates"
    diverged = _synthetic("gmm-8d", 2.0, 2.0, errors=[1e-2, math.inf, 1e-4, 2.5e-5])
    assert diverged.verdict == "no window" and "N=64 (diverged)" in diverged.reason


def test_add_section_writes_figures(tmp_path):
    rep = report.Report("t")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    src = tmp_path / "src"
    src.mkdir()
    fig.savefig(src / "given.png")
    rep.add_section("SDM curvature", "Curvature **kappa** of `sigma`.\n\n- one\n- two", [fig, (src / "given.png",
                                                                                               "a caption")])
    plt.close(fig)
    out = tmp_path / "out"
    md_path, html_path = rep.write(out)
    md = md_path.read_text(encoding="utf-8")
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(names) == 2 and "given.png" in names and "![a caption](given.png)" in md
    assert all(mpimg.imread(out / n).ndim == 3 for n in names)
    h = html_path.read_text(encoding="utf-8")
    assert "<strong>kappa</strong>" in h and "<code>sigma</code>" in h and "<li>two</li>" in h
    with pytest.raises(ValueError, match="^title:"):
        rep.add_section("", "x")
    rep.add_section("missing", "x", [tmp_path / "nope.png"])
    with pytest.raises(ValueError, match="^figures:"):
        rep.write(out)


def test_markdown_to_html_escapes_and_keeps_cells():
    md = ("# T\n\nsome <script>x</script> & *it* `a<b`\n\n| a | b |\n|---|---|\n| 1 \\| 2 | x<br>y |\n\n"
          "```\n<raw> | kept\n```\n\n- item\n  continued\n")
    h = report.markdown_to_html(md)
    assert "<script>" not in h and "&lt;script&gt;" in h and "<em>it</em>" in h and "<code>a&lt;b</code>" in h
    assert "<td>1 | 2</td><td>x<br>y</td>" in h
    assert "<pre><code>&lt;raw&gt; | kept</code></pre>" in h and "<li>item continued</li>" in h
    p = _Checker()
    p.feed(h)
    assert not p.errors and not p.stack


def test_order_matrix_colours_cells_by_verdict(tiny):
    """The compact matrix: one row per solver, one column per config, the order in each cell; in HTML the cell is
    coloured by its verdict (class) and carries the CI and the reason on hover (title)."""
    out, _ = tiny
    md = (out / "index.md").read_text(encoding="utf-8")
    assert md.index("## Findings") < md.index("## Order matrix") < md.index("## Order table")
    with ResultStore(out / "results.sqlite") as store:
        results, _ = report.load_results(store)
    by = {r.measurement.solver: r for r in results}
    table = _tables(md.split("## Order matrix", 1)[1])[0].splitlines()
    assert table[0] == "| solver | claimed | gmm-8d<br>ve<br>edm |" and len(table) == 2 + len(SOLVERS)
    h = (out / "index.html").read_text(encoding="utf-8")
    assert h.count('<table class="matrix">') == 1
    for solver, mark in (("heun", ""), ("dpmpp_3m", " ✗")):
        r = by[solver]
        m = r.measurement
        row = next(line for line in table if line.startswith(f"| `{solver}` |"))
        assert f'<span class="{r.verdict}" title="{solver} on gmm-8d/ve/edm: {m.order:.2f} [{m.ci[0]:.2f}' in row
        assert row.endswith(f">{m.order:.2f}{mark}</span> |")
        assert f'<td class="{r.verdict}" title="{solver} on gmm-8d/ve/edm: {m.order:.2f} [' in h
    assert by["heun"].verdict == "agree" and by["dpmpp_3m"].verdict == "deviates"


def test_verdict_spans_render_as_coloured_cells():
    span = report.verdict_span("deviates", "1.90 ✗", 'CI "q" & <b> | x')
    md = (f"| s | c |\n|---|---|\n| `x` | {report.cell(span)} |\n| y | plain |\n\n"
          f"key: {report.verdict_span('agree', 'ok')}.\n")
    h = report.markdown_to_html(md)
    assert '<table class="matrix">' in h and "<td>plain</td>" in h
    assert '<td class="deviates" title="CI &quot;q&quot; &amp; &lt;b&gt; | x">1.90 ✗</td>' in h
    assert '<p>key: <span class="agree">ok</span>.</p>' in h
    assert "<table>" in report.markdown_to_html("| a |\n|---|\n| <span>1</span> |\n")  # other spans: plain, escaped
    with pytest.raises(ValueError, match="^verdict:"):
        report.verdict_span("maybe", "x")
